"""Ops that rearrange or select entries: reshape, transpose, basic indexing, gather, joining two arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from tapegraph.expr import CONST, Node
from tapegraph.ops.native import NativeContext, count
from tapegraph.ops.registry import REQUIRED, Arg, Op, Sample, register, require_float, result_dtype
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


# Basic indexing, ``x[key]``. The node stores the key as canonical text,
# brackets included, as numpy would read it ("[1:3, 0, None, ::-1]", and
# "[...]" for everything): dumps show it as written, it travels through
# the JSON export as it is, and generated code pastes it after the
# operand. Every slice is resolved against its axis when the node is
# built (``1:10`` on an axis of 4 is ``1:4``), so equal selections are
# equal text and equal nodes.

def _slice_text(start: int | None, stop: int | None, step: int) -> str:
    text = f"{'' if start is None else start}:{'' if stop is None else stop}"
    return text if step == 1 else f"{text}:{step}"


def _index_entry_error(item: Any) -> str | None:
    """Why ``item`` cannot be one entry of a basic index (None if it can)."""
    if isinstance(item, Node):
        return (f"a node ({item.type_str}) is not a basic index; to select entries by the values of an integer "
                "array, use tg.take(x, indices, axis)")
    if isinstance(item, (bool, np.bool_)):
        return f"the boolean {item!r} is not an index; boolean masks are not supported (use tg.take with integer indices)"
    if isinstance(item, (float, np.floating)):
        return f"the index {item!r} is a float; indices must be integers"
    if isinstance(item, (list, tuple, np.ndarray)):
        return (f"indexing with a sequence or an array ({item!r}) is not supported; to select entries by an "
                "integer array, use tg.take(x, indices, axis)")
    if isinstance(item, slice):
        for part, value in (("start", item.start), ("stop", item.stop), ("step", item.step)):
            if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))):
                return f"the slice {item!r} has a {part} of type {type(value).__name__}; slice bounds must be integers"
        if item.step == 0:
            return "a slice step cannot be zero"
        return None
    if item is None or item is Ellipsis or isinstance(item, (int, np.integer)):
        return None
    return f"{type(item).__name__} {item!r} is not an index (use integers, slices, None or ...)"


def parse_index(text: str) -> tuple[Any, ...]:
    """The numpy key for an index's text: ``"[1:3, None]"`` is ``(slice(1, 3), None)`` (brackets optional)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text in ("", "..."):
        return ()
    key: list[Any] = []
    for part in text.split(", "):
        if part == "None":
            key.append(None)
        elif ":" in part:
            key.append(slice(*(int(field) if field else None for field in part.split(":"))))
        else:
            key.append(int(part))
    return tuple(key)


def _parse_index_text(text: str) -> tuple[Any, ...]:
    # text in brackets is an index as dumps print it; any other string is a mistake
    if text.startswith("[") and text.endswith("]"):
        try:
            return parse_index(text)
        except ValueError:
            pass
    raise ValueError(f"the string {text!r} is not an index (use integers, slices, None or ..., as numpy does; "
                     "an index as dumps print it is in brackets, such as '[1:3, 0]')")


def canonical_index(shape: Shape, key: Any) -> str:
    """The canonical text of the basic index ``key`` into an array of ``shape``.

    ``key`` is what goes between brackets (an int, a slice, None, ``...``
    or a tuple of them), or such text in brackets. Raises ValueError for
    anything else, an integer out of bounds, a slice that selects nothing
    and, on a symbolic dimension, anything but ``:`` or ``::-1`` (its size
    is not known yet).
    """
    if isinstance(key, str):
        key = _parse_index_text(key)
    if not isinstance(key, tuple):
        key = (key,)
    for item in key:
        problem = _index_entry_error(item)
        if problem is not None:
            raise ValueError(problem)
    if sum(item is Ellipsis for item in key) > 1:
        raise ValueError("an index can hold only one ellipsis (...)")
    consuming = sum(item is not None and item is not Ellipsis for item in key)
    if consuming > len(shape):
        raise ValueError(f"too many indices: {consuming} for {len(shape)} dimension(s)")
    if Ellipsis in key:
        at = key.index(Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - consuming) + key[at + 1:]
    entries = []
    axis = 0
    for item in key:
        if item is None:
            entries.append("None")
            continue
        dim = shape[axis]
        if isinstance(item, slice):
            entries.append(_canonical_slice(item, dim, axis))
        else:
            if isinstance(dim, str):
                raise ValueError(f"cannot take index {int(item)} of axis {axis}, the symbolic dimension {dim!r}: its "
                                 "size is known only when called (only ':' and '::-1' index it)")
            if not -dim <= item < dim:
                raise ValueError(f"index {int(item)} is out of bounds for axis {axis} of size {dim}")
            entries.append(str(int(item) % dim))
        axis += 1
    while entries and entries[-1] == ":":
        entries.pop()  # trailing full slices say nothing
    return "[" + (", ".join(entries) or "...") + "]"


