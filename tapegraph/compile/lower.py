"""Lowering: from expression roots to a checked, specialised ``Tape``.

The steps, each small: build the DAG of the roots (merging common
subexpressions), assign each node a section (forward, reverse, update) and
a deterministic topological position, fill in symbolic sizes, fold
constants, number the values, and plan buffers by liveness.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.errors import GraphError
from tapegraph.expr import Node
from tapegraph.ops import REGISTRY
from tapegraph.shapes import substitute, symbols
from tapegraph.compile.graph import ancestors_and_self, build_graph, topological_order
from tapegraph.compile.tape import SECTIONS, Buffer, Constant, Feed, Instruction, Tape, check_tape

#: A root of a tape: (result name, expression, section). A root named None
#: only anchors its expression's section (the gradients of an SGD step are
#: reverse-pass values, but not results), so its buffer is not kept.
Root = tuple[str | None, Node, str]


def concrete_static(static: tuple[tuple[str, Any], ...], sizes: Mapping[str, int]) -> tuple[tuple[str, Any], ...]:
    """Static attributes with symbolic sizes in shape-valued entries filled in."""
    result = []
    for key, value in static:
        if isinstance(value, tuple) and any(isinstance(item, str) for item in value):
            value = substitute(value, sizes)
        result.append((key, value))
    return tuple(result)


def assign_sections(graph, roots: Sequence[Root]) -> dict[Node, int]:
    """Section index of each node: the earliest section whose roots need it."""
    section_of: dict[Node, int] = {}
    for index, section in enumerate(SECTIONS):
        section_roots = [node for _, node, root_section in roots if root_section == section]
        for node in ancestors_and_self(graph, section_roots):
            section_of.setdefault(node, index)
    return section_of


class _SlotPool:
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


def _check_sizes_known(order: Sequence[Node], sizes: Mapping[str, int]) -> None:
    """Raise unless every symbolic size the nodes use is given by a feed.

    A symbol introduced by a static shape alone (``broadcast_to(w,
    ("batch", 3))`` with no input of shape ``("batch", ...)``) has no size
    at call time; say so rather than fail on a missing key while lowering.
    """
    for node in order:
        for dim in symbols(node.shape):
            if dim not in sizes:
                known = ", ".join(f"{name}={size}" for name, size in sizes.items()) or "none"
                raise GraphError(
                    f"{node.label} has shape {node.type_str}, but no parameter or input of this call has a "
                    f"{dim!r} dimension, so its size is unknown (sizes known: {known}); declare an input with "
                    f"a {dim!r} dimension that the same results depend on, or use a fixed size")


def lower(roots: Sequence[Root], sizes: Mapping[str, int]) -> Tape:
    """Compile ``roots`` to a tape for the concrete ``sizes`` of symbolic dims."""
    graph = build_graph([node for _, node, _ in roots])
    section_of = assign_sections(graph, roots)
    order = topological_order(graph, section_of)
    _check_sizes_known(order, sizes)
    shape_of = {node: substitute(node.shape, sizes) for node in order}

    folded: dict[Node, np.ndarray] = {}
    for node in order:
        if node.op == "const":
            folded[node] = node.value.array
        elif not node.is_leaf and all(operand in folded for operand in node.inputs):
            folded[node] = REGISTRY[node.op].evaluate([folded[operand] for operand in node.inputs], shape_of[node],
                                                       node.dtype, dict(concrete_static(node.static, sizes)))

    computed = [node for node in order if not node.is_leaf and node not in folded]
    root_nodes = {node for name, node, _ in roots if name is not None}
    needed = root_nodes | {operand for node in computed for operand in node.inputs}
    kept = [node for node in order if node in needed or node in computed]
    value_of = {node: number for number, node in enumerate(kept)}

    last_read: dict[Node, int] = {}
    for position, node in enumerate(computed):
        for operand in node.inputs:
            last_read[operand] = position

    pool = _SlotPool()
    slot_of: dict[Node, int] = {}
    feeds, constants = [], []
    for node in kept:
        if node.op in ("input", "param"):
            slot_of[node] = pool.take(shape_of[node], node.dtype, value_of[node])
            feeds.append(Feed(node.name, node.op, slot_of[node], value_of[node], shape_of[node], node.dtype))
        elif node in folded:
            # constants are written once at bind time, so their slots are never reused
            slot_of[node] = pool.take(shape_of[node], node.dtype, value_of[node])
            constants.append(Constant(slot_of[node], value_of[node], folded[node], node.label))

    def releasable(operand: Node, position: int) -> bool:
        return last_read.get(operand) == position and operand not in root_nodes and operand not in folded

    instructions, workspaces = [], {}
    for position, node in enumerate(computed):
        op = REGISTRY[node.op]
        dying = [operand for operand in dict.fromkeys(node.inputs) if releasable(operand, position)]
        # ufunc-like kernels may write over an operand they are done with;
        # not for single values, where numpy's overlap handling costs more
        # (a copy, about 0.5 us per call) than an 8-byte buffer saves
        in_place = op.elementwise and int(np.prod(shape_of[node], dtype=np.int64)) > 1
        if in_place:
            for operand in dying:
                pool.release(slot_of[operand])
        slot_of[node] = pool.take(shape_of[node], node.dtype, value_of[node])
        if not in_place:
            for operand in dying:
                pool.release(slot_of[operand])
        static = concrete_static(node.static, sizes)
        in_shapes = [shape_of[operand] for operand in node.inputs]
        derived = op.specialize(in_shapes, shape_of[node], **dict(static)) if op.specialize else {}
        if op.workspace:
            scratch = op.workspace(in_shapes, shape_of[node], node.dtype, **dict(static))
            workspaces[position] = {name: (array.shape, array.dtype.name) for name, array in scratch.items()}
        instructions.append(Instruction(
            op=node.op,
            inputs=tuple(slot_of[operand] for operand in node.inputs),
            output=slot_of[node],
            static=static,
            derived=tuple(sorted(derived.items())),
            value=value_of[node],
            input_values=tuple(value_of[operand] for operand in node.inputs),
            shape=shape_of[node],
            dtype=node.dtype,
            label=node.label,
            section=SECTIONS[section_of[node]],
        ))

    tape = Tape(
        feeds=tuple(feeds),
        constants=tuple(constants),
        instructions=tuple(instructions),
        buffers=pool.buffers(),
        results={name: (slot_of[node], value_of[node]) for name, node, _ in roots if name is not None},
        sizes=dict(sizes),
        workspaces=workspaces,
    )
    check_tape(tape)
    return tape
