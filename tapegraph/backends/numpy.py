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

import collections
import functools
import itertools
import linecache
import math
import re
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.errors import NonFiniteError, TapeError
from tapegraph.backends.codegen import body, identifiers, kernel_functions, tape_ops, view_of, workspace_name
from tapegraph.compile.tape import Buffer, Tape
from tapegraph.expr import origin_location
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
        #: Per code object of a compiled step (and each code object nested
        #: in one): the code as compiled from the generated text, whose lines
        #: are the text's, and the (first line, last line, instruction) spans
        #: of that text. A step runs with its lines moved to the user's (see
        #: ``_compile``); this is how a failure finds its instruction.
        self._generated: dict[types.CodeType, tuple[types.CodeType, list[tuple[int, int, int]]]] = {}
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
              namespace: Mapping[str, Any], packing: Callable[[str], str],
              parameters: str | None = None) -> Callable | None:
        """The step as a function of ``parameters`` (``calls.entry_parameters``), checks first.

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
            return self._compile(False, (checks, dict(namespace), packing, parameters or ENTRY_PARAMETERS))

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
        scope = {"nan": math.nan, "inf": math.inf, "_nonfinite": self._nonfinite, **kernel_functions(text, tape_ops(self.tape), arguments)}
        exec(compile(text, filename, "exec"), scope)
        function = scope["make"](np, math, pool.free, pool.allocate, self.failure, *namespace.values())
        generated = function.__code__
        home, lines = user_lines(self.tape, spans)
        pairs: dict[types.CodeType, types.CodeType] = {}
        if home is not None and relocation_works():
            # numpy's warnings name the line of the innermost Python frame:
            # with the user's lines in the step's own code object they name
            # the line that declared the node, at no cost per call
            function.__code__ = relocated(generated, home, lines, pairs, name=filename)
        else:
            # no line of the user's to point at: warnings and tracebacks show
            # the generated line, whose comment names the op and its node
            linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
            pairs = {code: code for code in _code_objects(generated)}
        for running, compiled in pairs.items():
            self._generated[running] = (compiled, spans)
        self._texts[function] = text
        return function

    def failure(self, error: Exception) -> TapeError:
        """A ``TapeError`` naming the instruction that raised ``error``."""
        from tapegraph.inspect.dump import format_instruction
        position = None
        trace = error.__traceback__
        while trace is not None:
            found = self._generated.get(trace.tb_frame.f_code)
            if found is not None:
                compiled, spans = found
                # the compiled code runs the same bytecode: its line at the
                # failing offset is the generated text's
                line = _line_at(compiled, trace.tb_lasti)
                if line is not None:
                    position = next((index for first, last, index in spans if first <= line <= last), position)
            trace = trace.tb_next
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


def instruction_origin(label: str) -> tuple[str, int] | None:
    """The user's file and line an instruction came from, read off its label.

    A label ends with its node's origin (``log at model.py:12``, ``mul at
    grad of log at model.py:12``, ``sub at sgd update of w at fit.py:30``),
    which names the file alone; the file is the one ``expr.origin_file``
    knows by that name. None for a label without a line (a named value,
    ``add at grad of w``) or whose file is not known in this process (two
    files of that name declared nodes, or the tape was loaded from JSON).
    """
    return origin_location(label)


def user_lines(tape: Tape, spans: Sequence[tuple[int, int, int]]) -> tuple[str | None, dict[int, int]]:
    """The user's file a step's code object should name, and each generated line's line in it.

    ``spans`` are (first line, last line, instruction) of the generated
    text. A code object names one file: the one that declared the most
    instructions (the first of those, on a tie). The lines of each
    instruction declared in it map to its declaring line; every other
    generated line (argument checks, buffer sets, results, instructions
    from other files or with no line) is absent, and is given line 0.
    (None, {}) when no instruction has a line of the user's.
    """
    of_label: dict[str, tuple[str, int] | None] = {}  # many instructions share a label
    origins = []
    for _, _, index in spans:
        label = tape.instructions[index].label
        if label not in of_label:
            of_label[label] = instruction_origin(label)
        origins.append(of_label[label])
    counts = collections.Counter(origin[0] for origin in origins if origin is not None)
    if not counts:
        return None, {}
    home = counts.most_common(1)[0][0]
    lines = {}
    for (first, last, _), origin in zip(spans, origins):
        if origin is not None and origin[0] == home:
            for line in range(first, last + 1):
                lines[line] = origin[1]
    return home, lines


# CPython's location table (Objects/locations.md, the same from 3.11 on): an
# entry covers 1 to 8 code units; its first byte is 0x80 | code << 3 |
# (units - 1); code 13 is "a line, no columns" followed by the signed
# varint change of line from the last entry that had one, code 15 "no line".
_NO_COLUMNS = 13
_NO_LOCATION = 15


def _write_varint(table: bytearray, value: int) -> None:
    while value >= 64:
        table.append(0x40 | (value & 63))
        value >>= 6
    table.append(value)


def _line_table(code: types.CodeType, lines: Mapping[int, int], first_line: int) -> bytes:
    """A location table for ``code``'s bytecode giving each line in ``lines``
    its mapped line, every other line 0, and no columns (so a traceback
    draws no carets under the user's line)."""
    # runs of bytecode on one new line (None: no line), as (line, bytes); a
    # large step has a million ranges of bytecode, so this loop is kept plain
    runs: list[tuple[int | None, int]] = []
    run_line, run_size = None, 0
    for start, end, line in code.co_lines():
        if line is not None:
            line = lines.get(line, 0)
        if line != run_line:
            runs.append((run_line, run_size))
            run_line, run_size = line, 0
        run_size += end - start
    runs.append((run_line, run_size))
    table = bytearray()
    previous = first_line
    for line, size in runs:
        units = size // 2  # a code unit is two bytes
        while units > 0:
            length = min(units, 8)
            units -= length
            if line is None:
                table.append(0x80 | _NO_LOCATION << 3 | (length - 1))
                continue
            table.append(0x80 | _NO_COLUMNS << 3 | (length - 1))
            delta = line - previous
            _write_varint(table, (-delta << 1) | 1 if delta < 0 else delta << 1)
            previous = line
    return bytes(table)


def relocated(code: types.CodeType, filename: str, lines: Mapping[int, int],
              pairs: dict[types.CodeType, types.CodeType], name: str | None = None) -> types.CodeType:
    """``code`` (and the code objects nested in it) with the same bytecode,
    naming ``filename`` and the lines ``lines`` maps its lines to (0 for
    the others); each new code object is recorded in ``pairs`` with the
    one it was made from. ``name`` renames the outermost one (a traceback
    then says ``in <tapegraph tape 4>`` under the user's line)."""
    first_line = next(iter(lines.values()), 1)
    consts = tuple(relocated(const, filename, lines, pairs) if isinstance(const, types.CodeType) else const
                   for const in code.co_consts)
    renamed = {} if name is None else {"co_name": name, "co_qualname": name}
    moved = code.replace(co_filename=filename, co_firstlineno=first_line, co_consts=consts,
                         co_linetable=_line_table(code, lines, first_line), **renamed)
    pairs[moved] = code
    return moved


@functools.cache
def relocation_works() -> bool:
    """True when ``relocated`` gives this Python the lines it means to.

    The location table is CPython's own format: checked once, on a small
    function, through the interpreter's own reading of it. Where it does
    not hold, steps keep the generated lines (warnings then show the
    generated line, whose comment names the declaring line).
    """
    text = "def probe(a, b):\n    c = [a + x for x in b]\n    d = c[0] - a\n    return d\n"
    scope: dict[str, Any] = {}
    exec(compile(text, "<tapegraph probe>", "exec"), scope)
    lines = {2: 400, 3: 7}
    pairs: dict[types.CodeType, types.CodeType] = {}
    relocated(scope["probe"].__code__, "probe.py", lines, pairs, name="<probe>")
    for moved, code in pairs.items():
        expected = [None if line is None else lines.get(line, 0)
                    for start, end, line in code.co_lines() for _ in range(start, end, 2)]
        got = [line for start, end, line in moved.co_lines() for _ in range(start, end, 2)]
        columns = {position[2:] for position in moved.co_positions()}
        if got != expected or columns != {(None, None)} or moved.co_filename != "probe.py":
            return False
    # (Python 3.11 makes the comprehension a code object of its own, 3.12 inlines it)
    return bool(pairs)


def _line_at(code: types.CodeType, offset: int) -> int | None:
    """The line of ``code`` that the bytecode at ``offset`` belongs to."""
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line
    return None


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    """``code`` and the code objects nested in it."""
    found = [code]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.extend(_code_objects(const))
    return found


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
