"""The numpy backend: a tape bound to preallocated arrays as generated code.

Binding happens once per specialisation: the tape is translated
(``codegen``) into one straight-line function, and a first set of buffers
is allocated with the constants written in. Running a step is one call of
that function on the caller's arrays: nothing is allocated (but what it
returns) and no graph is walked. Each call runs on a buffer set of its
own, taken off a free list, so calls from several threads do not share
buffers.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import math
import re
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.errors import NonFiniteError, TapeError
from tapegraph.backends.codegen import body, identifiers, kernel_functions, tape_ops, view_of, workspace_name
from tapegraph.compile.tape import Buffer, Tape
from tapegraph.ops.registry import allocate
from tapegraph.shapes import array_type

_serial = itertools.count()


def read_as_numbers(tape: Tape) -> frozenset[str]:
    """The feeds that ``tape`` reads only as Python numbers.

    A single float64 feed read in place, whose every read takes the
    "number" form (``float(feed)``), and which is returned, if at all, as
    a float: a Python float or ``np.float64`` serves it as well as a 0-d
    array does. Decided from the tape's operand forms and returns.
    """
    forms: dict[int, set[str]] = {}
    donated: set[str] = set()
    for instruction in tape.instructions:
        for index, value in enumerate(instruction.input_values):
            forms.setdefault(value, set()).add(instruction.form(index))
        if instruction.destination.kind == "donated":
            donated.add(instruction.destination.feed)
    returned: dict[int, set[str]] = {}
    for name, (_, value) in tape.results.items():
        returned.setdefault(value, set()).add(tape.returns[name].kind)
        if tape.returns[name].kind == "donated":
            donated.add(tape.returns[name].feed)
    return frozenset(
        feed.name for feed in tape.feeds
        if feed.shape == () and feed.dtype == "float64" and feed.in_place and feed.name not in donated
        and forms.get(feed.value) == {"number"} and returned.get(feed.value, {"float"}) == {"float"})


def _arrays_named(text: str) -> tuple[str, ...]:
    """The buffers (``s3``) and workspaces (``w5_rows``) that generated code names, in order of first use."""
    return tuple(dict.fromkeys(re.findall(r"\b([sw]\d+(?:_\w+)?)\b", text)))


class _Pool:
    """The free list of buffer sets of one compiled step (see ``Executable``)."""

    def __init__(self, executable: Executable, names: tuple[str, ...], first: dict[str, np.ndarray],
                 numbers: frozenset[str]) -> None:
        self.executable = executable
        #: The arrays a set holds, by the names the generated code uses.
        self.names = names
        #: The sets not in use; a call pops one and appends it back.
        self.free: list[tuple] = [tuple(first[name] for name in names)] if names else []
        #: The feeds the step reads only as ``float(feed)``.
        self.numbers = numbers

    def allocate(self) -> tuple:
        """A fresh set, for a call that finds every set in use."""
        arrays = self.executable.allocate()
        return tuple(arrays[name] for name in self.names)


class Executable:
    """A ``Tape`` bound to arrays.

    ``function()`` gives the compiled step: call it with one array per
    feed, in ``feed_order``; it returns the tape's results as the tape's
    ``returns`` say. ``entry(...)`` gives the
    same step as a function of the call's two dicts, with the argument
    checks of the specialisation at its top (what a program call runs).

    Safe from threads: a step runs on a set of buffers of its own. Each
    compiled step keeps a free list of buffer sets; a call takes one
    (``list.pop``, atomic under the GIL), or allocates a fresh set (the
    constants written in) when every set is in use by another call, and
    puts it back once its results are computed. One thread calling
    repeatedly reuses the same set, so nothing is allocated per call, and
    the list never holds more sets than there were concurrent calls. A
    call that raises drops its set (the next call allocates another). A
    ``"raw"`` result that is a buffer is valid only until that set is
    reused, by any thread: the program's calls never return one.
    """

    def __init__(self, tape: Tape, feed_order: Sequence[str] | None = None) -> None:
        """Prepare the code generation; ``feed_order`` names the feeds in
        the order the compiled functions take them (default: the tape's).
        Buffers are allocated when a compiled step first runs."""
        self.tape = tape
        self.feed_order = tuple(feed.name for feed in tape.feeds) if feed_order is None else tuple(feed_order)
        #: The generated functions' argument names, one per feed.
        self.arguments = dict(zip(self.feed_order, identifiers(self.feed_order, tape_ops(tape))))
        self._functions: dict[bool, Callable] = {}
        self._texts: dict[Callable, str] = {}
        #: Per generated file name: (first line, last line, instruction) spans.
        self._spans: dict[str, list[tuple[int, int, int]]] = {}
        #: Per check mode: the buffer sets its step and entry share.
        self._pools: dict[bool, _Pool] = {}
        #: Per check mode: the generated lines, made once for both.
        self._bodies: dict[bool, tuple[list[str], list[str], list]] = {}
        #: The views of buffers the generated code names (``s3_column``),
        #: made with each buffer set.
        self._views: set[str] = set()
        # compiling a step is the slow path: one thread compiles, others wait
        self._compiling = threading.Lock()

    def allocate(self) -> dict[str, np.ndarray]:
        """A fresh set of the arrays the generated code names: buffers
        ``s<slot>`` (constants written in) and workspaces."""
        tape = self.tape
        buffers = [allocate(buffer.shape, buffer.dtype, functools.partial(_buffer_text, tape, buffer))
                   for buffer in tape.buffers]
        for constant in tape.constants:
            np.copyto(buffers[constant.slot], constant.array)
        arrays = {f"s{buffer.slot}": buffers[buffer.slot] for buffer in tape.buffers}
        for name in sorted(self._views):
            buffer, index = view_of(name)
            arrays[name] = arrays[buffer][index]
        for workspace in tape.workspaces:
            # scratch is allocated; fixed contents are copied, so the tape's stay untouched
            array = np.empty(workspace.shape, dtype=workspace.dtype) if workspace.contents is None \
                else np.array(workspace.contents)
            arrays[workspace_name(workspace.instruction, workspace.name)] = array
        return arrays

    def function(self, check: bool = False) -> Callable:
        """The compiled step, returning the results as the tape says.

        With ``check``, it stops at the first instruction whose result
        holds NaN or infinity (``NonFiniteError``); compiled separately, so
        the unchecked function pays nothing for it.
        """
        function = self._functions.get(check)
        if function is None:
            with self._compiling:
                function = self._functions.get(check)
                if function is None:
                    function = self._functions[check] = self._compile(check)
        return function

    def entry(self, checks: Callable[[Sequence[str]], list[str]],
              namespace: Mapping[str, Any], packing: Callable[[str], str]) -> Callable | None:
        """The unchecked step as a function of ``(r0_params, r0_inputs)``, checks first.

        ``checks(arguments)`` gives the statements that bind each feed's
        argument name (in ``feed_order``) from the two dicts, or from the
        tuple ``r0_arrays`` when it is given, or return early
        (``calls.check_lines``); ``namespace`` holds the other names they
        use. The step's code follows in the same function, which saves
        the call of a separate step, and a failure in it comes out as
        ``failure(error)``. ``packing(name)`` is what to return, given the
        name of the tuple of results (where it names each result as
        ``r0_results[i]``, the results are put in its place). None when a
        feed's argument name
        would shadow a name the checks use (say, a feed called ``len``).
        """
        from tapegraph.calls import CHECK_BUILTINS, ENTRY_PARAMETERS
        if CHECK_BUILTINS & set(self.arguments.values()):
            return None
        with self._compiling:
            return self._compile(False, (checks, dict(namespace), packing, ENTRY_PARAMETERS))

    def source(self, check: bool = False) -> str:
        """The text of the generated factory behind ``function(check)``."""
        return self._texts[self.function(check)]

    def number_feeds(self, check: bool = False) -> frozenset[str]:
        """The feeds ``function(check)`` reads only as ``float(feed)``.

        A Python float or ``np.float64`` serves such a feed as well as a
        0-d array does, so a caller need not convert one.
        """
        return self._pool(check).numbers

    def buffer_sets(self, check: bool = False) -> list[dict[str, np.ndarray]]:
        """The buffer sets free for ``function(check)`` (and its entry), by name."""
        pool = self._pool(check)
        return [dict(zip(pool.names, arrays)) for arrays in pool.free]

    def _body(self, check: bool) -> tuple[list[str], list[str], list]:
        """The generated lines of the step (``codegen.body``), unindented, from line 0; made once."""
        made = self._bodies.get(check)
        if made is None:
            feed_names = {feed.name: self.arguments[feed.name] for feed in self.tape.feeds}
            made = self._bodies[check] = body(self.tape, feed_names, check=check, indent="", first_line=0)
        return made

    def _pool(self, check: bool) -> _Pool:
        """The buffer sets shared by the step and the entry of a check mode."""
        pool = self._pools.get(check)
        if pool is None:
            lines, results, _ = self._body(check)
            lines = lines + results
            # The first buffer set is allocated now, as binding used to do;
            # the step names only some of its arrays (a comment may name others).
            named = _arrays_named("\n".join(lines))
            self._views.update(name for name in named if view_of(name) is not None)
            first = self.allocate()
            used = tuple(name for name in named if name in first)
            numbers = read_as_numbers(self.tape)
            pool = self._pools[check] = _Pool(self, used, first, numbers)
        return pool

    def _compile(self, check: bool, entry: tuple | None = None) -> Callable:
        """Generate and compile a step; with ``entry`` (checks, namespace,
        packing, parameters), the entry form of ``entry()``."""
        arguments = [self.arguments[name] for name in self.feed_order]
        checks, namespace, packing, parameters = entry if entry is not None else (None, {}, None, None)
        head = checks(arguments) if checks is not None else []
        indent = " " * (12 if entry is not None else 8)
        # line 1 ``def make``, line 2 ``def run``, then the checks, the
        # ``try:`` of an entry, and the four lines taking a buffer set
        first_line = 3 + len(head) + (entry is not None) + 4
        lines, results, spans = self._body(check)
        lines = [indent + line for line in lines]
        spans = [(first + first_line, last + first_line, index) for first, last, index in spans]
        pool = self._pool(check)
        # The buffers are locals unpacked from a set taken off the free
        # list. The names of the list, the allocator and the results match
        # codegen's reserved pattern (r<digits>_...) and no name codegen
        # makes, so they cannot clash with a feed or a value.
        unpack = "".join(name + ", " for name in pool.names)
        if pool.names:
            # the set's own tuple goes back on the list: no new tuple per call
            take = [f"{indent}try:",
                    f"{indent}    {unpack}= r0_set = r0_free.pop()",
                    f"{indent}except IndexError:  # every set is in use by another call: a fresh one",
                    f"{indent}    {unpack}= r0_set = r0_allocate()"]
            give = ["        r0_free.append(r0_set)"]
        else:
            take = [""] * 4  # keep the line numbers the spans were counted with
            give = []
        compute = [*take, *lines, f"{indent}r0_results = ({''.join(result + ', ' for result in results)})"]
        if entry is None:
            signature, returned = ", ".join(arguments), "r0_results"
        else:
            signature, returned = parameters, packing("r0_results")
            # the packing names each result as r0_results[i]: put the results
            # there instead, which saves building the tuple and indexing it
            inlined = re.sub(r"\br0_results\[(\d+)\]", lambda match: results[int(match.group(1))], returned)
            if "r0_results" not in inlined:
                compute[-1] = f"{indent}r0_results = {inlined}"
                returned = "r0_results"
            compute = ["        try:", *compute,
                       "        except Exception as r0_error:",
                       "            raise r0_failure(r0_error) from r0_error"]
        closed_over = ", ".join(["np", "math", "r0_free", "r0_allocate", "r0_failure", *namespace])
        text = "\n".join([
            f"def make({closed_over}):",
            f"    def run({signature}):",
            *head,
            *compute,
            *give,
            f"        return {returned}",
            "    return run",
            "",
        ])
        filename = f"<tapegraph tape {next(_serial)}>"
        # registered so that tracebacks through generated code show its lines
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        scope = {"nan": math.nan, "inf": math.inf, "_nonfinite": self._nonfinite, **kernel_functions(text, tape_ops(self.tape), arguments)}
        exec(compile(text, filename, "exec"), scope)
        function = scope["make"](np, math, pool.free, pool.allocate, self.failure, *namespace.values())
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
        return f"{array_type(array)} [" + ", ".join(f"{item:.6g}" for item in array.ravel().tolist()) + "]"
    counts = []
    if array.dtype.kind == "f":
        nan = int(np.isnan(array).sum())
        inf = int(np.isinf(array).sum())
        counts = [f"{nan} nan"] * bool(nan) + [f"{inf} inf"] * bool(inf)
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    extent = f"min {finite.min():.4g}, max {finite.max():.4g}" if finite.size else "no finite entries"
    return f"{array_type(array)} ({', '.join(counts + [extent])})"


class NumpyBackend:
    """The default backend: straight-line numpy code over preallocated buffers."""

    name = "numpy"

    def bind(self, tape: Tape, feed_order: Sequence[str]) -> Executable:
        """Allocate the tape's buffers and compile its code (see ``Executable``)."""
        return Executable(tape, feed_order)


#: The one instance ``get_backend("numpy")`` returns.
NUMPY = NumpyBackend()


def _buffer_text(tape: Tape, buffer: Buffer) -> str:
    """``buffer s1 (for %2 const at grad of sum at model.py:4)``: what an allocation error names."""
    labels = {feed.value: f"{feed.kind} {feed.name}" for feed in tape.feeds}
    labels.update((constant.value, constant.label) for constant in tape.constants)
    labels.update((instruction.value, instruction.label) for instruction in tape.instructions)
    held = ", ".join(f"%{value} {labels.get(value, '')}".rstrip() for value in buffer.values[:3])
    more = ", ..." if len(buffer.values) > 3 else ""
    return f"buffer s{buffer.slot} (for {held}{more})"
