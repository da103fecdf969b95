"""Algebraic simplification: the same values from fewer array operations.

Runs first in ``lower``, on the roots. One rewrite so far, for the update
of a value decayed by a multiple of itself (an SGD step with an L2
penalty, whose gradient is ``2 l2 w + ...``, seeded with the step size):

    a - (c * a + t)   becomes   (1 - c) * a - t

for a single value ``c`` (a 0-d float: a constant, or a scalar computed
from the step size feed), when the sum is used by nothing else. That is
two array operations (the multiply, the subtraction) after ``t`` where the
written form takes three (multiply, add, subtract): ``(1 - 2 eta l2) w - 2
eta r x`` for ridge regression, which is how a careful hand-written step
computes it. Rounding differs from the written form by an ulp or so.

A root named None only anchors a section (the gradients of an SGD step);
one that no named root needs after the rewrite is dropped, as its value
would be computed for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tapegraph.expr import CONST, Node, Structure, const, origin_scope
from tapegraph.ops.elementwise import ADD, MUL, SUB
from tapegraph.compile.emit import Root
from tapegraph.compile.graph import post_order


def _single_value(node: Node, dtype: str) -> Node | None:
    """``node`` if it is one floating-point number of ``dtype`` (and not a
    non-finite constant), else None."""
    if node.shape != () or node.dtype != dtype:
        return None
    if node.op is CONST and not np.isfinite(node.value.array).all():
        return None
    return node


def _decayed_update(node: Node, users: dict[Structure, int]) -> Node | None:
    """``(1 - c) * a - t`` for ``node`` = ``a - (c * a + t)`` (either order of
    the sum and of the product), else None."""
    if node.op is not SUB:
        return None
    a, total = node.inputs
    if total.op is not ADD or users.get(total.structure, 0) != 1:
        return None
    same = {(item.shape, item.dtype) for item in (node, a, total, *total.inputs)}
    if len(same) != 1 or np.dtype(node.dtype).kind != "f":
        return None
    for product, rest in (total.inputs, reversed(total.inputs)):
        if product.op is not MUL:
            continue
        first, second = product.inputs
        factor = _single_value(second, node.dtype) if first.structure is a.structure else \
            _single_value(first, node.dtype) if second.structure is a.structure else None
        if factor is None:
            continue
        with origin_scope(node.origin):
            # folded at once when the factor is a constant
            kept = SUB(const(np.array(1.0, dtype=node.dtype)), factor)
            return SUB(MUL(kept, a), rest)
    return None


def simplify(roots: Sequence[Root]) -> list[Root]:
    """The roots with each rewrite applied (see the module docstring)."""
    named = [node for name, node, _ in roots if name is not None]
    # keyed by structure, as the lowering's tables are (see tapegraph.compile.graph)
    users: dict[Structure, int] = {}
    for node in post_order(named):
        for operand in {operand.structure for operand in node.inputs}:
            users[operand] = users.get(operand, 0) + 1
    for node in named:  # a result is a use too
        users[node.structure] = users.get(node.structure, 0) + 1
    rewritten = []
    changed = False
    for name, node, section in roots:
        simpler = _decayed_update(node, users) if name is not None else None
        if simpler is not None:
            node, changed = simpler, True
        rewritten.append((name, node, section))
    if not changed:
        return rewritten
    needed = {node.structure for node in post_order(node for name, node, _ in rewritten if name is not None)}
    return [root for root in rewritten if root[0] is not None or root[1].structure in needed]
