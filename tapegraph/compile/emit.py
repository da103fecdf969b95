"""Emission: the tape's records, from the analysed graph and its buffer plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.expr import INPUT, PARAM, Node
from tapegraph.shapes import substitute
from tapegraph.compile.plan import BufferPlan
from tapegraph.compile.tape import SECTIONS, Constant, Feed, Instruction, Tape

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


def emit_tape(roots: Sequence[Root], kept: Sequence[Node], computed: Sequence[Node],
              folded: Mapping[Node, np.ndarray], value_of: Mapping[Node, int],
              shape_of: Mapping[Node, tuple[int, ...]], section_of: Mapping[Node, int],
              plan: BufferPlan, sizes: Mapping[str, int]) -> Tape:
    """The ``Tape`` that computes ``roots`` with the slots of ``plan``."""
    slot_of = plan.slot_of
    feeds, constants = [], []
    for node in kept:
        if node.op is INPUT or node.op is PARAM:
            feeds.append(Feed(node.name, node.op.name, slot_of[node], value_of[node], shape_of[node], node.dtype))
        elif node in folded:
            constants.append(Constant(slot_of[node], value_of[node], folded[node], node.label))

    instructions, workspaces = [], {}
    for position, node in enumerate(computed):
        op = node.op
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

    return Tape(
        feeds=tuple(feeds),
        constants=tuple(constants),
        instructions=tuple(instructions),
        buffers=plan.buffers,
        results={name: (slot_of[node], value_of[node]) for name, node, _ in roots if name is not None},
        sizes=dict(sizes),
        workspaces=workspaces,
    )
