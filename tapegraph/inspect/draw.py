"""Pictures of an expression graph and of a tape (matplotlib, Agg, no graphviz).

``draw_graph`` lays the expression DAG out in layers, data flowing top to
bottom, with each node a box labelled by its name or op and its type,
coloured by kind (input, param, const, op, output, objective; the reverse
pass in its own colour). ``draw_tape`` draws a tape as a timeline: one
row per buffer slot, one column per instruction, and a bar for each value
from the instruction that writes it to its last read, so a slot that
several values take turns in shows several bars on one row.

Both build a ``matplotlib.figure.Figure`` directly on an Agg canvas (no
pyplot: no window, no global state, whatever backend the user chose), and
import matplotlib only when called, so ``import tapegraph`` stays light.

The layout is computed here, with networkx for the graph work: layers by
longest path (leaves sit just above their first user), long edges routed
through dummy points, barycentre sweeps to reduce crossings, and positions
that pull each box towards its neighbours without ever overlapping
another box of its layer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import networkx as nx
import numpy as np

from tapegraph.errors import GraphError
from tapegraph.expr import CONST, PARAM, Node
from tapegraph.shapes import format_type
from tapegraph.compile.graph import ancestors_and_self, build_graph, topological_order
from tapegraph.compile.tape import SECTIONS, Tape

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tapegraph.optim import SGDStep
    from tapegraph.program import Program

#: Box face colour per node kind; the reverse kinds share a hue.
NODE_COLOURS = {
    "input": "#cfe2f3",
    "param": "#fce5cd",
    "hyper": "#fff2cc",
    "const": "#eeeeee",
    "op": "#ffffff",
    "output": "#d9ead3",
    "objective": "#f4cccc",
    "reverse": "#e6dcf5",
    "gradient": "#c7b2ea",
}
NODE_KIND_NAMES = {
    "input": "input",
    "param": "param",
    "hyper": "hyperparameter",
    "const": "const",
    "op": "op",
    "output": "output",
    "objective": "objective",
    "reverse": "reverse op",
    "gradient": "gradient",
}
FORWARD_EDGE_COLOUR = "#555555"
REVERSE_EDGE_COLOUR = "#7e57c2"
#: Bar colour per kind of value on the tape timeline.
VALUE_COLOURS = {
    "input": NODE_COLOURS["input"],
    "param": NODE_COLOURS["param"],
    "hyper": NODE_COLOURS["hyper"],
    "constant": "#d9d9d9",
    "forward": "#b6d7a8",
    "reverse": NODE_COLOURS["gradient"],
    "update": "#ffe599",
}
SECTION_SHADES = {"forward": "#f3f8f0", "reverse": "#f4f0fa", "update": "#fffaeb"}

_FONT_SIZE = 8.0  # points
_FONT_FAMILY = "DejaVu Sans Mono"  # ships with matplotlib, so sizes are the same everywhere
_BOX_PAD = 0.35 * _FONT_SIZE / 72  # inches of padding around a label
_LINE_HEIGHT = 1.2 * _FONT_SIZE / 72  # matplotlib's default line spacing, in inches
_LAYER_GAP = 0.42  # inches between the bottom of one layer and the top of the next
_BOX_GAP = 0.22  # inches between two boxes of a layer
_DUMMY_WIDTH = 0.06  # inches taken by a long edge passing through a layer
_MARGIN = 0.25  # inches around the drawing
_HEADER = 0.62  # inches above the drawing for the title and the legend
_MAX_PIXELS = 30000  # Agg's limit is 2**16 pixels per side; stay well below it
#: ``draw_graph`` refuses graphs with more nodes than this: the layout's
#: crossing reduction grows faster than the graph (600 nodes take about 7 s),
#: and a picture of thousands of boxes cannot be read anyway.
MAX_DRAWN_NODES = 1000
#: ``draw_tape`` refuses tapes with more instructions than this (one column each).
MAX_DRAWN_INSTRUCTIONS = 2000


def draw_graph(target: "Program | Node", path: str | os.PathLike | None = None, *, gradients: bool = True,
               sizes: Mapping[str, int] | None = None) -> "Figure":
    """Draw the expression graph of a program or node; save it if ``path`` is given.

    ``target`` is a ``Program`` (its objective, named outputs and, with
    ``gradients=True``, the gradient expressions of its ``wrt`` parameters)
    or a ``Node`` (its expression; with ``gradients=True`` and a scalar
    floating-point node, also its gradients with respect to every
    parameter it uses). Edges run in data-flow direction, from operand to
    user, top to bottom; the reverse pass is drawn in purple. ``sizes``
    fills symbolic dimensions into the labels (``{"batch": 32}``). A graph
    of more than ``MAX_DRAWN_NODES`` (1000) nodes raises ``GraphError``.

    ``path`` must end in ``.png`` or ``.svg``. Returns the
    ``matplotlib.figure.Figure`` either way (it has an Agg canvas:
    ``fig.savefig`` works, no window is opened).

    Example::

        from tapegraph.inspect.draw import draw_graph
        draw_graph(prog, "ridge_graph.png")
    """
    file_format = _check_path(path, "draw_graph")
    if not isinstance(gradients, bool):
        raise TypeError(f"draw_graph: gradients must be True or False, got {gradients!r}")
    sizes = _check_sizes(sizes, "draw_graph")
    roles, kinds, graph, title = _graph_parts(target, gradients)
    if graph.number_of_nodes() > MAX_DRAWN_NODES:
        raise GraphError(
            f"draw_graph: the graph has {graph.number_of_nodes()} nodes, more than {MAX_DRAWN_NODES} "
            f"(tapegraph.inspect.draw.MAX_DRAWN_NODES), too many to lay out or read; list it as text with "
            f"tapegraph.inspect.dump.format_expression(node) or prog.dump(), or draw a smaller part "
            f"(draw_graph of one node, gradients=False)")
    labels = {node: _node_label(node, kinds[node], roles.get(node, ()), sizes) for node in graph}
    figure = _render_graph(graph, labels, kinds, title)
    _save(figure, path, file_format)
    return figure


def draw_tape(target: "Program | Tape | SGDStep", path: str | os.PathLike | None = None, *,
              sizes: Mapping[str, int] | None = None,
              kind: str = "value_and_grad") -> "Figure":
    """Draw a tape as a timeline of instructions against buffer slots.

    ``target`` is a ``Tape``, a ``Program`` (its ``value_and_grad`` tape,
    or its forward-only tape with ``kind="run"``; a program with symbolic
    dimensions needs ``sizes`` unless it has been called) or an SGD step
    from ``tg.sgd`` (forward, reverse and update sections). The x axis is
    the instruction index, the forward, reverse and update sections
    shaded; each row is a buffer slot (``s3 f64[400]``); each value is a
    bar from the instruction that writes it to its last read (feeds and
    constants start at the left, results run to the right), with a small
    triangle at every read. Bars that share a row are values that reuse
    one buffer. A tape of more than ``MAX_DRAWN_INSTRUCTIONS`` (2000)
    instructions raises ``GraphError``.

    ``path`` must end in ``.png`` or ``.svg``. Returns the Figure.

    Example::

        from tapegraph.inspect.draw import draw_tape
        draw_tape(prog, "ridge_tape.png")
    """
    file_format = _check_path(path, "draw_tape")
    sizes = _check_sizes(sizes, "draw_tape")
    tape, title = _tape_of(target, sizes, kind)
    if len(tape.instructions) > MAX_DRAWN_INSTRUCTIONS:
        raise GraphError(
            f"draw_tape: the tape has {len(tape.instructions)} instructions, more than {MAX_DRAWN_INSTRUCTIONS} "
            f"(tapegraph.inspect.draw.MAX_DRAWN_INSTRUCTIONS), too many columns to read; print it with "
            f"prog.dump() instead")
    figure = _render_tape(tape, title)
    _save(figure, path, file_format)
    return figure


# Arguments.

def _check_path(path: Any, caller: str) -> str | None:
    """The file format for ``path`` (``png`` or ``svg``), checked before any drawing."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{caller}: path must be a file name (str or os.PathLike) ending in .png or .svg, "
                        f"got {type(path).__name__}")
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"{caller}: pictures are saved as PNG or SVG, chosen by the file's suffix, but "
                         f"{os.fspath(path)!r} ends in {suffix or 'no suffix'!r}; use a name ending in .png or .svg")
    return suffix[1:]


