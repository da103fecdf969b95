"""Softmax, log-softmax, cross-entropy, and picking one entry per row by label.

Softmax and log-softmax are fused primitives because computing them from
``exp`` and ``sum`` overflows for large logits; both subtract the row
maximum first. Cross-entropy is fused too, for speed: its gradient is
``softmax(z) - onehot(label)``, one instruction, where the chain rule
through log-softmax and pick takes six (measured in docs/performance.md).
``pick``/``unpick`` are a transpose pair: taking the label's entry, and
putting a value back at the label's position.
"""

from __future__ import annotations

import math
import numpy as np

from tapegraph.expr import Node, is_const
from tapegraph.ops.elementwise import ADD, EXP, MUL, NEG, SUB
from tapegraph.ops.reductions import EXPAND, SUM
from tapegraph.ops.native import NativeContext, count
from tapegraph.ops.registry import REQUIRED, Arg, Op, Sample, Scratch, register, require_float, result_dtype
from tapegraph.shapes import Shape, format_shape


def _last_axis_rule(z: Node) -> tuple[Shape, str]:
    if z.ndim == 0:
        raise ValueError("needs at least one axis (the classes are the last axis)")
    return z.shape, result_dtype(z)


def _row_workspace(in_shapes, out_shape, dtype) -> dict[str, Scratch]:
    return {"row": Scratch(tuple(out_shape[:-1]) + (1,), dtype)}


# Kernels call ufunc methods (np.maximum.reduce, not np.max): the
# fromnumeric wrappers cost more than the work on rows of a few classes.

def _softmax_kernel(z: np.ndarray, out: np.ndarray, row: np.ndarray) -> None:
    np.maximum.reduce(z, axis=-1, keepdims=True, out=row)
    np.subtract(z, row, out=out)
    np.exp(out, out=out)
    np.add.reduce(out, axis=-1, keepdims=True, out=row)
    np.divide(out, row, out=out)


def _log_softmax_workspace(in_shapes, out_shape, dtype) -> dict[str, Scratch]:
    scratch = _row_workspace(in_shapes, out_shape, dtype)
    scratch["full"] = Scratch(out_shape, dtype)
    return scratch


def _log_softmax_kernel(z: np.ndarray, out: np.ndarray, row: np.ndarray, full: np.ndarray) -> None:
    np.maximum.reduce(z, axis=-1, keepdims=True, out=row)
    np.subtract(z, row, out=out)
    np.exp(out, out=full)
    np.add.reduce(full, axis=-1, keepdims=True, out=row)
    np.log(row, out=row)
    np.subtract(out, row, out=out)


def _pick_rule(x: Node, index: Node) -> tuple[Shape, str]:
    require_float(x)
    if np.dtype(index.dtype).kind not in "iu":
        raise ValueError(f"the label must be an integer array, got dtype {index.dtype}")
    if x.ndim == 0 or index.shape != x.shape[:-1]:
        raise ValueError(f"labels of shape {format_shape(index.shape)} do not fit scores of shape {format_shape(x.shape)}; "
                         f"need one label per row ({format_shape(x.shape[:-1])})")
    if x.shape[-1] == 0:
        raise ValueError("the last axis holds the classes, and it has none: there is no label to pick")
    return index.shape, x.dtype


def _unpick_rule(g: Node, index: Node, depth: int) -> tuple[Shape, str]:
    require_float(g)
    if index.shape != g.shape:
        raise ValueError(f"labels of shape {format_shape(index.shape)} do not fit values of shape {format_shape(g.shape)}")
    return g.shape + (depth,), g.dtype


def _flat_index_workspace(in_shapes, out_shape, dtype, depth: int | None = None) -> dict[str, np.ndarray | Scratch]:
    # flat position of row r's entry k is r * depth + k; row offsets are fixed
    rows_shape = in_shapes[1]
    classes = depth if depth is not None else in_shapes[0][-1]
    rows = (np.arange(int(np.prod(rows_shape, dtype=np.int64)), dtype=np.intp) * classes).reshape(rows_shape)
    return {"rows": rows, "flat": Scratch(rows_shape, np.dtype(np.intp).name)}


