"""Softmax, log-softmax, logsumexp, cross-entropy, and picking one entry per row by label.

Softmax and log-softmax are fused primitives because computing them from
``exp`` and ``sum`` overflows for large logits; both subtract the maximum
over their axis first. Cross-entropy is fused too, for speed and for
exact numerics: its gradient is ``softmax(z) - onehot(label)``, one
instruction, where the chain rule through log-softmax and pick takes six
(measured in docs/performance.md), and its Hessian-vector product is one
``softmax_jvp``. Every one of them works from the shifted logits ``z -
max z``, so no term rounds to the spacing of floats near ``|z|`` (logits
near 1e10 keep the digits of their differences).
``pick``/``unpick`` are a transpose pair: taking the label's entry, and
putting a value back at the label's position.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tapegraph.expr import Node, is_const
from tapegraph.ops.elementwise import EXP, MUL, SUB
from tapegraph.ops.native import Groups, NativeContext, count
from tapegraph.ops.reductions import (
    _NONEMPTY_SAMPLES, EXPAND, SUM, _drop_empty_reduction, _group_best, _kept_workspace, _nonempty_reduce_rule,
    _reduce_attributes,
)
from tapegraph.ops.registry import (
    REQUIRED, Arg, Op, Sample, Scratch, normalize_axis, register, require_float, result_dtype,
)
from tapegraph.shapes import Shape, format_shape


def _class_axes(z: Node, axis: Any) -> dict[str, Any]:
    # every axis the softmax normalises over, as a sorted tuple (-1: the last)
    if z.ndim == 0:
        raise ValueError("needs at least one axis to normalise over, and a scalar has none")
    axes = normalize_axis(axis, z.ndim)
    if not axes:
        raise ValueError("axis=() names no axis to normalise over")
    return {"axis": axes}


def _same_shape_rule(z: Node, axis: tuple[int, ...]) -> tuple[Shape, str]:
    return z.shape, result_dtype(z)


def _row_workspace(in_shapes, out_shape, dtype, axis) -> dict[str, Scratch]:
    if _in_floats(in_shapes, axis):
        return {}
    row = tuple(1 if index in axis else dim for index, dim in enumerate(out_shape))
    return {"row": Scratch(row, dtype)}


def _floats_specialize(in_shapes, out_shape, axis) -> dict[str, bool]:
    return {"floats": _in_floats(in_shapes, axis)}


# Kernels call ufunc methods (np.maximum.reduce, not np.max): the
# fromnumeric wrappers cost more than the work on rows of a few classes.

def _shift_by_max(z: np.ndarray, axis: int | tuple[int, ...], top: np.ndarray, shifted: np.ndarray) -> None:
    """``shifted = z - max(z)`` over ``axis``, the maxima written to ``top``.

    Logits of about ±1e308 overflow the subtraction to -inf, which is
    right: its exponential is exactly 0, and a log-softmax rounds to it.
    """
    np.maximum.reduce(z, axis=axis, keepdims=True, out=top)
    with np.errstate(over="ignore"):
        np.subtract(z, top, out=shifted)


def _softmax_kernel(z: np.ndarray, out: np.ndarray, axis: tuple[int, ...], row: np.ndarray | None = None,
                    floats: bool = False) -> None:
    if floats:  # one row of a few entries: Python floats, without np.errstate's 0.7 us
        if z.ndim != 1:  # a batch of one row (see _one_row)
            z, out = _one_row(z), _one_row(out)
        values = z.tolist()
        top = _top_of(values)
        exponentials = [math.exp(value - top) for value in values]
        total = sum(exponentials)
        position = 0
        for exponential in exponentials:
            out[position] = exponential / total
            position += 1
        return
    _shift_by_max(z, axis, row, out)
    np.exp(out, out=out)
    np.add.reduce(out, axis=axis, keepdims=True, out=row)
    np.divide(out, row, out=out)


def _log_softmax_workspace(in_shapes, out_shape, dtype, axis) -> dict[str, Scratch]:
    if _in_floats(in_shapes, axis):
        return {}
    scratch = _row_workspace(in_shapes, out_shape, dtype, axis)
    scratch["count"] = Scratch(scratch["row"].shape, dtype)
    scratch["full"] = Scratch(out_shape, dtype)
    scratch["mask"] = Scratch(out_shape, dtype)
    return scratch


def _log_sum_of_shifted(shifted: np.ndarray, axis: int | tuple[int, ...], exps: np.ndarray, mask: np.ndarray,
                        rest: np.ndarray, count: np.ndarray) -> None:
    """``rest := log sum exp(shifted)`` along ``axis`` (kept), for ``shifted = z - max z``; no allocation.

    The maxima contribute exactly 1 each (``exp(0)``), so with ``count``
    of them and ``rest`` the sum of the other exponentials, the log-sum is
    ``log(count) + log1p(rest / count)``: for a near one-hot row (rest
    around 1e-8) ``log(1 + rest)`` would round 1 + rest to the spacing
    of floats near 1, while ``log1p`` keeps every digit. ``exps``,
    ``mask`` (the shape of ``shifted``) and ``count`` (of ``rest``) are
    scratch.
    """
    np.exp(shifted, out=exps)
    np.equal(shifted, 0.0, out=mask)
    np.subtract(exps, mask, out=exps)  # exactly 0 at the maxima, as exp(0) is exactly 1
    np.add.reduce(exps, axis=axis, keepdims=True, out=rest)
    np.add.reduce(mask, axis=axis, keepdims=True, out=count)
    with np.errstate(divide="ignore", invalid="ignore"):  # a row of -inf or nan gives nan, as numpy would
        np.divide(rest, count, out=rest)
        np.log1p(rest, out=rest)
        np.log(count, out=count)
    np.add(rest, count, out=rest)


def _log_softmax_kernel(z: np.ndarray, out: np.ndarray, axis: tuple[int, ...], row: np.ndarray | None = None,
                        count: np.ndarray | None = None, full: np.ndarray | None = None,
                        mask: np.ndarray | None = None, floats: bool = False) -> None:
    if floats:  # one row of a few entries: Python floats
        if z.ndim != 1:  # a batch of one row (see _one_row)
            z, out = _one_row(z), _one_row(out)
        values = z.tolist()
        top = _top_of(values)
        log_sum = _log_sum_of_shifted_values(values, top)
        position = 0
        for value in values:
            out[position] = (value - top) - log_sum
            position += 1
        return
    _shift_by_max(z, axis, row, out)
    _log_sum_of_shifted(out, axis, full, mask, row, count)
    np.subtract(out, row, out=out)


def _softmax_jvp_rule(z: Node, v: Node, axis: tuple[int, ...]) -> tuple[Shape, str]:
    if z.shape != v.shape:
        raise ValueError(f"the logits {format_shape(z.shape)} and the direction {format_shape(v.shape)} "
                         "must have one shape")
    return z.shape, result_dtype(z, v)


def _softmax_jvp_workspace(in_shapes, out_shape, dtype, axis) -> dict[str, Scratch]:
    if _in_floats(in_shapes, axis):
        return {}
    group = tuple(1 if index in axis else dim for index, dim in enumerate(out_shape))
    return {"group": Scratch(group, dtype), "count": Scratch(group, dtype), "shifted": Scratch(out_shape, dtype),
            "p": Scratch(out_shape, dtype), "mask": Scratch(out_shape, dtype)}


def _softmax_jvp_kernel(z: np.ndarray, v: np.ndarray, out: np.ndarray, axis: tuple[int, ...],
                        group: np.ndarray | None = None, count: np.ndarray | None = None,
                        shifted: np.ndarray | None = None, p: np.ndarray | None = None,
                        mask: np.ndarray | None = None, floats: bool = False) -> None:
    # p * (v - <v, p>) for p = softmax(z), with v first shifted by its value
    # at a largest logit: for a near one-hot p, v_k - <v, p> is a difference
    # of two numbers that agree to 1e-8, while (v_k - r) - sum_j p_j (v_j - r)
    # with r = v_k only sums the small terms, so every entry keeps its digits
    if floats:  # one row of a few entries: Python floats, in the passes below
        if z.ndim != 1:  # a batch of one row (see _one_row)
            z, v, out = _one_row(z), _one_row(v), _one_row(out)
        values, directions = z.tolist(), v.tolist()
        top = _top_of(values)
        exponentials = [math.exp(value - top) for value in values]
        total = sum(exponentials)
        ties, at_top = 0, 0.0
        for value, direction in zip(values, directions):
            if value - top == 0.0:
                ties += 1
                at_top += direction
        at_top = at_top / ties if ties else math.nan  # no maximum (a row of nan) gives nan
        centred = [direction - at_top for direction in directions]
        probabilities = [exponential / total for exponential in exponentials]
        dot = sum([probability * entry for probability, entry in zip(probabilities, centred)])
        position = 0
        for probability, entry in zip(probabilities, centred):
            out[position] = probability * (entry - dot)
            position += 1
        return
    _shift_by_max(z, axis, group, shifted)
    np.exp(shifted, out=p)
    np.add.reduce(p, axis=axis, keepdims=True, out=group)
    np.divide(p, group, out=p)
    # r: the mean of v over the largest logits (ties share it)
    np.equal(shifted, 0.0, out=mask)
    np.add.reduce(mask, axis=axis, keepdims=True, out=count)
    np.multiply(mask, v, out=mask)
    np.add.reduce(mask, axis=axis, keepdims=True, out=group)
    with np.errstate(invalid="ignore"):  # no maximum (a row of nan) gives nan
        np.divide(group, count, out=group)
    np.subtract(v, group, out=shifted)  # v - r
    np.multiply(p, shifted, out=mask)
    np.add.reduce(mask, axis=axis, keepdims=True, out=group)  # <v - r, p>
    np.subtract(shifted, group, out=shifted)
    np.multiply(p, shifted, out=out)


def _softmax_jvp_vjp(g: Node, ans: Node, z: Node, v: Node, axis: tuple[int, ...]):
    # with p = softmax(z) and J its Jacobian (symmetric), f = <g, J v> =
    # <g*p, v> - <g,p><v,p>: df/dv = J g, and df/dz = J df/dp with
    # df/dp = g*v - <g,p> v - <v,p> g
    p = SOFTMAX(z, axis)
    g_dot_p = SUM(MUL(g, p), axis=axis, keepdims=True)
    v_dot_p = SUM(MUL(v, p), axis=axis, keepdims=True)
    d_p = SUB(SUB(MUL(g, v), MUL(g_dot_p, v)), MUL(v_dot_p, g))
    return SOFTMAX_JVP(z, d_p, axis), SOFTMAX_JVP(z, g, axis)


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


#: One row of at most this many classes is computed in Python floats:
#: each numpy call costs a dispatch (0.2-0.5 us) worth dozens of float
#: operations, and a few classes need only a few (measured in
#: docs/performance.md); more classes are faster as array operations.
FEW_CLASSES = 16


def _in_floats(in_shapes, axis: int | tuple[int, ...]) -> bool:
    """True when a kernel over scores of ``in_shapes[0]`` runs in Python floats: one row of few classes.

    One row: ``axis`` is one axis, of at most ``FEW_CLASSES`` entries, and
    every other axis has one entry, as for one example (a vector) or a
    batch of one (``(1, classes)``, an estimator's step with ``batch_size=1``).
    """
    shape = tuple(in_shapes[0])
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(axes) != 1 or not shape:
        return False
    classes = int(axes[0]) % len(shape)
    return shape[classes] <= FEW_CLASSES and all(size == 1 for index, size in enumerate(shape) if index != classes)


def _label_specialize(in_shapes, out_shape, axis: int = -1) -> dict[str, bool]:
    return {"floats": _in_floats(in_shapes, axis)}


def _one_row(array: np.ndarray) -> np.ndarray:
    """The entries of an array holding one row (``(1, classes)``, ``(classes, 1)``...) as a vector.

    For an output it is a view to write through: outputs are planned
    buffers, C-contiguous, so ``reshape`` gives a view (of an operand it
    may be a copy, which is as good).
    """
    return array.reshape(-1)


def _top_of(values: list[float]) -> float:
    """The largest of ``values``, as ``max`` gives it (a loop: cheaper than ``max`` for a few values)."""
    top = values[0]
    for value in values:
        if value > top:
            top = value
    return top


def _log_sum_of_shifted_values(values: list[float], top: float) -> float:
    """``log sum exp(values - top)`` for ``top`` their maximum, as ``_log_sum_of_shifted`` computes it.

    The maxima count exactly 1 each; the rest is summed apart, and the
    log-sum is ``log(count) + log1p(rest / count)`` (nan when no value is
    the maximum: a row holding nan).
    """
    count_of_top, rest = 0, 0.0
    for value in values:
        if value == top:
            count_of_top += 1
        else:
            rest += math.exp(value - top)
    return math.log(count_of_top) + math.log1p(rest / count_of_top) if count_of_top else math.nan


def _label_and_top(values: list[float], label: np.ndarray) -> tuple[int, float]:
    """(the single label as an int, if it is in 0..classes-1, else
    ``_check_labels`` raises; the largest of ``values``, as ``max`` gives it).

    One call for both, and the loop instead of ``max``, which for a few
    values costs more than the loop: the Python-float kernels run at
    every per-example step.
    """
    index = int(label)
    if not 0 <= index < len(values):
        _check_labels(label, len(values))
    top = values[0]
    for value in values:
        if value > top:
            top = value
    return index, top


def _class_axis(z: Node, label: Node, axis: Any) -> dict[str, Any]:
    # the one axis holding the classes, non-negative; labels index it
    if z.ndim == 0:
        raise ValueError("the scores need an axis of classes, and a scalar has none")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be one int (the axis of classes), got {type(axis).__name__} {axis!r}")
    (index,) = normalize_axis(int(axis), z.ndim)
    return {"axis": index}


def _labels_rule(z: Node, label: Node, axis: int) -> tuple[Shape, str]:
    require_float(z)
    if np.dtype(label.dtype).kind not in "iu":
        raise ValueError(f"the label must be an integer array, got dtype {label.dtype}")
    rows = z.shape[:axis] + z.shape[axis + 1:]
    if label.shape != rows:
        raise ValueError(f"labels of shape {format_shape(label.shape)} do not fit scores of shape "
                         f"{format_shape(z.shape)} with the classes on axis {axis}; need one label per row "
                         f"({format_shape(rows)})")
    if z.shape[axis] == 0:
        raise ValueError(f"axis {axis} holds the classes, and it has none: there is no label to pick")
    return rows, z.dtype


def _label_workspace(in_shapes, out_shape, dtype, axis: int) -> dict[str, np.ndarray | Scratch]:
    """Where each row's entries lie, and one number per row: the shared scratch of cross-entropy and its gradient.

    Row r's class k is at flat position ``offsets[r] + k * stride`` of the
    scores as they are laid out (``stride`` the size of the axes after
    ``axis``), so the kernels work in that layout: no transposed copy,
    which numpy would buffer on every call.
    """
    z_shape = tuple(in_shapes[0])
    size = int(np.prod(z_shape, dtype=np.int64))
    offsets = np.arange(size, dtype=np.intp).reshape(z_shape).take(0, axis=axis)
    rows = offsets.shape
    group = tuple(1 if index == axis else dim for index, dim in enumerate(z_shape))
    return {"offsets": offsets, "flat": Scratch(rows, np.dtype(np.intp).name), "row": Scratch(group, dtype)}


def _flat_positions(label: np.ndarray, z_shape: tuple[int, ...], axis: int, offsets: np.ndarray,
                    flat: np.ndarray) -> None:
    # checked labels fit any integer type (see _check_labels)
    np.multiply(label, math.prod(z_shape[axis + 1:]), out=flat, casting="unsafe")
    np.add(flat, offsets, out=flat)


def _cross_entropy_workspace(in_shapes, out_shape, dtype, axis: int) -> dict[str, np.ndarray | Scratch]:
    if _in_floats(in_shapes, axis):
        return {}
    scratch = _label_workspace(in_shapes, out_shape, dtype, axis)
    for name in ("shifted", "exps", "mask"):
        scratch[name] = Scratch(in_shapes[0], dtype)
    scratch["count"] = Scratch(scratch["row"].shape, dtype)
    return scratch


def _cross_entropy_kernel(z: np.ndarray, label: np.ndarray, out: np.ndarray, axis: int = -1,
                          floats: bool = False, offsets: np.ndarray | None = None, flat: np.ndarray | None = None,
                          row: np.ndarray | None = None, shifted: np.ndarray | None = None,
                          exps: np.ndarray | None = None, mask: np.ndarray | None = None,
                          count: np.ndarray | None = None) -> None:
    # with s = z - max z, ce = log sum exp(s) - s[label], the log-sum taken
    # as log(count of maxima) + log1p(rest) so that a near one-hot row
    # keeps every digit of its small cross-entropy
    if floats:  # one example, few classes: Python floats
        if z.ndim != 1:  # a batch of one row (see _one_row); out[()] sets its one entry
            z, label = _one_row(z), label.reshape(())
        values = z.tolist()
        index, top = _label_and_top(values, label)
        out[()] = _log_sum_of_shifted_values(values, top) - (values[index] - top)
        return
    _check_labels(label, z.shape[axis])
    _shift_by_max(z, axis, row, shifted)
    _log_sum_of_shifted(shifted, axis, exps, mask, row, count)
    _flat_positions(label, z.shape, axis, offsets, flat)
    shifted.take(flat, None, out)
    np.subtract(row.reshape(out.shape), out, out=out)


def _cross_entropy_vjp(g: Node, ans: Node, z: Node, label: Node, axis: int):
    # one factor for every row (an SGD step's step size, a mean's 1/n)
    # scales the residual inside its kernel, which saves a multiply of the
    # whole residual (and, for a constant, a constant of its size)
    if g.ndim == 0 and not is_const(g):
        return SOFTMAX_MINUS_ONEHOT(z, label, g, axis), None
    if is_const(g) and (g.ndim == 0 or g.value.fill is not None):
        factor = float(g.value.array) if g.ndim == 0 else float(g.value.fill)
        if factor != 0.0 and math.isfinite(factor):
            return SOFTMAX_MINUS_ONEHOT(z, label, factor, axis), None
    residual = SOFTMAX_MINUS_ONEHOT(z, label, 1.0, axis)
    if g.ndim:  # one g per row: spread it along the classes
        g = EXPAND(g, z.shape, (axis,), False)
    return MUL(g, residual), None


def _softmax_minus_onehot_axis(z: Node, label: Node, scale: Node, axis: Any) -> dict[str, Any]:
    return _class_axis(z, label, axis)


def _softmax_minus_onehot_rule(z: Node, label: Node, scale: Node, axis: int) -> tuple[Shape, str]:
    _labels_rule(z, label, axis)
    if scale.shape != () or np.dtype(scale.dtype).kind != "f":
        raise ValueError(f"the scale must be a single float, got {format_shape(scale.shape)} {scale.dtype}")
    return z.shape, result_dtype(z)


def _softmax_minus_onehot_workspace(in_shapes, out_shape, dtype, axis: int) -> dict[str, np.ndarray | Scratch]:
    if _in_floats(in_shapes, axis):
        return {}
    scratch = _label_workspace(in_shapes, out_shape, dtype, axis)
    scratch["picked"] = Scratch(scratch["offsets"].shape, dtype)
    scratch["total"] = Scratch(scratch["row"].shape, dtype)
    return scratch


def _softmax_minus_onehot_kernel(z: np.ndarray, label: np.ndarray, scale: float | np.ndarray, out: np.ndarray,
                                 axis: int = -1, floats: bool = False, offsets: np.ndarray | None = None,
                                 flat: np.ndarray | None = None, row: np.ndarray | None = None,
                                 picked: np.ndarray | None = None, total: np.ndarray | None = None) -> None:
    # softmax from the shifted logits e = exp(z - max z): e / total off the
    # label, and -others / total at it, where others sums the exponentials
    # off the label: p[label] - 1 would round to the spacing of floats
    # near 1 when p[label] is close to 1
    if floats:  # one example, few classes: Python floats
        if z.ndim != 1:  # a batch of one row (see _one_row)
            z, label, out = _one_row(z), label.reshape(()), _one_row(out)
        values = z.tolist()
        index, top = _label_and_top(values, label)
        # one loop, entries written one by one: for a few classes this is
        # a third faster than list comprehensions and a slice assignment
        exponentials = []
        others = at_label = 0.0
        position = 0
        for value in values:
            exponential = math.exp(value - top)
            if position == index:
                at_label = exponential
                exponential = 0.0
            else:
                others += exponential
            exponentials.append(exponential)
            position += 1
        factor = scale / (others + at_label)
        position = 0
        for exponential in exponentials:
            out[position] = exponential * factor
            position += 1
        out[index] = -others * factor
        return
    _check_labels(label, z.shape[axis])
    _shift_by_max(z, axis, row, out)
    np.exp(out, out=out)
    _flat_positions(label, z.shape, axis, offsets, flat)
    out.take(flat, None, picked)
    out.put(flat, 0.0)
    np.add.reduce(out, axis=axis, keepdims=True, out=row)  # the others
    np.add(row, picked.reshape(row.shape), out=total)
    np.divide(out, total, out=out)
    np.divide(row, total, out=row)
    np.negative(row, out=row)
    # one label per row, so no entry is written twice
    out.put(flat, row)
    if scale != 1.0:
        np.multiply(out, scale, out=out)


def _softmax_minus_onehot_vjp(g: Node, ans: Node, z: Node, label: Node, scale: Node, axis: int):
    # d/dz of scale * (softmax(z) - onehot) is scale times the softmax's
    # Jacobian, symmetric: one fused product, exact for a near one-hot row
    # (the Hessian-vector product of the cross-entropy); d/d scale is the
    # unscaled residual
    return (SOFTMAX_JVP(z, MUL(g, scale), (axis,)), None,
            SUM(MUL(g, SOFTMAX_MINUS_ONEHOT(z, label, 1.0, axis))))


# Native forms: one group of entries (over ``axis``) at a time, in the
# passes the numpy kernels make over it, so that both give the same
# numbers: the group's maximum, the shifted exponentials, their sums.

def _shifted_log_sum(ctx: NativeContext, groups: Groups, z: str, top: str, out: str | None = None) -> list[str]:
    """Lines setting ``lse`` (the name, returned last) to ``log sum exp(z - top)`` over the group.

    As ``_log_sum_of_shifted``: the maxima count exactly 1 each, the
    rest is summed apart, ``lse = log1p(rest / count) + log(count)``;
    with ``out``, each shifted entry is written there too.
    """
    rest, ties, shifted, lse = ctx.temp("rest"), ctx.temp("ties"), ctx.temp("shifted"), ctx.temp("lse")
    zero = ctx.literal(0.0)
    entry_lines = [f"{shifted} = {groups.at(z)} - {top}"]
    if out is not None:
        entry_lines.append(f"{groups.at(out)} = {shifted}")
    entry_lines += [f"if {shifted} == {zero}:", f"    {ties} += {ctx.literal(1.0)}", "else:",
                    f"    {rest} += np.exp({shifted})"]
    return [f"{rest} = {zero}", f"{ties} = {zero}", *groups.over(entry_lines),
            f"{lse} = np.log1p({rest} / {ties}) + np.log({ties})", lse]


def _softmax_native(ctx: NativeContext) -> str:
    groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
    z, out = ctx.operands[0], groups.at(ctx.out)
    *lines, top = _group_best(ctx, groups, z)
    total = ctx.temp("total")
    body = [*lines, f"{total} = {ctx.literal(0.0)}",
            *groups.over([f"{out} = np.exp({groups.at(z)} - {top})", f"{total} += {out}"]),
            *groups.over([f"{out} = {out} / {total}"])]
    return groups.each(body)


def _log_softmax_native(ctx: NativeContext) -> str:
    groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
    z = ctx.operands[0]
    *lines, top = _group_best(ctx, groups, z)
    *log_sum, lse = _shifted_log_sum(ctx, groups, z, top, ctx.out)
    out = groups.at(ctx.out)
    return groups.each([*lines, *log_sum, *groups.over([f"{out} = {out} - {lse}"])])


def _softmax_jvp_native(ctx: NativeContext) -> str:
    # p * ((v - r) - <v - r, p>), p = softmax(z), r the mean of v over the largest logits
    groups = Groups(ctx, ctx.out_shape, ctx["axis"])
    z, v = (groups.at(name, shape) for name, shape in zip(ctx.operands, ctx.in_shapes))
    out = groups.at(ctx.out)
    *lines, top = _group_best(ctx, groups, ctx.operands[0])
    total, ties, at_top, dot = ctx.temp("total"), ctx.temp("ties"), ctx.temp("at_top"), ctx.temp("dot")
    mask = ctx.temp("mask")
    zero, one = ctx.literal(0.0), ctx.literal(1.0)
    body = [*lines, f"{total} = {zero}", f"{ties} = {zero}", f"{at_top} = {zero}",
            *groups.over([f"{out} = np.exp({z} - {top})", f"{total} += {out}",
                          f"{mask} = {one} if {z} - {top} == {zero} else {zero}",
                          f"{ties} += {mask}", f"{at_top} += {mask} * {v}"]),
            f"{at_top} = {at_top} / {ties}", f"{dot} = {zero}",
            *groups.over([f"{out} = {out} / {total}", f"{dot} += {out} * ({v} - {at_top})"]),
            *groups.over([f"{out} = {out} * (({v} - {at_top}) - {dot})"])]
    return groups.each(body)


def _logsumexp_native(ctx: NativeContext) -> str:
    # max + the log-sum of the shifted entries; where the maximum is not
    # finite (the log-sum NaN) the maximum itself, as np.fmax picks it
    groups = Groups(ctx, ctx.in_shapes[0], ctx["axis"])
    x = ctx.operands[0]
    *lines, top = _group_best(ctx, groups, x)
    *log_sum, lse = _shifted_log_sum(ctx, groups, x, top)
    return groups.each([*lines, *log_sum, f"{groups.reduced(ctx.out, ctx['keepdims'])} = np.fmax({top} + {lse}, {top})"])


def _labelled_groups(ctx: NativeContext) -> tuple[Groups, str, str, list[str]]:
    """(groups over the class axis, each row's label, the logits at it, lines setting the row's maximum ``top``)."""
    axis = ctx["axis"]
    groups = Groups(ctx, ctx.in_shapes[0], (axis,))
    labels = ctx.label(1, ctx.in_shapes[0][axis])
    label = groups.reduced(labels, keepdims=False) if ctx.in_shapes[1] else labels
    at_label = groups.replaced(ctx.operands[0], axis, label)
    return groups, label, at_label, _group_best(ctx, groups, ctx.operands[0])


def _cross_entropy_native(ctx: NativeContext) -> str:
    # log sum exp(s) - s[label] for s = z - max z
    groups, _, at_label, lines = _labelled_groups(ctx)
    *lines, top = lines
    *log_sum, lse = _shifted_log_sum(ctx, groups, ctx.operands[0], top)
    return groups.each([*lines, *log_sum, f"{groups.reduced(ctx.out, keepdims=False)} = {lse} - ({at_label} - {top})"])


def _softmax_minus_onehot_native(ctx: NativeContext) -> str:
    # e = exp(z - max z): e / total off the label, -others / total at it
    groups, label, _, lines = _labelled_groups(ctx)
    *lines, top = lines
    out = groups.at(ctx.out)
    at_label = groups.replaced(ctx.out, ctx["axis"], label)
    picked, others, total = ctx.temp("picked"), ctx.temp("others"), ctx.temp("total")
    scale = ctx.operands[2]
    body = [*lines, *groups.over([f"{out} = np.exp({groups.at(ctx.operands[0])} - {top})"]),
            f"{picked} = {at_label}", f"{at_label} = {ctx.literal(0.0)}", f"{others} = {ctx.literal(0.0)}",
            *groups.over([f"{others} += {out}"])]
    if ctx.attributes.get("floats"):
        # numpy's one-row path multiplies by one factor, scale / total
        factor = ctx.temp("factor")
        body += [f"{factor} = {scale} / ({others} + {picked})",
                 *groups.over([f"{out} = {out} * {factor}"]), f"{at_label} = -{others} * {factor}"]
    else:
        body += [f"{total} = {others} + {picked}", *groups.over([f"{out} = {out} / {total}"]),
                 f"{at_label} = -({others} / {total})"]
        # as numpy's kernel, which multiplies unless the scale is 1 (exactly
        # the same numbers: a product by 1 is exact)
        body += groups.over([f"{out} = {out} * {scale}"])
    return groups.each(body)


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


_CLASS_SAMPLES = (
    Sample([Arg((4,))]),
    Sample([Arg((5, 3), batch=True)]),
    Sample([Arg((3,), low=500.0, high=1000.0)]),  # large logits stay finite
    Sample([Arg((4, 3), batch=True)], {"axis": 0}),  # over the batch
    Sample([Arg((2, 3, 2))], {"axis": (0, 2)}),
    Sample([Arg((2, 4, 3))], {"axis": -2}),
)

SOFTMAX = register(Op(
    name="softmax", operands=("z",), attributes={"axis": -1}, normalize=_class_axes,
    shape_rule=_same_shape_rule, kernel=_softmax_kernel, workspace=_row_workspace, specialize=_floats_specialize,
    native=_softmax_native,
    # J = diag(s) - s s^T, so g J = s * (g - <g, s>), fused so a near
    # one-hot s keeps its digits
    vjp=lambda g, ans, z, axis: (SOFTMAX_JVP(z, g, axis),),
    samples=_CLASS_SAMPLES,
    doc="""Softmax over ``axis`` (the last by default; an int or a tuple), stable for large logits.

    ``exp(z - max z) / sum exp(z - max z)``, the sums taken over ``axis``;
    the VJP is ``s * (g - <g, s>)``.

    >>> import tapegraph as tg
    >>> tg.softmax(tg.input("z", shape=("batch", 3)), axis=0)
    <softmax f64[batch,3] at ...>
    """,
))

LOG_SOFTMAX = register(Op(
    name="log_softmax", operands=("z",), attributes={"axis": -1}, normalize=_class_axes,
    shape_rule=_same_shape_rule, kernel=_log_softmax_kernel, workspace=_log_softmax_workspace,
    specialize=_floats_specialize, native=_log_softmax_native,
    vjp=lambda g, ans, z, axis: (SUB(g, MUL(EXP(ans), SUM(g, axis=axis, keepdims=True))),),
    samples=_CLASS_SAMPLES,
    doc="""Log of the softmax over ``axis`` (the last by default; an int or a tuple), without overflow.

    ``z - max z - log sum exp(z - max z)``, the log-sum computed with
    ``log1p`` of the terms below the maximum, so a near one-hot row keeps
    its digits; the VJP is ``g - softmax(z) * sum g``.
    """,
))

SOFTMAX_JVP = register(Op(
    name="softmax_jvp", operands=("z", "v"), attributes={"axis": REQUIRED}, public=False,
    normalize=lambda z, v, axis: {"axis": normalize_axis(axis, z.ndim)},
    shape_rule=_softmax_jvp_rule, kernel=_softmax_jvp_kernel, workspace=_softmax_jvp_workspace,
    specialize=_floats_specialize, vjp=_softmax_jvp_vjp, native=_softmax_jvp_native,
    samples=(
        Sample([Arg((4,)), Arg((4,))], {"axis": (0,)}),
        Sample([Arg((5, 3), batch=True), Arg((5, 3), batch=True)], {"axis": (1,)}),
        Sample([Arg((2, 3, 2)), Arg((2, 3, 2))], {"axis": (0, 2)}),
        Sample([Arg((3,), low=20.0, high=40.0), Arg((3,))], {"axis": (0,)}),  # near one-hot
    ),
    doc="""``J v`` for ``J`` the Jacobian of ``softmax(z)`` over ``axis``: ``p * (v - <v, p>)``, ``p = softmax(z)``.

    ``J`` is symmetric, so this is the VJP of the softmax, and with ``v``
    a direction it is the Hessian-vector product of the cross-entropy.
    It is computed with ``v`` shifted by its value at the largest logit,
    so for a near one-hot ``p`` no entry is the difference of two nearly
    equal numbers.
    """,
))

# logsumexp: the log of the softmax's normaliser, over any axes.

def _logsumexp_workspace(in_shapes, out_shape, dtype, axis, keepdims) -> dict[str, Scratch]:
    scratch = _kept_workspace(in_shapes, out_shape, dtype, axis)
    for name in ("rest", "count"):
        scratch[name] = Scratch(scratch["group"].shape, dtype)
    for name in ("shifted", "exps", "mask"):
        scratch[name] = Scratch(in_shapes[0], dtype)
    return scratch


def _logsumexp_kernel(x: np.ndarray, out: np.ndarray, axis: tuple[int, ...], keepdims: bool, group: np.ndarray,
                      rest: np.ndarray, count: np.ndarray, shifted: np.ndarray, exps: np.ndarray,
                      mask: np.ndarray) -> None:
    # max + log sum exp(x - max), the sum taken as count of maxima plus the
    # rest so that a result near the maximum keeps its digits (log1p)
    np.maximum.reduce(x, axis=axis, keepdims=True, out=group)
    with np.errstate(over="ignore", invalid="ignore"):  # -1e308 - 1e308 is -inf; inf - inf is nan, see below
        np.subtract(x, group, out=shifted)
    _log_sum_of_shifted(shifted, axis, exps, mask, rest, count)
    np.add(group, rest, out=rest)
    # a group whose maximum is not finite gave NaN above; its log-sum-exp
    # is that maximum (-inf for all -inf, inf, or NaN), and elsewhere the
    # result is at least the maximum: fmax, which passes over NaN, picks it
    np.fmax(rest, group, out=rest)
    np.copyto(out, rest if keepdims else rest.reshape(out.shape))


def _logsumexp_vjp(g: Node, ans: Node, x: Node, axis: tuple[int, ...], keepdims: bool):
    if not axis:
        return (g,)
    # the softmax along axis, computed from the shifted entries: exact for entries near 1e10
    return (MUL(EXPAND(g, x.shape, axis, keepdims), SOFTMAX(x, axis)),)


LOGSUMEXP = register(Op(
    name="logsumexp", operands=("x",), attributes={"axis": None, "keepdims": False}, normalize=_reduce_attributes,
    rewrite=_drop_empty_reduction, shape_rule=_nonempty_reduce_rule, kernel=_logsumexp_kernel,
    workspace=_logsumexp_workspace, vjp=_logsumexp_vjp, native=_logsumexp_native,
    samples=(*_NONEMPTY_SAMPLES, Sample([Arg((4,), low=990.0, high=1010.0)], {"axis": (0,), "keepdims": False})),
    doc="""``log sum exp(x)`` over ``axis`` (all of them by default), without overflow.

    ``max + log(count of maxima) + log1p(rest / count)``, where rest sums
    ``exp(x - max)`` below the maximum; ``-inf`` when every entry is
    ``-inf``. The VJP is ``g`` times the softmax over ``axis``.
    """,
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
    name="cross_entropy", operands=("logits", "label"), attributes={"axis": -1}, normalize=_class_axis,
    shape_rule=_labels_rule, kernel=_cross_entropy_kernel, workspace=_cross_entropy_workspace,
    specialize=_label_specialize, vjp=_cross_entropy_vjp, native=_cross_entropy_native,
    samples=(
        Sample([Arg((3,)), Arg((), dtype="int64", low=0, high=3)]),
        Sample([Arg((5, 3), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True)]),
        Sample([Arg((3,), low=800.0, high=1000.0), Arg((), dtype="int64", low=0, high=3)]),
        Sample([Arg((5, 3)), Arg((3,), dtype="int64", low=0, high=5)], {"axis": 0}),
        Sample([Arg((5, 3, 2), batch=True), Arg((5, 2), dtype="int64", low=0, high=3, batch=True)], {"axis": 1}),
        Sample([Arg((20,)), Arg((), dtype="int64", low=0, high=20)]),  # more classes than the float path takes
    ),
    doc="""``-log softmax(logits)[label]`` along ``axis``, one value per example, exact for any finite logits.

    Computed from ``s = z - max z`` as ``log sum exp(s) - s[label]``, the
    log-sum with ``log1p`` of the terms below the maximum;
    ``d/dz = softmax(z) - onehot(label)``. ``label`` has the shape of the
    logits without ``axis`` (the last by default). Logits of opposite
    signs near the largest float give the gradient exactly; a
    cross-entropy beyond the largest float is ``inf``.

    >>> import tapegraph as tg
    >>> tg.cross_entropy(tg.input("z", shape=("batch", 3)), tg.input("y", shape=("batch",), dtype="int64"))
    <cross_entropy f64[batch] at ...>
    """,
))

SOFTMAX_MINUS_ONEHOT = register(Op(
    name="softmax_minus_onehot", operands=("z", "label", "scale"), attributes={"axis": -1}, public=False,
    numbers=("scale",), normalize=_softmax_minus_onehot_axis, shape_rule=_softmax_minus_onehot_rule, kernel=_softmax_minus_onehot_kernel,
    workspace=_softmax_minus_onehot_workspace, specialize=_label_specialize, vjp=_softmax_minus_onehot_vjp,
    native=_softmax_minus_onehot_native,
    samples=(
        Sample([Arg((4,)), Arg((), dtype="int64", low=0, high=4), Arg((), low=0.1, high=0.5)]),
        Sample([Arg((5, 3), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True), Arg((), low=0.5, high=1.5)]),
        Sample([Arg((4,)), Arg((), dtype="int64", low=0, high=4), Arg((), low=-3.0, high=-1.0)]),
        Sample([Arg((5, 3), batch=True), Arg((5,), dtype="int64", low=0, high=3, batch=True), Arg((), low=-3.0, high=-1.0)]),
        Sample([Arg((3, 5)), Arg((5,), dtype="int64", low=0, high=3), Arg((), low=0.5, high=1.5)], {"axis": 0}),
        Sample([Arg((5, 3, 2), batch=True), Arg((5, 2), dtype="int64", low=0, high=3, batch=True), Arg((), low=0.5, high=1.5)],
               {"axis": -2}),
        Sample([Arg((20,)), Arg((), dtype="int64", low=0, high=20), Arg((), low=0.5, high=1.5)]),
    ),
    doc="""``scale * (softmax(z) - onehot(label))`` along ``axis``: the gradient of the cross-entropy.

    Computed from ``e = exp(z - max z)``: ``e / total`` off the label and
    ``-others / total`` at it (``others`` the sum of ``e`` off the label),
    so that ``p[label] - 1`` near 0 keeps its digits. ``scale`` is the
    cross-entropy's cotangent when it is one number for every row (an SGD
    step's step size, a mean's 1/n), applied in the kernel, which takes
    it as a Python number.
    """,
))