def _check_sizes(sizes: Any, caller: str) -> dict[str, int]:
    if sizes is None:
        return {}
    if not isinstance(sizes, Mapping) or not all(
            isinstance(name, str) and isinstance(size, int) and not isinstance(size, bool) and size >= 0
            for name, size in sizes.items()):
        raise TypeError(f"{caller}: sizes must map symbolic dimension names to sizes, such as {{'batch': 32}}, "
                        f"got {sizes!r}")
    return dict(sizes)


def _save(figure: "Figure", path: str | os.PathLike | None, file_format: str | None) -> None:
    if path is not None:
        figure.savefig(path, format=file_format, dpi=_dpi(figure))


def _dpi(figure: "Figure") -> float:
    width, height = figure.get_size_inches()
    return min(100.0, _MAX_PIXELS / max(width, height))


def _new_figure(width: float, height: float, **options: Any) -> "Figure":
    """A figure on its own Agg canvas: no pyplot, no window, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, **options)
    FigureCanvasAgg(figure)
    return figure


# The graph: what to draw.

def _graph_parts(target: Any, gradients: bool) -> tuple[dict[Node, list[str]], dict[Node, str], nx.DiGraph, str]:
    """Roles (result names), kinds, the DAG, and a title for ``target``."""
    if isinstance(target, Node):
        objective, wrt, outputs = target, [], {}
        if gradients and _differentiable(target):
            wrt = [node for node in topological_order(build_graph([target])) if node.op is PARAM]
        title = f"expression: {target.label}"
    elif _is_program(target):
        objective, wrt, outputs = target.objective, list(target.wrt), dict(target.outputs)
        names = ", ".join(param.name for param in wrt)
        if objective is None:  # a predictor: outputs only
            title = f"program: outputs = [{', '.join(outputs)}] (no objective)"
        else:
            title = f"program: objective = {objective.label}; wrt = [{names}]"
    else:
        raise TypeError(f"draw_graph draws a Program (from tg.compile) or an expression node, "
                        f"got {type(target).__name__}")
    gradient_nodes: list[Node] = []
    if gradients and wrt:
        gradient_nodes = list(target.gradients) if _is_program(target) else _gradients(objective, wrt)
    forward_roots = [*([] if objective is None else [objective]), *outputs.values()]
    graph = build_graph(forward_roots + gradient_nodes)
    roles: dict[Node, list[str]] = {}
    if objective is not None:
        roles.setdefault(objective, []).append("objective")
    for name, node in outputs.items():
        roles.setdefault(node, []).append(name if name != node.name else "output")
    for param, gradient in zip(wrt, gradient_nodes):
        roles.setdefault(gradient, []).append(f"grad {param.name}")
    forward = ancestors_and_self(graph, forward_roots)
    kinds = {node: _node_kind(node, node in forward, objective, outputs, gradient_nodes) for node in graph}
    return roles, kinds, graph, title


def _is_program(target: Any) -> bool:
    # duck-typed: compile/ sits below the public API and does not import it
    return all(hasattr(target, name) for name in ("objective", "wrt", "gradients", "outputs"))


def _differentiable(node: Node) -> bool:
    return node.shape == () and np.dtype(node.dtype).kind == "f"


def _gradients(objective: Node, wrt: Sequence[Node]) -> list[Node]:
    from tapegraph.compile.grad import grad

    return list(grad(objective, wrt))


def _node_kind(node: Node, is_forward: bool, objective: Node, outputs: Mapping[str, Node],
               gradient_nodes: Sequence[Node]) -> str:
    # "the same expression" is asked of the structures: == would build an
    # equal node for each pair (see Node.structural_truth)
    if node.is_leaf:
        return node.op.name
    if objective is not None and node.structure is objective.structure:
        return "objective"
    if not is_forward:
        return "gradient" if any(node.structure is gradient.structure for gradient in gradient_nodes) else "reverse"
    if any(node.structure is output.structure for output in outputs.values()):
        return "output"
    return "op"


def _node_label(node: Node, kind: str, roles: Sequence[str], sizes: Mapping[str, int]) -> str:
    """Up to three short lines: what it is, its type, what it stands for."""
    shape = tuple(sizes.get(dim, dim) if isinstance(dim, str) else dim for dim in node.shape)
    type_text = format_type(shape, node.dtype)
    if node.op is CONST:
        lines = [repr(node.value) if node.name is None else node.name, f"const {type_text}"]
    elif node.is_leaf:
        lines = [node.name, f"{node.op} {type_text}"]
    elif node.name is not None:
        lines = [node.name, f"{node.op} {type_text}"]
    else:
        lines = [node.op.name, type_text]
    if roles:
        lines.append(", ".join(roles))
    elif kind == "reverse" and node.origin.startswith("grad of "):
        # "grad of matmul at model.py:12" -> "grad of matmul": the line number would only widen the box
        lines.append(node.origin.split(" at ")[0])
    return "\n".join(lines)


# The graph: layout.

@attrs.frozen
class _Item:
    """A box or a dummy point in one layer of the layout."""

    #: The expression node, or ("dummy", edge number, layer) for a long edge's bend.
    key: Any
    layer: int
    width: float
    height: float


def _layers(graph: nx.DiGraph, order: Sequence[Node]) -> dict[Node, int]:
    """Longest-path layers of the ops; each leaf sits one layer above its first user."""
    layer: dict[Node, int] = {}
    for node in order:
        if not node.is_leaf:
            layer[node] = 1 + max((layer[operand] for operand in node.inputs if not operand.is_leaf), default=0)
    for node in order:
        if node.is_leaf:
            users = [layer[user] for user in graph.successors(node)]
            layer[node] = min(users) - 1 if users else 0
    lowest = min(layer.values(), default=0)
    return {node: value - lowest for node, value in layer.items()}


def _layout(graph: nx.DiGraph, box_sizes: Mapping[Node, tuple[float, float]]) -> tuple[
        dict[Any, tuple[float, float]], list[tuple[Node, Node, list[Any]]], float, float]:
    """Positions (inches, y up) of boxes and dummies, edge routes, and the drawing's size."""
    order = topological_order(graph)
    layer_of = _layers(graph, order)
    items: dict[Any, _Item] = {node: _Item(node, layer_of[node], *box_sizes[node]) for node in order}
    routes: list[tuple[Node, Node, list[Any]]] = []
    upper: dict[Any, list[Any]] = {key: [] for key in items}
    lower: dict[Any, list[Any]] = {key: [] for key in items}
    position = {node: index for index, node in enumerate(order)}
    edges = sorted(graph.edges, key=lambda edge: (position[edge[1]], position[edge[0]]))
    for number, (source, target) in enumerate(edges):
        chain = [source]
        for layer in range(layer_of[source] + 1, layer_of[target]):
            dummy = ("dummy", number, layer)
            items[dummy] = _Item(dummy, layer, _DUMMY_WIDTH, 0.0)
            upper[dummy], lower[dummy] = [], []
            chain.append(dummy)
        chain.append(target)
        for above, below in zip(chain, chain[1:]):
            lower[above].append(below)
            upper[below].append(above)
        routes.append((source, target, chain[1:-1]))
    rows: list[list[Any]] = [[] for _ in range(1 + max((item.layer for item in items.values()), default=0))]
    for key, item in items.items():
        rows[item.layer].append(key)
    rows = _order_rows(rows, upper, lower)
    xs = _place_rows(rows, items, upper, lower)
    heights = [max((items[key].height for key in row), default=0.0) for row in rows]
    positions: dict[Any, tuple[float, float]] = {}
    top = _MARGIN
    for row, height in zip(rows, heights):
        for key in row:
            positions[key] = (xs[key], -(top + height / 2))
        top += height + _LAYER_GAP
    height_total = top - _LAYER_GAP + _MARGIN
    left = min((xs[key] - items[key].width / 2 for key in items), default=0.0)
    right = max((xs[key] + items[key].width / 2 for key in items), default=0.0)
    positions = {key: (x - left + _MARGIN, y + height_total) for key, (x, y) in positions.items()}
    return positions, routes, right - left + 2 * _MARGIN, height_total


