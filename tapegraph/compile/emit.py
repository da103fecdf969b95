"""Emission: the tape's records, from the analysed graph and its buffer plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from tapegraph.errors import GraphError
from tapegraph.expr import HYPER, INPUT, PARAM, Node, Structure
from tapegraph.ops.registry import Scratch
from tapegraph.shapes import substitute
from tapegraph.compile.plan import BufferPlan
from tapegraph.compile.tape import SECTIONS, SLOT, Constant, Destination, Feed, Instruction, Returned, Tape, Workspace

#: How a caller wants a result back: ``"raw"`` (as computed: a buffer, a
#: caller's array or a number), ``"float"`` (a Python float), ``"new"`` (a
#: new array the caller owns), or ``("into", feed name)`` (written into
#: the array the caller gave for that feed, which is returned). Lowering
#: records it in the tape (``Returned``) and chooses destinations for it.
Return = str | tuple[str, str]

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


def returned(spec: Return, feed_names: Sequence[str], name: str) -> Returned:
    """The tape's record of how result ``name`` is returned, from a caller's ``Return``."""
    if spec in ("raw", "float", "new"):
        return Returned(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "into":
        if spec[1] not in feed_names:
            raise GraphError(f"result {name} is to be returned into the array of feed {spec[1]!r}, "
                             f"but this tape's feeds are {sorted(feed_names)}")
        return Returned("donated", spec[1])
    raise GraphError(f"unknown way to return result {name}: {spec!r}; use 'raw', 'float', 'new' or ('into', feed name)")


def emit_tape(roots: Sequence[Root], kept: Sequence[Node], computed: Sequence[Node],
              folded: Mapping[Structure, np.ndarray], value_of: Mapping[Structure, int],
              shape_of: Mapping[Structure, tuple[int, ...]], section_of: Mapping[Structure, int],
              plan: BufferPlan, sizes: Mapping[str, int], returns: Sequence[Return] | None = None) -> Tape:
    """The ``Tape`` that computes ``roots`` with the slots of ``plan``.

    The tables are keyed by ``node.structure`` (see ``tapegraph.compile.graph``).

    ``returns`` says how a call hands back each named root, in order
    (default: each as computed, ``"raw"``); the destinations of the
    instructions are chosen for it (see ``destinations``).
    """
    slot_of = plan.slot_of
    feeds, constants = [], []
    for node in kept:
        key = node.structure
        if node.op is INPUT or node.op is PARAM or node.op is HYPER:
            feeds.append(Feed(node.name, node.op.name, slot_of[key], value_of[key], shape_of[key], node.dtype))
        elif key in folded:
            array = folded[key]
            constants.append(Constant(slot_of[key], value_of[key], array, node.label,
                                      scalar=(array.shape, array.dtype.name) == ((), "float64")))

    named = [(name, node) for name, node, _ in roots if name is not None]
    if returns is None:
        returns = ["raw"] * len(named)
    if len(returns) != len(named):
        raise GraphError(f"{len(returns)} ways to return results given for {len(named)} results {[name for name, _ in named]}")
    feed_names = [feed.name for feed in feeds]
    results = {name: (slot_of[node.structure], value_of[node.structure]) for name, node in named}
    how = {name: returned(spec, feed_names, name) for (name, _), spec in zip(named, returns)}

    instructions, workspaces = [], []
    for position, node in enumerate(computed):
        op = node.op
        key = node.structure
        static = concrete_static(node.static, sizes)
        in_shapes = [shape_of[operand.structure] for operand in node.inputs]
        derived = op.specialize(in_shapes, shape_of[key], **dict(static)) if op.specialize else {}
        if op.workspace:
            arrays = op.workspace(in_shapes, shape_of[key], node.dtype, **dict(static))
            workspaces.extend(_workspace(position, name, item) for name, item in arrays.items())
        instructions.append(Instruction(
            op=node.op,
            inputs=tuple(slot_of[operand.structure] for operand in node.inputs),
            output=slot_of[key],
            static=static,
            derived=tuple(sorted(derived.items())),
            value=value_of[key],
            input_values=tuple(value_of[operand.structure] for operand in node.inputs),
            shape=shape_of[key],
            dtype=node.dtype,
            label=node.label,
            section=SECTIONS[section_of[key]],
        ))

    feeds_by_value = {feed.value: feed for feed in feeds}
    types = {feed.value: (feed.shape, feed.dtype) for feed in feeds}
    types.update({constant.value: (constant.array.shape, constant.array.dtype.name) for constant in constants})
    types.update({instruction.value: (instruction.shape, instruction.dtype) for instruction in instructions})
    workspace_names: dict[int, list[str]] = {}
    for workspace in workspaces:
        workspace_names.setdefault(workspace.instruction, []).append(workspace.name)
    instructions = destinations(instructions, types, results, how, feeds_by_value, workspace_names)
    return Tape(
        feeds=tuple(feeds),
        constants=tuple(constants),
        instructions=tuple(instructions),
        buffers=plan.buffers,
        results=results,
        sizes=dict(sizes),
        workspaces=tuple(workspaces),
        returns=how,
    )


def _workspace(position: int, name: str, item: np.ndarray | Scratch) -> Workspace:
    if isinstance(item, Scratch):
        return Workspace(position, name, tuple(item.shape), np.dtype(item.dtype).name)
    contents = np.array(item)
    contents.setflags(write=False)
    return Workspace(position, name, contents.shape, contents.dtype.name, contents)


def _single_float(kind: tuple[tuple[int, ...], str]) -> bool:
    return kind == ((), "float64")


def destinations(instructions: Sequence[Instruction], types: Mapping[int, tuple[tuple[int, ...], str]],
                 results: Mapping[str, tuple[int, int]], how: Mapping[str, Returned],
                 feeds_by_value: Mapping[int, Feed],
                 workspace_names: Mapping[int, Sequence[str]]) -> list[Instruction]:
    """The instructions with their destinations and operand forms filled in.

    - A single float64 value whose op has a scalar form, computed from
      single values that are all float64, is a Python number
      (``scalar``): a numpy call on a 0-d array costs a dispatch worth
      dozens of float operations. Its 0-d operands are taken as numbers.
    - A result donated into a feed's array is written there directly
      (``donated``) when its op is a plain ufunc call, every read of that
      feed comes at or before it, and nothing reads the result later.
    - A result returned new (by one result only) is computed straight
      into a fresh array (``fresh``) when its op is a plain ufunc call
      and it is not 0-d, which saves writing it to a buffer and copying
      it out.
    - Everything else is written to its planned slot; its operands may be
      numbers where the op's call takes either (a ufunc or template), and
      are where its kernel takes one (``Op.numbers``) and the operand is a
      single float64.
    """
    last_read: dict[int, int] = {}
    for position, instruction in enumerate(instructions):
        for value in instruction.input_values:
            last_read[value] = position
    feed_value = {feed.name: value for value, feed in feeds_by_value.items()}
    new_count: dict[int, int] = {}
    donated: dict[int, str] = {}
    for name, (_, value) in results.items():
        if how[name].kind == "new":
            new_count[value] = new_count.get(value, 0) + 1
        elif how[name].kind == "donated":
            donated[value] = how[name].feed

    result = []
    for position, instruction in enumerate(instructions):
        op = instruction.op
        attributes = {**dict(instruction.static), **dict(instruction.derived)}
        operand_types = [types[value] for value in instruction.input_values]
        single = [kind for kind in operand_types if kind[0] == ()]
        if (_single_float((instruction.shape, instruction.dtype)) and op.scalar_template(attributes) is not None
                and all(_single_float(kind) for kind in single)):
            forms = tuple("number" if kind[0] == () else "array" for kind in operand_types)
            result.append(attrs.evolve(instruction, destination=Destination("scalar"), operand_forms=forms))
            continue
        # the workspace arrays are passed to a template by name, as the backend will
        template = op.source_template({**attributes, **{name: name for name in workspace_names.get(position, ())}})
        either = template is not None or op.elementwise
        numbers = op.number_positions
        forms = tuple("number" if index in numbers and _single_float(kind) else "either" if either else "array"
                      for index, kind in enumerate(operand_types))
        plain_ufunc = template is None and isinstance(op.kernel, np.ufunc)
        destination = SLOT
        feed = donated.get(instruction.value)
        if (plain_ufunc and feed is not None and last_read.get(feed_value[feed], -1) <= position
                and last_read.get(instruction.value, -1) <= position):
            destination = Destination("donated", feed)
        elif plain_ufunc and new_count.get(instruction.value) == 1 and instruction.shape != ():
            # (not 0-d: a ufunc given 0-d arrays returns a numpy scalar, and
            # a 0-d parameter must come back as a 0-d array)
            destination = Destination("fresh")
        result.append(attrs.evolve(instruction, destination=destination, operand_forms=forms))
    return result
