"""The tape: flat, declarative instructions over numbered buffer slots.

A ``Tape`` is data only (frozen records), and the whole truth of what
runs: besides the instructions and the buffer plan it records where each
instruction writes its result (``Destination``), in which form it takes
each operand, which feeds are read in place, which constants are also
Python numbers, every workspace array (scratch, or fixed contents) and
how each result is returned (``Returned``). A backend binds it to arrays
and translates it, deciding nothing it does not say; the dump prints it
and the JSON export carries all of it. Keeping it declarative lets the
same tape be printed, checked, executed, or translated to source.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import numpy as np

from tapegraph.errors import TapegraphError
from tapegraph.expr import INPUT, Node
from tapegraph.ops import Op
from tapegraph.ops.registry import Scratch
from tapegraph.shapes import array_type, format_type

SECTIONS = ("forward", "reverse", "update")

#: Where an instruction puts its result: ``slot`` (its planned buffer,
#: ``Instruction.output``), ``fresh`` (a new array the instruction
#: allocates, handed to the caller as a result), ``donated`` (the array the
#: caller gave for feed ``Destination.feed``, written in place) or
#: ``scalar`` (a Python float: no array at all).
DESTINATIONS = ("slot", "fresh", "donated", "scalar")
#: How an instruction takes each operand: ``number`` (a Python float),
#: ``array`` (an array) or ``either`` (whichever form the value has; the
#: op's call accepts both, as numpy's ufuncs do).
OPERAND_FORMS = ("number", "array", "either")
#: How a call hands a result back: ``raw`` (as computed), ``float`` (a
#: Python float), ``new`` (an array the caller owns) or ``donated`` (in
#: the caller's array for feed ``Returned.feed``, which is returned).
RETURN_KINDS = ("raw", "float", "new", "donated")


@attrs.frozen
class Destination:
    """Where one instruction's result is written (see ``DESTINATIONS``)."""

    kind: str
    #: The donated feed's name (``donated`` only).
    feed: str | None = None


#: The destination of most instructions: the planned buffer slot.
SLOT = Destination("slot")


@attrs.frozen
class Instruction:
    """``out_slot = op(*in_slots, **static)``: one step of a tape."""

    #: The op record; ``str(op)`` is its name.
    op: Op
    #: Slots read, in the op's operand order.
    inputs: tuple[int, ...]
    #: Slot written.
    output: int
    #: The node's static attributes, symbolic sizes filled in.
    static: tuple[tuple[str, Any], ...]
    #: What the op's ``specialize`` derived from the concrete shapes.
    derived: tuple[tuple[str, Any], ...]
    #: Value number (``%n``) of the result, and of each operand.
    value: int
    input_values: tuple[int, ...]
    #: Concrete shape and dtype of the result.
    shape: tuple[int, ...]
    dtype: str
    #: Where the value came from: the user's name or source line.
    label: str
    #: ``forward``, ``reverse`` or ``update``.
    section: str
    #: Where the result goes: the slot, a fresh array, a donated feed, a number.
    destination: Destination = SLOT
    #: How each operand is taken (``OPERAND_FORMS``), in operand order;
    #: empty means ``array`` for every operand.
    operand_forms: tuple[str, ...] = ()

    def form(self, index: int) -> str:
        """How operand ``index`` is taken."""
        return self.operand_forms[index] if self.operand_forms else "array"


@attrs.frozen
class Feed:
    """A slot filled from the caller's arrays at every call."""

    name: str
    #: ``input``, ``param`` or ``hyper`` (an optimizer's hyperparameter).
    kind: str
    slot: int
    value: int
    shape: tuple[int, ...]
    dtype: str
    #: True: instructions read the caller's array itself (never written,
    #: unless donated); False: it is copied into its slot's buffer first.
    in_place: bool = True


@attrs.frozen(eq=False)
class Constant:
    """A slot filled once, when the tape is bound: a constant or a folded value."""

    slot: int
    value: int
    array: np.ndarray
    label: str
    #: Also held as a Python float literal (a 0-d float64), used where an
    #: operand is taken as a number or either form.
    scalar: bool = False