def _crossings(rows: Sequence[Sequence[Any]], lower: Mapping[Any, list[Any]]) -> int:
    total = 0
    for row, below in zip(rows, rows[1:]):
        where = {key: index for index, key in enumerate(below)}
        edges = sorted((index, where[target]) for index, key in enumerate(row) for target in lower[key])
        for first in range(len(edges)):
            for second in range(first + 1, len(edges)):
                if edges[first][0] < edges[second][0] and edges[first][1] > edges[second][1]:
                    total += 1
    return total


def _order_rows(rows: list[list[Any]], upper: Mapping[Any, list[Any]],
                lower: Mapping[Any, list[Any]], sweeps: int = 8) -> list[list[Any]]:
    """Barycentre sweeps down and up; keeps the order with the fewest crossings."""
    best, best_crossings = [list(row) for row in rows], _crossings(rows, lower)
    current = [list(row) for row in rows]
    for sweep in range(sweeps):
        downwards = sweep % 2 == 0
        indices = range(1, len(current)) if downwards else range(len(current) - 2, -1, -1)
        for index in indices:
            neighbours = upper if downwards else lower
            reference = current[index - 1] if downwards else current[index + 1]
            where = {key: position for position, key in enumerate(reference)}
            row = current[index]

            def barycentre(pair: tuple[int, Any]) -> float:
                position, key = pair
                linked = [where[other] for other in neighbours[key] if other in where]
                return sum(linked) / len(linked) if linked else position * len(reference) / max(len(row), 1)
            # sorted() is stable, so ties keep the current (deterministic) order
            current[index] = [key for _, key in sorted(enumerate(row), key=barycentre)]
        crossings = _crossings(current, lower)
        if crossings < best_crossings:
            best, best_crossings = [list(row) for row in current], crossings
    return best


