"""Comparisons, ``where`` and ``stop_gradient``: the ops through which no gradient flows.

A comparison (``tg.less(a, b)``, or ``a < b`` on nodes) gives a boolean
node, elementwise with numpy broadcasting; it is piecewise constant, so its
VJP gives no cotangent to either operand. ``where(cond, a, b)`` picks from
``a`` where the boolean ``cond`` holds and from ``b`` elsewhere; the
gradient goes to the branch that was picked.

Why ``==`` on nodes is not ``tg.equal``: ``a == b`` on two nodes is their
structural equality, which hash-consing, dicts keyed by nodes and common
subexpression merging rely on (``Node`` in ``tapegraph/expr.py``), so it
stays a plain ``bool``. The elementwise equality of values is
``tg.equal(a, b)`` (and ``tg.not_equal``); ``node == 0.5`` raises a
``TypeError`` that says so, rather than giving a silent ``False``.
``<``, ``<=``, ``>`` and ``>=`` have no other meaning on nodes, so they
build comparisons.
"""

from __future__ import annotations

import numpy as np

from tapegraph.expr import Node
from tapegraph.ops.registry import Arg, Op, Sample, register, result_dtype
from tapegraph.shapes import broadcast


def _comparison_rule(a: Node, b: Node) -> tuple[tuple, str]:
    for node in (a, b):
        if np.dtype(node.dtype).kind not in "biuf":
            raise ValueError(f"cannot compare values of dtype {node.dtype}")
    return broadcast(a.shape, b.shape), "bool"


def _no_gradient(g: Node, ans: Node, a: Node, b: Node) -> tuple[None, None]:
    return (None, None)


_COMPARISON_SAMPLES = (
    Sample([Arg((5,)), Arg((5,))]),
    Sample([Arg((4, 3), batch=True), Arg((3,))]),
    Sample([Arg(()), Arg((2, 3))]),
    # small integers, so that ties occur
    Sample([Arg((6,), dtype="int64", low=0, high=3), Arg((6,), dtype="int64", low=0, high=3)]),
)


def _comparison(name: str, ufunc: np.ufunc, symbol: str) -> Op:
    """The record of one comparison: ``a <symbol> b``, elementwise, giving booleans."""
    return register(Op(
        name=name, operands=("a", "b"), shape_rule=_comparison_rule, kernel=ufunc, elementwise=True,
        native=f"{{0}} {symbol} {{1}}", vjp=_no_gradient, samples=_COMPARISON_SAMPLES,
        doc=f"""Elementwise ``a {symbol} b`` with broadcasting, a boolean node; no gradient flows through it.

    Use it as the condition of ``tg.where``.
    """,
    ))


LESS = _comparison("less", np.less, "<")
LESS_EQUAL = _comparison("less_equal", np.less_equal, "<=")
GREATER = _comparison("greater", np.greater, ">")
GREATER_EQUAL = _comparison("greater_equal", np.greater_equal, ">=")
EQUAL = _comparison("equal", np.equal, "==")
NOT_EQUAL = _comparison("not_equal", np.not_equal, "!=")


def _where_rule(cond: Node, a: Node, b: Node) -> tuple[tuple, str]:
    if cond.dtype != "bool":
        what = f"{cond.name!r} " if cond.name else ""
        raise ValueError(f"the condition {what}has dtype {cond.dtype}; it must be boolean, such as x > 0 "
                         "or tg.equal(a, b)")
    return broadcast(cond.shape, a.shape, b.shape), result_dtype(a, b)


def _where_kernel(cond: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, b)
    np.copyto(out, a, where=cond)


def _where_vjp(g: Node, ans: Node, cond: Node, a: Node, b: Node) -> tuple[None, Node, Node]:
    return (None, WHERE(cond, g, 0.0), WHERE(cond, 0.0, g))


def _drop_settled_where(node: Node) -> Node:
    # where(c, x, x) is x; a constant condition of one value picks a branch
    cond, a, b = node.inputs
    for branch in (a, b):
        if branch.shape != node.shape or branch.dtype != node.dtype:
            return node
    if a == b:
        return a
    if cond.value is not None and cond.value.fill is not None:
        return a if bool(cond.value.fill) else b
    return node


_CONDITION = Arg((5,), dtype="bool")

WHERE = register(Op(
    name="where", operands=("cond", "a", "b"), shape_rule=_where_rule, kernel=_where_kernel,
    source="np.copyto({out}, {2})\nnp.copyto({out}, {1}, where={0})", rewrite=_drop_settled_where,
    native="{1} if {0} else {2}", vjp=_where_vjp,
    samples=(
        Sample([_CONDITION, Arg((5,)), Arg((5,))]),
        Sample([Arg((4, 3), dtype="bool", batch=True), Arg((4, 3), batch=True), Arg((3,))]),
        Sample([Arg((2, 3), dtype="bool"), Arg(()), Arg((2, 3))]),
        Sample([Arg((), dtype="bool"), Arg((3,)), Arg((3,))]),
    ),
    doc="""``a`` where the boolean ``cond`` holds, ``b`` elsewhere, with broadcasting.

    The gradient goes to the branch that was picked: ``g`` where ``cond``
    holds for ``a``, and elsewhere for ``b``; none to ``cond``. Both
    branches are computed everywhere, so a branch that is not finite where
    it is not picked (``tg.log(x)`` for ``x <= 0``) gives a NaN gradient
    there (``0 * inf``): guard its operand instead, as in
    ``tg.log(tg.where(x > 0, x, 1.0))``.

    >>> import tapegraph as tg
    >>> x = tg.input("x", shape=(3,))
    >>> tg.where(x > 0, x, 0.1 * x)
    <where f64[3] at ...>
    """,
))


def _stop_gradient_kernel(x: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, x)


STOP_GRADIENT = register(Op(
    name="stop_gradient", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype), kernel=_stop_gradient_kernel,
    elementwise=True, source="np.copyto({out}, {0})", scalar="{0}", native="{0}",
    vjp=lambda g, ans, x: (None,),
    samples=(Sample([Arg((5,))]), Sample([Arg((4, 3), batch=True)]), Sample([Arg(())])),
    doc="""``x`` itself, as a value through which no gradient flows (d/dx is taken to be 0).

    For targets computed from the parameters (a moving target, a detached
    baseline): ``tg.square(pred - tg.stop_gradient(target))``.
    """,
))