def _canonical_slice(item: slice, dim: Any, axis: int) -> str:
    step = 1 if item.step is None else int(item.step)
    if isinstance(dim, str):
        if item.start is None and item.stop is None and step in (1, -1):
            return ":" if step == 1 else "::-1"
        raise ValueError(f"cannot slice axis {axis}, the symbolic dimension {dim!r}, with {_slice_text(item.start, item.stop, step)}: "
                         "its size is known only when called (only ':' and '::-1' index it)")
    selected = range(dim)[item]
    if not len(selected):
        raise ValueError(f"the slice {_slice_text(item.start, item.stop, step)} of axis {axis} (size {dim}) selects no entries")
    if step == 1 and len(selected) == dim:
        return ":"
    if step == -1 and len(selected) == dim:
        return "::-1"
    first, last = selected[0], selected[-1]
    stop = last + 1 if step > 0 else (last - 1 if last > 0 else None)
    return _slice_text(first, stop, step)


def indexed_shape(shape: Shape, text: str) -> Shape:
    """The shape of ``array[key]`` for an array of ``shape`` and a canonical index."""
    result: list[Any] = []
    axis = 0
    for item in parse_index(text):
        if item is None:
            result.append(1)
            continue
        dim = shape[axis]
        if isinstance(item, slice):
            result.append(dim if isinstance(dim, str) else len(range(dim)[item]))
        axis += 1
    return tuple(result) + tuple(shape[axis:])


def _index_attributes(x: Node, index: Any) -> dict[str, str]:
    return {"index": canonical_index(x.shape, index)}


def _index_rule(x: Node, index: str) -> tuple[Shape, str]:
    return indexed_shape(x.shape, index), x.dtype


def _index_specialize(in_shapes, out_shape, index: str) -> dict[str, Any]:
    # the key as numpy objects, made once per specialisation
    return {"key": parse_index(index), "scalar_operand": len(in_shapes[0]) == 0}


def _index_kernel(x: np.ndarray, out: np.ndarray, index: str, key: tuple, scalar_operand: bool = False) -> None:
    np.copyto(out, np.asarray(x)[key])


def _index_source(index: str, key: tuple, scalar_operand: bool) -> str | None:
    # a 0-d operand may arrive as a Python float, which cannot be indexed:
    # the kernel (called on arrays) takes that case
    if scalar_operand:
        return None
    return "np.copyto({out}, {0}%s)" % index


def _drop_empty_index(node: Node) -> Node:
    # x[:] and x[...] are x
    (x,) = node.inputs
    return x if node.attr("index") == "[...]" else node


def selects_everything(shape: Shape, text: str) -> bool:
    """True when ``array[key]`` keeps every entry (full slices, reversals, new axes, ints on size-1 axes)."""
    axis = 0
    for item in parse_index(text):
        if item is None:
            continue
        if isinstance(item, slice):
            if _slice_text(item.start, item.stop, 1 if item.step is None else item.step) not in (":", "::-1"):
                return False
        elif shape[axis] != 1:
            return False
        axis += 1
    return True


def _inverse_index(shape: Shape, text: str) -> str:
    """For an index that keeps every entry, the index that maps the result back to ``shape``."""
    entries = []
    for item in parse_index(text):
        if item is None:
            entries.append("0")  # drop the new axis
        elif isinstance(item, slice):
            entries.append(":" if item.step is None else "::-1")
        else:
            entries.append("None")  # put back the size-1 axis the integer took away
    return canonical_index(indexed_shape(shape, text), "[" + ", ".join(entries) + "]")