def _check_labels(index: np.ndarray, classes: int) -> None:
    """Raise unless every label is in 0..classes-1.

    The kernels then add labels to intp row offsets with
    ``casting="unsafe"``: checked labels fit any integer type, and numpy
    would otherwise promote uint64 + intp to float64 and refuse the sum.
    """
    # one comparison catches negatives too: they wrap to huge unsigned values
    if index.ndim == 0:
        label = int(index)
        bad = not 0 <= label < classes
    else:
        bad = np.maximum.reduce(index.view(f"u{index.itemsize}"), axis=None) >= classes
    if bad:
        if index.ndim == 0:
            raise IndexError(f"label {int(index)} is outside 0..{classes - 1}")
        # the first bad label, and where it is, so that a batch's culprit can be found
        position = int(np.flatnonzero((index < 0) | (index >= classes))[0])
        where = tuple(int(axis) for axis in np.unravel_index(position, index.shape))
        raise IndexError(f"label {index.flat[position]} at index {where} is outside 0..{classes - 1}")


def _pick_kernel(x: np.ndarray, index: np.ndarray, out: np.ndarray, rows: np.ndarray, flat: np.ndarray) -> None:
    _check_labels(index, x.shape[-1])
    np.add(index, rows, out=flat, casting="unsafe")
    x.take(flat, None, out)


def _unpick_kernel(g: np.ndarray, index: np.ndarray, out: np.ndarray, depth: int, rows: np.ndarray, flat: np.ndarray) -> None:
    _check_labels(index, depth)
    np.add(index, rows, out=flat, casting="unsafe")
    out.fill(0.0)
    out.put(flat, g)


#: One example of at most this many classes is computed in Python floats:
#: each numpy call costs a dispatch (0.2-0.5 us) worth dozens of float
#: operations, and a few classes need only a few (measured in
#: docs/performance.md); more classes are faster as array operations.
FEW_CLASSES = 16


def _in_floats(in_shapes) -> bool:
    """True when a kernel over scores of ``in_shapes[0]`` runs in Python floats: one row of few classes."""
    return len(in_shapes[0]) == 1 and in_shapes[0][0] <= FEW_CLASSES


def _label_specialize(in_shapes, out_shape, scale: float = 1.0) -> dict[str, bool]:
    return {"floats": _in_floats(in_shapes)}


def _checked_label(label: np.ndarray, classes: int) -> int:
    """The single label as an int, if it is in 0..classes-1 (else ``_check_labels`` raises)."""
    value = int(label)
    if not 0 <= value < classes:
        _check_labels(label, classes)
    return value


def _cross_entropy_rule(z: Node, label: Node) -> tuple[Shape, str]:
    return _pick_rule(z, label)


def _cross_entropy_workspace(in_shapes, out_shape, dtype) -> dict[str, np.ndarray | Scratch]:
    if _in_floats(in_shapes):
        return {}
    scratch = _flat_index_workspace(in_shapes, out_shape, dtype)
    scratch["row"] = Scratch(tuple(out_shape) + (1,), dtype)
    scratch["full"] = Scratch(in_shapes[0], dtype)
    return scratch


def _cross_entropy_kernel(z: np.ndarray, label: np.ndarray, out: np.ndarray, floats: bool = False,
                          rows: np.ndarray | None = None, flat: np.ndarray | None = None,
                          row: np.ndarray | None = None, full: np.ndarray | None = None) -> None:
    # log sum exp(z - max) - (z[label] - max), with every exp at most 1
    if floats:  # one example, few classes: Python floats, no workspace
        values = z.tolist()
        top = max(values)
        shifted = values[_checked_label(label, len(values))] - top
        out[()] = math.log(sum([math.exp(value - top) for value in values])) - shifted
        return
    _check_labels(label, z.shape[-1])
    if label.ndim == 0:  # one example: scalar arithmetic beats reductions with out=
        top = np.maximum.reduce(z)
        np.subtract(z, top, out=full)
        shifted = full[label]
        np.exp(full, out=full)
        out[()] = math.log(np.add.reduce(full)) - shifted
        return
    np.maximum.reduce(z, axis=-1, keepdims=True, out=row)
    np.subtract(z, row, out=full)
    np.add(label, rows, out=flat, casting="unsafe")
    full.take(flat, None, out)
    np.exp(full, out=full)
    np.add.reduce(full, axis=-1, keepdims=True, out=row)
    np.log(row, out=row)
    np.subtract(row.reshape(out.shape), out, out=out)