@attrs.frozen(eq=False)
class Workspace:
    """An array one instruction's kernel gets by keyword, besides its operands."""

    #: Index of the instruction in the tape.
    instruction: int
    #: The kernel's keyword for it.
    name: str
    shape: tuple[int, ...]
    dtype: str
    #: Fixed data the kernel reads (read-only), or None for scratch: an
    #: array allocated uninitialised, which the kernel writes before reading.
    contents: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@attrs.frozen
class Returned:
    """How one result is handed to the caller (see ``RETURN_KINDS``)."""

    kind: str
    #: The feed whose array receives it (``donated`` only).
    feed: str | None = None


@attrs.frozen
class Buffer:
    """One preallocated array and the values that take turns in it."""

    slot: int
    shape: tuple[int, ...]
    dtype: str
    #: Value numbers stored here, in tape order.
    values: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@attrs.frozen(eq=False)
class Tape:
    """A specialised program: feeds, constants, instructions, buffers, results."""

    feeds: tuple[Feed, ...]
    constants: tuple[Constant, ...]
    instructions: tuple[Instruction, ...]
    buffers: tuple[Buffer, ...]
    #: Result name -> (slot, value number).
    results: dict[str, tuple[int, int]]
    #: Symbolic dimension sizes this tape was specialised to.
    sizes: dict[str, int]
    #: Every instruction's workspace arrays, in tape order, counted in the total.
    workspaces: tuple[Workspace, ...] = ()
    #: Result name -> how a call returns it (same order as ``results``).
    returns: dict[str, Returned] = attrs.field(factory=dict)

    def section(self, name: str) -> tuple[Instruction, ...]:
        """The instructions of one section, in order."""
        return tuple(instruction for instruction in self.instructions if instruction.section == name)

    def workspaces_of(self, position: int) -> tuple[Workspace, ...]:
        """The workspace arrays of the instruction at ``position``."""
        return tuple(workspace for workspace in self.workspaces if workspace.instruction == position)

    @property
    def total_bytes(self) -> int:
        """Bytes of all buffers and workspaces."""
        return sum(buffer.nbytes for buffer in self.buffers) + sum(item.nbytes for item in self.workspaces)


class TapeCheckError(TapegraphError, AssertionError):
    """The tape checker found a tape the compiler should never emit."""


