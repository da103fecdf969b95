"""Comparisons, ``where`` and ``stop_gradient``: the ops through which no gradient flows.

A comparison (``tg.less(a, b)``, or ``a < b`` on nodes) gives a boolean
node, elementwise with numpy broadcasting; it is piecewise constant, so its
VJP gives no cotangent to either operand. ``where(cond, a, b)`` picks from
``a`` where the boolean ``cond`` holds and from ``b`` elsewhere; the
gradient goes to the branch that was picked.

``==`` and ``!=`` on nodes are comparisons too: ``a == b``, ``x == 0.5``
and ``0.5 == x`` build ``tg.equal`` nodes (``!=``, ``tg.not_equal``). A
node made by ``==`` or ``!=`` between two nodes also carries whether they
are the same expression, its ``bool()`` (``Node.structural_truth``), so
``if a == b``, ``a in nodes`` and every dict and set keyed by nodes keep
asking "the same structure?" as they always have, in O(1). Where
``tg.equal`` refuses two nodes (shapes that do not broadcast, dtypes it
cannot compare), ``==`` gives that answer alone, a plain ``bool``: the
operands of a lookup or an ``in`` test may have any types, and must not
raise. ``compare_expression`` below is that rule (``Node.__eq__`` calls it).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from tapegraph.errors import ShapeError
from tapegraph.expr import CONST, ConstValue, Node, caller_origin
from tapegraph.ops.registry import Arg, Op, Sample, fold, register, result_dtype
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


_EXPRESSION_TRUTH = """

    Between two nodes, the truth of ``a {symbol} b`` (``bool()``, ``if``,
    ``in``, dict keys) is whether they are {negation}the same expression;
    that of any other such node raises, as it is known only when the
    program runs."""


def _comparison(name: str, ufunc: np.ufunc, symbol: str) -> Op:
    """The record of one comparison: ``a <symbol> b``, elementwise, giving booleans."""
    truth = _EXPRESSION_TRUTH.format(symbol=symbol, negation="not " if symbol == "!=" else "") \
        if symbol in ("==", "!=") else ""
    return register(Op(
        name=name, operands=("a", "b"), shape_rule=_comparison_rule, kernel=ufunc, elementwise=True,
        native=f"{{0}} {symbol} {{1}}", vjp=_no_gradient, samples=_COMPARISON_SAMPLES,
        doc=f"""Elementwise ``a {symbol} b`` with broadcasting, a boolean node; no gradient flows through it.

    Use it as the condition of ``tg.where``.{truth}
    """,
    ))


LESS = _comparison("less", np.less, "<")
LESS_EQUAL = _comparison("less_equal", np.less_equal, "<=")
GREATER = _comparison("greater", np.greater, ">")
GREATER_EQUAL = _comparison("greater_equal", np.greater_equal, ">=")
EQUAL = _comparison("equal", np.equal, "==")
NOT_EQUAL = _comparison("not_equal", np.not_equal, "!=")


def compare_expression(node: Node, other: Any, negated: bool) -> Node | bool:
    """``node == other`` (``node != other`` if ``negated``), as ``Node.__eq__`` and ``__ne__`` give it.

    With a number or an array: the elementwise comparison ``tg.equal(node,
    other)`` (``tg.not_equal``), whose errors are the op's. With another
    node: the same comparison, marked with whether the two are (for
    ``!=``: are not) the same expression, which is its ``bool()``; where
    the op refuses the two nodes, that answer alone, a plain ``bool``.
    With anything else (None, a string, a tuple of nodes):
    ``NotImplemented``, so Python's own ``==`` (identity) answers, False.
    """
    op = NOT_EQUAL if negated else EQUAL
    if isinstance(other, Node):
        same = node.structure is other.structure
        if same:
            return _compare_with_itself(op, node, other, not negated)
        try:
            compared = op(node, other)
        except ShapeError:  # shapes or dtypes that cannot meet: certainly two expressions
            return negated
        return attrs.evolve(compared, structural_truth=negated)
    value = _comparable_value(other)
    if value is None:
        return NotImplemented
    return op(node, value)


def _compare_with_itself(op: Op, a: Node, b: Node, truth: bool) -> Node | bool:
    """``op(a, b)`` for two nodes of one structure, marked with ``truth``.

    Every collision in a dict or set keyed by nodes (equal structures built
    apart) lands here, so this builds the node that ``apply`` would, the
    same structure, without its checks, which one shared type settles: no
    promotion, the shape is the operands'. A constant is folded, as
    ``apply`` folds it.
    """
    if np.dtype(a.dtype).kind not in "biuf":
        return truth  # tg.equal would refuse it
    origin = caller_origin()
    if a.op is CONST:
        if a.value.fill is not None:  # as fold computes a fill, without binding a kernel
            value = ConstValue.full(a.shape, op.kernel(a.value.fill, b.value.fill), "bool")
        else:
            value = fold(op, (a.value, b.value), a.shape, "bool", {})
        return Node(CONST, (), (), a.shape, "bool", value=value, origin=origin, structural_truth=truth)
    return Node(op, (a, b), (), a.shape, "bool", origin=origin, structural_truth=truth)


def _comparable_value(other: Any) -> Any:
    """``other`` if ``node == other`` compares it elementwise (a number, an array,
    a list or tuple of numbers), else None."""
    if isinstance(other, np.bool_):
        return bool(other)  # which tg.const takes, as it does not take numpy's boolean scalar
    if isinstance(other, (bool, int, float, complex, np.number, np.ndarray)):
        return other
    if isinstance(other, (list, tuple)):
        try:
            array = np.asarray(other)
        except (TypeError, ValueError):  # ragged, or holding nodes
            return None
        return array if array.dtype.kind in "biufc" else None
    return None


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
    if a.structure is b.structure:
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
