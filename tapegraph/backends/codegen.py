"""Generated code: a tape translated into one straight-line Python function.

Each instruction becomes a line (or a few) of numpy calls on named arrays,
with a comment naming the expression it came from::

    v2 = np.dot(x, w)                             # %2 matmul at model.py:20
    v4 = v2 + v3                                  # %4 prediction
    np.square(w, out=s8)                          # %8 square at model.py:21

The same translation serves two ends: the executor compiles it over the
preallocated buffers of a specialisation (so a step is one Python call,
with no loop over instructions), and ``Program.source`` prints it as a
standalone function that needs only numpy.

Three choices make it faster than calling one bound closure per
instruction:

- feeds are read where the caller's arrays are, not copied in first;
  nothing writes to them (a value that reuses a feed's slot is written to
  that slot's buffer, never to the caller's array);
- a 0-d float64 value is a Python float when its op has a ``scalar``
  form: a numpy operation on a 0-d array costs a dispatch worth dozens of
  float operations;
- an op with a ``source`` template is a direct numpy call, without the
  Python frame of its kernel.
"""

from __future__ import annotations

import collections
import inspect
import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.ops import REGISTRY
from tapegraph.backends import Return
from tapegraph.compile.tape import Instruction, Tape


#: Names the generated code uses for itself; feeds never take them.
_RESERVED = re.compile(r"[rsvw]\d+(_\w+)?|np|math|nan|inf|make|_nonfinite")


def identifiers(names: Sequence[str]) -> list[str]:
    """A distinct Python identifier for each feed name, kept close to it.

    >>> identifiers(["x", "W1", "hidden layer", "s3", "x"])
    ['x', 'W1', 'hidden_layer', '_s3', 'x_2']
    """
    taken: set[str] = set()
    result = []
    for name in names:
        text = re.sub(r"\W", "_", name) or "_"
        if text[0].isdigit() or keyword.iskeyword(text) or _RESERVED.fullmatch(text):
            text = "_" + text
        candidate, count = text, 1
        while candidate in taken:
            count += 1
            candidate = f"{text}_{count}"
        taken.add(candidate)
        result.append(candidate)
    return result


def workspace_name(position: int, key: str) -> str:
    """The generated code's name for a workspace array of an instruction."""
    return f"w{position}_{key}"


