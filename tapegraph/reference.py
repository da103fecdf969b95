"""A reference interpreter: expressions evaluated directly with plain numpy.

``evaluate`` walks an expression and computes every node with a textbook
numpy formula from ``RULES``: no lowering, no buffers, no generated code.
It is the oracle the compiled tapes are tested against (see
``docs/testing.md``), so it is written to be obviously right rather than
fast, and it shares no code with what it checks: the ops' kernels write
into preallocated buffers through ufunc methods, scratch arrays and flat
indices, while each rule here is the formula as a book would state it
(``softmax``: ``exp(z - max z) / sum exp(z - max z)``; ``pick``:
``np.take_along_axis``). A bug in a kernel, in the buffer planner or in the
code generator then shows up as a disagreement instead of being repeated
on both sides.

>>> import numpy as np, tapegraph as tg
>>> x = tg.input("x", shape=("batch", 2))
>>> w = tg.param("w", shape=(2,))
>>> evaluate(tg.sum(tg.square(x @ w)), {"w": np.array([1.0, 2.0])}, {"x": np.array([[1.0, 1.0], [0.0, 1.0]])})
array(13.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.expr import CONST, INPUT, PARAM, Node, Structure
from tapegraph.ops import Op
from tapegraph.ops.comparison import EQUAL, GREATER, GREATER_EQUAL, LESS, LESS_EQUAL, NOT_EQUAL, STOP_GRADIENT, WHERE
from tapegraph.ops.elementwise import (
    ABS, ADD, ARCTAN, CAST, CLIP, COS, DIV, EXP, EXPM1, LOG, LOG1P, LOG_SIGMOID, MAXIMUM, MINIMUM, MUL, NEG, POW, RELU,
    SIGMOID, SIGN, SIN, SOFTPLUS, SQRT, SQUARE, SUB, TAN, TANH,
)
from tapegraph.ops.reductions import (
    BROADCAST_TO, CUMSUM, EXPAND, MAX, MEAN, MIN, PROD, PROD_OTHERS, STD, SUM, SUM_SQUARES, SUM_TO, TIE_SHARE, VAR,
)
from tapegraph.ops.linalg import CONTRACT, MATMUL, OUTER
from tapegraph.ops.shaping import CONCAT, GATHER, INDEX, RESHAPE, SCATTER_ADD, TRANSPOSE, UNINDEX
from tapegraph.ops.softmax import (
    CROSS_ENTROPY, LOG_SOFTMAX, LOGSUMEXP, PICK, SOFTMAX, SOFTMAX_JVP, SOFTMAX_MINUS_ONEHOT, UNPICK,
)
from tapegraph.shapes import array_type, format_type

#: ``rule(*operands, **static) -> array``: the value of one op, from the
#: operands' arrays and the node's static attributes (with symbolic sizes
#: already filled in). One textbook formula per registered op, keyed by
#: its record; a user-declared op may add its own (``RULES[SOFTSIGN] = ...``).
Rule = Callable[..., np.ndarray]


def _check_labels(label: np.ndarray, classes: int) -> np.ndarray:
    # numpy would wrap a negative label around silently; the ops refuse it
    if label.size and (label.min() < 0 or label.max() >= classes):
        raise IndexError(f"reference: labels must lie in 0..{classes - 1}, got values from {label.min()} to {label.max()}")
    return label


def _pick(x: np.ndarray, label: np.ndarray) -> np.ndarray:
    label = _check_labels(label, x.shape[-1])
    return np.take_along_axis(x, label[..., np.newaxis], axis=-1)[..., 0]


def _onehot(label: np.ndarray, depth: int) -> np.ndarray:
    return np.eye(depth)[_check_labels(label, depth)]


def _unpick(g: np.ndarray, label: np.ndarray, depth: int) -> np.ndarray:
    return _onehot(label, depth) * g[..., np.newaxis]


def _softmax(z: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    shifted = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def _log_softmax(z: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _cross_entropy(z: np.ndarray, label: np.ndarray, axis: int) -> np.ndarray:
    return -_pick(np.moveaxis(_log_softmax(z, (axis,)), axis, -1), label)


def _softmax_minus_onehot(z: np.ndarray, label: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(z, axis, -1)
    residual = _softmax(moved, (moved.ndim - 1,)) - _onehot(label, moved.shape[-1])
    return np.moveaxis(scale * residual, -1, axis)


def _softmax_jvp(z: np.ndarray, v: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    # the Jacobian of the softmax, diag(p) - p p^T, times v
    p = _softmax(z, axis)
    return p * v - p * np.sum(p * v, axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # the textbook pair of forms, each used where e^(-|x|) cannot overflow
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def _softplus(x: np.ndarray) -> np.ndarray:
    # max(x, 0) + log(1 + e^-|x|)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _expand(g: np.ndarray, shape: tuple[int, ...], axis: tuple[int, ...], keepdims: bool, mean: bool) -> np.ndarray:
    # put the reduced axes back (as size 1) if they were dropped, then copy along them
    if not keepdims:
        g = np.expand_dims(g, axis)
    result = np.broadcast_to(g, shape).copy()
    if mean:
        result = result / np.prod([shape[index] for index in axis])
    return result


def _sum_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # the transpose of broadcasting: sum the leading axes broadcasting added,
    # then every axis that broadcasting stretched from size 1
    x = np.sum(x, axis=tuple(range(x.ndim - len(shape))))
    stretched = tuple(index for index, size in enumerate(shape) if size == 1 and x.shape[index] != 1)
    return np.sum(x, axis=stretched, keepdims=True).reshape(shape)


def _moved_last(x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """``x`` with the axes of ``axis`` moved to the end, in order."""
    return np.moveaxis(x, axis, tuple(range(x.ndim - len(axis), x.ndim)))


def _tie_share(x: np.ndarray, axis: tuple[int, ...], smallest: bool) -> np.ndarray:
    chosen = (np.min if smallest else np.max)(x, axis=axis, keepdims=True)
    hits = (x == chosen).astype(float)
    return hits / np.sum(hits, axis=axis, keepdims=True)


def _prod_others(x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    # by definition: each entry replaced by 1, then the product of its group
    moved = _moved_last(x, axis)
    flat = moved.reshape(moved.shape[:x.ndim - len(axis)] + (-1,))
    result = np.empty_like(flat)
    for index in range(flat.shape[-1]):
        others = flat.copy()
        others[..., index] = 1.0
        result[..., index] = np.prod(others, axis=-1)
    return np.moveaxis(result.reshape(moved.shape), tuple(range(x.ndim - len(axis), x.ndim)), axis)


def _logsumexp(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        result = top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True))
    return result if keepdims else np.squeeze(result, axis=axis)


def _cumsum(x: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis), axis)
    return np.cumsum(x, axis=axis)


def _matmul(a: np.ndarray, b: np.ndarray, transpose_a: bool, transpose_b: bool) -> np.ndarray:
    # a flag transposes the matrices: the last two axes
    def matrices(array: np.ndarray, transpose: bool) -> np.ndarray:
        return np.swapaxes(array, -1, -2) if transpose and array.ndim >= 2 else array
    return np.matmul(matrices(a, transpose_a), matrices(b, transpose_b))


# Shape and indexing ops: the index is the text between numpy's brackets.

def _key(text: str) -> tuple:
    """``"[1:3, None, 0]"`` as the tuple numpy reads between the brackets."""
    def entry(part: str):
        if part == "None":
            return None
        if ":" in part:
            return slice(*[int(bound) if bound else None for bound in part.split(":")])
        return int(part)
    inner = text[1:-1]
    return () if inner == "..." else tuple(entry(part) for part in inner.split(", "))


def _unindex(g: np.ndarray, index: str, shape: tuple[int, ...]) -> np.ndarray:
    result = np.zeros(shape)
    result[_key(index)] = g
    return result


def _check_indices(indices: np.ndarray, size: int) -> np.ndarray:
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise IndexError(f"reference: indices must lie in {-size}..{size - 1}, got values from {indices.min()} to {indices.max()}")
    return indices


def _scatter_add(g: np.ndarray, indices: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    # the sum, for each position along the axis, of g's slices taken from there
    result = np.zeros(shape)
    moved = np.moveaxis(result, axis, 0)
    g_moved = np.moveaxis(g, list(range(axis, axis + indices.ndim)), list(range(indices.ndim)))
    for position, index in np.ndenumerate(_check_indices(indices, shape[axis])):
        moved[index] += g_moved[position]
    return result


RULES: dict[Op, Rule] = {
    ADD: lambda a, b: a + b,
    SUB: lambda a, b: a - b,
    MUL: lambda a, b: a * b,
    DIV: lambda a, b: a / b,
    NEG: lambda x: -x,
    EXP: np.exp,
    LOG: np.log,
    SQRT: np.sqrt,
    TANH: np.tanh,
    SQUARE: lambda x: x * x,
    RELU: lambda x: np.where(x > 0, x, 0.0),
    SIGN: np.sign,
    CAST: lambda x, dtype: x.astype(dtype),
    ABS: np.abs,
    MAXIMUM: lambda a, b: np.where(a >= b, a, b),
    MINIMUM: lambda a, b: np.where(a <= b, a, b),
    CLIP: lambda x, low, high: np.minimum(np.maximum(x, -np.inf if low is None else low), np.inf if high is None else high),
    POW: lambda x, y: x ** y,
    SIN: np.sin,
    COS: np.cos,
    TAN: np.tan,
    ARCTAN: np.arctan,
    LOG1P: np.log1p,
    EXPM1: np.expm1,
    SIGMOID: _sigmoid,
    SOFTPLUS: _softplus,
    LOG_SIGMOID: lambda x: -_softplus(-x),
    LESS: lambda a, b: a < b,
    LESS_EQUAL: lambda a, b: a <= b,
    GREATER: lambda a, b: a > b,
    GREATER_EQUAL: lambda a, b: a >= b,
    EQUAL: lambda a, b: a == b,
    NOT_EQUAL: lambda a, b: a != b,
    WHERE: lambda cond, a, b: np.where(cond, a, b),
    STOP_GRADIENT: lambda x: np.array(x, copy=True),
    SUM: lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
    MEAN: lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims),
    SUM_SQUARES: lambda x: np.sum(x * x),
    # the reductions over an axis, numpy's own
    MAX: lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims),
    MIN: lambda x, axis, keepdims: np.min(x, axis=axis, keepdims=keepdims),
    TIE_SHARE: _tie_share,
    PROD: lambda x, axis, keepdims: np.prod(x, axis=axis, keepdims=keepdims),
    PROD_OTHERS: _prod_others,
    LOGSUMEXP: _logsumexp,
    VAR: lambda x, axis, keepdims, ddof: np.var(x, axis=axis, keepdims=keepdims, ddof=ddof),
    STD: lambda x, axis, keepdims, ddof: np.std(x, axis=axis, keepdims=keepdims, ddof=ddof),
    CUMSUM: _cumsum,
    EXPAND: _expand,
    SUM_TO: _sum_to,
    BROADCAST_TO: lambda x, shape: np.broadcast_to(x, shape).copy(),
    MATMUL: _matmul,
    OUTER: np.outer,
    CONTRACT: lambda a, b, subscripts: np.einsum(subscripts, a, b),
    RESHAPE: lambda x, shape: np.reshape(x, shape),
    TRANSPOSE: lambda x, axes: np.transpose(x, axes),
    INDEX: lambda x, index: np.asarray(x)[_key(index)].copy(),
    UNINDEX: _unindex,
    GATHER: lambda x, indices, axis: np.take(x, _check_indices(indices, x.shape[axis]), axis=axis),
    SCATTER_ADD: _scatter_add,
    CONCAT: lambda a, b, axis: np.concatenate([a, b], axis=axis),
    PICK: _pick,
    UNPICK: _unpick,
    # the softmax family, along their axis
    SOFTMAX: _softmax,
    LOG_SOFTMAX: _log_softmax,
    SOFTMAX_JVP: _softmax_jvp,
    CROSS_ENTROPY: _cross_entropy,
    # the gradient of cross-entropy
    SOFTMAX_MINUS_ONEHOT: _softmax_minus_onehot,
}


def evaluate(nodes_or_node: Node | Sequence[Node] | Mapping[str, Node], params: Mapping[str, Any],
             inputs: Mapping[str, Any] | None = None, sizes: Mapping[str, int] | None = None,
             float_dtype: str | None = None) -> Any:
    """The values of expressions, computed node by node with plain numpy.

    ``nodes_or_node`` is one node (giving one array), a sequence of nodes
    (a list of arrays) or a dict of nodes (a dict of arrays, same keys).
    ``params`` and ``inputs`` give the leaves' arrays by name, as for a
    compiled program; symbolic sizes (``"batch"``) are read off the arrays
    given, or from ``sizes`` (``{"batch": 32}``) for an expression whose
    shapes hold a symbol that none of its leaves does (the gradient of a
    parameter added to a batch of inputs is ``batch`` times a constant, and
    holds no input). Evaluating such an expression together with one that
    reads the inputs works too: sizes are shared by all the nodes of a call.
    Each distinct node is computed once, however many times it is used.
    Results are new arrays of the declared dtype; nothing given is
    modified. With ``float_dtype="float64"``, every floating value
    (``cast`` results included) is computed in float64 instead of its
    declared dtype: the value that a float32 or mixed graph approximates,
    smooth enough for central differences.

    >>> import numpy as np, tapegraph as tg
    >>> x = tg.param("x", shape=(3,))
    >>> evaluate(tg.softmax(x), {"x": np.zeros(3)})
    array([0.33333333, 0.33333333, 0.33333333])
    """
    inputs = inputs if inputs is not None else {}
    if isinstance(nodes_or_node, Node):
        roots = [nodes_or_node]
    elif isinstance(nodes_or_node, Mapping):
        roots = list(nodes_or_node.values())
    else:
        roots = list(nodes_or_node)
    for root in roots:
        if not isinstance(root, Node):
            raise TypeError(f"reference.evaluate takes tapegraph nodes, got {type(root).__name__} {root!r}")

    # keyed by structure: equal nodes built apart are one value, found
    # without == (which builds an equal node; see Node.structural_truth)
    values: dict[Structure, np.ndarray] = {}
    sizes = dict(sizes or {})
    order = _post_order(roots)
    # leaves first, so every symbolic size is known before any op needs it
    for node in order:
        if node.op is PARAM or node.op is INPUT:
            values[node.structure] = _leaf_value(node, params, inputs, sizes, float_dtype)
    for node in order:
        if node.structure not in values:
            values[node.structure] = _value(node, [values[operand.structure] for operand in node.inputs], sizes,
                                            float_dtype)

    results = [values[root.structure].copy() for root in roots]
    if isinstance(nodes_or_node, Node):
        return results[0]
    if isinstance(nodes_or_node, Mapping):
        return dict(zip(nodes_or_node.keys(), results))
    return results


def _post_order(roots: Sequence[Node]) -> list[Node]:
    """Every node reachable from ``roots`` once, each after its operands.

    An explicit stack rather than recursion: deep expressions (long
    chains of gradients) must not hit Python's recursion limit.
    """
    order: list[Node] = []
    done: set[Structure] = set()
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, operands_done = stack.pop()
        if node.structure in done:
            continue
        if operands_done:
            done.add(node.structure)
            order.append(node)
            continue
        stack.append((node, True))
        for operand in reversed(node.inputs):
            if operand.structure not in done:
                stack.append((operand, False))
    return order


def _dtype(node: Node, float_dtype: str | None) -> str:
    """The dtype a node is computed in: its own, or ``float_dtype`` for a float node when given."""
    if float_dtype is not None and np.dtype(node.dtype).kind == "f":
        return float_dtype
    return node.dtype


def _leaf_value(node: Node, params: Mapping[str, Any], inputs: Mapping[str, Any], sizes: dict[str, int],
                float_dtype: str | None = None) -> np.ndarray:
    """A parameter's or input's array, checked against its declared shape."""
    given = params if node.op is PARAM else inputs
    if node.name not in given:
        where = "params" if node.op is PARAM else "inputs"
        raise KeyError(f"reference: {node.op} {node.name!r} ({node.type_str}) is missing from {where} "
                       f"(given: {sorted(given)})")
    array = np.asarray(given[node.name], dtype=_dtype(node, float_dtype))
    _bind_sizes(node, array.shape, sizes)
    return array


def _value(node: Node, operands: list[np.ndarray], sizes: Mapping[str, int],
           float_dtype: str | None = None) -> np.ndarray:
    """One node's value from its operands' values."""
    dtype = _dtype(node, float_dtype)
    if node.op is CONST:
        return np.array(node.value.array, dtype=dtype)
    rule = RULES.get(node.op)
    if rule is None:
        raise NotImplementedError(f"reference: op {node.op.name!r} has no rule in tapegraph.reference.RULES; "
                                  f"add its textbook numpy formula there, keyed by the op record")
    static = {key: _fill_sizes(value, sizes) for key, value in node.static}
    if node.op is CAST:
        static["dtype"] = dtype  # computing in float_dtype: a cast converts nothing
    result = np.asarray(rule(*operands, **static), dtype=dtype)
    expected = _fill_sizes(node.shape, sizes)
    if result.shape != expected:
        raise AssertionError(f"reference: the rule for {node.op} gave {array_type(result)}, "
                             f"but {node.label} is declared {node.type_str} ({format_type(expected, node.dtype)} here)")
    return result


def _bind_sizes(node: Node, shape: tuple[int, ...], sizes: dict[str, int]) -> None:
    """Check a leaf's array against its declared shape, learning symbolic sizes."""
    if len(shape) != len(node.shape):
        raise ValueError(f"reference: {node.op} {node.name!r} is declared {node.type_str}, got an array of {format_type(shape, node.dtype)}")
    for declared, actual in zip(node.shape, shape):
        if isinstance(declared, str):
            known = sizes.setdefault(declared, actual)
            if known != actual:
                raise ValueError(f"reference: {node.op} {node.name!r} has {declared}={actual}, "
                                 f"but an earlier array gave {declared}={known}")
        elif declared != actual:
            raise ValueError(f"reference: {node.op} {node.name!r} is declared {node.type_str}, "
                             f"got an array of {format_type(shape, node.dtype)}")


def _fill_sizes(value: Any, sizes: Mapping[str, int]) -> Any:
    """A shape-valued attribute with its symbolic dimensions replaced by sizes."""
    if isinstance(value, tuple) and any(isinstance(item, str) for item in value):
        missing = [item for item in value if isinstance(item, str) and item not in sizes]
        if missing:
            raise ValueError(f"reference: the size of {missing[0]!r} is not given by any input array; "
                             f"pass it as sizes={{{missing[0]!r}: ...}}")
        return tuple(sizes[item] if isinstance(item, str) else item for item in value)
    return value
