"""Native forms: how an op is spelled in the numba code of the native backend.

An op's ``native`` field (``Op.native``) is one of

- a string: for an op computed entry by entry, the expression of one result entry over one entry of each
  operand, ``{0}``, ``{1}``, ... (and the attributes by name), e.g.
  ``"{0} + {1}"`` or ``"np.log({0})"``; the backend writes the loops,
  broadcasting as numpy does. numba's ``np.log`` and ``np.exp`` on
  numbers, compiled with numpy's error model, give numpy's nan and inf at
  the edges (log of a negative number, division by zero);
- a function ``native(ctx: NativeContext) -> str``: the statements that
  compute the whole result, for any other op (reductions, products,
  softmax). ``ctx`` names the operands and the output, gives their
  shapes, the attributes, and helpers that write loops and index arrays;
  ``Groups`` writes the loops of a reduction over some axes, one group
  of entries at a time, in as many passes over it as the op makes.
  Such a function may carry an entry form as its attribute ``entry``:
  ``entry(ctx)`` gives, where every result entry is a function of one
  entry of each operand (an outer product), a function from index names
  to that entry's expression, else None (see ``entry_form``).

Every value of shape ``()`` is a local number in native code (``ctx.out``
is then a name to assign, ``ctx.operands[i]`` a number); other values are
C-contiguous arrays, written in place (never rebound). Integer operands
that pick an entry by label are declared with ``ctx.label(index,
classes)``, and any other integer operand used as an index with
``ctx.checked(index, check)`` (gather's indices: negative ones count from
the end, as numpy's do): the backend runs each check, the numpy kernel's
own, on the operand before the native code runs (which itself never
checks an index), so a bad index fails as it does on the numpy backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class NativeContext:
    """What a native template knows about one instruction (see the module docstring)."""

    def __init__(self, operands: Sequence[str], in_shapes: Sequence[tuple[int, ...]], in_dtypes: Sequence[str],
                 out: str, out_shape: tuple[int, ...], dtype: str, attributes: dict[str, Any], prefix: str) -> None:
        #: Each operand's name in the generated code: an array, or a number for shape ().
        self.operands = tuple(operands)
        self.in_shapes = tuple(tuple(shape) for shape in in_shapes)
        self.in_dtypes = tuple(in_dtypes)
        #: The result's name: an array written in place, or a local to assign for shape ().
        self.out = out
        self.out_shape = tuple(out_shape)
        self.dtype = dtype
        #: Static and derived attributes (``axis``, ``transpose_a``, ``scale`` ...).
        self.attributes = dict(attributes)
        #: (operand index, check) of each index operand declared: the check
        #: takes the operand's array and raises IndexError for a bad entry.
        self.checks: list[tuple[int, Callable[[np.ndarray], None]]] = []
        #: (name, size) of each local scratch array a template asked for
        #: (``scratch``): the backend allocates it once, before any step.
        self.scratch_arrays: list[tuple[str, int]] = []
        #: Operand index -> the entry expression (a function of the index
        #: names) of an operand not stored but computed where it is read
        #: (fused by the backend; its shape is the result's).
        self.fused: dict[int, Callable[[Sequence[str]], str]] = {}
        self._prefix = prefix
        self._count = 0

    def __getitem__(self, key: str) -> Any:
        return self.attributes[key]

    def temp(self, hint: str = "t") -> str:
        """A fresh local name for this instruction's own use."""
        self._count += 1
        return f"{self._prefix}_{hint}{self._count}"

    def scratch(self, size: int, hint: str = "lanes") -> str:
        """A fresh local array of ``size`` entries of the result's dtype, allocated once (not per step)."""
        name = self.temp(hint)
        self.scratch_arrays.append((name, int(size)))
        return name

    def label(self, index: int, classes: int) -> str:
        """Declare operand ``index`` as labels in ``0..classes-1``; its name."""
        from tapegraph.ops.softmax import _check_labels  # (softmax imports this module)
        classes = int(classes)
        return self.checked(index, lambda labels: _check_labels(labels, classes))

    def checked(self, index: int, check: Callable[[np.ndarray], None]) -> str:
        """Declare operand ``index`` as integers that ``check`` vets (raising IndexError); its name."""
        self.checks.append((index, check))
        return self.operands[index]

    def literal(self, value: float) -> str:
        """``value`` as a number of the result's dtype (``np.float32(0.5)`` for float32)."""
        value = float(value)
        if math.isnan(value):
            text = "np.nan"
        elif math.isinf(value):
            text = "np.inf" if value > 0 else "-np.inf"
        else:
            text = repr(value)
        return text if self.dtype == "float64" else f"np.{self.dtype}({text})"

    def at(self, index: int, indices: Sequence[str]) -> str:
        """Operand ``index`` at ``indices`` (right-aligned, numpy broadcasting)."""
        if index in self.fused:
            return self.fused[index](list(indices)[len(indices) - len(self.in_shapes[index]):])
        return entry(self.operands[index], self.in_shapes[index], indices)

    def store(self, indices: Sequence[str]) -> str:
        """The result at ``indices``: ``out[i0, i1]``, or ``out`` for shape ()."""
        return entry(self.out, self.out_shape, indices)

    def loops(self, shape: Sequence[int], body: Sequence[str] | str, names: Sequence[str] | None = None) -> str:
        """Nested ``for`` loops over ``shape`` around ``body`` (lines); the indices are ``names``."""
        return loops(shape, body, names or self.indices(len(shape)))

    def indices(self, count: int, hint: str = "i") -> list[str]:
        """``count`` fresh index names."""
        return [self.temp(hint) for _ in range(count)]


