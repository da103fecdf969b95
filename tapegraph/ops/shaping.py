"""Ops that rearrange entries: ``reshape`` and ``transpose``."""

from __future__ import annotations

from typing import Any

import numpy as np

from tapegraph.expr import Node
from tapegraph.ops.native import NativeContext, count
from tapegraph.ops.registry import REQUIRED, Arg, Op, Sample, register
from tapegraph.shapes import Shape, as_shape, format_shape, is_concrete


def _size(shape: Shape) -> int | None:
    if not is_concrete(shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def _reshape_rule(x: Node, shape: Shape) -> tuple[Shape, str]:
    # a symbolic dimension must be carried over where it stood
    if not is_concrete(x.shape) or not is_concrete(shape):
        if x.shape[:1] != shape[:1] or not is_concrete(x.shape[1:]) or not is_concrete(shape[1:]):
            raise ValueError(f"can reshape {format_shape(x.shape)} only to a shape with the same symbolic leading dimension, not {format_shape(shape)}")
        if _size(x.shape[1:]) != _size(shape[1:]):
            raise ValueError(f"cannot reshape {format_shape(x.shape)} to {format_shape(shape)}")
    elif _size(x.shape) != _size(shape):
        raise ValueError(f"cannot reshape {format_shape(x.shape)} ({_size(x.shape)} entries) to {format_shape(shape)}")
    return tuple(shape), x.dtype


def _reshape_kernel(x: np.ndarray, out: np.ndarray, shape) -> None:
    np.copyto(out, x.reshape(out.shape))


def _transpose_rule(x: Node, axes: tuple[int, ...]) -> tuple[Shape, str]:
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"axes {axes} are not a permutation of the {x.ndim} axes")
    return tuple(x.shape[axis] for axis in axes), x.dtype


def _transpose_kernel(x: np.ndarray, out: np.ndarray, axes) -> None:
    np.copyto(out, x.transpose(axes))


def _reshape_attributes(x: Node, shape: Any) -> dict[str, Any]:
    if isinstance(shape, (str, int, np.integer)):
        # a string would be read as one dimension per character: as_shape
        # refuses it with the missing-comma hint; an int is one dimension
        shape = as_shape(shape)
    # one -1 entry is inferred when the other sizes are known
    shape = tuple(shape)
    if -1 in shape and is_concrete(x.shape):
        known = int(np.prod([dim for dim in shape if dim != -1], dtype=np.int64))
        total = _size(x.shape)
        if shape.count(-1) == 1 and known and total % known == 0:
            shape = tuple(total // known if dim == -1 else dim for dim in shape)
    return {"shape": as_shape(shape) if -1 not in shape else shape}


def _drop_same_shape(node: Node) -> Node:
    (x,) = node.inputs
    return x if node.shape == x.shape else node


def _transpose_attributes(x: Node, axes: Any) -> dict[str, Any]:
    # no axes given: reverse them
    return {"axes": tuple(reversed(range(x.ndim))) if axes is None else tuple(int(axis) for axis in axes)}


def _same_fill(x, in_shapes, out_shape, **static):
    # moving entries around keeps a fill a fill (Op.fill)
    return x


def _reshape_native(ctx: NativeContext) -> str:
    # entries in C order: both are C-contiguous in native code, so flat views copy them
    (x,) = ctx.operands
    size = count(ctx.out_shape)
    if not ctx.in_shapes[0]:
        return f"{ctx.out}.reshape(({size},))[0] = {x}"
    if not ctx.out_shape:
        return f"{ctx.out} = {x}.reshape(({size},))[0]"
    flat_x, flat_out, index = ctx.temp("flat"), ctx.temp("flat"), ctx.temp("i")
    return "\n".join([f"{flat_x} = {x}.reshape(({size},))", f"{flat_out} = {ctx.out}.reshape(({size},))",
                      f"for {index} in range({size}):", f"    {flat_out}[{index}] = {flat_x}[{index}]"])


def _transpose_native(ctx: NativeContext) -> str:
    # result axis k is operand axis axes[k]
    names = ctx.indices(len(ctx.out_shape))
    axes = ctx["axes"]
    source = [names[axes.index(axis)] for axis in range(len(axes))]
    value = f"{ctx.operands[0]}[{', '.join(source)}]" if source else ctx.operands[0]
    return ctx.loops(ctx.out_shape, [f"{ctx.store(names)} = {value}"], names)


RESHAPE = register(Op(
    name="reshape", operands=("x",), attributes={"shape": REQUIRED}, normalize=_reshape_attributes,
    rewrite=_drop_same_shape, shape_rule=_reshape_rule, kernel=_reshape_kernel, fill=_same_fill,
    source="np.copyto({out}, np.reshape({0}, {out}.shape))", native=_reshape_native,
    vjp=lambda g, ans, x, shape: (RESHAPE(g, x.shape),),
    samples=(
        Sample([Arg((6,))], {"shape": (2, 3)}),
        Sample([Arg((4, 2, 3))], {"shape": (4, 6)}),
    ),
    doc="""``x`` with its entries in C order laid out as ``shape``.

    One ``-1`` entry is inferred when the other sizes are known.

    >>> import tapegraph as tg
    >>> tg.reshape(tg.input("x", shape=(6,)), (2, -1))
    <reshape f64[2,3] at ...>
    """,
))

TRANSPOSE = register(Op(
    name="transpose", operands=("x",), attributes={"axes": None}, normalize=_transpose_attributes,
    shape_rule=_transpose_rule, kernel=_transpose_kernel, fill=_same_fill,
    source="np.copyto({out}, np.transpose({0}, {axes}))", native=_transpose_native,
    vjp=lambda g, ans, x, axes: (TRANSPOSE(g, tuple(int(i) for i in np.argsort(axes))),),
    samples=(Sample([Arg((2, 3))], {"axes": (1, 0)}), Sample([Arg((2, 3, 4))], {"axes": (2, 0, 1)})),
    doc="Permute the axes of ``x`` (reverse them when ``axes`` is None).",
))