def check_tape(tape: Tape) -> None:
    """Verify a tape before it runs: what it computes, and where.

    Every read must find the value it expects in its slot (a read follows
    the write, and no reused buffer was overwritten while its value was
    live); every instruction's shapes must agree with its op's shape rule,
    and its output slot may be one of its own input slots only for an
    elementwise op. Workspaces must be the arrays the op's workspace rule
    asks for, fixed contents present, scratch without. Destinations must be
    sound: a number only for a single float64 value of an op with a scalar
    form, a fresh array only for a result returned new, a donated feed's
    array written only after every read of that feed, and never read as
    the feed again. What the op derives from the shapes must be what the
    kernel is given. Every result has one way to be returned. Raises
    ``TapeCheckError``; cheap, so it always runs.
    """
    by_slot = {buffer.slot: buffer for buffer in tape.buffers}
    feeds = {feed.name: feed for feed in tape.feeds}
    holding: dict[int, int] = {}
    types: dict[int, tuple[tuple[int, ...], str]] = {}
    for feed in tape.feeds:
        holding[feed.slot] = feed.value
        types[feed.value] = (feed.shape, feed.dtype)
        _check_buffer(by_slot, feed.slot, feed.shape, feed.dtype, f"feed {feed.name}")
    for constant in tape.constants:
        holding[constant.slot] = constant.value
        types[constant.value] = (constant.array.shape, constant.array.dtype.name)
        _check_buffer(by_slot, constant.slot, constant.array.shape, constant.array.dtype.name, f"constant %{constant.value}")
        if constant.scalar:
            if types[constant.value] != ((), "float64"):
                raise TapeCheckError(f"constant %{constant.value} is held as a number, but it is "
                                     f"{array_type(constant.array)}, not a single float64")
    defined = dict(types)
    defined.update({instruction.value: (instruction.shape, instruction.dtype) for instruction in tape.instructions})
    returns = _check_returns(tape, feeds, defined)
    donated_at = _donated_positions(tape)
    returned_from: dict[int, list[Returned]] = {}
    for name, (_, value) in tape.results.items():
        returned_from.setdefault(value, []).append(returns[name])
    workspaces_of: dict[int, dict[str, Workspace]] = {}
    for workspace in tape.workspaces:
        workspaces_of.setdefault(workspace.instruction, {})[workspace.name] = workspace
    feed_of_value = {feed.value: feed.name for feed in tape.feeds}
    donated_feeds = {how.feed: name for name, how in returns.items() if how.kind == "donated"}
    for position, instruction in enumerate(tape.instructions):
        where = f"instruction {position} ({instruction.op} -> %{instruction.value})"
        op = instruction.op
        if not isinstance(op, Op):
            raise TapeCheckError(f"{where} holds {op!r}, not an op record")
        for slot, value in zip(instruction.inputs, instruction.input_values, strict=True):
            if holding.get(slot) != value:
                raise TapeCheckError(f"{where} reads %{value} from s{slot}, which holds %{holding.get(slot)}")
            name = feed_of_value.get(value)
            if name is not None and feeds[name].in_place and donated_at.get(name, position) < position:
                raise TapeCheckError(f"{where} reads feed {name} after instruction {donated_at[name]} wrote "
                                     f"a result into the caller's array for it")
        if instruction.output in instruction.inputs and not op.elementwise:
            raise TapeCheckError(f"{where} writes s{instruction.output}, one of its own inputs, but {instruction.op} "
                                 f"is not elementwise, so its kernel may read an entry after overwriting it")
        _check_buffer(by_slot, instruction.output, instruction.shape, instruction.dtype, where)
        operands = [_placeholder(*types[value]) for value in instruction.input_values]
        op = instruction.op
        attributes = dict(instruction.static)
        shape, dtype = op.shape_rule(*operands, **attributes)
        if tuple(shape) != instruction.shape or dtype != instruction.dtype:
            raise TapeCheckError(f"{where} writes {format_type(instruction.shape, instruction.dtype)} but its shape rule gives {format_type(shape, dtype)}")
        in_shapes = [types[value][0] for value in instruction.input_values]
        derived = op.specialize(in_shapes, instruction.shape, **attributes) if op.specialize else {}
        if tuple(sorted(derived.items())) != tuple(instruction.derived):
            raise TapeCheckError(f"{where} gives its kernel {dict(instruction.derived)}, but {instruction.op} derives "
                                 f"{derived} from these shapes")
        _check_forms(instruction, types, where)
        _check_destination(instruction, op, returned_from.get(instruction.value, []), feeds, where)
        _check_workspaces(workspaces_of.get(position, {}), instruction, op, in_shapes, where)
        holding[instruction.output] = instruction.value
        types[instruction.value] = (instruction.shape, instruction.dtype)
    for name, (slot, value) in tape.results.items():
        if holding.get(slot) != value:
            raise TapeCheckError(f"result {name} expects %{value} in s{slot}, which holds %{holding.get(slot)} at the end")
        how = returns[name]
        if how.kind == "float" and (types[value][0] != () or np.dtype(types[value][1]).kind != "f"):
            raise TapeCheckError(f"result {name} is returned as a float, but it is "
                                 f"{format_type(*types[value])}, not a single float")
        feed = feed_of_value.get(value)
        if feed in donated_feeds and how != Returned("donated", feed):
            raise TapeCheckError(f"result {name} is feed {feed} as the caller gave it, but result "
                                 f"{donated_feeds[feed]} is donated into that array, which then no longer holds it")
    for workspace in tape.workspaces:
        if not 0 <= workspace.instruction < len(tape.instructions):
            raise TapeCheckError(f"workspace {workspace.name} belongs to instruction {workspace.instruction}, "
                                 f"but the tape has {len(tape.instructions)} instructions")


