"""Generated code: a tape translated into one straight-line Python function.

Each instruction becomes a line (or a few) of numpy calls on named arrays,
with a comment naming the expression it came from::

    v2 = float(x.dot(w))                          # %2 matmul at model.py:20
    v4 = v2 + v3                                  # %4 prediction
    np.square(w, out=s8)                          # %8 square at model.py:21

The same translation serves two ends: the executor compiles it over the
preallocated buffers of a specialisation (so a step is one Python call,
with no loop over instructions), and ``Program.source`` prints it as a
standalone function that needs only numpy.

It translates the tape and decides nothing of its own: where each result
is written (its slot, a fresh array, the caller's donated array, or a
Python float), which feeds are read in place, in which form each operand
is taken, the workspaces and how each result is returned are all records
of the tape (``compile/emit.py`` chooses them, for speed):

- feeds are read where the caller's arrays are, not copied in first;
  nothing writes to them unless a result is donated into one (a value
  that reuses a feed's slot is written to that slot's buffer);
- a 0-d float64 value is a Python float when its op has a ``scalar``
  form: a numpy operation on a 0-d array costs a dispatch worth dozens of
  float operations;
- an op with a ``source`` template is a direct numpy call, without the
  Python frame of its kernel;
- a view of a buffer that a template writes (``s3[:, None]``) is named as
  one made once with each buffer set (``s3_column``, see ``buffer_views``).
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import re
import textwrap
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.errors import OpError
from tapegraph.ops import REGISTRY, Op
from tapegraph.compile.tape import Destination, Instruction, Returned, Tape


#: Names the generated code defines for itself: buffers ``s3``, scalars
#: ``v7``, fresh results ``r4``, workspaces ``w5_row``, and what it is
#: given or calls by name (besides the builtins and the kernel functions).
_GENERATED = re.compile(r"[rsvw]\d+(_\w+)?|np|math|nan|inf|make|run|_nonfinite")


def is_generated_name(text: str, kernels: frozenset[str] = frozenset()) -> bool:
    """True when the generated code may use the identifier ``text`` itself.

    That is a keyword, a builtin (``float``, ``__debug__``: the generated
    code calls some, and a shadowed one breaks it), one of its own names,
    or the name of a kernel function of a built-in op or of ``kernels``
    (the tape's own user-declared ops' kernel names). A feed's
    identifier is never one of these, so a user's name cannot shadow what
    the generated code calls, whatever ops or templates are added.
    """
    if keyword.iskeyword(text) or text in _BUILTINS or text in kernels or _GENERATED.fullmatch(text):
        return True
    return any(op.kernel.__name__ == text for op in REGISTRY.values() if not isinstance(op.kernel, np.ufunc))


_BUILTINS = frozenset(dir(builtins))


def identifiers(names: Sequence[str], ops: Iterable[Op] = ()) -> list[str]:
    """A distinct Python identifier for each feed name, kept close to it.

    ``ops`` are the tape's ops: their kernels' names are taken too (the
    built-in ops' always are), so a user's op kernel named like a feed
    does not shadow it.

    Python reads identifiers in NFKC form (``ﬂoat`` is ``float``), so the
    name is normalised first; other characters become ``_``, and a name
    the generated code uses itself (``is_generated_name``) gets a leading
    ``_`` (then a number, until it is free).

    >>> identifiers(["x", "W1", "hidden layer", "s3", "x", "float"])
    ['x', 'W1', 'hidden_layer', '_s3', 'x_2', '_float']
    """
    kernels = frozenset(op.kernel.__name__ for op in ops if not isinstance(op.kernel, np.ufunc))
    taken: set[str] = set()
    result = []
    for name in names:
        normal = unicodedata.normalize("NFKC", name)
        text = "".join(char if ("_" + char).isidentifier() else "_" for char in normal) or "_"
        if not text[0].isidentifier() or is_generated_name(text, kernels):
            text = "_" + text
        candidate, count = text, 1
        while candidate in taken or is_generated_name(candidate, kernels):
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

    A value has an array form (a buffer ``s3``, a feed, a fresh array
    ``r5``, a constant's buffer), a scalar form (``v7``, a literal
    ``2.0``), or both once one has been converted into the other where an
    operand's form asks for it. Where each value is written, and in which
    form each operand is taken, is the tape's: the writer only spells it.
    """

    def __init__(self, tape: Tape, feed_names: Mapping[str, str]) -> None:
        self.feed_names = feed_names
        self.array: dict[int, str] = {}
        self.scalar: dict[int, str] = {}
        self.slot: dict[int, int] = {}
        self.lines: list[str] = []
        self.literal: set[int] = set()
        #: Values computed into fresh arrays or a donated feed's array.
        self.destination: dict[int, Destination] = {}
        #: Lines copying the feeds that are not read in place into their slots.
        self.copies: list[str] = []
        #: Each feed's dtype, by name.
        self.feed_dtypes = {feed.name: feed.dtype for feed in tape.feeds}
        #: Each value's dtype, by value.
        self.dtypes = {feed.value: feed.dtype for feed in tape.feeds}
        self.dtypes.update((constant.value, constant.array.dtype.name) for constant in tape.constants)
        self.dtypes.update((instruction.value, instruction.dtype) for instruction in tape.instructions)
        #: The single float64 feeds read in place, which the caller may give as numbers.
        self.single_feeds: set[int] = set()
        for feed in tape.feeds:
            self.slot[feed.value] = feed.slot
            if feed.in_place:
                self.array[feed.value] = feed_names[feed.name]
                if feed.shape == () and feed.dtype == "float64":
                    self.single_feeds.add(feed.value)
            else:
                self.copies.append(f"np.copyto(s{feed.slot}, {feed_names[feed.name]})")
                self.array[feed.value] = f"s{feed.slot}"
        for constant in tape.constants:
            self.slot[constant.value] = constant.slot
            self.array[constant.value] = f"s{constant.slot}"
            if constant.scalar:
                self.scalar[constant.value] = repr(float(constant.array))
                self.literal.add(constant.value)

    def name(self, value: int) -> str:
        return self.scalar.get(value) or self.array[value]

    def as_number(self, value: int) -> str:
        if value not in self.scalar:
            self.lines.append(f"v{value} = float({self.array[value]})")
            self.scalar[value] = f"v{value}"
        return self.scalar[value]

    def as_array(self, value: int, numbers_allowed: bool) -> str:
        """The value as an operand of a numpy call.

        A number serves where the call takes either form; elsewhere it is
        first stored in its own slot, which the buffer plan keeps for it
        from its definition to its last use.
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

    def operand(self, instruction: Instruction, index: int) -> str:
        value = instruction.input_values[index]
        form = instruction.form(index)
        if form == "number":
            return self.as_number(value)
        if form == "either" and self.on_float64_arrays(instruction):
            # numpy converts a Python float (or numpy scalar) operand at
            # every call, which costs a ufunc over arrays about 0.1 us more
            # than a 0-d array does (a constant's buffer, or the value
            # stored in its slot for 0.02 us); with every dtype float64 the
            # result is the same. A single feed may be given as a number.
            if value in self.single_feeds:
                self.single_feeds.discard(value)
                name = f"s{self.slot[value]}"
                self.lines.append(f"{name}[()] = {self.array[value]}")
                self.array[value] = name
            return self.as_array(value, False)
        return self.as_array(value, form == "either")

    def on_float64_arrays(self, instruction: Instruction) -> bool:
        """True when ``instruction`` computes an array of float64 from float64 operands."""
        return instruction.shape != () and instruction.dtype == "float64" \
            and all(self.dtypes[value] == "float64" for value in instruction.input_values)

    def instruction(self, position: int, instruction: Instruction, workspace: Sequence[str]) -> None:
        """Append the lines that run one instruction."""
        op = instruction.op
        attributes = {**dict(instruction.static), **dict(instruction.derived)}
        attributes.update({key: workspace_name(position, key) for key in workspace})
        self.slot[instruction.value] = instruction.output
        destination = instruction.destination
        operands = [self.operand(instruction, index) for index in range(len(instruction.input_values))]
        if destination.kind == "scalar":
            scalar = op.scalar_template(attributes).format(*operands, **attributes)
            if _NUMPY_CALL.search(scalar):
                # a numpy call gives a numpy scalar, whose arithmetic costs
                # about twice a float's: every scalar value is a float
                scalar = f"float({scalar})"
            self.lines.append(f"v{instruction.value} = " + scalar)
            self.scalar[instruction.value] = f"v{instruction.value}"
            return
        template = op.source_template(attributes)
        if destination.kind != "slot":
            self.destination[instruction.value] = destination
        if destination.kind == "fresh" and template is None and isinstance(op.kernel, np.ufunc):
            # a ufunc allocates a fresh result itself
            self.array[instruction.value] = f"r{instruction.value}"
            self.lines.append(f"r{instruction.value} = np.{op.kernel.__name__}({', '.join(operands)})")
            return
        if destination.kind == "slot":
            out = f"s{instruction.output}"
        elif destination.kind == "donated":
            out = self.feed_names[destination.feed]
        else:
            out = f"r{instruction.value}"
            self.lines.append(f"{out} = np.empty({instruction.shape!r}, dtype=np.{instruction.dtype})")
        self.array[instruction.value] = out
        if template is None:
            template = kernel_call(op, attributes)
        self.lines.extend(buffer_views(line) for line in template.format(*operands, out=out, **attributes).split("\n"))

    def result(self, value: int, how: Returned) -> str:
        """The expression that returns ``value`` as ``how`` says."""
        if how.kind == "raw":
            return self.name(value)
        if how.kind == "float":
            # a value held as a number is a Python float already
            return self.scalar[value] if value in self.scalar else f"float({self.array[value]})"
        written = self.destination.get(value)
        if how.kind == "new" and written is not None and written.kind == "fresh":
            return self.array[value]
        if how.kind == "new":
            return f"np.array({self.scalar[value]})" if value in self.scalar and value not in self.array \
                else f"{self.array[value]}.copy()"
        if how.kind == "donated":
            target = self.feed_names[how.feed]
            if written == Destination("donated", how.feed):
                return target
            if value in self.scalar and self.feed_dtypes[how.feed] == "float64":
                # a Python float into a 0-d float64 array: item assignment
                # costs a tenth of a copyto call
                self.lines.append(f"{target}[()] = {self.scalar[value]}")
            else:
                self.lines.append(f"np.copyto({target}, {self.name(value)})")
            return target
        raise ValueError(f"unknown way to return a result: {how!r}")


#: A call of numpy in a ``scalar`` template (``np.add.reduce(...)``, or a
#: method of an array operand, ``{0}.dot({1})``): its value is a numpy
#: scalar, not a float. (``abs({0})`` of a float is a float.)
_NUMPY_CALL = re.compile(r"\bnp\.|\.\w+\(")

#: A column or row view of a 1-D buffer, as templates write it (``outer``).
_VIEW = re.compile(r"\b(s\d+)\[(:, None|None, :)\]")
_VIEW_SUFFIX = {":, None": "column", "None, :": "row"}


def buffer_views(line: str) -> str:
    """``line`` with each view of a buffer (``s3[:, None]``) named as one made
    with the buffer (``s3_column``; ``s3[None, :]`` is ``s3_row``).

    A buffer is the same array at every call of a buffer set, so its view
    can be made once, with the set: making it costs about 0.1 us a call,
    a third of a small ``np.dot``. Views of the caller's arrays are made
    at each call.
    """
    return _VIEW.sub(lambda match: f"{match.group(1)}_{_VIEW_SUFFIX[match.group(2)]}", line)


def view_of(name: str) -> tuple[str, tuple] | None:
    """For a name ``buffer_views`` made (``s3_column``): the buffer's name and
    the index that makes the view (``("s3", (slice(None), None))``); else None."""
    match = re.fullmatch(r"(s\d+)_(column|row)", name)
    if match is None:
        return None
    index = (slice(None), None) if match.group(2) == "column" else (None, slice(None))
    return match.group(1), index


def kernel_call(op, attributes: Mapping[str, Any]) -> str:
    """The default template: ``np.tanh({0}, out={out})`` for a ufunc
    kernel, else a call of the kernel function with its attributes."""
    if isinstance(op.kernel, np.ufunc):
        operands = ", ".join(f"{{{index}}}" for index in range(op.arity))
        return f"np.{op.kernel.__name__}({operands}, out={{out}})"
    operands = "".join(f"{{{index}}}, " for index in range(op.arity))
    keywords = "".join(f", {key}={{{key}}}" for key in attributes)
    return f"{op.kernel.__name__}({operands}{{out}}{keywords})"


def tape_ops(tape: Tape) -> list[Op]:
    """The distinct ops of ``tape``'s instructions, in tape order."""
    return list(dict.fromkeys(instruction.op for instruction in tape.instructions))


def body(tape: Tape, feed_names: Mapping[str, str], *, check: bool = False,
         indent: str = "    ", first_line: int = 1) -> tuple[list[str], list[str], list[tuple[int, int, int]]]:
    """The statements running ``tape``, the expressions of its results.

    Returns (lines, result expressions in ``tape.results`` order, spans),
    where each span is (first line, last line, instruction index) counted
    from ``first_line``. Results are returned as ``tape.returns`` says.
    With ``check``, each floating-point result is tested for NaN and
    infinity right after its instruction, calling ``_nonfinite(index,
    result, operands)`` when the test fails.
    """
    writer = _Writer(tape, feed_names)
    lines: list[str] = [indent + line for line in writer.copies]
    spans: list[tuple[int, int, int]] = []
    section = None
    workspaces: dict[int, list[str]] = {}
    for workspace in tape.workspaces:
        workspaces.setdefault(workspace.instruction, []).append(workspace.name)
    for position, instruction in enumerate(tape.instructions):
        if instruction.section != section:
            section = instruction.section
            lines.append(f"{indent}# {section}")
        writer.lines = []
        writer.instruction(position, instruction, tuple(workspaces.get(position, ())))
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
    results = [writer.result(value, tape.returns[name]) for name, (_, value) in tape.results.items()]
    lines.extend(indent + line for line in writer.lines)
    return lines, results, spans


def kernel_functions(text: str, ops: Iterable[Op], arguments: Iterable[str] = ()) -> dict[str, Callable]:
    """The kernel functions of ``ops`` (a tape's) that generated ``text`` calls by name.

    ``arguments`` are the generated function's argument names: a kernel
    named like one of them (or like a name the code uses for itself) would
    be shadowed, so that is refused.
    """
    found = {}
    taken = set(arguments) | {"run"}
    # one scan of the text for every name called, not one per op: the text
    # of a large tape is long
    called = set(re.findall(r"\b(\w+)\(", text))
    for op in ops:
        kernel = op.kernel
        if not isinstance(kernel, np.ufunc) and kernel.__name__ in called:
            if found.get(kernel.__name__, kernel) is not kernel:
                raise OpError(f"two kernels are named {kernel.__name__!r}; generated code needs distinct names")
            if kernel.__name__ in taken or _GENERATED.fullmatch(kernel.__name__) or kernel.__name__ in _BUILTINS:
                raise OpError(f"the kernel of op {op.name!r} is named {kernel.__name__!r}, a name the generated code "
                              "already uses (a feed or its own); rename the kernel")
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
    sources = []
    for name, function in sorted(seen.items()):
        try:
            # a kernel defined inside a function is indented: generated source defines it at top level
            sources.append(textwrap.dedent(inspect.getsource(function)))
        except (OSError, TypeError) as error:
            raise OpError(f"cannot copy the source of kernel {name!r} ({error}): generated source includes each "
                          "kernel's definition, so define it in a file or a notebook cell") from None
    return sources


def array_literal(array: np.ndarray) -> str:
    """Python source that rebuilds ``array`` exactly."""
    dtype = f"np.{array.dtype.name}"
    if array.size and np.all(array == array.flat[0]):
        return f"np.full({array.shape!r}, {array.flat[0].item()!r}, dtype={dtype})"
    return f"np.array({array.tolist()!r}, dtype={dtype})"
