"""The tape: flat, declarative instructions over numbered buffer slots.

A ``Tape`` is data only (frozen records); the executor binds it to arrays
and closures, and the dump prints it. Keeping it declarative lets the same
tape be printed, checked, executed, or translated to source.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import numpy as np

from tapegraph.errors import TapegraphError
from tapegraph.expr import Node
from tapegraph.ops import REGISTRY

SECTIONS = ("forward", "reverse", "update")


@attrs.frozen
class Instruction:
    """``out_slot = op(*in_slots, **static)``: one step of a tape."""

    #: Registered op name.
    op: str
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


@attrs.frozen
class Feed:
    """A slot filled from the caller's arrays at every call."""

    name: str
    #: ``input`` or ``param``.
    kind: str
    slot: int
    value: int
    shape: tuple[int, ...]
    dtype: str


@attrs.frozen(eq=False)
class Constant:
    """A slot filled once, when the tape is bound: a constant or a folded value."""

    slot: int
    value: int
    array: np.ndarray
    label: str


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
    #: Scratch arrays per instruction index (shape, dtype), counted in the total.
    workspaces: dict[int, dict[str, tuple[tuple[int, ...], str]]]

    def section(self, name: str) -> tuple[Instruction, ...]:
        """The instructions of one section, in order."""
        return tuple(instruction for instruction in self.instructions if instruction.section == name)

    @property
    def total_bytes(self) -> int:
        """Bytes of all buffers and workspaces."""
        scratch = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                      for arrays in self.workspaces.values() for shape, dtype in arrays.values())
        return sum(buffer.nbytes for buffer in self.buffers) + scratch


class TapeCheckError(TapegraphError, AssertionError):
    """The tape checker found a tape the compiler should never emit."""


def check_tape(tape: Tape) -> None:
    """Verify a tape before it runs.

    Every read must find the value it expects in its slot (a read follows
    the write, and no reused buffer was overwritten while its value was
    live), and every instruction's shapes must agree with its op's shape
    rule. Raises ``TapeCheckError``; cheap, so it always runs.
    """
    by_slot = {buffer.slot: buffer for buffer in tape.buffers}
    holding: dict[int, int] = {}
    for feed in tape.feeds:
        holding[feed.slot] = feed.value
        _check_buffer(by_slot, feed.slot, feed.shape, feed.dtype, f"feed {feed.name}")
    for constant in tape.constants:
        holding[constant.slot] = constant.value
        _check_buffer(by_slot, constant.slot, constant.array.shape, constant.array.dtype.name, f"constant %{constant.value}")
    types: dict[int, tuple[tuple[int, ...], str]] = {}
    for feed in tape.feeds:
        types[feed.value] = (feed.shape, feed.dtype)
    for constant in tape.constants:
        types[constant.value] = (constant.array.shape, constant.array.dtype.name)
    for position, instruction in enumerate(tape.instructions):
        where = f"instruction {position} ({instruction.op} -> %{instruction.value})"
        for slot, value in zip(instruction.inputs, instruction.input_values, strict=True):
            if holding.get(slot) != value:
                raise TapeCheckError(f"{where} reads %{value} from s{slot}, which holds %{holding.get(slot)}")
        _check_buffer(by_slot, instruction.output, instruction.shape, instruction.dtype, where)
        operands = [_placeholder(*types[value]) for value in instruction.input_values]
        op = REGISTRY[instruction.op]
        shape, dtype = op.shape_rule(*operands, **dict(instruction.static))
        if tuple(shape) != instruction.shape or dtype != instruction.dtype:
            raise TapeCheckError(f"{where} writes {instruction.dtype}{list(instruction.shape)} but its shape rule gives {dtype}{list(shape)}")
        holding[instruction.output] = instruction.value
        types[instruction.value] = (instruction.shape, instruction.dtype)
    for name, (slot, value) in tape.results.items():
        if holding.get(slot) != value:
            raise TapeCheckError(f"result {name} expects %{value} in s{slot}, which holds %{holding.get(slot)} at the end")


@functools.lru_cache(maxsize=256)  # a tape has few distinct types; building a node each time was a tenth of lowering
def _placeholder(shape: tuple[int, ...], dtype: str) -> Node:
    return Node("input", (), (), shape, dtype, name="_")


def _check_buffer(by_slot: dict[int, Buffer], slot: int, shape, dtype: str, where: str) -> None:
    buffer = by_slot.get(slot)
    if buffer is None or buffer.shape != tuple(shape) or buffer.dtype != dtype:
        raise TapeCheckError(f"{where} uses s{slot} as {dtype}{list(shape)}, but that buffer is {buffer}")