def _cross_entropy_vjp(g: Node, ans: Node, z: Node, label: Node):
    if g.ndim == 0 and is_const(g):
        factor = float(g.value.array)
        if factor != 0.0 and math.isfinite(factor):
            # a constant factor (an SGD step's step size) scales the residual
            # inside its kernel, which saves a multiply of the whole residual
            return SOFTMAX_MINUS_ONEHOT(z, label, ans, scale=factor), None
    residual = SOFTMAX_MINUS_ONEHOT(z, label, ans)
    if g.ndim:  # one g per row: spread it along the classes
        g = EXPAND(g, z.shape, (z.ndim - 1,), False)
    return MUL(g, residual), None


def _softmax_minus_onehot_rule(z: Node, label: Node, ce: Node, scale: float = 1.0) -> tuple[Shape, str]:
    _pick_rule(z, label)
    if ce.shape != label.shape:
        raise ValueError(f"the cross-entropy operand must have one value per row ({format_shape(label.shape)}), "
                         f"got {format_shape(ce.shape)}")
    return z.shape, result_dtype(z, ce)


def _softmax_minus_onehot_kernel(z: np.ndarray, label: np.ndarray, ce: np.ndarray, out: np.ndarray,
                                 scale: float = 1.0, floats: bool = False, rows: np.ndarray | None = None,
                                 flat: np.ndarray | None = None, picked: np.ndarray | None = None) -> None:
    # with ce = log sum exp(z) - z[label], z - z[label] - ce = z - log sum exp(z) <= 0:
    # the softmax without a single reduction, and exp never overflows
    if floats:  # one example, few classes: Python floats, written out at once
        values = z.tolist()
        index = _checked_label(label, len(values))
        shift = values[index] + float(ce)
        result = [scale * math.exp(value - shift) for value in values]
        result[index] -= scale
        out[:] = result
        return
    _check_labels(label, z.shape[-1])
    if label.ndim == 0:
        np.subtract(z, z[label] + ce, out=out)
        np.exp(out, out=out)
        out[label] -= 1.0
        if scale != 1.0:
            np.multiply(out, scale, out=out)
        return
    np.add(label, rows, out=flat, casting="unsafe")
    z.take(flat, None, picked)
    np.add(picked, ce, out=picked)
    np.subtract(z, picked[..., np.newaxis], out=out)
    np.exp(out, out=out)
    # one label per row, so no entry is decremented twice
    out.take(flat, None, picked)
    np.subtract(picked, 1.0, out=picked)
    out.put(flat, picked)
    if scale != 1.0:
        np.multiply(out, scale, out=out)


def _softmax_minus_onehot_workspace(in_shapes, out_shape, dtype, scale: float = 1.0) -> dict[str, np.ndarray | Scratch]:
    if _in_floats(in_shapes):
        return {}
    scratch = _flat_index_workspace(in_shapes, out_shape, dtype)
    scratch["picked"] = Scratch(tuple(out_shape[:-1]), dtype)
    return scratch


def _softmax_minus_onehot_vjp(g: Node, ans: Node, z: Node, label: Node, ce: Node, scale: float):
    # f = scale (s - onehot) with s = exp(z - z[label] - ce), each input independent:
    # with h = scale g, df/dz . g = h*s - onehot * <h, s>, df/dce . g = -<h, s>
    depth = z.shape[-1]
    ones = EXPAND(1.0, label.shape, tuple(range(label.ndim)), False) if label.ndim else 1.0
    s = ADD(ans if scale == 1.0 else MUL(ans, 1.0 / scale), UNPICK(ones, label, depth))
    weighted = MUL(g if scale == 1.0 else MUL(g, scale), s)
    total = SUM(weighted, axis=-1)
    return SUB(weighted, UNPICK(total, label, depth)), None, NEG(total)