def _place_rows(rows: Sequence[Sequence[Any]], items: Mapping[Any, _Item], upper: Mapping[Any, list[Any]],
                lower: Mapping[Any, list[Any]], sweeps: int = 12) -> dict[Any, float]:
    """x of each item: near the mean of its neighbours, never closer than its gaps allow."""
    gaps = [[_gap(items[left], items[right]) for left, right in zip(row, row[1:])] for row in rows]
    xs: dict[Any, float] = {}
    for row, row_gaps in zip(rows, gaps):
        x = 0.0
        for index, key in enumerate(row):
            x += row_gaps[index - 1] if index else 0.0
            xs[key] = x
    for sweep in range(sweeps):
        neighbours = (upper, lower, None)[sweep % 3]
        for row, row_gaps in zip(rows, gaps):
            wanted = []
            for key in row:
                linked = (upper[key] + lower[key]) if neighbours is None else neighbours[key]
                wanted.append(sum(xs[other] for other in linked) / len(linked) if linked else xs[key])
            for key, x in zip(row, _closest_spaced(wanted, row_gaps)):
                xs[key] = x
    return xs


def _gap(left: _Item, right: _Item) -> float:
    between = _BOX_GAP if isinstance(left.key, Node) and isinstance(right.key, Node) else _BOX_GAP / 2
    return (left.width + right.width) / 2 + between


