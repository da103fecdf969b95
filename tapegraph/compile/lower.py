"""Lowering: from expression roots to a checked, specialised ``Tape``.

``lower`` only chains the stages, each a module of its own: algebraic
simplification of the roots (``simplify``), the graph analysis (``graph``: the DAG of the roots with common subexpressions
merged, sections, a deterministic order), constant folding, buffer
planning (``plan``), emission of the records (``emit``) and the checker
(``tape``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tapegraph.errors import AllocationError, GraphError
from tapegraph.expr import CONST, ConstValue, Node, Structure
from tapegraph.ops.registry import fold
from tapegraph.shapes import substitute, symbols
from tapegraph.compile.emit import Return, Root, concrete_static, emit_tape
from tapegraph.compile.graph import assign_sections, order_by_section, post_order
from tapegraph.compile.plan import plan_buffers
from tapegraph.compile.simplify import simplify
from tapegraph.compile.tape import Tape, check_tape

__all__ = ["Return", "Root", "lower", "concrete_static"]


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


def fold_constants(order: Sequence[Node], shape_of: Mapping[Structure, tuple[int, ...]],
                   sizes: Mapping[str, int]) -> dict[Structure, np.ndarray]:
    """The value of every node computed from constants alone, by its structure.

    Fills stay fills (``ops.registry.fold``): their arrays are read-only
    broadcast views of one number, written out only when a tape is bound.
    """
    constants: dict[Structure, ConstValue] = {}
    for node in order:
        if node.op is CONST:
            constants[node.structure] = node.value
        elif not node.is_leaf and all(operand.structure in constants for operand in node.inputs):
            static = dict(concrete_static(node.static, sizes))
            try:
                constants[node.structure] = fold(node.op, [constants[operand.structure] for operand in node.inputs],
                                                 shape_of[node.structure], node.dtype, static)
            except AllocationError as error:
                raise AllocationError(f"{node.label}, folding constants: {error}") from None
    return {structure: constant.array for structure, constant in constants.items()}


def lower(roots: Sequence[Root], sizes: Mapping[str, int], returns: Sequence[Return] | None = None) -> Tape:
    """Compile ``roots`` to a tape for the concrete ``sizes`` of symbolic dims.

    ``returns`` says how a call returns each named root, in order (see
    ``emit.Return``; default ``"raw"`` for each): the tape records it, and
    its destinations are chosen for it, so a tape is specialised for the
    way its results are returned.
    """
    roots = simplify(roots)
    walked = post_order(node for _, node, _ in roots)
    section_of = assign_sections(walked, roots)
    order = order_by_section(walked, section_of)
    _check_sizes_known(order, sizes)
    # the tables are keyed by node.structure (see tapegraph.compile.graph)
    shape_of = {node.structure: substitute(node.shape, sizes) for node in order}
    folded = fold_constants(order, shape_of, sizes)

    computed = [node for node in order if not node.is_leaf and node.structure not in folded]
    root_nodes = {node.structure for name, node, _ in roots if name is not None}
    needed = root_nodes | {operand.structure for node in computed for operand in node.inputs}
    needed.update(node.structure for node in computed)
    kept = [node for node in order if node.structure in needed]
    value_of = {node.structure: number for number, node in enumerate(kept)}

    plan = plan_buffers(kept, computed, folded, value_of, shape_of, root_nodes)
    tape = emit_tape(roots, kept, computed, folded, value_of, shape_of, section_of, plan, sizes, returns)
    check_tape(tape)
    return tape
