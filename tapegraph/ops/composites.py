"""The homework's nodes and other ops built from primitives.

A composite is a plain function of primitives, so it needs no VJP of its
own: its gradient comes from theirs. Each is listed in ``COMPOSITES`` with
samples, so the test suite checks composites the way it checks primitives,
and its function is exported as it is (``tg.affine``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from tapegraph.errors import ShapeError
from tapegraph.expr import Node, caller_origin
from tapegraph.ops.elementwise import ADD, LOG, MUL, NEG, SOFTPLUS, SUB
from tapegraph.ops.linalg import MATMUL
from tapegraph.ops.reductions import SUM_SQUARES
from tapegraph.ops.registry import Arg, Sample, as_node
from tapegraph.ops.softmax import CROSS_ENTROPY, PICK, SOFTMAX
from tapegraph.shapes import broadcast


@attrs.frozen
class Composite:
    """A function of primitives, with samples for the gradient tests."""

    #: The exported name (``tg.<name>``).
    name: str
    #: The function itself: operands, then attributes, then ``name``.
    build: Callable[..., Node]
    #: Arguments the tests check it on; ``static`` holds keyword arguments.
    samples: tuple[Sample, ...] = attrs.field(converter=tuple)
    #: ``call(build, nodes, static) -> Node``: how the tests apply ``build``
    #: to a sample's operands, when it does not take them as
    #: ``build(*nodes, **static)`` (``tg.concatenate([a, b])``) or gives
    #: several nodes (``tg.split``); None for that plain call.
    call: Callable[[Callable[..., Any], Sequence[Node], dict[str, Any]], Node] | None = None


def _require(condition: bool, op: str, nodes: tuple[Node, ...], message: str) -> None:
    if not condition:
        operands = ", ".join(node.type_str if node.name is None else f"{node.name}: {node.type_str}" for node in nodes)
        raise ShapeError(f"{op}({operands}) at {caller_origin()}: {message}")


def _operands(op: str, **operands: Any) -> tuple[Node, ...]:
    """Each operand as a node, or a ``ShapeError`` naming the op, the argument and the user's line."""
    nodes = []
    for argument, value in operands.items():
        try:
            nodes.append(as_node(value))
        except TypeError:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ShapeError(f"{op} at {caller_origin()}: {argument} must be a tapegraph node or a number, "
                             f"got {type(value).__name__} {shown}") from None
    return tuple(nodes)


def vector_scalar_affine(x: Any, w: Any, b: Any, name: str | None = None) -> Node:
    """``x @ w + b`` for a weight vector ``w`` and a scalar bias ``b``.

    ``x`` is one example (``(d,)``) or a batch (``(batch, d)``); the
    homework's ``VectorScalarAffineNode``.
    """
    x, w, b = _operands("vector_scalar_affine", x=x, w=w, b=b)
    _require(w.ndim == 1 and b.ndim == 0 and x.ndim in (1, 2), "vector_scalar_affine", (x, w, b),
             "needs x of shape [d] or [batch,d], w of shape [d] and a scalar b")
    return _named(ADD(MATMUL(x, w), b), name)


def affine(W: Any, x: Any, b: Any, name: str | None = None) -> Node:
    """``W @ x + b`` for a matrix ``W`` (m, d); the homework's ``AffineNode``.

    ``x`` may be one example ``(d,)`` or a batch ``(batch, d)``, giving
    ``(m,)`` or ``(batch, m)``: computed as ``x @ W.T + b``.
    """
    W, x, b = _operands("affine", W=W, x=x, b=b)
    _require(W.ndim == 2 and b.ndim == 1 and x.ndim in (1, 2), "affine", (W, x, b),
             "needs W of shape [m,d], x of shape [d] or [batch,d], and b of shape [m]")
    return _named(ADD(MATMUL(x, W, transpose_b=True), b), name)


def squared_l2_distance(a: Any, b: Any, name: str | None = None) -> Node:
    """``||a - b||^2``, summed over every entry; the homework's node."""
    a, b = _operands("squared_l2_distance", a=a, b=b)
    return _named(SUM_SQUARES(SUB(a, b)), name)


def l2_norm_penalty(w: Any, l2_reg: float, name: str | None = None) -> Node:
    """``l2_reg * ||w||^2``; the homework's ``L2NormPenaltyNode``.

    ``l2_reg`` is a number >= 0, or a scalar node (a hyperparameter input).
    """
    (w,) = _operands("l2_norm_penalty", w=w)
    if isinstance(l2_reg, Node):
        valid = l2_reg.ndim == 0
        shown = l2_reg.type_str
    else:
        is_number = isinstance(l2_reg, (int, float, np.integer, np.floating)) and not isinstance(l2_reg, bool)
        valid = is_number and math.isfinite(l2_reg) and l2_reg >= 0
        shown = f"{type(l2_reg).__name__} {l2_reg!r}" if not is_number else repr(l2_reg)
    if not valid:
        raise ShapeError(f"l2_norm_penalty at {caller_origin()}: l2_reg must be a number >= 0 or a scalar node, "
                         f"got {shown}")
    return _named(MUL(SUM_SQUARES(w), l2_reg), name)