class _Writer:
    """The generated lines, and how each value can be named so far.

    A value has an array form (a buffer ``s3``, a feed, a constant's
    buffer), a scalar form (``v7``, a literal ``2.0``), or both once one
    has been converted into the other where needed.
    """

    def __init__(self, tape: Tape, feed_names: Mapping[str, str], fresh: set[int] = frozenset(),
                 into: Mapping[int, str] | None = None) -> None:
        self.feed_names = feed_names
        #: Results returned as new arrays: a ufunc allocates them directly,
        #: which saves writing them to a buffer and copying it.
        self.fresh = fresh
        self.allocated: set[int] = set()
        #: Results donated into a caller's array that their instruction may
        #: write directly, because nothing reads that array afterwards.
        self.into = dict(into or {})
        self.array: dict[int, str] = {}
        self.scalar: dict[int, str] = {}
        self.slot: dict[int, int] = {}
        self.type: dict[int, tuple[tuple[int, ...], str]] = {}
        self.lines: list[str] = []
        self.literal: set[int] = set()
        for feed in tape.feeds:
            self._define(feed.value, feed.slot, feed.shape, feed.dtype)
            self.array[feed.value] = feed_names[feed.name]
        for constant in tape.constants:
            self._define(constant.value, constant.slot, constant.array.shape, constant.array.dtype.name)
            self.array[constant.value] = f"s{constant.slot}"
            if self.is_scalar(constant.value):
                self.scalar[constant.value] = repr(float(constant.array))
                self.literal.add(constant.value)

    def _define(self, value: int, slot: int, shape: tuple[int, ...], dtype: str) -> None:
        self.slot[value] = slot
        self.type[value] = (tuple(shape), dtype)

    def is_scalar(self, value: int) -> bool:
        """0-d float64: may be held as a Python float."""
        return self.type[value] == ((), "float64")

    def name(self, value: int) -> str:
        return self.scalar.get(value) or self.array[value]

    def as_number(self, value: int) -> str:
        if value not in self.scalar:
            self.lines.append(f"v{value} = float({self.array[value]})")
            self.scalar[value] = f"v{value}"
        return self.scalar[value]

    def as_array(self, value: int, numbers_allowed: bool) -> str:
        """The value as an operand of a numpy call.

        A number serves where the call takes one (ufuncs and templates);
        elsewhere it is first stored in its own slot, which the buffer plan
        keeps for it from its definition to its last use.
        """
        if numbers_allowed and value in self.literal:
            return self.scalar[value]
        if value in self.array:
            return self.array[value]
        if numbers_allowed:
            return self.scalar[value]
        name = f"s{self.slot[value]}"
        self.lines.append(f"{name}[()] = {self.scalar[value]}")
        self.array[value] = name
        return name

    def instruction(self, position: int, instruction: Instruction, workspace: Sequence[str]) -> None:
        """Append the lines that run one instruction."""
        op = REGISTRY[instruction.op]
        attributes = {**dict(instruction.static), **dict(instruction.derived)}
        attributes.update({key: workspace_name(position, key) for key in workspace})
        self._define(instruction.value, instruction.output, instruction.shape, instruction.dtype)
        inputs = instruction.input_values
        scalar = op.scalar_template(attributes) if self.is_scalar(instruction.value) else None
        if scalar is not None and all(self.is_scalar(value) for value in inputs if self.type[value][0] == ()):
            operands = [self.as_number(value) if self.is_scalar(value) else self.as_array(value, False)
                        for value in inputs]
            self.lines.append(f"v{instruction.value} = " + scalar.format(*operands, **attributes))
            self.scalar[instruction.value] = f"v{instruction.value}"
            return
        template = op.source_template(attributes)
        operands = [self.as_array(value, template is not None or op.elementwise) for value in inputs]
        if template is None and isinstance(op.kernel, np.ufunc) and instruction.value in self.into:
            target = self.feed_names[self.into[instruction.value]]
            self.lines.append(f"np.{op.kernel.__name__}({', '.join(operands)}, out={target})")
            self.array[instruction.value] = target
            self.allocated.add(instruction.value)
            return
        if template is None and isinstance(op.kernel, np.ufunc) and instruction.value in self.fresh:
            name = f"r{instruction.value}"
            self.lines.append(f"{name} = np.{op.kernel.__name__}({', '.join(operands)})")
            self.array[instruction.value] = name
            self.allocated.add(instruction.value)
            return
        if template is None:
            template = kernel_call(op, attributes)
        out = f"s{instruction.output}"
        self.lines.extend(template.format(*operands, out=out, **attributes).split("\n"))
        self.array[instruction.value] = out

    def result(self, value: int, how: Return) -> str:
        """The expression that returns ``value`` as ``how`` asks."""
        if how == "raw":
            return self.name(value)
        if how == "float":
            return f"float({self.name(value)})"
        if how == "new" and value in self.allocated:
            return self.array[value]
        if how == "new":
            return f"np.array({self.scalar[value]})" if value in self.scalar and value not in self.array \
                else f"{self.array[value]}.copy()"
        if isinstance(how, tuple) and how[0] == "into":
            target = self.feed_names[how[1]]
            if value in self.allocated:
                return target
            self.lines.append(f"np.copyto({target}, {self.name(value)})")
            return target
        raise ValueError(f"unknown way to return a result: {how!r}")


def kernel_call(op, attributes: Mapping[str, Any]) -> str:
    """The default template: ``np.tanh({0}, out={out})`` for a ufunc
    kernel, else a call of the kernel function with its attributes."""
    if isinstance(op.kernel, np.ufunc):
        operands = ", ".join(f"{{{index}}}" for index in range(op.arity))
        return f"np.{op.kernel.__name__}({operands}, out={{out}})"
    operands = "".join(f"{{{index}}}, " for index in range(op.arity))
    keywords = "".join(f", {key}={{{key}}}" for key in attributes)
    return f"{op.kernel.__name__}({operands}{{out}}{keywords})"


