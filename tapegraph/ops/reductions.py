"""Reductions and their transposes: sum, mean, max, min, prod, var, std, cumsum, expand, sum_to, broadcast_to.

``logsumexp``, the softmax's log-normaliser, is declared with the softmax
family in ``softmax.py``.

``sum_to`` is the one place broadcasting is undone: the differentiation
pass applies it to any cotangent whose shape differs from its input's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from tapegraph.expr import Node
from tapegraph.ops.elementwise import ADD, DIV, MUL, SIGN, SQUARE, SUB
from tapegraph.ops.native import Groups, NativeContext, count, entry
from tapegraph.ops.registry import REQUIRED, Arg, Op, Sample, Scratch, normalize_axis, register, result_dtype
from tapegraph.shapes import Shape, as_shape, broadcast, format_shape


def _count(shape: tuple[int, ...], axes: Any = None) -> int:
    """The number of entries of ``shape`` (along ``axes`` only, when given)."""
    return int(np.prod([shape[axis] for axis in (range(len(shape)) if axes is None else axes)], dtype=np.int64))


# The fill rules: the one number of a result whose operands are fills
# (``Op.fill``), so folding never materialises a large constant.

def _sum_fill(x, in_shapes, out_shape, axis, keepdims):
    return x * _count(in_shapes[0], axis)


def _mean_fill(x, in_shapes, out_shape, axis, keepdims):
    return x


def _sum_squares_fill(x, in_shapes, out_shape):
    return x * x * _count(in_shapes[0])


def _expand_fill(g, in_shapes, out_shape, shape, axis, keepdims, mean):
    count = _count(out_shape, axis)
    return g * (1.0 / count) if mean and count else g


def _sum_to_fill(x, in_shapes, out_shape, shape):
    return x * (_count(in_shapes[0]) // max(_count(out_shape), 1))


def _broadcast_to_fill(x, in_shapes, out_shape, shape):
    return x


def _accumulate(ctx: NativeContext, x: str, x_shape, target: callable, scale: float | None = None) -> str:
    """Native statements summing ``x`` into ``ctx.out``, entry ``index`` of x
    going to ``target(index names)`` of the output (names for kept axes);
    each sum times ``scale`` when given."""
    names = ctx.indices(len(x_shape))
    if not ctx.out_shape:
        total = ctx.temp("total")
        lines = [f"{total} = {ctx.literal(0.0)}",
                 ctx.loops(x_shape, [f"{total} += {entry(x, x_shape, names)}"], names)]
        lines.append(f"{ctx.out} = {total}" + (f" * {ctx.literal(scale)}" if scale is not None else ""))
        return "\n".join(lines)
    out_names = ctx.indices(len(ctx.out_shape))
    lines = [ctx.loops(ctx.out_shape, [f"{ctx.store(out_names)} = {ctx.literal(0.0)}"], out_names),
             ctx.loops(x_shape, [f"{ctx.out}[{', '.join(target(names))}] += {entry(x, x_shape, names)}"], names)]
    if scale is not None:
        lines.append(ctx.loops(ctx.out_shape, [f"{ctx.store(out_names)} *= {ctx.literal(scale)}"], out_names))
    return "\n".join(lines)


def _reduce_target(axes, keepdims):
    def target(names):
        if keepdims:
            return ["0" if axis in axes else name for axis, name in enumerate(names)]
        return [name for axis, name in enumerate(names) if axis not in axes]
    return target


def _sum_native(ctx: NativeContext) -> str:
    return _accumulate(ctx, ctx.operands[0], ctx.in_shapes[0], _reduce_target(ctx["axis"], ctx["keepdims"]))


def _mean_native(ctx: NativeContext) -> str:
    return _accumulate(ctx, ctx.operands[0], ctx.in_shapes[0], _reduce_target(ctx["axis"], ctx["keepdims"]),
                       ctx["scale"])


def _sum_squares_native(ctx: NativeContext) -> str:
    (x,) = ctx.operands
    size = count(ctx.in_shapes[0])
    if size >= 16:  # numpy's np.vdot: BLAS, and its rounding
        flat = f"{x}.reshape(({size},))" if len(ctx.in_shapes[0]) != 1 else x
        return f"{ctx.out} = np.dot({flat}, {flat})"
    names = ctx.indices(len(ctx.in_shapes[0]))
    total = ctx.temp("total")
    value = entry(x, ctx.in_shapes[0], names)
    return "\n".join([f"{total} = {ctx.literal(0.0)}",
                      ctx.loops(ctx.in_shapes[0], [f"{total} += {value} * {value}"], names),
                      f"{ctx.out} = {total}"])


def _expand_native(ctx: NativeContext) -> str:
    (g,) = ctx.operands
    names = ctx.indices(len(ctx.out_shape))
    axes, keepdims = ctx["axis"], ctx["keepdims"]
    kept = _reduce_target(axes, keepdims)(names)
    value = f"{g}[{', '.join(kept)}]" if ctx.in_shapes[0] else g
    if ctx["mean"]:
        value = f"{value} * {ctx.literal(ctx['scale'])}"
    return ctx.loops(ctx.out_shape, [f"{ctx.store(names)} = {value}"], names)


def _sum_to_native(ctx: NativeContext) -> str:
    (x_shape,) = ctx.in_shapes
    lead = len(x_shape) - len(ctx.out_shape)

    def target(names):
        return ["0" if dim == 1 else name for dim, name in zip(ctx.out_shape, names[lead:])]
    return _accumulate(ctx, ctx.operands[0], x_shape, target)


def _reduced_shape(shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(1 if axis in axes else dim for axis, dim in enumerate(shape))
    return tuple(dim for axis, dim in enumerate(shape) if axis not in axes)


def _reduce_rule(x: Node, axis: tuple[int, ...], keepdims: bool) -> tuple[Shape, str]:
    return _reduced_shape(x.shape, axis, keepdims), result_dtype(x)


def _sum_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> None:
    np.add.reduce(x, axis=axis, keepdims=keepdims, out=out)




def _mean_specialize(in_shapes, out_shape, axis, keepdims) -> dict[str, Any]:
    count = int(np.prod([in_shapes[0][index] for index in axis], dtype=np.int64))
    return {"scale": 1.0 / count if count else float("nan")}


def _mean_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool, scale: float) -> None:
    np.add.reduce(x, axis=axis, keepdims=keepdims, out=out)
    np.multiply(out, scale, out=out)


def _sum_squares_rule(x: Node) -> tuple[Shape, str]:
    return (), result_dtype(x)


def _sum_squares_kernel(x: np.ndarray, out: np.ndarray, vector: bool = False) -> None:
    out[()] = x.dot(x) if vector else np.vdot(x, x)


def _sum_squares_specialize(in_shapes, out_shape) -> dict[str, bool]:
    """``vector``: ``x`` has one axis, where ``x.dot(x)`` is ``np.vdot(x, x)``
    (the same BLAS dot product) without np.vdot's look for
    ``__array_function__`` overrides, 0.13 us a call."""
    return {"vector": True} if len(in_shapes[0]) == 1 else {}


def _sum_squares_source(vector: bool = False) -> str:
    return "{out}[()] = {0}.dot({0})" if vector else "{out}[()] = np.vdot({0}, {0})"


def _sum_squares_scalar(vector: bool = False) -> str:
    return "{0}.dot({0})" if vector else "np.vdot({0}, {0})"


def _expand_rule(g: Node, shape: Shape, axis: tuple[int, ...], keepdims: bool, mean: bool) -> tuple[Shape, str]:
    expected = _reduced_shape(shape, axis, keepdims)
    if g.shape != expected:
        raise ValueError(f"expanding to {format_shape(shape)} over axes {axis} needs an operand of shape {format_shape(expected)}")
    return tuple(shape), result_dtype(g)


def _expand_specialize(in_shapes, out_shape, shape, axis, keepdims, mean) -> dict[str, Any]:
    view_shape = tuple(1 if index in axis else dim for index, dim in enumerate(out_shape))
    count = int(np.prod([out_shape[index] for index in axis], dtype=np.int64))
    return {"view_shape": view_shape, "scale": 1.0 / count if mean and count else 1.0}


def _expand_source(shape, axis, keepdims, mean, view_shape, scale) -> str:
    # g broadcasts against out as it is when the reduced axes were kept or
    # lead; otherwise it needs the size-1 axes put back
    aligned = keepdims or tuple(axis) == tuple(range(len(axis)))
    g = "{0}" if aligned else "{0}.reshape(%r)" % (view_shape,)
    if mean:
        return "np.multiply(%s, %r, out={out})" % (g, scale)
    return "np.copyto({out}, %s)" % g


def _expand_kernel(g: np.ndarray, out: np.ndarray, shape, axis, keepdims, mean, view_shape, scale) -> None:
    np.copyto(out, g.reshape(view_shape))
    if mean:
        np.multiply(out, scale, out=out)


def _sum_to_rule(x: Node, shape: Shape) -> tuple[Shape, str]:
    try:
        together = broadcast(x.shape, shape)
    except ValueError:
        together = None
    if together != x.shape:
        raise ValueError(f"cannot sum {format_shape(x.shape)} down to {format_shape(shape)}")
    return tuple(shape), result_dtype(x)


def _sum_to_specialize(in_shapes, out_shape, shape) -> dict[str, Any]:
    (x_shape,) = in_shapes
    lead = len(x_shape) - len(out_shape)
    kept = tuple(lead + index for index, dim in enumerate(out_shape) if dim == 1 and x_shape[lead + index] != 1)
    axes = tuple(range(lead)) + kept
    # keepdims for the size-1 target axes, so sum into a view of out that
    # also has the leading axes, as size 1
    view_shape = (1,) * lead + tuple(out_shape) if kept else None
    return {"axes": axes, "view_shape": view_shape}


def _sum_to_source(shape, axes, view_shape) -> str:
    if view_shape is None:
        return "np.add.reduce({0}, axis=%r, out={out})" % (axes,)
    return "np.add.reduce({0}, axis=%r, keepdims=True, out={out}.reshape(%r))" % (axes, view_shape)


def _sum_to_kernel(x: np.ndarray, out: np.ndarray, shape, axes, view_shape) -> None:
    if view_shape is None:
        np.add.reduce(x, axis=axes, out=out)
    else:
        np.add.reduce(x, axis=axes, keepdims=True, out=out.reshape(view_shape))


def _broadcast_to_rule(x: Node, shape: Shape) -> tuple[Shape, str]:
    if broadcast(x.shape, shape) != tuple(shape):
        raise ValueError(f"cannot broadcast {format_shape(x.shape)} to {format_shape(shape)}")
    return tuple(shape), result_dtype(x)


def _broadcast_to_kernel(x: np.ndarray, out: np.ndarray, shape) -> None:
    np.copyto(out, x)


def _reduce_attributes(x: Node, axis: Any, keepdims: Any) -> dict[str, Any]:
    return {"axis": normalize_axis(axis, x.ndim), "keepdims": bool(keepdims)}


def _drop_empty_reduction(node: Node) -> Node:
    # reducing over no axis (a scalar's sum) is the value itself
    (x,) = node.inputs
    if not node.attr("axis") and _same_type(x, node):
        return x
    return node


def _same_type(node: Node, like: Node) -> bool:
    return node.shape == like.shape and node.dtype == like.dtype


def _shape_attribute(x: Node, shape: Any) -> dict[str, Any]:
    # as_shape refuses a string (one dimension per character) with a hint
    return {"shape": as_shape(shape)}


def _drop_same_shape(node: Node) -> Node:
    # summing or broadcasting to the shape a value has is the value
    (x,) = node.inputs
    return x if _same_type(x, node) else node


def _square_of_scalar(node: Node) -> Node:
    (x,) = node.inputs
    return SQUARE(x) if x.ndim == 0 else node  # the same value, and Python can square a float


_REDUCE = {"axis": None, "keepdims": False}

_REDUCE_SAMPLES = (
    Sample([Arg((5,))], {"axis": (0,), "keepdims": False}),
    Sample([Arg((4, 3), batch=True)], {"axis": (0,), "keepdims": False}),
    Sample([Arg((4, 3), batch=True)], {"axis": (1,), "keepdims": True}),
    Sample([Arg((2, 3, 2))], {"axis": (0, 2), "keepdims": False}),
)

SUM = register(Op(
    name="sum", operands=("x",), attributes=_REDUCE, normalize=_reduce_attributes, rewrite=_drop_empty_reduction,
    shape_rule=_reduce_rule, kernel=_sum_kernel, fill=_sum_fill,
    # ufunc.reduce called directly skips np.sum's Python-level dispatch
    source="np.add.reduce({0}, axis={axis}, keepdims={keepdims}, out={out})",
    scalar="np.add.reduce({0}, axis=None)", native=_sum_native,
    vjp=lambda g, ans, x, axis, keepdims: (EXPAND(g, x.shape, axis, keepdims),),
    samples=_REDUCE_SAMPLES,
    doc="""Sum of the entries of ``x`` over ``axis`` (all of them by default).

    The VJP spreads g back over the reduced axes.

    >>> import tapegraph as tg
    >>> tg.sum(tg.input("x", shape=("batch", 3)), axis=0)
    <sum f64[3] at ...>
    """,
))

MEAN = register(Op(
    name="mean", operands=("x",), attributes=_REDUCE, normalize=_reduce_attributes, rewrite=_drop_empty_reduction,
    shape_rule=_reduce_rule, kernel=_mean_kernel, specialize=_mean_specialize, fill=_mean_fill,
    source="np.add.reduce({0}, axis={axis}, keepdims={keepdims}, out={out})\nnp.multiply({out}, {scale}, out={out})",
    scalar="np.add.reduce({0}, axis=None) * {scale}", native=_mean_native,
    vjp=lambda g, ans, x, axis, keepdims: (EXPAND(g, x.shape, axis, keepdims, mean=True),),
    samples=_REDUCE_SAMPLES,
    doc="""Mean of the entries of ``x`` over ``axis`` (all of them by default).

    The count may be a symbolic batch size; it is taken when called. The
    VJP spreads g / count back over the reduced axes.
    """,
))

SUM_SQUARES = register(Op(
    name="sum_squares", operands=("x",), shape_rule=_sum_squares_rule, kernel=_sum_squares_kernel,
    rewrite=_square_of_scalar, fill=_sum_squares_fill,
    # one BLAS dot product instead of square then sum: the homework's L2
    # penalty and squared distance, measured about 1 us faster per step
    specialize=_sum_squares_specialize, source=_sum_squares_source,
    scalar=_sum_squares_scalar, native=_sum_squares_native,
    vjp=lambda g, ans, x: (MUL(MUL(g, 2.0), x),),
    samples=(Sample([Arg((5,))]), Sample([Arg((4, 3), batch=True)]), Sample([Arg(())])),
    doc="""The sum of the squares of every entry of ``x``: ``||x||^2``; d/dx = 2x.

    >>> import tapegraph as tg
    >>> tg.sum_squares(tg.param("w", shape=(400,)))
    <sum_squares f64[] at ...>
    """,
))


def _expand_attributes(g: Node, shape: Any, axis: Any, keepdims: Any, mean: Any) -> dict[str, Any]:
    return {"shape": tuple(shape), "axis": tuple(axis), "keepdims": bool(keepdims), "mean": bool(mean)}


EXPAND = register(Op(
    name="expand", operands=("g",), public=False,
    attributes={"shape": REQUIRED, "axis": REQUIRED, "keepdims": REQUIRED, "mean": False},
    normalize=_expand_attributes, shape_rule=_expand_rule, kernel=_expand_kernel,
    specialize=_expand_specialize, source=_expand_source, fill=_expand_fill, native=_expand_native,
    vjp=lambda g, ans, x, shape, axis, keepdims, mean: ((MEAN if mean else SUM)(g, axis, keepdims),),
    samples=(
        Sample([Arg((3,))], {"shape": (4, 3), "axis": (0,), "keepdims": False, "mean": False}),
        Sample([Arg((4, 1))], {"shape": (4, 3), "axis": (1,), "keepdims": True, "mean": True}),
        Sample([Arg(())], {"shape": (2, 3), "axis": (0, 1), "keepdims": False, "mean": True}),
    ),
    doc="""Copy ``g`` along ``axis`` up to ``shape`` (dividing by the count if ``mean``).

    The transpose of sum (or of mean, scaled by 1/count).
    """,
))

SUM_TO = register(Op(
    name="sum_to", operands=("x",), attributes={"shape": REQUIRED}, normalize=_shape_attribute, public=False,
    rewrite=_drop_same_shape, shape_rule=_sum_to_rule, kernel=_sum_to_kernel,
    specialize=_sum_to_specialize, source=_sum_to_source, fill=_sum_to_fill, native=_sum_to_native,
    vjp=lambda g, ans, x, shape: (BROADCAST_TO(g, x.shape),),
    samples=(
        Sample([Arg((4, 3))], {"shape": (3,)}),
        Sample([Arg((4, 3))], {"shape": (4, 1)}),
        Sample([Arg((2, 4, 3))], {"shape": (1, 3)}),
        Sample([Arg((4, 3))], {"shape": ()}),
    ),
    doc="""Sum ``x`` down to ``shape``, undoing numpy broadcasting; no-op if equal.

    The transpose of broadcast_to.
    """,
))

BROADCAST_TO = register(Op(
    name="broadcast_to", operands=("x",), attributes={"shape": REQUIRED}, normalize=_shape_attribute,
    rewrite=_drop_same_shape, shape_rule=_broadcast_to_rule, kernel=_broadcast_to_kernel,
    fill=_broadcast_to_fill,
    source="np.copyto({out}, {0})", native="{0}",
    # the differentiation pass sums g back to x's shape by itself
    vjp=lambda g, ans, x, shape: (g,),
    samples=(Sample([Arg((3,))], {"shape": (4, 3)}), Sample([Arg(())], {"shape": (2,)})),
    doc="Broadcast ``x`` to ``shape`` (a copy, as numpy's rules allow).",
))


# More reductions: max, min, prod, logsumexp, var, std, and cumsum. Each
# takes ``axis`` (an int or a tuple, negative counting from the end; None:
# every axis) and ``keepdims`` as sum does; cumsum takes one axis.

def _nonempty_reduce_rule(x: Node, axis: tuple[int, ...], keepdims: bool) -> tuple[Shape, str]:
    # max, min and logsumexp of no entries have no value (numpy refuses them too)
    empty = [index for index in axis if x.shape[index] == 0]
    if empty:
        raise ValueError(f"axis {empty[0]} has no entries, and a reduction over none has no value")
    return _reduce_rule(x, axis, keepdims)


def _max_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> None:
    np.maximum.reduce(x, axis=axis, keepdims=keepdims, out=out)


def _min_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> None:
    np.minimum.reduce(x, axis=axis, keepdims=keepdims, out=out)


def _kept_workspace(in_shapes, out_shape, dtype, axis, **static) -> dict[str, Scratch]:
    # one number per group, its reduced axes kept as size 1
    return {"group": Scratch(_reduced_shape(in_shapes[0], axis, True), dtype)}


def _tie_share_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], smallest: bool,
                      group: np.ndarray) -> None:
    chooser = np.minimum if smallest else np.maximum
    chooser.reduce(x, axis=axis, keepdims=True, out=group)
    np.equal(x, group, out=out)
    np.add.reduce(out, axis=axis, keepdims=True, out=group)
    # a NaN among the entries makes no entry equal: 0 / 0, the gradient is NaN as the value is
    with np.errstate(invalid="ignore"):
        np.divide(out, group, out=out)


def _chooser_vjp(smallest: bool) -> Callable[..., tuple[Node]]:
    def vjp(g: Node, ans: Node, x: Node, axis: tuple[int, ...], keepdims: bool) -> tuple[Node]:
        # the cotangent goes to the entries equal to the result, shared
        # equally between ties: a subgradient, symmetric in the tied entries
        return (MUL(EXPAND(g, x.shape, axis, keepdims), TIE_SHARE(x, axis, smallest)),)
    return vjp


def _prod_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> None:
    np.multiply.reduce(x, axis=axis, keepdims=keepdims, out=out)


def _moved_last(array: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """A view of ``array`` with the axes of ``axis`` moved to the end, in order."""
    return np.moveaxis(array, axis, tuple(range(array.ndim - len(axis), array.ndim)))


def _prod_others_workspace(in_shapes, out_shape, dtype, axis) -> dict[str, Scratch]:
    # each group's entries in one row: the other axes, then the group's axes merged
    grouped = tuple(dim for index, dim in enumerate(out_shape) if index not in axis)
    grouped += (_count(out_shape, axis),)
    return {name: Scratch(grouped, dtype) for name in ("flat", "before", "after")}


def _prod_others_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], flat: np.ndarray,
                        before: np.ndarray, after: np.ndarray) -> None:
    # the product of the entries before each one times those after it: no
    # division, so an entry's partner of a zero gets the exact product
    moved = _moved_last(x, axis)
    np.copyto(flat.reshape(moved.shape), moved)
    size = flat.shape[-1]
    if size:
        before[..., 0] = 1.0
        after[..., size - 1] = 1.0
    if size > 1:
        np.multiply.accumulate(flat[..., :-1], axis=-1, out=before[..., 1:])
        np.multiply.accumulate(flat[..., :0:-1], axis=-1, out=after[..., -2::-1])
    np.multiply(before, after, out=before)
    np.copyto(_moved_last(out, axis), before.reshape(moved.shape))


def _prod_others_vjp(g: Node, ans: Node, x: Node, axis: tuple[int, ...]):
    # d(others_i)/dx_k = prod over j not i, k, for k != i: sum_i g_i of it
    # is others_k * (sum_i g_i / x_i - g_k / x_k) (NaN where an entry is 0)
    over_x = DIV(g, x)
    return (MUL(ans, SUB(SUM(over_x, axis=axis, keepdims=True), over_x)),)


def _spread_attributes(x: Node, axis: Any, keepdims: Any, ddof: Any) -> dict[str, Any]:
    static = _reduce_attributes(x, axis, keepdims)
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise TypeError(f"ddof must be a non-negative int (the count is divided by count - ddof), got {ddof!r}")
    sizes = [x.shape[index] for index in static["axis"]]
    if ddof and all(isinstance(size, int) for size in sizes) and ddof >= _count(tuple(sizes)):
        raise ValueError(f"ddof={ddof} leaves no degrees of freedom: each group over axis {static['axis']} has "
                         f"{_count(tuple(sizes))} entries")
    return {**static, "ddof": int(ddof)}


def _spread_rule(x: Node, axis: tuple[int, ...], keepdims: bool, ddof: int) -> tuple[Shape, str]:
    return _reduce_rule(x, axis, keepdims)


def _spread_specialize(in_shapes, out_shape, axis, keepdims, ddof) -> dict[str, Any]:
    # scale: 1/count, for the mean; spread: 1/(count - ddof), for the sum of
    # squared deviations (inf with no degree of freedom left, as numpy's
    # division by zero gives for a batch too small; nan for no entries)
    count = _count(in_shapes[0], axis)
    if not count:
        return {"scale": float("nan"), "spread": float("nan")}
    return {"scale": 1.0 / count, "spread": 1.0 / (count - ddof) if count > ddof else float("inf")}


def _spread_workspace(in_shapes, out_shape, dtype, axis, keepdims, ddof) -> dict[str, Scratch]:
    scratch = _kept_workspace(in_shapes, out_shape, dtype, axis)
    scratch["deviations"] = Scratch(in_shapes[0], dtype)
    return scratch


def _var_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool, ddof: int, scale: float,
                spread: float, group: np.ndarray, deviations: np.ndarray) -> None:
    # two passes: the mean, then the sum of squared deviations over count -
    # ddof (no cancellation of E[x^2] - E[x]^2)
    np.add.reduce(x, axis=axis, keepdims=True, out=group)
    np.multiply(group, scale, out=group)
    np.subtract(x, group, out=deviations)
    np.square(deviations, out=deviations)
    np.add.reduce(deviations, axis=axis, keepdims=keepdims, out=out)
    if spread == math.inf:  # a batch too small for ddof: as numpy, inf (nan for 0 / 0), and a warning
        warnings.warn(f"var/std with ddof={ddof}: a group of {round(1 / scale)} entries has no degree of freedom "
                      "left, so the result is inf (nan where its entries are equal)", RuntimeWarning, stacklevel=2)
        with np.errstate(invalid="ignore"):
            np.multiply(out, spread, out=out)
        return
    np.multiply(out, spread, out=out)


def _std_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool, ddof: int, scale: float,
                spread: float, group: np.ndarray, deviations: np.ndarray) -> None:
    _var_kernel(x, out, axis, keepdims, ddof, scale, spread, group, deviations)
    np.sqrt(out, out=out)


def _deviations(x: Node, axis: tuple[int, ...]) -> Node:
    return SUB(x, MEAN(x, axis, keepdims=True))


def _degrees_ratio(x: Node, axis: tuple[int, ...], keepdims: bool, ddof: int) -> float | Node:
    """count / (count - ddof) for each group: what turns var's 1/count gradient into 1/(count - ddof).

    A number when the groups' size is known at declaration; else computed
    in the graph from the count of a ones array of x's shape (a batch axis).
    """
    sizes = [x.shape[index] for index in axis]
    if all(isinstance(size, int) for size in sizes):
        count = _count(tuple(sizes))
        return count / (count - ddof)
    count = SUM(EXPAND(1.0, x.shape, tuple(range(x.ndim)), False), axis, keepdims)
    return DIV(count, SUB(count, float(ddof)))


def _spread_cotangent(g: Node, x: Node, axis: tuple[int, ...], keepdims: bool, ddof: int) -> Node:
    """``g`` times count / (count - ddof) (``g`` itself for ``ddof=0``)."""
    return g if not ddof else MUL(g, _degrees_ratio(x, axis, keepdims, ddof))


def _var_vjp(g: Node, ans: Node, x: Node, axis: tuple[int, ...], keepdims: bool, ddof: int):
    # d var / dx = 2 (x - mean) / (count - ddof)
    scaled = _spread_cotangent(MUL(g, 2.0), x, axis, keepdims, ddof)
    return (MUL(EXPAND(scaled, x.shape, axis, keepdims, mean=True), _deviations(x, axis)),)


def _std_vjp(g: Node, ans: Node, x: Node, axis: tuple[int, ...], keepdims: bool, ddof: int):
    # d std / dx = (x - mean) / ((count - ddof) std); where std is 0 (all
    # entries equal) the gradient is taken as 0, the subgradient of least
    # norm, as abs has at 0: sign(s) / (s + 1 - sign(s)) is 1/s there and 0 at s = 0
    sign = SIGN(ans)
    reciprocal = DIV(sign, ADD(ans, SUB(1.0, sign)))
    scaled = _spread_cotangent(MUL(g, reciprocal), x, axis, keepdims, ddof)
    return (MUL(EXPAND(scaled, x.shape, axis, keepdims, mean=True), _deviations(x, axis)),)


def _cumsum_attributes(x: Node, axis: Any, reverse: Any) -> dict[str, Any]:
    if x.ndim == 0:
        raise ValueError("a cumulative sum needs an axis, and a scalar has none")
    if axis is None:
        if x.ndim > 1:
            raise ValueError(f"a cumulative sum of {x.ndim} dimensions needs an axis (numpy would flatten it; "
                             "reshape first for that)")
        axis = 0
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be one int (cumsum runs along one axis), got {type(axis).__name__} {axis!r}")
    (index,) = normalize_axis(int(axis), x.ndim)
    return {"axis": index, "reverse": bool(reverse)}


def _cumsum_rule(x: Node, axis: int, reverse: bool) -> tuple[Shape, str]:
    return x.shape, result_dtype(x)


def _cumsum_kernel(x: np.ndarray, out: np.ndarray, axis: int, reverse: bool) -> None:
    if reverse:
        backwards = (slice(None),) * axis + (slice(None, None, -1),)
        np.add.accumulate(x[backwards], axis=axis, out=out[backwards])
    else:
        np.add.accumulate(x, axis=axis, out=out)


# Native forms of these: one group of entries at a time (``Groups``), in
# the passes the numpy kernels make over it.

def _chooser_native(smallest: bool) -> Callable[[NativeContext], str]:
    def native(ctx: NativeContext) -> str:
        groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
        *lines, best = _group_best(ctx, groups, ctx.operands[0], smallest)
        return groups.each([*lines, f"{groups.reduced(ctx.out, ctx['keepdims'])} = {best}"])
    return native


def _group_best(ctx: NativeContext, groups: Groups, x: str, smallest: bool = False) -> list[str]:
    """Lines setting ``best`` (the name, returned last) to the group's largest (smallest) entry of array ``x``.

    Two numbers at a time with np.maximum (np.minimum), as numpy's
    reduction takes them: a NaN wins.
    """
    best = ctx.temp("best")
    chooser = "np.minimum" if smallest else "np.maximum"
    return [f"{best} = {groups.first(x)}", *groups.over([f"{best} = {chooser}({best}, {groups.at(x)})"]), best]


def _tie_share_native(ctx: NativeContext) -> str:
    # (x == best) / (number of entries equal to best): 0 / 0 when a NaN makes none equal
    groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
    x = groups.at(ctx.operands[0])
    *lines, best = _group_best(ctx, groups, ctx.operands[0], ctx["smallest"])
    ties = ctx.temp("ties")
    one, zero = ctx.literal(1.0), ctx.literal(0.0)
    body = [*lines, f"{ties} = {zero}", *groups.over([f"if {x} == {best}:", f"    {ties} += {one}"]),
            *groups.over([f"{groups.at(ctx.out)} = ({one} if {x} == {best} else {zero}) / {ties}"])]
    return groups.each(body)


def _prod_native(ctx: NativeContext) -> str:
    groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
    total = ctx.temp("total")
    body = [f"{total} = {ctx.literal(1.0)}", *groups.over([f"{total} *= {groups.at(ctx.operands[0])}"]),
            f"{groups.reduced(ctx.out, ctx['keepdims'])} = {total}"]
    return groups.each(body)


def _prod_others_native(ctx: NativeContext) -> str:
    # the product of the entries before each one (left to right), times
    # that of those after it (right to left), as the numpy kernel takes them
    groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
    x, out = groups.at(ctx.operands[0]), groups.at(ctx.out)
    running = ctx.temp("running")
    one = ctx.literal(1.0)
    body = [f"{running} = {one}", *groups.over([f"{out} = {running}", f"{running} *= {x}"]),
            f"{running} = {one}", *groups.over([f"{out} = {out} * {running}", f"{running} *= {x}"], backwards=True)]
    return groups.each(body)


def _spread_native(root: bool) -> Callable[[NativeContext], str]:
    def native(ctx: NativeContext) -> str:
        # two passes: the mean (sum times 1/count), then the mean square of the deviations
        groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
        x = groups.at(ctx.operands[0])
        total, mean, deviation = ctx.temp("total"), ctx.temp("mean"), ctx.temp("deviation")
        scale, spread = ctx.literal(ctx["scale"]), ctx.literal(ctx["spread"])
        value = f"{total} * {spread}"
        body = [f"{total} = {ctx.literal(0.0)}", *groups.over([f"{total} += {x}"]), f"{mean} = {total} * {scale}",
                f"{total} = {ctx.literal(0.0)}",
                *groups.over([f"{deviation} = {x} - {mean}", f"{total} += {deviation} * {deviation}"]),
                f"{groups.reduced(ctx.out, ctx['keepdims'])} = {f'np.sqrt({value})' if root else value}"]
        return groups.each(body)
    return native


def _cumsum_native(ctx: NativeContext) -> str:
    groups = Groups(ctx, ctx.in_shapes[0], (ctx["axis"],))
    total = ctx.temp("total")
    body = [f"{total} = {ctx.literal(0.0)}",
            *groups.over([f"{total} += {groups.at(ctx.operands[0])}", f"{groups.at(ctx.out)} = {total}"],
                         backwards=ctx["reverse"])]
    return groups.each(body)


_NONEMPTY_SAMPLES = (
    Sample([Arg((5,))], {"axis": (0,), "keepdims": False}),
    Sample([Arg((4, 3), batch=True)], {"axis": (0,), "keepdims": False}),
    Sample([Arg((4, 3), batch=True)], {"axis": (1,), "keepdims": True}),
    Sample([Arg((2, 3, 2))], {"axis": (0, 2), "keepdims": False}),
    Sample([Arg((2, 3, 2))], {"axis": (0, 1, 2), "keepdims": True}),
)

MAX = register(Op(
    name="max", operands=("x",), attributes=_REDUCE, normalize=_reduce_attributes, rewrite=_drop_empty_reduction,
    shape_rule=_nonempty_reduce_rule, kernel=_max_kernel, native=_chooser_native(smallest=False),
    source="np.maximum.reduce({0}, axis={axis}, keepdims={keepdims}, out={out})",
    vjp=_chooser_vjp(smallest=False), samples=_NONEMPTY_SAMPLES,
    doc="""The largest entry of ``x`` over ``axis`` (all of them by default).

    The gradient goes to the entries equal to the maximum; ``k`` tied
    entries get ``g / k`` each (a subgradient, the same for every tied
    entry). A NaN entry makes the maximum and its gradient NaN.

    >>> import tapegraph as tg
    >>> tg.max(tg.input("x", shape=("batch", 3)), axis=-1, keepdims=True)
    <max f64[batch,1] at ...>
    """,
))

MIN = register(Op(
    name="min", operands=("x",), attributes=_REDUCE, normalize=_reduce_attributes, rewrite=_drop_empty_reduction,
    shape_rule=_nonempty_reduce_rule, kernel=_min_kernel, native=_chooser_native(smallest=True),
    source="np.minimum.reduce({0}, axis={axis}, keepdims={keepdims}, out={out})",
    vjp=_chooser_vjp(smallest=True), samples=_NONEMPTY_SAMPLES,
    doc="""The smallest entry of ``x`` over ``axis`` (all of them by default).

    The gradient goes to the entries equal to the minimum; ``k`` tied
    entries get ``g / k`` each. A NaN entry makes the minimum and its
    gradient NaN.
    """,
))

TIE_SHARE = register(Op(
    name="tie_share", operands=("x",), attributes={"axis": REQUIRED, "smallest": False}, public=False,
    normalize=lambda x, axis, smallest: {"axis": normalize_axis(axis, x.ndim), "smallest": bool(smallest)},
    shape_rule=lambda x, axis, smallest: (x.shape, result_dtype(x)), kernel=_tie_share_kernel,
    workspace=_kept_workspace, native=_tie_share_native,
    # piecewise constant: no gradient flows through the choice of entries
    vjp=lambda g, ans, x, axis, smallest: (None,),
    samples=(
        Sample([Arg((4, 3))], {"axis": (0,)}),
        Sample([Arg((4, 3), batch=True)], {"axis": (1,), "smallest": True}),
        Sample([Arg((2, 3, 2))], {"axis": (0, 2)}),
    ),
    doc="""``(x == max x) / count`` along ``axis`` (``min`` if ``smallest``): each entry's share of the cotangent.

    Entries equal to the maximum (minimum) share 1 equally, the others
    get 0: the gradient of max and min, spread over ties.
    """,
))

PROD = register(Op(
    name="prod", operands=("x",), attributes=_REDUCE, normalize=_reduce_attributes, rewrite=_drop_empty_reduction,
    shape_rule=_reduce_rule, kernel=_prod_kernel, native=_prod_native,
    source="np.multiply.reduce({0}, axis={axis}, keepdims={keepdims}, out={out})",
    vjp=lambda g, ans, x, axis, keepdims: (MUL(EXPAND(g, x.shape, axis, keepdims), PROD_OTHERS(x, axis)),),
    samples=(
        Sample([Arg((5,), low=0.5, high=1.5)], {"axis": (0,), "keepdims": False}),
        Sample([Arg((4, 3), batch=True)], {"axis": (0,), "keepdims": False}),
        Sample([Arg((4, 3), batch=True)], {"axis": (1,), "keepdims": True}),
        Sample([Arg((2, 3, 2))], {"axis": (0, 2), "keepdims": False}),
    ),
    doc="""The product of the entries of ``x`` over ``axis`` (all of them by default).

    The gradient of each entry is the product of the others, computed
    without division, so it is exact where entries are 0 (the product of
    an empty axis is 1). Second-order gradients divide by the entries
    and are NaN where one is exactly 0.
    """,
))

PROD_OTHERS = register(Op(
    name="prod_others", operands=("x",), attributes={"axis": REQUIRED}, public=False,
    normalize=lambda x, axis: {"axis": normalize_axis(axis, x.ndim)},
    shape_rule=lambda x, axis: (x.shape, result_dtype(x)), kernel=_prod_others_kernel,
    workspace=_prod_others_workspace, vjp=_prod_others_vjp, native=_prod_others_native,
    samples=(
        Sample([Arg((5,), low=0.5, high=1.5)], {"axis": (0,)}),
        Sample([Arg((4, 3), batch=True)], {"axis": (1,)}),
        Sample([Arg((2, 3, 2))], {"axis": (0, 2)}),
    ),
    doc="""For each entry, the product of the other entries of its group along ``axis``: prod's gradient.

    Computed as the product of the entries before it times those after
    it, without division.
    """,
))

_SPREAD_SAMPLES = (
    *_NONEMPTY_SAMPLES,
    Sample([Arg((5,))], {"axis": (0,), "keepdims": False, "ddof": 1}),
    Sample([Arg((4, 3), batch=True)], {"axis": (0,), "keepdims": True, "ddof": 1}),  # over the batch
    Sample([Arg((2, 3, 2))], {"axis": (0, 2), "keepdims": False, "ddof": 2}),
)

VAR = register(Op(
    name="var", operands=("x",), attributes={**_REDUCE, "ddof": 0}, normalize=_spread_attributes,
    shape_rule=_spread_rule, kernel=_var_kernel, specialize=_spread_specialize, workspace=_spread_workspace,
    vjp=_var_vjp, native=_spread_native(root=False),
    samples=_SPREAD_SAMPLES,
    doc="""The variance of the entries of ``x`` over ``axis``: ``sum((x - mean x)^2) / (count - ddof)``, as numpy's.

    ``ddof=0`` (the default) is the mean square deviation, ``ddof=1`` the
    unbiased estimate. Computed in two passes (no cancellation of
    ``E[x^2] - E[x]^2``); d/dx = ``2 (x - mean x) / (count - ddof)``. A
    ``ddof`` of at least the count is refused when the count is known;
    over a batch axis whose batch turns out too small the variance is
    ``inf`` (``nan`` where the entries are equal) with a warning, as numpy's.
    """,
))

STD = register(Op(
    name="std", operands=("x",), attributes={**_REDUCE, "ddof": 0}, normalize=_spread_attributes,
    shape_rule=_spread_rule, kernel=_std_kernel, specialize=_spread_specialize, workspace=_spread_workspace,
    vjp=_std_vjp, native=_spread_native(root=True),
    samples=_SPREAD_SAMPLES,
    doc="""The standard deviation of the entries of ``x`` over ``axis``: ``sqrt(var(x, ddof=ddof))``.

    d/dx = ``(x - mean x) / ((count - ddof) std)``; where all entries of a
    group are equal (std 0, where std is not differentiable) the gradient
    is 0.
    """,
))

CUMSUM = register(Op(
    name="cumsum", operands=("x",), attributes={"axis": None, "reverse": False}, normalize=_cumsum_attributes,
    shape_rule=_cumsum_rule, kernel=_cumsum_kernel, native=_cumsum_native,
    # the transpose of a running sum is the running sum from the other end
    vjp=lambda g, ans, x, axis, reverse: (CUMSUM(g, axis, not reverse),),
    samples=(
        Sample([Arg((5,))]),
        Sample([Arg((4, 3), batch=True)], {"axis": 0}),
        Sample([Arg((4, 3), batch=True)], {"axis": -1, "reverse": True}),
        Sample([Arg((2, 3, 2))], {"axis": 1}),
    ),
    doc="""Running sums of ``x`` along ``axis``: ``out[i] = x[0] + ... + x[i]`` (``x[i] + ... + x[-1]`` if ``reverse``).

    ``axis`` is one int (negative counts from the end), and may be left
    out for a vector; there is no ``keepdims``, as no axis is removed.
    The VJP is the running sum of ``g`` in the other direction.

    >>> import tapegraph as tg
    >>> tg.cumsum(tg.input("x", shape=("batch", 3)), axis=1)
    <cumsum f64[batch,3] at ...>
    """,
))