def _check_returns(tape: Tape, feeds: dict[str, Feed],
                   defined: dict[int, tuple[tuple[int, ...], str]]) -> dict[str, Returned]:
    """Each result's way back to the caller, checked against the feeds."""
    if list(tape.returns) != list(tape.results):
        raise TapeCheckError(f"the tape says how to return {list(tape.returns)}, but its results are {list(tape.results)}")
    into: dict[str, str] = {}
    for name, how in tape.returns.items():
        if how.kind not in RETURN_KINDS:
            raise TapeCheckError(f"result {name} is returned as {how.kind!r}; the ways are {list(RETURN_KINDS)}")
        if (how.kind == "donated") != (how.feed is not None):
            raise TapeCheckError(f"result {name} is returned as {how.kind} with feed {how.feed!r}: "
                                 f"a donated result names its feed, and only a donated one")
        if how.kind != "donated":
            continue
        feed = feeds.get(how.feed)
        if feed is None:
            raise TapeCheckError(f"result {name} is donated into feed {how.feed!r}, which the tape does not have")
        if how.feed in into:
            raise TapeCheckError(f"results {into[how.feed]} and {name} are both donated into feed {how.feed}")
        into[how.feed] = name
        slot, value = tape.results[name]
        if value not in defined:
            raise TapeCheckError(f"result {name} is %{value}, which the tape does not define")
        shape, dtype = defined[value]
        if (shape, dtype) != (feed.shape, feed.dtype):
            raise TapeCheckError(f"result {name} ({format_type(shape, dtype)}) is donated into feed {feed.name}, "
                                 f"whose array is {format_type(feed.shape, feed.dtype)}")
    return dict(tape.returns)


def _donated_positions(tape: Tape) -> dict[str, int]:
    """Per donated feed, the instruction that writes into the caller's array (if one does)."""
    positions: dict[str, int] = {}
    for position, instruction in enumerate(tape.instructions):
        if instruction.destination.kind == "donated":
            name = instruction.destination.feed
            if name in positions:
                raise TapeCheckError(f"instructions {positions[name]} and {position} both write into the "
                                     f"caller's array for feed {name}")
            positions[name] = position
    return positions


def _check_forms(instruction: Instruction, types: dict[int, tuple[tuple[int, ...], str]], where: str) -> None:
    if instruction.operand_forms and len(instruction.operand_forms) != len(instruction.input_values):
        raise TapeCheckError(f"{where} gives {len(instruction.operand_forms)} operand forms for "
                             f"{len(instruction.input_values)} operands")
    for index, value in enumerate(instruction.input_values):
        form = instruction.form(index)
        if form not in OPERAND_FORMS:
            raise TapeCheckError(f"{where} takes operand {index} as {form!r}; the forms are {list(OPERAND_FORMS)}")
        if form == "number" and types[value] != ((), "float64"):
            shape, dtype = types[value]
            raise TapeCheckError(f"{where} takes operand {index} (%{value}, {format_type(shape, dtype)}) as a number, "
                                 f"but only a single float64 can be one")
        if form == "number" and instruction.destination.kind != "scalar" and index not in instruction.op.number_positions:
            raise TapeCheckError(f"{where} passes operand {index} (%{value}) to its kernel as a number, but op "
                                 f"{instruction.op.name} takes numbers only for {list(instruction.op.numbers)}")