# Native forms: one loop over rows of C classes, in the order numpy's
# kernels compute (the row maximum, shifted exponentials, their sum).

def _rows(ctx: NativeContext, index: int, name: str | None = None) -> tuple[str, int, int, str]:
    """(statement making a (rows, classes) view of operand ``index`` (or of
    the output, ``name``), rows, classes, the view's name)."""
    shape = ctx.in_shapes[index] if name is None else ctx.out_shape
    array = ctx.operands[index] if name is None else name
    classes = shape[-1]
    rows = count(shape[:-1])
    view = ctx.temp("rows")
    return f"{view} = {array}.reshape(({rows}, {classes}))", rows, classes, view


def _label_of(ctx: NativeContext, index: int, classes: int, row: str) -> tuple[str, str]:
    """(statement making a flat view of the labels, or "", the label of ``row``)."""
    labels = ctx.label(index, classes)
    if not ctx.in_shapes[index]:
        return "", labels
    flat = ctx.temp("labels")
    return f"{flat} = {labels}.reshape(({count(ctx.in_shapes[index])},))", f"{flat}[{row}]"


def _row_max(z: str, row: str, classes: int, top: str, k: str) -> list[str]:
    return [f"{top} = {z}[{row}, 0]", f"for {k} in range(1, {classes}):",
            f"    {top} = np.maximum({top}, {z}[{row}, {k}])"]


def _softmax_native(ctx: NativeContext) -> str:
    make_z, rows, classes, z = _rows(ctx, 0)
    make_out, _, _, out = _rows(ctx, 0, ctx.out)
    row, k, top, total = ctx.temp("r"), ctx.temp("k"), ctx.temp("top"), ctx.temp("total")
    body = _row_max(z, row, classes, top, k) + [
        f"{total} = {ctx.literal(0.0)}", f"for {k} in range({classes}):",
        f"    {out}[{row}, {k}] = np.exp({z}[{row}, {k}] - {top})", f"    {total} += {out}[{row}, {k}]",
        f"for {k} in range({classes}):", f"    {out}[{row}, {k}] = {out}[{row}, {k}] / {total}"]
    return "\n".join([make_z, make_out, ctx.loops([rows], body, [row])])


def _log_softmax_native(ctx: NativeContext) -> str:
    make_z, rows, classes, z = _rows(ctx, 0)
    make_out, _, _, out = _rows(ctx, 0, ctx.out)
    row, k, top, total = ctx.temp("r"), ctx.temp("k"), ctx.temp("top"), ctx.temp("total")
    body = _row_max(z, row, classes, top, k) + [
        f"{total} = {ctx.literal(0.0)}", f"for {k} in range({classes}):",
        f"    {out}[{row}, {k}] = {z}[{row}, {k}] - {top}", f"    {total} += np.exp({out}[{row}, {k}])",
        f"{total} = np.log({total})",
        f"for {k} in range({classes}):", f"    {out}[{row}, {k}] = {out}[{row}, {k}] - {total}"]
    return "\n".join([make_z, make_out, ctx.loops([rows], body, [row])])


def _pick_native(ctx: NativeContext) -> str:
    make_x, rows, classes, x = _rows(ctx, 0)
    row = ctx.temp("r")
    make_labels, label = _label_of(ctx, 1, classes, row)
    if not ctx.out_shape:
        return f"{ctx.out} = {ctx.operands[0]}[{label}]"
    flat = ctx.temp("flat")
    return "\n".join([make_x, make_labels, f"{flat} = {ctx.out}.reshape(({rows},))",
                      f"for {row} in range({rows}):", f"    {flat}[{row}] = {x}[{row}, {label}]"])


