"""The text dump of a tape: one printer for instructions, sections and buffers.

The format is documented in ``docs/tape.md`` and pinned by a golden test.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tapegraph.expr import CONST, Node
from tapegraph.shapes import format_type
from tapegraph.compile.graph import post_order
from tapegraph.compile.tape import SECTIONS, Instruction, Tape


def format_static(items: tuple[tuple[str, Any], ...]) -> str:
    """`` {axis=(0,), keepdims}``: static attributes as dumps show them (false flags left out)."""
    shown = []
    for key, value in items:
        if value is False or value is None:
            continue  # default flags add noise, not information
        shown.append(key if value is True else f"{key}={value}")
    return " {" + ", ".join(shown) + "}" if shown else ""


def format_instruction(position: int, instruction: Instruction) -> str:
    """``  3  s4:f64[] = matmul s0 s2  # %6 pred (model.py:12)``"""
    target = f"s{instruction.output}:{format_type(instruction.shape, instruction.dtype)}"
    operands = " ".join(f"s{slot}" for slot in instruction.inputs)
    text = f"{position:4d}  {target:<18} = {instruction.op} {operands}{format_static(instruction.static)}"
    return f"{text:<62} # %{instruction.value} {instruction.label}"


def _format_constant(array: np.ndarray) -> str:
    if array.size <= 4:
        return np.array2string(array, separator=", ", precision=6)
    if not any(array.strides):
        # a fill, one number broadcast (expr.ConstValue): no pass over its entries
        low = high = array[(0,) * array.ndim]
    else:
        low, high = array.min(), array.max()
    return f"{format_type(array.shape, array.dtype.name)} (min {low:.4g}, max {high:.4g})"


def _sizes_line(tape: Tape) -> str:
    return "sizes: " + ", ".join(f"{name}={size}" for name, size in sorted(tape.sizes.items()))


def _section_lines(tape: Tape, section: str) -> list[str]:
    # instructions keep their positions in the whole tape
    listed = [(position, instruction) for position, instruction in enumerate(tape.instructions)
              if instruction.section == section]
    return [f"{section} tape ({len(listed)} instructions):",
            *(format_instruction(position, instruction) for position, instruction in listed)]


def format_section(tape: Tape, section: str, title: str = "") -> str:
    """One section of a tape as ``format_tape`` prints it, after the title and sizes.

    Instructions keep their positions in the whole tape, so the numbers
    match the full dump's.
    """
    lines = [title] if title else []
    if tape.sizes:
        lines.append(_sizes_line(tape))
    return "\n".join(lines + _section_lines(tape, section))


def format_tape(tape: Tape, title: str = "") -> str:
    """The whole tape as text: feeds, constants, each section, results, buffers."""
    lines = []
    if title:
        lines.append(title)
    if tape.sizes:
        lines.append(_sizes_line(tape))
    lines.append("feeds:")
    for feed in tape.feeds:
        copied = "" if feed.in_place else " (copied into its slot)"
        lines.append(f"        s{feed.slot}:{format_type(feed.shape, feed.dtype)} <- {feed.kind} {feed.name}{copied}  # %{feed.value}")
    if tape.constants:
        lines.append("constants:")
        for constant in tape.constants:
            array = constant.array
            lines.append(f"        s{constant.slot}:{format_type(array.shape, array.dtype.name)} = "
                         f"{_format_constant(array)}  # %{constant.value} {constant.label}")
    for section in SECTIONS:
        if section == "forward" or tape.section(section):
            lines.extend(_section_lines(tape, section))
    lines.append("results:")
    for name, (slot, value) in tape.results.items():
        lines.append(f"        {name} <- s{slot}{_returned(tape, name)}  # %{value}")
    lines.extend(_destination_lines(tape))
    lines.append(f"buffers ({len(tape.buffers)} slots):")
    types = [format_type(buffer.shape, buffer.dtype) for buffer in tape.buffers]
    # columns widen for long slot numbers, types and byte counts, so that
    # neighbours never run together; the usual widths are the minimum
    slot_width = max([4] + [len(str(buffer.slot)) + 1 for buffer in tape.buffers])
    type_width = max([18] + [len(text) + 2 for text in types])
    bytes_width = max([8] + [len(str(buffer.nbytes)) for buffer in tape.buffers])
    padding = " " * (slot_width - 4 + 2)
    lines.append(f"  slot{padding}type{' ' * (17 + type_width - 18 + bytes_width - 8)}bytes  values")
    for buffer, text in zip(tape.buffers, types):
        values = ", ".join(f"%{value}" for value in buffer.values)
        lines.append(f"  s{buffer.slot:<{slot_width}d}{text:<{type_width}}{buffer.nbytes:>{bytes_width}d}  {values}")
    scratch = tape.total_bytes - sum(buffer.nbytes for buffer in tape.buffers)
    if scratch:
        users = len({workspace.instruction for workspace in tape.workspaces})
        lines.append(f"workspace: {scratch} bytes (scratch arrays of {users} instructions)")
        for workspace in tape.workspaces:
            kind = format_type(workspace.shape, workspace.dtype)
            held = "scratch" if workspace.contents is None else f"= {_format_constant(workspace.contents)}"
            lines.append(f"  {workspace.instruction:4d}  {workspace.name}:{kind} {held}")
    lines.append(f"total: {tape.total_bytes} bytes")
    return "\n".join(lines)


def _returned(tape: Tape, name: str) -> str:
    how = tape.returns.get(name)
    if how is None:
        return ""
    return f" into {how.feed}" if how.kind == "donated" else f" as {how.kind}"


def _destination_lines(tape: Tape) -> list[str]:
    """Values written elsewhere than their slots, grouped by where: numbers, fresh arrays, donated feeds."""
    groups: dict[str, list[str]] = {}
    for instruction in tape.instructions:
        destination = instruction.destination
        if destination.kind == "slot":
            continue
        where = {"scalar": "as numbers", "fresh": "fresh arrays"}.get(destination.kind, f"into the caller's {destination.feed}")
        groups.setdefault(where, []).append(f"%{instruction.value}")
    if not groups:
        return []
    return ["values not in their slots:", *(f"        {where}: {' '.join(values)}" for where, values in groups.items())]


def format_expression(node: Node) -> str:
    """The expression as text, one value a line, operands before users,
    in the tape's notation (``%n:type = op operands {static}  # name``).

    >>> import tapegraph as tg
    >>> x = tg.input("x", shape=(3,))
    >>> print(format_expression(tg.sum(tg.square(x), name="total")))
    %0:f64[3] = input x
    %1:f64[3] = square %0
    %2:f64[] = sum %1 {axis=(0,)}  # total
    """
    order = post_order([node])
    number = {item: index for index, item in enumerate(order)}
    lines = []
    for item in order:
        target = f"%{number[item]}:{item.type_str}"
        if item.op is CONST:
            lines.append(f"{target} = const {item.value!r}" + (f"  # {item.name}" if item.name else ""))
        elif item.is_leaf:
            lines.append(f"{target} = {item.op} {item.name}")
        else:
            operands = " ".join(f"%{number[operand]}" for operand in item.inputs)
            comment = f"  # {item.name}" if item.name is not None else ""
            lines.append(f"{target} = {item.op} {operands}{format_static(item.static)}{comment}")
    return "\n".join(lines)