def entry(name: str, shape: Sequence[int], indices: Sequence[str]) -> str:
    """``name`` indexed by the last ``len(shape)`` of ``indices``; size-1 axes at 0."""
    if not shape:
        return name
    aligned = list(indices)[len(indices) - len(shape):]
    parts = ["0" if dim == 1 else index for dim, index in zip(shape, aligned)]
    return f"{name}[{', '.join(parts)}]"


def loops(shape: Sequence[int], body: Sequence[str] | str, names: Sequence[str]) -> str:
    """``for`` loops over ``shape`` with indices ``names`` around ``body``."""
    lines = body.split("\n") if isinstance(body, str) else list(body)
    result = []
    for depth, (name, size) in enumerate(zip(names, shape)):
        result.append("    " * depth + f"for {name} in range({int(size)}):")
    result.extend("    " * len(shape) + line for line in lines)
    return "\n".join(result)


def elementwise_source(expression: str, ctx: NativeContext) -> str:
    """The loops computing an elementwise op from its entry ``expression``."""
    names = ctx.indices(len(ctx.out_shape))
    value = expression.format(*(ctx.at(index, names) for index in range(len(ctx.operands))), **ctx.attributes)
    return ctx.loops(ctx.out_shape, [f"{ctx.store(names)} = {value}"], names)


def entry_form(native: str | Callable[[NativeContext], str], ctx: NativeContext) -> Callable[[Sequence[str]], str] | None:
    """How one entry of the result is computed, where it depends on one entry of each operand, else None.

    The answer is a function from the result's index names to the
    entry's expression (parenthesised), which gives the stored entry bit
    for bit: for an elementwise op (a string native form) its
    expression, for a native function its ``entry`` attribute if it has
    one (``matmul`` with an inner size of 1: ``a[i, 0] * b[0, j]``).
    """
    if isinstance(native, str):
        def elementwise_entry(names: Sequence[str]) -> str:
            operands = (ctx.at(index, names) for index in range(len(ctx.operands)))
            return f"({native.format(*operands, **ctx.attributes)})"
        return elementwise_entry
    form = getattr(native, "entry", None)
    return form(ctx) if form is not None else None


#: A lane-accumulated sum (``lane_sum``) keeps this many partial sums.
#: numba leaves LLVM's SLP vectoriser off, and its loop vectoriser skips a
#: loop short enough to unroll fully, so fewer lanes stay scalar code
#: (measured on a 10x400 matrix times a vector: 1.1 us with 4, 8 or 16
#: lanes, 0.62 us with 64, 1.8 us with one running sum).
SUM_LANES = 64