def _unpick_native(ctx: NativeContext) -> str:
    make_out, rows, classes, out = _rows(ctx, 0, ctx.out)
    row, k = ctx.temp("r"), ctx.temp("k")
    make_labels, label = _label_of(ctx, 1, classes, row)
    g = ctx.operands[0]
    value = f"{g}.reshape(({rows},))[{row}]" if ctx.in_shapes[0] else g
    return "\n".join([make_out, make_labels, f"for {row} in range({rows}):",
                      f"    for {k} in range({classes}):", f"        {out}[{row}, {k}] = {ctx.literal(0.0)}",
                      f"    {out}[{row}, {label}] = {value}"])


def _cross_entropy_native(ctx: NativeContext) -> str:
    make_z, rows, classes, z = _rows(ctx, 0)
    row, k, top, total = ctx.temp("r"), ctx.temp("k"), ctx.temp("top"), ctx.temp("total")
    make_labels, label = _label_of(ctx, 1, classes, row)
    body = _row_max(z, row, classes, top, k) + [
        f"{total} = {ctx.literal(0.0)}", f"for {k} in range({classes}):",
        f"    {total} += np.exp({z}[{row}, {k}] - {top})"]
    value = f"np.log({total}) - ({z}[{row}, {label}] - {top})"
    if not ctx.out_shape:
        body.append(f"{ctx.out} = {value}")
        return "\n".join([make_z, make_labels, ctx.loops([rows], body, [row])])
    flat = ctx.temp("flat")
    body.append(f"{flat}[{row}] = {value}")
    return "\n".join([make_z, make_labels, f"{flat} = {ctx.out}.reshape(({rows},))", ctx.loops([rows], body, [row])])


def _softmax_minus_onehot_native(ctx: NativeContext) -> str:
    make_z, rows, classes, z = _rows(ctx, 0)
    make_out, _, _, out = _rows(ctx, 0, ctx.out)
    row, k, shift = ctx.temp("r"), ctx.temp("k"), ctx.temp("shift")
    make_labels, label = _label_of(ctx, 1, classes, row)
    ce = ctx.operands[2] if not ctx.in_shapes[2] else f"{ctx.operands[2]}.reshape(({rows},))[{row}]"
    scale = ctx["scale"]
    body = [f"{shift} = {z}[{row}, {label}] + {ce}", f"for {k} in range({classes}):"]
    if ctx.attributes.get("floats"):
        # numpy's few-classes path scales each entry, then subtracts the scale
        body += [f"    {out}[{row}, {k}] = {ctx.literal(scale)} * np.exp({z}[{row}, {k}] - {shift})",
                 f"{out}[{row}, {label}] -= {ctx.literal(scale)}"]
    else:
        body += [f"    {out}[{row}, {k}] = np.exp({z}[{row}, {k}] - {shift})",
                 f"{out}[{row}, {label}] -= {ctx.literal(1.0)}"]
        if scale != 1.0:
            body += [f"for {k} in range({classes}):", f"    {out}[{row}, {k}] *= {ctx.literal(scale)}"]
    return "\n".join([make_z, make_out, make_labels, ctx.loops([rows], body, [row])])


_CLASS_SAMPLES = (
    Sample([Arg((4,))]),
    Sample([Arg((5, 3), batch=True)]),
    Sample([Arg((3,), low=500.0, high=1000.0)]),  # large logits stay finite
)

SOFTMAX = register(Op(
    name="softmax", operands=("z",), shape_rule=_last_axis_rule, kernel=_softmax_kernel,
    workspace=_row_workspace, native=_softmax_native,
    # J = diag(s) - s s^T, so g J = s * (g - <g, s>)
    vjp=lambda g, ans, z: (MUL(ans, SUB(g, SUM(MUL(g, ans), axis=-1, keepdims=True))),),
    samples=_CLASS_SAMPLES,
    doc="Softmax over the last axis, stable for large logits: exp(z - max z) / sum exp(z - max z).",
))

LOG_SOFTMAX = register(Op(
    name="log_softmax", operands=("z",), shape_rule=_last_axis_rule, kernel=_log_softmax_kernel,
    workspace=_log_softmax_workspace, native=_log_softmax_native,
    vjp=lambda g, ans, z: (SUB(g, MUL(EXP(ans), SUM(g, axis=-1, keepdims=True))),),
    samples=_CLASS_SAMPLES,
    doc="Log of the softmax over the last axis, computed without overflow: z - max z - log sum exp(z - max z).",
))

