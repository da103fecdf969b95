"""The numpy backend: a tape bound to preallocated arrays as generated code.

Binding happens once per specialisation: the buffers are allocated, the
constants written, and the tape translated (``codegen``) into one
straight-line function closed over those arrays. Running a step is one
call of that function on the caller's arrays: nothing is allocated (but
what it returns) and no graph is walked.
"""

from __future__ import annotations

import itertools
import linecache
import math
import traceback
from collections.abc import Callable, Sequence

import numpy as np

from tapegraph.errors import NonFiniteError, TapeError
from tapegraph.ops import REGISTRY
from tapegraph.backends import Return
from tapegraph.backends.codegen import body, identifiers, kernel_functions, workspace_name
from tapegraph.compile.tape import Tape

_serial = itertools.count()


class Executable:
    """A ``Tape`` bound to arrays.

    ``function(returns)`` gives the compiled step: call it with one array
    per feed, in ``feed_order``; it returns the tape's results converted
    as ``returns`` says (see ``codegen.Return``).
    """

    def __init__(self, tape: Tape, feed_order: Sequence[str] | None = None) -> None:
        """Allocate and fill the buffers; ``feed_order`` names the feeds in
        the order the compiled functions take them (default: the tape's)."""
        self.tape = tape
        self.buffers = [np.empty(buffer.shape, dtype=buffer.dtype) for buffer in tape.buffers]
        for constant in tape.constants:
            np.copyto(self.buffers[constant.slot], constant.array)
        #: Arrays the generated code names: buffers ``s<slot>``, workspaces.
        self.arrays: dict[str, np.ndarray] = {f"s{buffer.slot}": self.buffers[buffer.slot] for buffer in tape.buffers}
        for position, instruction in enumerate(tape.instructions):
            op = REGISTRY[instruction.op]
            if op.workspace is not None:
                in_shapes = [self.buffers[slot].shape for slot in instruction.inputs]
                scratch = op.workspace(in_shapes, instruction.shape, instruction.dtype, **dict(instruction.static))
                self.arrays.update({workspace_name(position, key): array for key, array in scratch.items()})
        self.feed_order = tuple(feed.name for feed in tape.feeds) if feed_order is None else tuple(feed_order)
        #: The generated functions' argument names, one per feed.
        self.arguments = dict(zip(self.feed_order, identifiers(self.feed_order)))
        self._functions: dict[tuple, Callable] = {}
        self._texts: dict[Callable, str] = {}
        #: Per generated file name: (first line, last line, instruction) spans.
        self._spans: dict[str, list[tuple[int, int, int]]] = {}

    def function(self, returns: Sequence[Return], check: bool = False) -> Callable:
        """The compiled step returning the results as ``returns`` says.

        With ``check``, it stops at the first instruction whose result
        holds NaN or infinity (``NonFiniteError``); compiled separately, so
        the unchecked function pays nothing for it.
        """
        key = (tuple(returns), check)
        function = self._functions.get(key)
        if function is None:
            function = self._functions[key] = self._compile(tuple(returns), check)
        return function

    def source(self, returns: Sequence[Return], check: bool = False) -> str:
        """The text of the generated factory behind ``function(returns)``."""
        return self._texts[self.function(returns, check)]

    def _compile(self, returns: tuple[Return, ...], check: bool) -> Callable:
        arguments = [self.arguments[name] for name in self.feed_order]
        feed_names = {feed.name: self.arguments[feed.name] for feed in self.tape.feeds}
        lines, results, spans = body(self.tape, feed_names, returns, check=check, indent=" " * 8, first_line=3)
        closed_over = ", ".join(["np", "math", *self.arrays])
        text = "\n".join([
            f"def make({closed_over}):",
            f"    def run({', '.join(arguments)}):",
            *lines,
            f"        return ({''.join(result + ', ' for result in results)})",
            "    return run",
            "",
        ])
        filename = f"<tapegraph tape {next(_serial)}>"
        # registered so that tracebacks through generated code show its lines
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        namespace = {"nan": math.nan, "inf": math.inf, "_nonfinite": self._nonfinite,
                     **kernel_functions(text)}
        exec(compile(text, filename, "exec"), namespace)
        # positionally, in the order make() declares them: CPython matches each
        # keyword argument by scanning the parameter list, quadratic in the
        # number of buffers (0.9 s for 10,000, 7 s for 40,000)
        function = namespace["make"](np, math, *self.arrays.values())
        self._texts[function] = text
        self._spans[filename] = spans
        return function

    def failure(self, error: Exception) -> TapeError:
        """A ``TapeError`` naming the instruction that raised ``error``."""
        from tapegraph.inspect.dump import format_instruction
        position = None
        for frame, line in traceback.walk_tb(error.__traceback__):
            spans = self._spans.get(frame.f_code.co_filename)
            if spans is not None:
                position = next((index for first, last, index in spans if first <= line <= last), position)
        if position is None:
            return TapeError(f"running the tape failed ({type(error).__name__}: {error})")
        instruction = self.tape.instructions[position]
        return TapeError(
            f"{instruction.section} instruction {position} failed ({type(error).__name__}: {error}):\n"
            f"  {format_instruction(position, instruction)}")

    def _nonfinite(self, position: int, result, operands: tuple) -> None:
        from tapegraph.inspect.dump import format_instruction
        instruction = self.tape.instructions[position]
        described = []
        for index, (slot, operand) in enumerate(zip(instruction.inputs, operands)):
            described.append(f"  operand {index} (s{slot}, %{instruction.input_values[index]}): {_summary(operand)}")
        raise NonFiniteError(
            f"{instruction.section} instruction {position} ({instruction.op}, from {instruction.label}) "
            f"produced {_summary(result)}:\n  {format_instruction(position, instruction).strip()}\n"
            + "\n".join(described))


def _summary(value) -> str:
    """What a value holds, briefly: the value itself when small."""
    array = np.asarray(value)
    if array.ndim == 0:
        return f"{array.item():.6g}"
    if array.size <= 6:
        return f"{array.dtype.name}{list(array.shape)} [" + ", ".join(f"{item:.6g}" for item in array.ravel().tolist()) + "]"
    counts = []
    if array.dtype.kind == "f":
        nan = int(np.isnan(array).sum())
        inf = int(np.isinf(array).sum())
        counts = [f"{nan} nan"] * bool(nan) + [f"{inf} inf"] * bool(inf)
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    extent = f"min {finite.min():.4g}, max {finite.max():.4g}" if finite.size else "no finite entries"
    return f"{array.dtype.name}{list(array.shape)} ({', '.join(counts + [extent])})"


class NumpyBackend:
    """The default backend: straight-line numpy code over preallocated buffers."""

    name = "numpy"

    def bind(self, tape: Tape, feed_order: Sequence[str]) -> Executable:
        """Allocate the tape's buffers and compile its code (see ``Executable``)."""
        return Executable(tape, feed_order)


#: The one instance ``get_backend("numpy")`` returns.
NUMPY = NumpyBackend()
