"""Contractions named by subscripts: ``einsum`` and ``tensordot``, built from ``contract``.

``einsum`` sums out each index that one operand alone holds, then
contracts the operands two at a time from the left, keeping the indices
that a later operand or the result needs; its gradient comes from the
VJP rules of ``sum``, ``contract`` and ``transpose``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tapegraph.errors import ShapeError
from tapegraph.expr import Node, caller_origin
from tapegraph.ops.composites import Composite
from tapegraph.ops.linalg import CONTRACT, letter_sizes, parse_subscripts
from tapegraph.ops.reductions import SUM
from tapegraph.ops.registry import Arg, Sample, require_float
from tapegraph.ops.shape_composites import operand_nodes
from tapegraph.ops.shaping import TRANSPOSE

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _describe(nodes: Sequence[Node]) -> str:
    return ", ".join(node.type_str if node.name is None else f"{node.name}: {node.type_str}" for node in nodes)


def _sum_out(node: Node, term: str, keep: set[str]) -> tuple[Node, str]:
    """``node`` summed over the axes whose letters are not in ``keep``, and its remaining letters."""
    axes = tuple(index for index, letter in enumerate(term) if letter not in keep)
    if not axes:
        return node, term
    return SUM(node, axes), "".join(letter for letter in term if letter in keep)


def einsum(subscripts: str, *operands: Any, name: str | None = None) -> Node:
    """Einstein summation, as ``np.einsum``: ``tg.einsum("ij,jk->ik", A, B)`` is ``A @ B``.

    Subscripts name each operand's axes with letters; an index in the
    result is kept, any other is summed over. Without ``->`` the result
    holds the indices that appear once, in alphabetical order. An index
    may not repeat within one operand (no traces or diagonals), and
    ellipses are not supported. Any number of operands, contracted two at
    a time from the left.

    >>> import tapegraph as tg
    >>> x = tg.input("x", shape=("batch", 3, 4))
    >>> tg.einsum("bij,j->bi", x, tg.param("v", shape=(4,)))
    <contract f64[batch,3] at ...>
    """
    nodes = operand_nodes("einsum", operands)
    try:
        if not nodes:
            raise ValueError("needs at least one operand")
        terms, output = parse_subscripts(subscripts, len(nodes))
        letter_sizes(terms, [node.shape for node in nodes])
        require_float(*nodes)
    except ValueError as error:
        raise ShapeError(f"einsum({subscripts!r}, {_describe(nodes)}) at {caller_origin()}: {error}") from None
    # an index held by one operand alone, and not in the result: summed out first
    for position, term in enumerate(terms):
        elsewhere = set(output).union(*(other for index, other in enumerate(terms) if index != position))
        nodes[position], terms[position] = _sum_out(nodes[position], term, elsewhere)
    result, term = nodes[0], terms[0]
    for position in range(1, len(nodes)):
        needed_later = set(output).union(*terms[position + 1:])
        other, other_term = nodes[position], terms[position]
        # an index of one side that the other side and later terms lack
        result, term = _sum_out(result, term, needed_later | set(other_term))
        other, other_term = _sum_out(other, other_term, needed_later | set(term))
        if position == len(nodes) - 1:
            kept = output
        else:
            kept = "".join(dict.fromkeys(letter for letter in term + other_term if letter in needed_later))
        result, term = CONTRACT(result, other, f"{term},{other_term}->{kept}"), kept
    if term != output:
        result = TRANSPOSE(result, tuple(term.index(letter) for letter in output))
    return result.named(name) if name else result


def _axes_pair(a: Node, b: Node, axes: Any) -> tuple[list[int], list[int]]:
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, (bool, np.bool_)):
        count = int(axes)
        if not 0 <= count <= min(a.ndim, b.ndim):
            raise ValueError(f"axes={count}: cannot contract {count} axes of operands with {a.ndim} and {b.ndim} dimension(s)")
        axes = (list(range(a.ndim - count, a.ndim)), list(range(count)))
    if isinstance(axes, (list, tuple)) and len(axes) == 2:
        pairs = []
        for node, items in zip((a, b), axes):
            items = [items] if isinstance(items, (int, np.integer)) else list(items)
            for item in items:
                if not isinstance(item, (int, np.integer)) or not -node.ndim <= item < node.ndim:
                    raise ValueError(f"axis {item!r} is out of range for {node.ndim} dimension(s)")
            pairs.append([int(item) % node.ndim for item in items])
        if len(pairs[0]) != len(pairs[1]):
            raise ValueError(f"axes {axes!r} pair {len(pairs[0])} axes of a with {len(pairs[1])} of b")
        for left, right in zip(*pairs):
            if a.shape[left] != b.shape[right]:
                raise ValueError(f"axis {left} of a has size {a.shape[left]}, axis {right} of b has size {b.shape[right]}")
        return pairs[0], pairs[1]
    raise ValueError(f"axes must be a number of axes or a pair of axis lists, got {axes!r}")


def tensordot(a: Any, b: Any, axes: int | Sequence[Any] = 2, name: str | None = None) -> Node:
    """Sum products over the given axes of ``a`` and ``b``, as ``np.tensordot``.

    ``axes=N`` pairs the last N axes of a with the first N of b; a pair of
    lists pairs those axes. The result holds a's other axes, then b's.

    >>> import tapegraph as tg
    >>> tg.tensordot(tg.param("A", shape=(2, 3, 4)), tg.param("B", shape=(3, 4, 5)))
    <contract f64[2,5] at ...>
    """
    a, b = operand_nodes("tensordot", [a, b])
    try:
        left_axes, right_axes = _axes_pair(a, b, axes)
        if a.ndim + b.ndim > len(_LETTERS):
            raise ValueError(f"too many axes ({a.ndim + b.ndim})")
    except ValueError as error:
        raise ShapeError(f"tensordot({_describe([a, b])}) at {caller_origin()}: {error}") from None
    left = _LETTERS[:a.ndim]
    right = list(_LETTERS[a.ndim:a.ndim + b.ndim])
    for left_axis, right_axis in zip(left_axes, right_axes):
        right[right_axis] = left[left_axis]
    right = "".join(right)
    output = "".join(letter for index, letter in enumerate(left) if index not in left_axes) + \
        "".join(letter for index, letter in enumerate(right) if index not in right_axes)
    return einsum(f"{left},{right}->{output}", a, b, name=name)


def _einsum_call(build, nodes, static):
    return build(static["subscripts"], *nodes)


COMPOSITES: dict[str, Composite] = {composite.name: composite for composite in (
    Composite("einsum", einsum, [
        Sample([Arg((3, 4)), Arg((4, 2))], {"subscripts": "ij,jk->ik"}),
        Sample([Arg((5, 3, 4), batch=True), Arg((4,))], {"subscripts": "bij,j->bi"}),
        Sample([Arg((2, 3))], {"subscripts": "ij->ji"}),
        Sample([Arg((2, 3, 4))], {"subscripts": "ijk->j"}),
        Sample([Arg((2, 3)), Arg((3, 4)), Arg((4, 5))], {"subscripts": "ij,jk,kl->li"}),
        Sample([Arg((5, 2), batch=True), Arg((2, 3)), Arg((5, 3), batch=True)], {"subscripts": "bi,ij,bj"}),
        Sample([Arg((2, 3)), Arg((4,))], {"subscripts": "ij,k->"}),
    ], call=_einsum_call),
    Composite("tensordot", tensordot, [
        Sample([Arg((2, 3, 4)), Arg((3, 4, 2))]),
        Sample([Arg((3, 4)), Arg((4, 3))], {"axes": ([0, 1], [1, 0])}),
        Sample([Arg((2, 3)), Arg((4,))], {"axes": 0}),
        Sample([Arg((5, 3), batch=True), Arg((3, 2))], {"axes": 1}),
    ]),
)}