PICK = register(Op(
    name="pick", operands=("x", "index"), public=False, shape_rule=_pick_rule, kernel=_pick_kernel,
    workspace=_flat_index_workspace, native=_pick_native,
    vjp=lambda g, ans, x, index: (UNPICK(g, index, x.shape[-1]), None),
    samples=(
        Sample([Arg((4,)), Arg((), dtype="int64", low=0, high=4)]),
        Sample([Arg((5, 3), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True)]),
    ),
    doc="``x[..., index]``: one entry per row, chosen by an integer label.",
))

UNPICK = register(Op(
    name="unpick", operands=("g", "index"), attributes={"depth": REQUIRED}, public=False,
    normalize=lambda g, index, depth: {"depth": int(depth)}, shape_rule=_unpick_rule, kernel=_unpick_kernel,
    workspace=_flat_index_workspace, native=_unpick_native,
    vjp=lambda g, ans, x, index, depth: (PICK(g, index), None),
    samples=(
        Sample([Arg(()), Arg((), dtype="int64", low=0, high=4)], {"depth": 4}),
        Sample([Arg((5,), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True)], {"depth": 3}),
    ),
    doc="Rows of ``depth`` zeros with ``g`` placed at each row's label: the transpose of pick.",
))


CROSS_ENTROPY = register(Op(
    name="cross_entropy", operands=("logits", "label"), shape_rule=_cross_entropy_rule, kernel=_cross_entropy_kernel,
    workspace=_cross_entropy_workspace, specialize=_label_specialize, vjp=_cross_entropy_vjp,
    native=_cross_entropy_native,
    samples=(
        Sample([Arg((3,)), Arg((), dtype="int64", low=0, high=3)]),
        Sample([Arg((5, 3), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True)]),
        Sample([Arg((3,), low=800.0, high=1000.0), Arg((), dtype="int64", low=0, high=3)]),
    ),
    doc="""``-log softmax(logits)[label]``, one value per example, stable for large logits.

    Computed as log sum exp(z - max z) - (z[label] - max z);
    d/dz = softmax(z) - onehot(label).

    >>> import tapegraph as tg
    >>> tg.cross_entropy(tg.input("z", shape=("batch", 3)), tg.input("y", shape=("batch",), dtype="int64"))
    <cross_entropy f64[batch] at ...>
    """,
))

SOFTMAX_MINUS_ONEHOT = register(Op(
    name="softmax_minus_onehot", operands=("z", "label", "ce"), attributes={"scale": 1.0}, public=False,
    normalize=lambda z, label, ce, scale: {"scale": float(scale)}, shape_rule=_softmax_minus_onehot_rule,
    kernel=_softmax_minus_onehot_kernel, workspace=_softmax_minus_onehot_workspace, specialize=_label_specialize,
    native=_softmax_minus_onehot_native,
    vjp=_softmax_minus_onehot_vjp,
    samples=(
        Sample([Arg((4,)), Arg((), dtype="int64", low=0, high=4), Arg((), low=0.5, high=2.0)]),
        Sample([Arg((5, 3), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True),
                Arg((5,), low=0.5, high=2.0, batch=True)]),
        Sample([Arg((4,)), Arg((), dtype="int64", low=0, high=4), Arg((), low=0.5, high=2.0)], {"scale": 0.25}),
        Sample([Arg((5, 3), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True),
                Arg((5,), low=0.5, high=2.0, batch=True)], {"scale": -3.0}),
    ),
    doc="""``scale * (exp(z - z[label] - ce) - onehot(label))`` per row.

    With ``ce = cross_entropy(z, label)`` that is ``softmax(z) -
    onehot(label)``, the gradient of ``ce`` with respect to ``z``: the
    cross-entropy already holds the log-sum-exp, so no reduction is redone.
    ``scale`` is a constant factor of the cross-entropy's cotangent (an
    SGD step's step size), applied in the kernel.
    """,
))