def lane_sum(ctx: NativeContext, total: str, size: int, term: Callable[[str], str]) -> str:
    """Lines setting the local ``total`` to the sum of ``term(k)`` for ``k`` in ``range(size)``.

    The sum runs in ``SUM_LANES`` independent partial sums: lane ``l``
    adds the terms ``l, l + SUM_LANES, ...`` in order (the last ``size %
    SUM_LANES`` terms included), which LLVM vectorises without
    reassociating anything; the lanes are then added pairwise, halving
    their number each time (independent additions, not a chain of 64).
    The order is fixed, so the result is deterministic, and it is a
    blocked order like BLAS's (not numpy's value bit for bit, the same to
    rounding). For a short ``size`` it is one running sum.
    """
    if size < 2 * SUM_LANES:
        k = ctx.temp("k")
        return "\n".join([f"{total} = {ctx.literal(0.0)}", f"for {k} in range({size}):", f"    {total} += {term(k)}"])
    lanes = ctx.scratch(SUM_LANES)
    block, lane, k = ctx.temp("block"), ctx.temp("lane"), ctx.temp("k")
    whole = size - size % SUM_LANES
    lines = [f"for {lane} in range({SUM_LANES}):", f"    {lanes}[{lane}] = {ctx.literal(0.0)}",
             f"for {block} in range(0, {whole}, {SUM_LANES}):", f"    for {lane} in range({SUM_LANES}):",
             f"        {lanes}[{lane}] += {term(f'{block} + {lane}')}"]
    if whole < size:
        lines += [f"for {k} in range({whole}, {size}):", f"    {lanes}[{k} - {whole}] += {term(k)}"]
    width = SUM_LANES // 2
    while width:
        lines += [f"for {lane} in range({width}):", f"    {lanes}[{lane}] += {lanes}[{lane} + {width}]"]
        width //= 2
    lines.append(f"{total} = {lanes}[0]")
    return "\n".join(lines)


def count(shape: Sequence[int]) -> int:
    """The number of entries of ``shape``."""
    return int(np.prod(shape, dtype=np.int64))


class Groups:
    """Loops over the groups of entries of ``shape`` that a reduction over ``axes`` combines.

    The kept axes are the outer loops (``each``), the reduced axes the
    inner ones (``over``, run once per group, as often as a template
    needs a pass); ``names`` index the whole array in axis order, so
    ``at(name)`` is the entry of the current pass and ``reduced(name,
    keepdims)`` the group's entry of a reduced result.
    """

    def __init__(self, ctx: NativeContext, shape: Sequence[int], axes: Sequence[int]) -> None:
        self.shape = tuple(shape)
        self.axes = tuple(sorted(axes))
        self.kept = tuple(axis for axis in range(len(self.shape)) if axis not in self.axes)
        #: One index name per axis of ``shape``.
        self.names = ctx.indices(len(self.shape), "g")
        self._ctx = ctx

    def each(self, body: Sequence[str]) -> str:
        """``body`` (lines) once per group: loops over the kept axes."""
        return loops([self.shape[axis] for axis in self.kept], body, [self.names[axis] for axis in self.kept])

    def over(self, body: Sequence[str], backwards: bool = False) -> list[str]:
        """Lines running ``body`` on every entry of the group, in C order (reversed if ``backwards``)."""
        if backwards:
            lines = []
            for depth, axis in enumerate(self.axes):
                lines.append("    " * depth + f"for {self.names[axis]} in range({self.shape[axis] - 1}, -1, -1):")
            lines.extend("    " * len(self.axes) + line for line in body)
            return lines
        return loops([self.shape[axis] for axis in self.axes], body, [self.names[axis] for axis in self.axes]).split("\n")

    def at(self, name: str, shape: Sequence[int] | None = None) -> str:
        """Entry of ``name`` (of ``shape``, the groups' own by default, broadcasting) at the current indices."""
        return entry(name, self.shape if shape is None else shape, self.names)

    def reduced(self, name: str, keepdims: bool) -> str:
        """The current group's entry of ``name``, a result reduced over the axes (``keepdims``: kept as size 1)."""
        if keepdims:
            parts = ["0" if axis in self.axes else index for axis, index in enumerate(self.names)]
        else:
            parts = [self.names[axis] for axis in self.kept]
        return f"{name}[{', '.join(parts)}]" if parts else name

    def first(self, name: str) -> str:
        """The current group's first entry of ``name`` (the groups' shape): index 0 on each reduced axis."""
        return self.reduced(name, keepdims=True) if self.shape else name

    def replaced(self, name: str, axis: int, index: str) -> str:
        """Entry of ``name`` (the groups' shape) at the current indices, but ``index`` along ``axis``."""
        parts = [index if position == axis else own for position, own in enumerate(self.names)]
        return f"{name}[{', '.join(parts)}]"