def _indexed_entries(shape: tuple[int, ...], index: str, names: list[str]) -> list[str]:
    """Where ``array[key][names]`` is in ``array`` (of concrete ``shape``): one index expression per axis.

    ``names`` index the result; a slice's entry ``i`` is ``start + step * i``
    of its axis, an integer is that entry, and a new axis reads nothing.
    """
    entries: list[str] = []
    result_axis = 0
    axis = 0
    for item in parse_index(index):
        if item is None:
            result_axis += 1
            continue
        if isinstance(item, slice):
            selected = range(shape[axis])[item]
            name = names[result_axis]
            if selected.step == 1:
                entries.append(name if selected.start == 0 else f"{selected.start} + {name}")
            else:
                entries.append(f"{selected.start} + {selected.step} * {name}")
            result_axis += 1
        else:
            entries.append(str(item))
        axis += 1
    entries.extend(names[result_axis:])
    return entries


def _at(name: str, entries: list[str]) -> str:
    """``name[entries]``, or ``name`` itself for a number (no entries)."""
    return f"{name}[{', '.join(entries)}]" if entries else name


def _index_native(ctx: NativeContext) -> str:
    # each result entry read from where the key puts it in x
    names = ctx.indices(len(ctx.out_shape))
    source = _at(ctx.operands[0], _indexed_entries(ctx.in_shapes[0], ctx["index"], names))
    return ctx.loops(ctx.out_shape, [f"{ctx.store(names)} = {source}"], names)


def _unindex_native(ctx: NativeContext) -> str:
    # zeros, then g written where the key puts each of its entries
    zero_names = ctx.indices(len(ctx.out_shape))
    zeros = ctx.loops(ctx.out_shape, [f"{ctx.store(zero_names)} = {ctx.literal(0.0)}"], zero_names)
    (g_shape,) = ctx.in_shapes
    names = ctx.indices(len(g_shape))
    target = _at(ctx.out, _indexed_entries(ctx.out_shape, ctx["index"], names))
    value = _at(ctx.operands[0], names)
    return "\n".join([zeros, ctx.loops(g_shape, [f"{target} = {value}"], names)])


def _index_vjp(g: Node, ans: Node, x: Node, index: str):
    return (UNINDEX(g, index, x.shape),)


def _unindex_attributes(g: Node, index: Any, shape: Any) -> dict[str, Any]:
    shape = as_shape(shape)
    return {"index": canonical_index(shape, index), "shape": shape}


def _unindex_rule(g: Node, index: str, shape: Shape) -> tuple[Shape, str]:
    expected = indexed_shape(shape, index)
    if g.shape != expected:
        raise ValueError(f"putting values at {index} of an array of shape {format_shape(shape)} needs an operand "
                         f"of shape {format_shape(expected)}")
    return tuple(shape), g.dtype


def _unindex_specialize(in_shapes, out_shape, index: str, shape) -> dict[str, Any]:
    return {"key": parse_index(index)}


def _unindex_kernel(g: np.ndarray, out: np.ndarray, index: str, shape, key: tuple) -> None:
    out.fill(0)
    out[key] = g


def _unindex_source(index: str, shape, key: tuple) -> str:
    # copied into a view of out: "..." keeps it a view when the integers
    # take every axis (and generated code may name a view of a buffer once)
    inner = index[1:-1]
    return "{out}.fill(0)\nnp.copyto({out}[%s], {0})" % ("..." if inner == "..." else f"{inner}, ...")


def _unindex_as_index(node: Node) -> Node:
    # when the index kept every entry (a reversal, new or dropped size-1
    # axes), there are no zeros to write: the transpose is an index too
    (g,) = node.inputs
    shape, index = node.attr("shape"), node.attr("index")
    if selects_everything(shape, index):
        return INDEX(g, _inverse_index(shape, index))
    return node


INDEX = register(Op(
    name="index", operands=("x",), attributes={"index": REQUIRED}, public=False, normalize=_index_attributes,
    rewrite=_drop_empty_index, shape_rule=_index_rule, kernel=_index_kernel, specialize=_index_specialize,
    source=_index_source, native=_index_native, fill=_same_fill, vjp=_index_vjp,
    samples=(
        Sample([Arg((5,))], {"index": 2}),
        Sample([Arg((4, 3), batch=True)], {"index": (slice(None), slice(None, None, -2))}),
        Sample([Arg((4, 5))], {"index": (slice(1, 4), -1)}),
        Sample([Arg((2, 3, 4))], {"index": (Ellipsis, None, slice(3, 0, -1))}),
        Sample([Arg((4, 3), batch=True)], {"index": (slice(None, None, -1), None, 1)}),
        Sample([Arg(())], {"index": None}),
    ),
    doc="""Basic indexing ``x[key]``: integers, slices with steps, ``None`` and ``...``, as numpy reads them.

    ``out = x[key]``, a copy. Write ``x[key]`` (``index`` is its op); a
    symbolic dimension takes only ``:`` and ``::-1``. The VJP puts g back
    at ``key`` in an array of zeros (``unindex``); entries not selected get
    a zero gradient.

    >>> import tapegraph as tg
    >>> tg.input("x", shape=("batch", 5))[:, 1:4]
    <index f64[batch,3] at ...>
    """,
))

