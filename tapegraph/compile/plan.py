"""Buffer planning: which slot holds each value, reused by liveness.

Values take turns in slots of their own shape and dtype: a slot is freed
after the last read of the value it holds and taken again lowest-first, so
the same model always gets the same plan. Feeds and constants keep their
slots for the whole tape (constants are written once, when a tape is
bound); results are never freed.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from tapegraph.expr import HYPER, INPUT, PARAM, Node, Structure
from tapegraph.compile.tape import Buffer


class SlotPool:
    """Buffer slots, reused lowest-first among those of the same type."""

    def __init__(self) -> None:
        self.types: list[tuple[tuple[int, ...], str]] = []
        self.values: list[list[int]] = []
        self._free: dict[tuple[tuple[int, ...], str], list[int]] = {}

    def take(self, shape: tuple[int, ...], dtype: str, value: int) -> int:
        free = self._free.get((shape, dtype))
        if free:
            slot = heapq.heappop(free)
        else:
            slot = len(self.types)
            self.types.append((shape, dtype))
            self.values.append([])
        self.values[slot].append(value)
        return slot

    def release(self, slot: int) -> None:
        heapq.heappush(self._free.setdefault(self.types[slot], []), slot)

    def buffers(self) -> tuple[Buffer, ...]:
        return tuple(Buffer(slot, shape, dtype, tuple(values))
                     for slot, ((shape, dtype), values) in enumerate(zip(self.types, self.values)))


@attrs.frozen
class BufferPlan:
    """Where every kept value lives."""

    #: Slot of each value, by its node's structure.
    slot_of: dict[Structure, int]
    #: The slots, each with the values that take turns in it.
    buffers: tuple[Buffer, ...]


def plan_buffers(kept: Sequence[Node], computed: Sequence[Node], folded: Mapping[Structure, np.ndarray],
                 value_of: Mapping[Structure, int], shape_of: Mapping[Structure, tuple[int, ...]],
                 root_nodes: set[Structure]) -> BufferPlan:
    """Assign a slot to each kept node, reusing slots of values no longer read.

    The tables are keyed by ``node.structure`` (see ``tapegraph.compile.graph``).
    """
    last_read: dict[Structure, int] = {}
    for position, node in enumerate(computed):
        for operand in node.inputs:
            last_read[operand.structure] = position

    pool = SlotPool()
    slot_of: dict[Structure, int] = {}
    for node in kept:
        if node.op is INPUT or node.op is PARAM or node.op is HYPER or node.structure in folded:
            # feeds and constants are never released: constants are written
            # once at bind time, feeds are the caller's
            slot_of[node.structure] = pool.take(shape_of[node.structure], node.dtype, value_of[node.structure])

    for position, node in enumerate(computed):
        op = node.op
        dying = [operand for operand in dict.fromkeys(operand.structure for operand in node.inputs)
                 if last_read[operand] == position and operand not in root_nodes and operand not in folded]
        # ufunc-like kernels may write over an operand they are done with;
        # not for single values, where numpy's overlap handling costs more
        # (a copy, about 0.5 us per call) than an 8-byte buffer saves
        in_place = op.elementwise and math.prod(shape_of[node.structure]) > 1
        if in_place:
            for operand in dying:
                pool.release(slot_of[operand])
        slot_of[node.structure] = pool.take(shape_of[node.structure], node.dtype, value_of[node.structure])
        if not in_place:
            for operand in dying:
                pool.release(slot_of[operand])
    return BufferPlan(slot_of, pool.buffers())
