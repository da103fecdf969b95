"""Reverse-mode differentiation as a graph transformation.

``grad`` walks the expression DAG from the objective back to the
parameters and builds, with each op's VJP rule, new expression nodes for
the gradients. The result is an ordinary expression, so it can be
compiled, dumped, or differentiated again (Hessian-vector products).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tapegraph.errors import GraphError
from tapegraph.expr import PARAM, Node, Structure, const, const_fill, origin_scope
from tapegraph.ops import add, cast, sum_to
from tapegraph.compile.graph import post_order


def check_objective(objective: object) -> Node:
    """Raise unless ``objective`` is a scalar floating-point node."""
    if not isinstance(objective, Node):
        raise GraphError(f"the objective must be a tapegraph node, got {type(objective).__name__}")
    if objective.shape != ():
        raise GraphError(
            f"the objective must be a scalar, but {objective.label} has shape {objective.type_str}; "
            f"reduce it with tg.sum or tg.mean (to compute it whole, make it an output: tg.compile(outputs={{...}}))")
    if np.dtype(objective.dtype).kind != "f":
        raise GraphError(f"the objective {objective.label} has integer dtype {objective.dtype}; it must be floating point")
    return objective


def check_wrt(wrt: Sequence[object]) -> list[Node]:
    """Raise unless ``wrt`` is a list of distinct ``tg.param`` nodes."""
    if isinstance(wrt, Node):
        wrt = [wrt]
    result: list[Node] = []
    seen: set[Node] = set()
    for item in wrt:
        if not isinstance(item, Node) or item.op is not PARAM:
            if isinstance(item, Node) and item.is_leaf:
                what = f"{item.op} {item.name!r} ({item.type_str})"
            elif isinstance(item, Node):
                what = f"an expression, {item.label} ({item.type_str})"
            else:
                what = f"{type(item).__name__} {item!r}"
            raise GraphError(f"wrt must list parameters made with tg.param, but got {what}")
        if item in seen:
            raise GraphError(f"wrt lists parameter {item.name!r} twice")
        seen.add(item)
        result.append(item)
    return result


def _accumulate(contributions: list[Node]) -> Node:
    # first contribution is used as it is, later ones are added: fan-out
    # (ridge's w, used twice) shows up as explicit adds in the tape
    total = contributions[0]
    for contribution in contributions[1:]:
        total = add(total, contribution)
    return total


def grad(objective: Node, wrt: Node | Sequence[Node]) -> Node | list[Node]:
    """Gradient expressions of a scalar ``objective`` with respect to ``wrt``.

    ``wrt`` is one parameter (the gradient is one node) or a list of them
    (a list of nodes, in the same order). A gradient is an expression like
    any other: an output of a program (``tg.compile(outputs={"g": g})``),
    or an objective's part (gradients of gradients). Only nodes that lie
    between a parameter and the objective get cotangents (activity
    analysis). A parameter the objective does not use gets a constant zero
    gradient.

    >>> import tapegraph as tg
    >>> x = tg.param("x", shape=(3,))
    >>> (gx,) = tg.grad(tg.sum(tg.square(x)), [x])
    >>> gx.shape
    (3,)
    >>> tg.grad(tg.sum(tg.square(x)), x).shape
    (3,)
    """
    objective = check_objective(objective)
    if isinstance(wrt, Node):
        return _gradients(objective, check_wrt([wrt]))[0]
    return _gradients(objective, check_wrt(wrt))


def _gradients(objective: Node, wrt: list[Node]) -> list[Node]:
    """The gradient of ``objective`` (checked) for each parameter of ``wrt`` (checked)."""
    order = post_order([objective])
    # activity in one sweep, operands before users: a node is active when
    # it is a parameter or reads an active node (every node of the order is
    # needed by the objective, which it was walked from); the tables are
    # keyed by node.structure, as the lowering's are (compile/graph.py)
    parameters = {parameter.structure for parameter in wrt}
    active: set[Structure] = set()
    for node in order:
        if node.structure in parameters or any(operand.structure in active for operand in node.inputs):
            active.add(node.structure)

    # the seed d(objective)/d(objective) = 1, labelled as such in dumps
    with origin_scope(f"seed of {objective.label}"):
        seed = const(np.ones((), dtype=objective.dtype))
    cotangents: dict[Structure, list[Node]] = {objective.structure: [seed]}
    for node in reversed(order):
        if node.is_leaf or node.structure not in active or node.structure not in cotangents:
            continue
        with origin_scope(f"grad of {node.label}"):
            g = _accumulate(cotangents[node.structure])
            input_grads = node.op.cotangents(g, node)
            for operand, operand_grad in zip(node.inputs, input_grads, strict=True):
                if operand_grad is None or operand.structure not in active:
                    continue
                if operand_grad.dtype != operand.dtype:
                    # a VJP rule that computed in another dtype: the cotangent
                    # keeps the operand's (explicit, so the dump shows it)
                    operand_grad = cast(operand_grad, dtype=operand.dtype)
                cotangents.setdefault(operand.structure, []).append(sum_to(operand_grad, operand.shape))

    gradients = []
    for parameter in wrt:
        with origin_scope(f"grad of {parameter.name}"):
            if parameter.structure in cotangents:
                gradients.append(_accumulate(cotangents[parameter.structure]))
            else:
                gradients.append(const_fill(parameter.shape, 0.0, parameter.dtype))
    return gradients