def dot(a: Any, b: Any, name: str | None = None) -> Node:
    """``np.dot``: a product with a scalar, of vectors, matrices (as ``matmul``), or sum products of N-d arrays.

    With a scalar operand it is ``a * b``; an N-d ``a`` sums products
    over its last axis and the second-to-last of ``b`` (the last, for a
    vector ``b``), as numpy's ``dot`` does.
    """
    left, right = _operands("dot", a=a, b=b)
    # the ops get a and b as given: a Python number takes the other operand's float dtype
    if left.ndim == 0 or right.ndim == 0:
        return MUL(a, b, name=name)
    if left.ndim <= 2 and right.ndim <= 2:
        return MATMUL(a, b, name=name)
    from tapegraph.ops.contraction import tensordot  # it builds on this module
    return tensordot(left, right, axes=([left.ndim - 1], [max(right.ndim - 2, 0)]), name=name)


def nll(probs: Any, label: Any, name: str | None = None) -> Node:
    """``-log probs[label]``, one value per example; the homework's ``NLLNode``.

    Takes probabilities. When they are a softmax's output, this is
    ``cross_entropy`` of the softmax's logits: the same value, but it never
    takes the log of an underflowed zero, and its gradient is the softmax
    minus the one-hot label, one instruction instead of six.
    """
    if isinstance(probs, Node) and probs.op is SOFTMAX and probs.attr("axis") == (probs.ndim - 1,):
        return _named(CROSS_ENTROPY(probs.inputs[0], label), name)
    return _named(NEG(LOG(PICK(probs, label))), name)


def binary_cross_entropy(logits: Any, targets: Any, name: str | None = None) -> Node:
    """Binary log-loss of logits ``z`` against targets ``t`` in [0, 1], one value per entry.

    ``-t log sigmoid(z) - (1 - t) log(1 - sigmoid(z))``, computed as
    ``t softplus(-z) + (1 - t) softplus(z)``: two terms that are never
    negative, so nothing cancels or overflows, and the loss is exact for
    any logit (4.25e-18 at z = 40, t = 1; 1000 at z = -1000, t = 1). Its
    gradient is ``sigmoid(z) - t`` (as ``(1 - t) sigmoid(z) - t sigmoid(-z)``,
    exact in both tails too). Reduce with ``tg.sum`` or ``tg.mean``.

    >>> import tapegraph as tg
    >>> z = tg.input("z", shape=("batch",))
    >>> tg.binary_cross_entropy(z, tg.input("t", shape=("batch",)))
    <add f64[batch] at ...>
    """
    logits, targets = _operands("binary_cross_entropy", logits=logits, targets=targets)
    _require(np.dtype(logits.dtype).kind == "f" and np.dtype(targets.dtype).kind == "f", "binary_cross_entropy",
             (logits, targets), "logits and targets must be floating point (targets 0.0 or 1.0, or probabilities)")
    try:
        broadcast(logits.shape, targets.shape)
    except ValueError as error:
        _require(False, "binary_cross_entropy", (logits, targets), str(error))
    positive = MUL(targets, SOFTPLUS(NEG(logits)))
    negative = MUL(SUB(1.0, targets), SOFTPLUS(logits))
    return _named(ADD(positive, negative), name)


def _named(node: Node, name: str | None) -> Node:
    return node.named(name) if name else node


_LABEL = Arg((), dtype="int64", low=0, high=3)
_LABELS = Arg((5,), dtype="int64", low=0, high=3, batch=True)

COMPOSITES: dict[str, Composite] = {composite.name: composite for composite in (
    Composite("vector_scalar_affine", vector_scalar_affine, [
        Sample([Arg((4,)), Arg((4,)), Arg(())]),
        Sample([Arg((5, 4), batch=True), Arg((4,)), Arg(())]),
    ]),
    Composite("affine", affine, [
        Sample([Arg((3, 4)), Arg((4,)), Arg((3,))]),
        Sample([Arg((3, 4)), Arg((5, 4), batch=True), Arg((3,))]),
    ]),
    Composite("squared_l2_distance", squared_l2_distance, [
        Sample([Arg(()), Arg(())]),
        Sample([Arg((5,), batch=True), Arg((5,), batch=True)]),
    ]),
    Composite("l2_norm_penalty", l2_norm_penalty, [Sample([Arg((6,))], {"l2_reg": 0.7})]),
    Composite("binary_cross_entropy", binary_cross_entropy, [
        Sample([Arg((5,), low=-6.0, high=6.0), Arg((5,), low=0.0, high=1.0)]),
        Sample([Arg((4, 3), low=-6.0, high=6.0, batch=True), Arg((4, 3), low=0.0, high=1.0, batch=True)]),
        Sample([Arg(()), Arg((), low=0.0, high=1.0)]),
    ]),
    Composite("dot", dot, [
        Sample([Arg((4,)), Arg((4,))]),
        Sample([Arg(()), Arg((2, 3))]),
        Sample([Arg((5, 3), batch=True), Arg(())]),
        Sample([Arg((2, 3, 4)), Arg((5, 4, 2))]),
        Sample([Arg((2, 3, 4)), Arg((4,))]),
    ]),
    Composite("nll", nll, [
        Sample([Arg((3,), low=0.1, high=1.0), _LABEL]),
        Sample([Arg((5, 3), low=0.1, high=1.0, batch=True), _LABELS]),
    ]),
)}