UNINDEX = register(Op(
    name="unindex", operands=("g",), attributes={"index": REQUIRED, "shape": REQUIRED}, public=False,
    normalize=_unindex_attributes, rewrite=_unindex_as_index, shape_rule=_unindex_rule, kernel=_unindex_kernel,
    specialize=_unindex_specialize, source=_unindex_source, native=_unindex_native,
    vjp=lambda g, ans, x, index, shape: (INDEX(g, index),),
    samples=(
        Sample([Arg(())], {"index": 2, "shape": (5,)}),
        Sample([Arg((4, 2))], {"index": (slice(None), slice(None, None, -2)), "shape": (4, 3)}),
        Sample([Arg((3,))], {"index": (slice(1, 4), -1), "shape": (4, 5)}),
    ),
    doc="""An array of zeros of ``shape`` with ``g`` written at ``index``: the transpose of indexing.

    ``out = 0; out[index] = g``. The VJP takes g' at ``index`` again.
    """,
))


# Selecting by an integer array: gather (what tg.take builds), and its transpose scatter_add.

def gather_attributes(x: Node, indices: Node, axis: Any) -> dict[str, int]:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"axis must be an integer, got {type(axis).__name__} {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {int(axis)} is out of range for {x.ndim} dimension(s)")
    return {"axis": int(axis) % x.ndim}


def _check_index_dtype(indices: Node) -> None:
    if np.dtype(indices.dtype).kind not in "iu":
        raise ValueError(f"indices must be an integer array, got dtype {indices.dtype}"
                         + ("; round and convert them with an integer dtype first" if np.dtype(indices.dtype).kind == "f" else ""))


def _check_const_indices(indices: Node, size: Any, axis: int) -> None:
    # constant indices are checked now, at the user's line; fed ones when called
    if indices.op is CONST and isinstance(size, int) and indices.value.array.size:
        values = indices.value.array
        low, high = int(values.min()), int(values.max())
        if low < -size or high >= size:
            bad = low if low < -size else high
            raise ValueError(f"index {bad} in indices is out of bounds for axis {axis} of size {size}")


def gather_rule(x: Node, indices: Node, axis: int) -> tuple[Shape, str]:
    require_float(x)
    _check_index_dtype(indices)
    _check_const_indices(indices, x.shape[axis], axis)
    return x.shape[:axis] + indices.shape + x.shape[axis + 1:], x.dtype


def _check_indices(indices: np.ndarray, size: int, axis: int) -> None:
    """Raise an IndexError naming the first index outside -size..size-1 (numpy's range)."""
    # two reductions, no temporary array, on the path every call takes
    if not indices.size or (-size <= indices.min() and indices.max() < size):
        return
    bad = (indices < -size) | (indices >= size)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise IndexError(f"index {int(indices[where])} at position {where} of indices is out of bounds for "
                         f"axis {axis} of size {size}")


def _gather_kernel(x: np.ndarray, indices: np.ndarray, out: np.ndarray, axis: int) -> None:
    _check_indices(indices, x.shape[axis], axis)
    # checked above, so "wrap" changes no index but the negative ones (as
    # numpy counts them); "raise" would copy the result through a buffer
    np.take(x, indices, axis=axis, out=out, mode="wrap")


def _gather_fill(x, indices, in_shapes, out_shape, axis):
    # entries of a fill taken anywhere are that fill (Op.fill)
    return x


def _scatter_add_attributes(g: Node, indices: Node, axis: Any, shape: Any) -> dict[str, Any]:
    shape = as_shape(shape)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) or not 0 <= axis < len(shape):
        raise ValueError(f"axis {axis!r} is out of range for {len(shape)} dimension(s)")
    return {"axis": int(axis), "shape": shape}


