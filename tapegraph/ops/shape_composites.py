"""Shape composites: take, concatenate, stack, split, squeeze, expand_dims and flip.

Each is built from primitives of ``shaping.py``: take from ``gather``,
joining from the binary ``concat``, the others from basic indexing
(``x[key]``), whose VJP rules give their gradients. Each checks its operands itself first, so a bad
call names the function the user called, every operand's type and the
user's line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tapegraph.errors import ShapeError
from tapegraph.expr import Node, caller_origin, const
from tapegraph.ops.composites import Composite
from tapegraph.ops.registry import Arg, Sample, as_node
from tapegraph.ops.shaping import CONCAT, GATHER, INDEX, gather_attributes, gather_rule
from tapegraph.shapes import format_shape


def _describe(nodes: Sequence[Node]) -> str:
    return ", ".join(node.type_str if node.name is None else f"{node.name}: {node.type_str}" for node in nodes)


def _fail(function: str, nodes: Sequence[Node], message: str) -> ShapeError:
    return ShapeError(f"{function}({_describe(nodes)}) at {caller_origin()}: {message}")


def _nodes(function: str, values: Any) -> list[Node]:
    """The operands of a function that takes a sequence of arrays, as nodes."""
    if isinstance(values, Node) or not isinstance(values, (list, tuple)):
        raise ShapeError(f"{function} at {caller_origin()}: takes a list or tuple of nodes, got "
                         f"{type(values).__name__}{' ' + values.type_str if isinstance(values, Node) else ''}")
    if not values:
        raise ShapeError(f"{function} at {caller_origin()}: needs at least one operand, got an empty sequence")
    return operand_nodes(function, values)


def operand_nodes(function: str, values: Sequence[Any]) -> list[Node]:
    """Each operand of ``function`` as a node; a ShapeError naming the one that cannot be."""
    nodes = []
    for position, value in enumerate(values):
        try:
            nodes.append(as_node(value))
        except TypeError:
            raise ShapeError(f"{function} at {caller_origin()}: operand {position} must be a tapegraph node or a number, "
                             f"got {type(value).__name__}") from None
    return nodes


def _axis(function: str, nodes: Sequence[Node], axis: Any, ndim: int) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise _fail(function, nodes, f"axis must be an integer, got {type(axis).__name__} {axis!r}")
    if not -ndim <= axis < ndim:
        raise _fail(function, nodes, f"axis {int(axis)} is out of range for {ndim} dimension(s)")
    return int(axis) % ndim


def _axes(function: str, nodes: Sequence[Node], axis: Any, ndim: int) -> tuple[int, ...]:
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = tuple(_axis(function, nodes, item, ndim) for item in items)
    if len(set(axes)) != len(axes):
        raise _fail(function, nodes, f"axis {tuple(axis)} repeats an axis")
    return axes


def _named(node: Node, name: str | None) -> Node:
    if not name:
        return node
    if node.is_leaf:  # the operand itself (squeezing nothing): a named copy, since leaves keep their names
        return INDEX(node, (), name=name)
    return node.named(name)


def take(x: Any, indices: Any, axis: int = 0, name: str | None = None) -> Node:
    """The entries of ``x`` at integer ``indices`` along ``axis``, as ``np.take``: embedding lookups.

    ``out[..., i, ...] = x[..., indices[i], ...]``, the indices' shape in
    place of the axis. ``indices`` is an integer node (an input, for
    indices fed at each call) or an integer array or list, held as a
    constant; negative indices count from the end, any other index out of
    bounds is an error (when called, for fed indices). The indices get no
    gradient; x's gradient adds g at each index, so an index taken twice
    gets both contributions.

    >>> import tapegraph as tg
    >>> E = tg.param("E", shape=(100, 8))
    >>> tg.take(E, tg.input("tokens", shape=("batch",), dtype="int64"))
    <gather f64[batch,8] at ...>
    """
    (x,) = _nodes("take", [x])
    if not isinstance(indices, Node):
        # not through as_node, which would make integers floats like the other operand
        array = np.asarray(indices)
        if array.dtype.kind not in "iu":
            shown = repr(indices) if len(repr(indices)) <= 40 else repr(indices)[:37] + "..."
            raise _fail("take", [x], f"indices must be integers, got {array.dtype} {shown}")
        indices = const(array)
    try:
        axis = gather_attributes(x, indices, axis)["axis"]
        gather_rule(x, indices, axis)
    except ValueError as error:
        raise _fail("take", [x, indices], str(error)) from None
    return GATHER(x, indices, axis, name=name)


def concatenate(xs: Sequence[Any], axis: int = 0, name: str | None = None) -> Node:
    """The arrays of ``xs`` joined along ``axis``, as ``np.concatenate``.

    Every shape must agree except along ``axis``, which must be concrete.
    Built as a balanced tree of two-way joins (``concat``): one
    instruction for two operands, and each entry copied about log2(n)
    times for n. The gradient of each operand is its slice of g.

    >>> import tapegraph as tg
    >>> tg.concatenate([tg.param("a", shape=(2, 3)), tg.param("b", shape=(4, 3))])
    <concat f64[6,3] at ...>
    """
    nodes = _nodes("concatenate", xs)
    first = nodes[0]
    if first.ndim == 0:
        raise _fail("concatenate", nodes, "scalars cannot be concatenated; use tg.stack")
    axis = _axis("concatenate", nodes, axis, first.ndim)
    for position, node in enumerate(nodes[1:], start=1):
        if node.ndim != first.ndim:
            raise _fail("concatenate", nodes, f"operand {position} has {node.ndim} dimension(s), operand 0 has {first.ndim}")
        for index, (left, right) in enumerate(zip(first.shape, node.shape)):
            if index != axis and left != right:
                raise _fail("concatenate", nodes, f"along axis {axis} the shapes must agree elsewhere, but axis "
                                                  f"{index} is {left} in operand 0 and {right} in operand {position}")
    for position, node in enumerate(nodes):
        if isinstance(node.shape[axis], str):
            raise _fail("concatenate", nodes, f"axis {axis} of operand {position} is the symbolic dimension "
                                              f"{node.shape[axis]!r}: the size of the result would not be known")
    return _named(_join(nodes, axis), name)


def _join(nodes: Sequence[Node], axis: int) -> Node:
    if len(nodes) == 1:
        return nodes[0]
    half = len(nodes) // 2
    return CONCAT(_join(nodes[:half], axis), _join(nodes[half:], axis), axis)


def stack(xs: Sequence[Any], axis: int = 0, name: str | None = None) -> Node:
    """The arrays of ``xs``, all of one shape, stacked along a new ``axis``, as ``np.stack``.

    >>> import tapegraph as tg
    >>> tg.stack([tg.param("a", shape=(3,)), tg.param("b", shape=(3,))], axis=1)
    <concat f64[3,2] at ...>
    """
    nodes = _nodes("stack", xs)
    first = nodes[0]
    for position, node in enumerate(nodes[1:], start=1):
        if node.shape != first.shape:
            raise _fail("stack", nodes, f"every operand must have one shape, but operand {position} is "
                                        f"{format_shape(node.shape)} and operand 0 {format_shape(first.shape)}")
    axis = _axis("stack", nodes, axis, first.ndim + 1)
    key = (slice(None),) * axis + (None,)
    return _named(_join([INDEX(node, key) for node in nodes], axis), name)


def split(x: Any, sections: int | Sequence[int], axis: int = 0) -> list[Node]:
    """``x`` cut along ``axis`` into pieces, as ``np.split``: a list of nodes.

    ``sections`` is a number of equal pieces (it must divide the axis) or
    the sorted positions to cut at (``[2, 5]`` gives ``x[:2]``, ``x[2:5]``,
    ``x[5:]``; every piece must hold at least one entry).

    >>> import tapegraph as tg
    >>> tg.split(tg.param("w", shape=(6, 2)), 3)
    [<index f64[2,2] at ...>, <index f64[2,2] at ...>, <index f64[2,2] at ...>]
    """
    (node,) = _nodes("split", [x])
    if node.ndim == 0:
        raise _fail("split", [node], "a scalar cannot be split")
    axis = _axis("split", [node], axis, node.ndim)
    size = node.shape[axis]
    if isinstance(size, str):
        raise _fail("split", [node], f"axis {axis} is the symbolic dimension {size!r}: its size is known only when called")
    if isinstance(sections, (int, np.integer)) and not isinstance(sections, (bool, np.bool_)):
        if sections <= 0 or size % sections:
            raise _fail("split", [node], f"{int(sections)} equal pieces do not divide axis {axis} of size {size}")
        cuts = [size // int(sections) * index for index in range(1, int(sections))]
    elif isinstance(sections, (list, tuple)) and all(isinstance(cut, (int, np.integer)) for cut in sections):
        cuts = [int(cut) for cut in sections]
        bounds = [0, *cuts, size]
        if any(later <= earlier for earlier, later in zip(bounds, bounds[1:])):
            raise _fail("split", [node], f"cuts {cuts} must increase strictly within 1..{size - 1} (axis {axis} "
                                         "has that size) so that no piece is empty")
    else:
        raise _fail("split", [node], f"sections must be a number of pieces or a list of positions, got {sections!r}")
    bounds = [0, *cuts, size]
    before = (slice(None),) * axis
    return [INDEX(node, before + (slice(start, stop),)) for start, stop in zip(bounds, bounds[1:])]


def squeeze(x: Any, axis: int | Sequence[int] | None = None, name: str | None = None) -> Node:
    """``x`` without its axes of size 1 (only those of ``axis``, when given), as ``np.squeeze``.

    >>> import tapegraph as tg
    >>> tg.squeeze(tg.param("w", shape=(3, 1)))
    <index f64[3] at ...>
    """
    (node,) = _nodes("squeeze", [x])
    if axis is None:
        axes = tuple(index for index, dim in enumerate(node.shape) if dim == 1)
    else:
        axes = _axes("squeeze", [node], axis, node.ndim)
        for index in axes:
            if node.shape[index] != 1:
                raise _fail("squeeze", [node], f"axis {index} has size {node.shape[index]}, not 1")
    key = tuple(0 if index in axes else slice(None) for index in range(node.ndim))
    return _named(INDEX(node, key), name)


def expand_dims(x: Any, axis: int | Sequence[int], name: str | None = None) -> Node:
    """``x`` with new axes of size 1 at the positions ``axis`` of the result, as ``np.expand_dims``.

    >>> import tapegraph as tg
    >>> tg.expand_dims(tg.input("x", shape=("batch", 3)), -1)
    <index f64[batch,3,1] at ...>
    """
    (node,) = _nodes("expand_dims", [x])
    rank = node.ndim + (len(axis) if isinstance(axis, (tuple, list)) else 1)
    axes = _axes("expand_dims", [node], axis, rank)
    key = tuple(None if index in axes else slice(None) for index in range(rank))
    return _named(INDEX(node, key), name)


def flip(x: Any, axis: int | Sequence[int] | None = None, name: str | None = None) -> Node:
    """``x`` with the order of its entries reversed along ``axis`` (every axis by default), as ``np.flip``.

    >>> import tapegraph as tg
    >>> tg.flip(tg.input("x", shape=("batch", 3)), axis=1)
    <index f64[batch,3] at ...>
    """
    (node,) = _nodes("flip", [x])
    axes = tuple(range(node.ndim)) if axis is None else _axes("flip", [node], axis, node.ndim)
    key = tuple(slice(None, None, -1) if index in axes else slice(None) for index in range(node.ndim))
    return _named(INDEX(node, key), name)


def _call_with_list(build, nodes, static):
    return build(list(nodes), **static)


def _rejoin_pieces(build, nodes, static):
    # split gives several nodes: the tests check them all through one node,
    # the pieces joined in reverse order (so a piece put back in its own
    # place by mistake would not go unseen)
    pieces = build(*nodes, **static)
    return concatenate(pieces[::-1], axis=static.get("axis", 0))


COMPOSITES: dict[str, Composite] = {composite.name: composite for composite in (
    Composite("take", take, [
        Sample([Arg((5,)), Arg((3,), dtype="int64", low=-5, high=5)], {"axis": 0}),
        Sample([Arg((4, 3)), Arg((6,), dtype="int64", low=0, high=4, batch=True)]),
        Sample([Arg((4, 3), batch=True), Arg((2, 2), dtype="int64", low=0, high=3)], {"axis": -1}),
    ]),
    Composite("concatenate", concatenate, [
        Sample([Arg((2, 3)), Arg((4, 3))], {"axis": 0}),
        Sample([Arg((5, 2), batch=True), Arg((5, 1), batch=True), Arg((5, 3), batch=True)], {"axis": -1}),
        Sample([Arg((3,))]),
    ], call=_call_with_list),
    Composite("stack", stack, [
        Sample([Arg((3,)), Arg((3,))], {"axis": 0}),
        Sample([Arg((4, 2), batch=True), Arg((4, 2), batch=True), Arg((4, 2), batch=True)], {"axis": -1}),
        Sample([Arg(()), Arg(())]),
    ], call=_call_with_list),
    Composite("split", split, [
        Sample([Arg((6,))], {"sections": 3}),
        Sample([Arg((4, 5), batch=True)], {"sections": [1, 3], "axis": 1}),
    ], call=_rejoin_pieces),
    Composite("squeeze", squeeze, [
        Sample([Arg((3, 1))]),
        Sample([Arg((4, 1, 2, 1), batch=True)], {"axis": (1, -1)}),
    ]),
    Composite("expand_dims", expand_dims, [
        Sample([Arg((3,))], {"axis": 0}),
        Sample([Arg((4, 2), batch=True)], {"axis": (1, 3)}),
    ]),
    Composite("flip", flip, [
        Sample([Arg((4,))]),
        Sample([Arg((4, 2, 3), batch=True)], {"axis": (0, 2)}),
    ]),
)}