def _closest_spaced(wanted: Sequence[float], gaps: Sequence[float]) -> list[float]:
    """Positions in order, each at least its gap right of the previous, closest to ``wanted`` (least squares).

    Subtracting the cumulative gaps turns this into isotonic regression,
    solved by pooling adjacent violators.

    >>> _closest_spaced([0.0, 0.0], [1.0])
    [-0.5, 0.5]
    """
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    blocks: list[list[float]] = []  # [mean, count]
    for value, offset in zip(wanted, offsets):
        blocks.append([value - offset, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean, count = blocks.pop()
            previous_mean, previous_count = blocks[-1]
            total = previous_count + count
            blocks[-1] = [(previous_mean * previous_count + mean * count) / total, total]
    shifted = [mean for mean, count in blocks for _ in range(int(count))]
    return [value + offset for value, offset in zip(shifted, offsets)]


# The graph: drawing.

def _text_width(lines: Iterable[str], size: float = _FONT_SIZE) -> float:
    """Width in inches of the widest line, as Agg draws it at the figures' 100 dpi.

    Measured rather than counted: hinting rounds each glyph's advance to
    whole pixels, so text comes out wider than 0.6 em per character.
    """
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    global _renderer
    if _renderer is None:
        _renderer = RendererAgg(10, 10, 100)
    font = FontProperties(family=_FONT_FAMILY, size=size)
    widths = [_renderer.get_text_width_height_descent(line, font, ismath=False)[0] for line in lines if line]
    return max(widths, default=0.0) / 100


_renderer = None  # one small Agg renderer, made on first use, only for measuring text


def _measure(labels: Mapping[Node, str]) -> dict[Node, tuple[float, float]]:
    """Box width and height in inches for each label."""
    sizes = {}
    for node, label in labels.items():
        lines = label.split("\n")
        sizes[node] = (_text_width(lines) + 2 * _BOX_PAD, len(lines) * _LINE_HEIGHT + 2 * _BOX_PAD)
    return sizes


def _render_graph(graph: nx.DiGraph, labels: Mapping[Node, str], kinds: Mapping[Node, str], title: str) -> "Figure":
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    from matplotlib.path import Path

    box_sizes = _measure(labels)
    positions, routes, width, height = _layout(graph, box_sizes)
    kinds_present = [kind for kind in NODE_COLOURS if kind in set(kinds.values())]
    width = max(width, _legend_width(kinds_present, title))
    figure = _new_figure(width, height + _HEADER)
    # one data unit is one inch, so box sizes measured in inches are exact
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(0, height + _HEADER)
    axes.set_axis_off()
    # centre the boxes when the title or legend made the figure wider than the drawing
    left = min(positions[node][0] - box_sizes[node][0] / 2 for node in graph)
    right = max(positions[node][0] + box_sizes[node][0] / 2 for node in graph)
    positions = {key: (x + (width - left - right) / 2, y) for key, (x, y) in positions.items()}
    for number, node in enumerate(topological_order(graph)):
        x, y = positions[node]
        box_width, box_height = box_sizes[node]
        kind = kinds[node]
        emphasis = kind in ("objective", "gradient", "output")
        axes.add_patch(FancyBboxPatch(
            (x - box_width / 2, y - box_height / 2), box_width, box_height,
            boxstyle="round,pad=0,rounding_size=0.05", facecolor=NODE_COLOURS[kind],
            edgecolor="#222222" if emphasis else "#777777", linewidth=1.4 if emphasis else 0.8,
            zorder=2, gid=f"tg-box-{kind}-{number}"))
        axes.text(x, y, labels[node], ha="center", va="center", fontsize=_FONT_SIZE, family=_FONT_FAMILY,
                  linespacing=1.2, zorder=3, gid=f"tg-node-{kind}-{number}")
    for source, target, path in _ports(routes, positions, box_sizes):
        reverse = kinds[target] in ("reverse", "gradient")
        colour = REVERSE_EDGE_COLOUR if reverse else FORWARD_EDGE_COLOUR
        axes.add_patch(FancyArrowPatch(path=_smooth(path, Path), arrowstyle="-|>", mutation_scale=8,
                                       color=colour, linewidth=0.9, zorder=1, shrinkA=0, shrinkB=0))
    handles = [Patch(facecolor=NODE_COLOURS[kind], edgecolor="#555555", label=NODE_KIND_NAMES[kind])
               for kind in kinds_present]
    figure.legend(handles=handles, loc="upper right", ncols=len(handles), fontsize=_FONT_SIZE,
                  frameon=False, bbox_to_anchor=(1, 1 - 0.3 / (height + _HEADER)), handlelength=1.2,
                  columnspacing=1.0, borderaxespad=0.1)
    figure.text(_MARGIN / width, 1 - 0.08 / (height + _HEADER), title, ha="left", va="top",
                fontsize=_FONT_SIZE + 1, family=_FONT_FAMILY)
    return figure


def _legend_width(kinds: Sequence[str], title: str) -> float:
    # each legend entry: its text, a swatch and the spacing around it
    legend = sum(_text_width([NODE_KIND_NAMES[kind]]) + 0.45 for kind in kinds)
    return max(legend, _text_width([title], _FONT_SIZE + 1)) + 2 * _MARGIN


def _ports(routes: Iterable[tuple[Node, Node, list[Any]]], positions: Mapping[Any, tuple[float, float]],
           box_sizes: Mapping[Node, tuple[float, float]]) -> list[tuple[Node, Node, list[tuple[float, float]]]]:
    """Each edge as points: out of the source's bottom, through its dummies, into the target's top.

    Edges into one box are spread along its top edge, in the left-to-right
    order of where they come from, so arrow heads do not pile up.
    """
    incoming: dict[Node, list[tuple[float, int]]] = {}
    outgoing: dict[Node, list[tuple[float, int]]] = {}
    routes = list(routes)
    for number, (source, target, dummies) in enumerate(routes):
        before_target = positions[dummies[-1]] if dummies else positions[source]
        after_source = positions[dummies[0]] if dummies else positions[target]
        incoming.setdefault(target, []).append((before_target[0], number))
        outgoing.setdefault(source, []).append((after_source[0], number))
    entry = _spread(incoming, positions, box_sizes)
    exit_ = _spread(outgoing, positions, box_sizes)
    result = []
    for number, (source, target, dummies) in enumerate(routes):
        source_x, source_y = positions[source]
        target_x, target_y = positions[target]
        points = [(exit_[number], source_y - box_sizes[source][1] / 2)]
        points += [positions[dummy] for dummy in dummies]
        points.append((entry[number], target_y + box_sizes[target][1] / 2))
        result.append((source, target, points))
    return result


def _spread(ends: Mapping[Node, list[tuple[float, int]]], positions: Mapping[Any, tuple[float, float]],
            box_sizes: Mapping[Node, tuple[float, float]]) -> dict[int, float]:
    xs = {}
    for node, edges in ends.items():
        centre = positions[node][0]
        usable = 0.6 * box_sizes[node][0]
        edges = sorted(edges)
        for index, (_, number) in enumerate(edges):
            xs[number] = centre - usable / 2 + usable * (index + 1) / (len(edges) + 1)
    return xs


def _smooth(points: Sequence[tuple[float, float]], path_class: Any) -> Any:
    """Cubic segments that leave and enter every point vertically, like a spline through the layers."""
    vertices = [points[0]]
    codes = [path_class.MOVETO]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        half = (y0 - y1) / 2
        vertices += [(x0, y0 - half), (x1, y1 + half), (x1, y1)]
        codes += [path_class.CURVE4] * 3
    return path_class(vertices, codes)


# The tape.

def _tape_of(target: Any, sizes: Mapping[str, int], kind: str) -> tuple[Tape, str]:
    if kind not in ("value_and_grad", "run"):
        raise ValueError(f"draw_tape: kind must be 'value_and_grad' or 'run', got {kind!r}")
    if isinstance(target, Tape):
        return target, "tape"
    if _is_program(target):
        if target.objective is None:  # a predictor: only its run tape
            return target.tape("run", sizes or None), f"program: {target._describe()}; run"
        names = ", ".join(param.name for param in target.wrt)
        return (target.tape(kind, sizes or None),
                f"program: objective = {target.objective.label}; wrt = [{names}]; {kind}")
    if hasattr(target, "step_size") and callable(getattr(target, "tape", None)):
        return target.tape(sizes or None), f"sgd step: step_size = {target.step_size}"
    raise TypeError(f"draw_tape draws a Tape, a Program (from tg.compile) or an SGD step (from tg.sgd), "
                    f"got {type(target).__name__}")


@attrs.frozen
class _Span:
    """One value's life in its slot, in instruction positions."""

    value: int
    slot: int
    start: float
    end: float
    reads: tuple[int, ...]
    kind: str
    text: str


def _value_spans(tape: Tape) -> list[_Span]:
    """Where each value lives: written at ``start``, last read at ``end``.

    Feeds and constants start at -1, before the first instruction; results
    end at the instruction count, past the last one.
    """
    count = len(tape.instructions)
    reads: dict[int, list[int]] = {}
    for position, instruction in enumerate(tape.instructions):
        for value in instruction.input_values:
            reads.setdefault(value, []).append(position)
    results = {value: name for name, (_, value) in tape.results.items()}
    starts: list[tuple[int, int, float, str, str]] = []
    for feed in tape.feeds:
        starts.append((feed.value, feed.slot, -1, feed.kind, f"%{feed.value} {feed.name}"))
    for constant in tape.constants:
        starts.append((constant.value, constant.slot, -1, "constant", f"%{constant.value}"))
    for position, instruction in enumerate(tape.instructions):
        starts.append((instruction.value, instruction.output, position, instruction.section, f"%{instruction.value}"))
    spans = []
    for value, slot, start, kind, text in starts:
        value_reads = tuple(reads.get(value, ()))
        end = count if value in results else max(value_reads, default=start)
        spans.append(_Span(value, slot, start, end, value_reads, kind, text))
    return spans


def _render_tape(tape: Tape, title: str) -> "Figure":
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    count = len(tape.instructions)
    slots = len(tape.buffers)
    column = 0.4  # inches per instruction
    row = 0.3  # inches per slot
    label_width = _text_width([_slot_label(buffer) for buffer in tape.buffers])
    heading = f"{title}\n{count} instructions, {slots} buffer slots, {tape.total_bytes} bytes"
    width = max(_text_width(heading.split("\n"), _FONT_SIZE + 1) + 0.3,
                (count + 4.5) * column + label_width + 0.6)
    longest_op = _text_width([f"{len(tape.instructions)} {instruction.op}" for instruction in tape.instructions],
                             _FONT_SIZE - 1)
    height = slots * row + longest_op + 1.7
    figure = _new_figure(width, height, layout="constrained")
    axes = figure.add_subplot()
    right_edge = count + 2.6  # room for the result names after the last instruction
    axes.set_xlim(-1.6, right_edge)
    axes.set_ylim(slots - 0.5, -0.75)  # a quarter row above the first slot keeps the section names clear of it
    for section in SECTIONS:
        positions = [index for index, instruction in enumerate(tape.instructions) if instruction.section == section]
        if positions:
            axes.axvspan(positions[0] - 0.5, positions[-1] + 0.5, color=SECTION_SHADES[section], zorder=0, lw=0)
            axes.text((positions[0] + positions[-1]) / 2, -0.75, section, ha="center", va="bottom",
                      fontsize=_FONT_SIZE, family=_FONT_FAMILY, color="#444444")
    row_of = {buffer.slot: index for index, buffer in enumerate(tape.buffers)}
    # a value is read in the first half of an instruction and written in the
    # second, so an in-place write shows as two bars touching at that column
    read_at, write_at = -0.18, 0.18
    for span in _value_spans(tape):
        left = span.start + (write_at if span.start >= 0 else -0.4)
        right = span.end + (read_at if span.end < count else 0.4)
        right = max(right, left + 0.25)
        y = row_of[span.slot]
        axes.add_patch(Rectangle((left, y - 0.32), right - left, 0.64, facecolor=VALUE_COLOURS[span.kind],
                                 edgecolor="#333333", linewidth=0.7, zorder=2, gid=f"tg-value-{span.value}"))
        if (_text_width([span.text], _FONT_SIZE - 1) + 0.06) / column <= right - left:
            axes.text((left + right) / 2, y, span.text, ha="center", va="center", fontsize=_FONT_SIZE - 1,
                      family=_FONT_FAMILY, zorder=3)
        if span.reads:
            # carets on the bar's top edge, clear of its label
            axes.plot([read + read_at for read in span.reads], [y - 0.32] * len(span.reads), linestyle="none",
                      marker=7, markersize=5, color="#222222", zorder=4)
    for name, (slot, _) in tape.results.items():
        axes.text(count + 0.5, row_of[slot], name, ha="left", va="center", fontsize=_FONT_SIZE - 1,
                  family=_FONT_FAMILY, zorder=3)
    axes.set_yticks(range(slots), [_slot_label(buffer) for buffer in tape.buffers], fontsize=_FONT_SIZE,
                    family=_FONT_FAMILY)
    ticks = [-1, *range(count)]
    tick_labels = ["feeds", *(f"{index} {instruction.op}" for index, instruction in enumerate(tape.instructions))]
    axes.set_xticks(ticks, tick_labels, rotation=90, fontsize=_FONT_SIZE - 1, family=_FONT_FAMILY)
    axes.tick_params(length=2)
    for spine in ("top", "right"):
        axes.spines[spine].set_visible(False)
    axes.set_xlabel("instruction", fontsize=_FONT_SIZE)
    axes.set_ylabel("buffer slot", fontsize=_FONT_SIZE)
    kinds = [kind for kind in VALUE_COLOURS if any(span.kind == kind for span in _value_spans(tape))]
    handles = [Patch(facecolor=VALUE_COLOURS[kind], edgecolor="#333333", label=kind) for kind in kinds]
    handles.append(Line2D([], [], linestyle="none", marker=7, markersize=5, color="#222222", label="read"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=_FONT_SIZE,
                  frameon=False, handlelength=1.2)
    figure.suptitle(heading, fontsize=_FONT_SIZE + 1, family=_FONT_FAMILY, x=0.01, ha="left")
    return figure


def _slot_label(buffer: Any) -> str:
    return f"s{buffer.slot} {format_type(buffer.shape, buffer.dtype)}"