def body(tape: Tape, feed_names: Mapping[str, str], returns: Sequence[Return], *, check: bool = False,
         indent: str = "    ", first_line: int = 1) -> tuple[list[str], list[str], list[tuple[int, int, int]]]:
    """The statements running ``tape``, the expressions of its results.

    Returns (lines, result expressions in ``tape.results`` order, spans),
    where each span is (first line, last line, instruction index) counted
    from ``first_line``. With ``check``, each floating-point result is
    tested for NaN and infinity right after its instruction, calling
    ``_nonfinite(index, result, operands)`` when the test fails.
    """
    new = [value for (_, value), how in zip(tape.results.values(), returns, strict=True) if how == "new"]
    times_returned = collections.Counter(new)  # not new.count per value: a program may have thousands of results
    writer = _Writer(tape, feed_names, {value for value in new if times_returned[value] == 1},
                     _donations(tape, returns))
    lines: list[str] = []
    spans: list[tuple[int, int, int]] = []
    section = None
    for position, instruction in enumerate(tape.instructions):
        if instruction.section != section:
            section = instruction.section
            lines.append(f"{indent}# {section}")
        writer.lines = []
        writer.instruction(position, instruction, tuple(tape.workspaces.get(position, {})))
        comment = f"# %{instruction.value} {instruction.label}"
        writer.lines[-1] = f"{writer.lines[-1]:<44}  {comment}"
        if check and np.dtype(instruction.dtype).kind == "f":
            result = writer.name(instruction.value)
            test = f"math.isfinite({result})" if instruction.value in writer.scalar else f"np.isfinite({result}).all()"
            operands = "".join(f"{writer.scalar.get(value) or writer.array.get(value)}, " for value in instruction.input_values)
            writer.lines.append(f"if not {test}: _nonfinite({position}, {result}, ({operands}))")
        start = first_line + len(lines)
        lines.extend(indent + line for line in writer.lines)
        spans.append((start, first_line + len(lines) - 1, position))
    writer.lines = []
    results = [writer.result(value, how) for (_, value), how in zip(tape.results.values(), returns, strict=True)]
    lines.extend(indent + line for line in writer.lines)
    return lines, results, spans


def _donations(tape: Tape, returns: Sequence[Return]) -> dict[int, str]:
    """Results to be copied into a feed's array that can be written there directly.

    Safe when the instruction computing the result comes after every read
    of that feed, and the result is not also a value read later.
    """
    last_read: dict[int, int] = {}
    for position, instruction in enumerate(tape.instructions):
        for value in instruction.input_values:
            last_read[value] = position
    feed_value = {feed.name: feed.value for feed in tape.feeds}
    position_of = {instruction.value: position for position, instruction in enumerate(tape.instructions)}
    donations = {}
    for (_, value), how in zip(tape.results.values(), returns, strict=True):
        if not (isinstance(how, tuple) and how[0] == "into") or value not in position_of:
            continue
        position = position_of[value]
        if last_read.get(feed_value[how[1]], -1) <= position and last_read.get(value, -1) <= position:
            donations[value] = how[1]
    return donations


def kernel_functions(text: str) -> dict[str, Callable]:
    """The kernel functions that generated ``text`` calls by name."""
    found = {}
    # one scan of the text for every name called, not one per op: the text
    # of a large tape is long
    called = set(re.findall(r"\b(\w+)\(", text))
    for op in REGISTRY.values():
        kernel = op.kernel
        if not isinstance(kernel, np.ufunc) and kernel.__name__ in called:
            if found.get(kernel.__name__, kernel) is not kernel:
                raise ValueError(f"two kernels are named {kernel.__name__!r}; generated code needs distinct names")
            found[kernel.__name__] = kernel
    return found


def helper_sources(functions: Mapping[str, Callable]) -> list[str]:
    """Source of the given functions and of the module functions they call."""
    seen: dict[str, Callable] = {}
    pending = list(functions.values())
    while pending:
        function = pending.pop()
        if function.__name__ in seen:
            continue
        seen[function.__name__] = function
        for name in function.__code__.co_names:
            candidate = function.__globals__.get(name)
            if inspect.isfunction(candidate) and candidate.__module__ == function.__module__:
                pending.append(candidate)
    return [inspect.getsource(function) for _, function in sorted(seen.items())]


def array_literal(array: np.ndarray) -> str:
    """Python source that rebuilds ``array`` exactly."""
    dtype = f"np.{array.dtype.name}"
    if array.size and np.all(array == array.flat[0]):
        return f"np.full({array.shape!r}, {array.flat[0].item()!r}, dtype={dtype})"
    return f"np.array({array.tolist()!r}, dtype={dtype})"