def _scatter_add_rule(g: Node, indices: Node, axis: int, shape: Shape) -> tuple[Shape, str]:
    require_float(g)
    _check_index_dtype(indices)
    expected = tuple(shape[:axis]) + indices.shape + tuple(shape[axis + 1:])
    if g.shape != expected:
        raise ValueError(f"scattering along axis {axis} into {format_shape(shape)} with indices of shape "
                         f"{format_shape(indices.shape)} needs an operand of shape {format_shape(expected)}")
    return tuple(shape), g.dtype


def _scatter_add_kernel(g: np.ndarray, indices: np.ndarray, out: np.ndarray, axis: int, shape) -> None:
    _check_indices(indices, out.shape[axis], axis)
    out.fill(0)
    # add.at sums the contributions of an index that appears more than once
    np.add.at(out, (slice(None),) * axis + (indices,), g)


def _taken_entry(ctx: NativeContext, axis: int, size: int, names: list[str]) -> tuple[list[str], str]:
    """Statements giving ``j``, the entry of the axis that ``indices`` picks at ``names`` (negative ones
    counted from the end), and ``j``'s name; the indices (operand 1) are checked before native code runs."""
    indices = ctx.checked(1, lambda values: _check_indices(values, size, axis))
    depth = len(ctx.in_shapes[1])
    taken = ctx.temp("j")
    lines = [f"{taken} = {_at(indices, names[axis:axis + depth])}",
             f"if {taken} < 0:", f"    {taken} += {size}"]
    return lines, taken


def _gather_native(ctx: NativeContext) -> str:
    # out[pre, i, post] = x[pre, indices[i], post]
    axis = ctx["axis"]
    size = ctx.in_shapes[0][axis]
    names = ctx.indices(len(ctx.out_shape))
    lines, taken = _taken_entry(ctx, axis, size, names)
    source = _at(ctx.operands[0], [*names[:axis], taken, *names[axis + len(ctx.in_shapes[1]):]])
    return _around_taken(ctx, ctx.out_shape, names, axis, lines, f"{ctx.store(names)} = {source}")


def _around_taken(ctx: NativeContext, shape: tuple[int, ...], names: list[str], axis: int, taken_lines: list[str],
                  statement: str) -> str:
    """Loops over ``shape`` around ``statement``; the taken entry is found once, outside the axes after the indices'."""
    split = axis + len(ctx.in_shapes[1])
    inner = ctx.loops(shape[split:], [statement], names[split:])
    return ctx.loops(shape[:split], [*taken_lines, *inner.split("\n")], names[:split])


def _scatter_add_native(ctx: NativeContext) -> str:
    # zeros, then out[pre, indices[i], post] += g[pre, i, post], in C order
    # over g as np.add.at adds them
    axis = ctx["axis"]
    size = ctx.out_shape[axis]
    zero_names = ctx.indices(len(ctx.out_shape))
    zeros = ctx.loops(ctx.out_shape, [f"{ctx.store(zero_names)} = {ctx.literal(0.0)}"], zero_names)
    g_shape = ctx.in_shapes[0]
    names = ctx.indices(len(g_shape))
    lines, taken = _taken_entry(ctx, axis, size, names)
    target = _at(ctx.out, [*names[:axis], taken, *names[axis + len(ctx.in_shapes[1]):]])
    return "\n".join([zeros, _around_taken(ctx, g_shape, names, axis, lines, f"{target} += {_at(ctx.operands[0], names)}")])


GATHER = register(Op(
    name="gather", operands=("x", "indices"), attributes={"axis": 0}, normalize=gather_attributes, public=False,
    shape_rule=gather_rule, kernel=_gather_kernel, fill=_gather_fill, native=_gather_native,
    vjp=lambda g, ans, x, indices, axis: (SCATTER_ADD(g, indices, axis, x.shape), None),
    samples=(
        Sample([Arg((5,)), Arg((3,), dtype="int64", low=-5, high=5)], {"axis": 0}),
        Sample([Arg((4, 3)), Arg((6,), dtype="int64", low=0, high=4, batch=True)], {"axis": 0}),
        Sample([Arg((4, 3), batch=True), Arg((2, 2), dtype="int64", low=0, high=3)], {"axis": 1}),
        Sample([Arg((2, 3, 4)), Arg((), dtype="int64", low=0, high=3)], {"axis": -2}),
    ),
    doc="""The entries of ``x`` at integer ``indices`` along ``axis``: what ``tg.take`` builds.

    ``out[..., i, ...] = x[..., indices[i], ...]`` with the indices' shape
    in place of the axis; negative indices count from the end, any other
    index out of bounds is an error (at the call, for fed indices). The
    indices get no gradient; x's gradient adds g at each index
    (``scatter_add``), so an index taken twice gets both contributions.
    """,
))