def _check_destination(instruction: Instruction, op, returned: list[Returned], feeds: dict[str, Feed],
                       where: str) -> None:
    destination = instruction.destination
    if destination.kind not in DESTINATIONS:
        raise TapeCheckError(f"{where} has destination {destination.kind!r}; the destinations are {list(DESTINATIONS)}")
    if (destination.kind == "donated") != (destination.feed is not None):
        raise TapeCheckError(f"{where} has destination {destination.kind} with feed {destination.feed!r}: "
                             f"a donated destination names its feed, and only a donated one")
    if destination.kind == "scalar":
        if (instruction.shape, instruction.dtype) != ((), "float64") or op.scalar is None:
            raise TapeCheckError(f"{where} is held as a number, but it is {format_type(instruction.shape, instruction.dtype)} "
                                 f"from {instruction.op}" + ("" if op.scalar else ", which has no scalar form"))
        if any(form == "either" for form in instruction.operand_forms):
            raise TapeCheckError(f"{where} is computed as a number, so each operand must be a number or an array")
    if destination.kind == "fresh":
        new = [how for how in returned if how.kind == "new"]
        if len(new) != 1:
            raise TapeCheckError(f"{where} writes a fresh array, which must be returned new exactly once "
                                 f"(it is returned new {len(new)} times)")
    if destination.kind == "donated":
        feed = feeds.get(destination.feed)
        if feed is None:
            raise TapeCheckError(f"{where} writes into the caller's array for feed {destination.feed!r}, "
                                 f"which the tape does not have")
        if Returned("donated", feed.name) not in returned:
            raise TapeCheckError(f"{where} writes into the caller's array for feed {feed.name}, but no result "
                                 f"computed here is returned donated into it")
        if not feed.in_place:
            raise TapeCheckError(f"{where} writes into the caller's array for feed {feed.name}, which is not read in place")
        if feed.value in instruction.input_values and not op.elementwise:
            raise TapeCheckError(f"{where} reads feed {feed.name} while writing into its array, "
                                 f"but {instruction.op} is not elementwise")


def _check_workspaces(given: dict[str, Workspace], instruction: Instruction, op, in_shapes, where: str) -> None:
    if op.workspace is None:
        if given:
            raise TapeCheckError(f"{where} has workspaces {sorted(given)}, but {instruction.op} takes none")
        return
    wanted = op.workspace(in_shapes, instruction.shape, instruction.dtype, **dict(instruction.static))
    if sorted(given) != sorted(wanted):
        raise TapeCheckError(f"{where} has workspaces {sorted(given)}, but {instruction.op} needs {sorted(wanted)}")
    for name, item in wanted.items():
        workspace = given[name]
        shape, dtype = (tuple(item.shape), np.dtype(item.dtype).name)
        if (workspace.shape, workspace.dtype) != (shape, dtype):
            raise TapeCheckError(f"{where}: workspace {name} is {format_type(workspace.shape, workspace.dtype)}, "
                                 f"but {instruction.op} needs {format_type(shape, dtype)}")
        if isinstance(item, Scratch):
            if workspace.contents is not None:
                raise TapeCheckError(f"{where}: workspace {name} is scratch, but the tape gives it contents")
        elif workspace.contents is None:
            raise TapeCheckError(f"{where}: workspace {name} holds fixed data the kernel reads, but the tape "
                                 f"gives no contents")
        elif (workspace.contents.shape != shape or workspace.contents.dtype.name != dtype
              or not np.array_equal(workspace.contents, item)):
            raise TapeCheckError(f"{where}: workspace {name} has contents other than the fixed data "
                                 f"{instruction.op} needs")


@functools.lru_cache(maxsize=256)  # a tape has few distinct types; building a node each time was a tenth of lowering
def _placeholder(shape: tuple[int, ...], dtype: str) -> Node:
    return Node(INPUT, (), (), shape, dtype, name="_")


def _check_buffer(by_slot: dict[int, Buffer], slot: int, shape, dtype: str, where: str) -> None:
    buffer = by_slot.get(slot)
    if buffer is None or buffer.shape != tuple(shape) or buffer.dtype != dtype:
        raise TapeCheckError(f"{where} uses s{slot} as {format_type(shape, dtype)}, but that buffer is {buffer}")