SCATTER_ADD = register(Op(
    name="scatter_add", operands=("g", "indices"), attributes={"axis": REQUIRED, "shape": REQUIRED}, public=False,
    normalize=_scatter_add_attributes, shape_rule=_scatter_add_rule, kernel=_scatter_add_kernel,
    native=_scatter_add_native,
    vjp=lambda g, ans, x, indices, axis, shape: (GATHER(g, indices, axis), None),
    samples=(
        Sample([Arg((3,)), Arg((3,), dtype="int64", low=0, high=2)], {"axis": 0, "shape": (2,)}),
        Sample([Arg((4, 2, 3)), Arg((2,), dtype="int64", low=-4, high=4)], {"axis": 1, "shape": (4, 4, 3)}),
    ),
    doc="""Zeros of ``shape`` with ``g`` added at ``indices`` along ``axis``: the transpose of gather.

    An index given twice receives the sum of its entries of g.
    """,
))


# Joining two arrays; tg.concatenate joins any number (ops/joining.py).

def _concat_attributes(a: Node, b: Node, axis: Any) -> dict[str, int]:
    if a.ndim != b.ndim:
        raise ValueError(f"the operands have {a.ndim} and {b.ndim} dimensions; they must have as many")
    if a.ndim == 0:
        raise ValueError("scalars cannot be joined; stack them instead")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"axis must be an integer, got {type(axis).__name__} {axis!r}")
    if not -a.ndim <= axis < a.ndim:
        raise ValueError(f"axis {int(axis)} is out of range for {a.ndim} dimension(s)")
    return {"axis": int(axis) % a.ndim}


def _concat_rule(a: Node, b: Node, axis: int) -> tuple[Shape, str]:
    for index, (left, right) in enumerate(zip(a.shape, b.shape)):
        if index != axis and left != right:
            raise ValueError(f"joining along axis {axis}, the shapes must agree elsewhere, but axis {index} is "
                             f"{left} and {right}")
    left, right = a.shape[axis], b.shape[axis]
    if isinstance(left, str) or isinstance(right, str):
        raise ValueError(f"cannot join along axis {axis}, a symbolic dimension: the size of the result would not be known")
    return a.shape[:axis] + (left + right,) + a.shape[axis + 1:], result_dtype(a, b)


def _concat_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray, axis: int) -> None:
    np.concatenate((a, b), axis=axis, out=out)


def _concat_vjp(g: Node, ans: Node, a: Node, b: Node, axis: int):
    before = (slice(None),) * axis
    split = a.shape[axis]
    return INDEX(g, before + (slice(0, split),)), INDEX(g, before + (slice(split, None),))


def _concat_native(ctx: NativeContext) -> str:
    # a's entries, then b's after them along the axis
    axis = ctx["axis"]
    a_shape, b_shape = ctx.in_shapes
    a_names = ctx.indices(len(a_shape))
    b_names = ctx.indices(len(b_shape))
    after = [*b_names[:axis], f"{a_shape[axis]} + {b_names[axis]}", *b_names[axis + 1:]]
    return "\n".join([
        ctx.loops(a_shape, [f"{_at(ctx.out, a_names)} = {_at(ctx.operands[0], a_names)}"], a_names),
        ctx.loops(b_shape, [f"{_at(ctx.out, after)} = {_at(ctx.operands[1], b_names)}"], b_names)])


CONCAT = register(Op(
    name="concat", operands=("a", "b"), attributes={"axis": 0}, public=False, normalize=_concat_attributes,
    shape_rule=_concat_rule, kernel=_concat_kernel, vjp=_concat_vjp,
    source="np.concatenate(({0}, {1}), axis={axis}, out={out})", native=_concat_native,
    samples=(
        Sample([Arg((2,)), Arg((3,))], {"axis": 0}),
        Sample([Arg((4, 2), batch=True), Arg((4, 3), batch=True)], {"axis": -1}),
        Sample([Arg((1, 3)), Arg((2, 3))], {"axis": 0}),
    ),
    doc="""``a`` and ``b`` joined along ``axis``, which is concrete in both; what tg.concatenate is built from.

    The VJP slices g back into the two parts.
    """,
))
