"""Pictures of graphs and tapes, and the notebook display, checked without a notebook server."""

from __future__ import annotations

import base64
import itertools
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser

import networkx as nx
import numpy as np
import pytest

import homework_graphs
import tapegraph as tg
from tapegraph.inspect.display import node_html, program_html, program_png
from tapegraph.inspect.draw import draw_graph, draw_tape
from tapegraph.compile.graph import build_graph
from tapegraph.shapes import format_type

ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOMEWORK = {
    "linear": homework_graphs.linear,
    "ridge": homework_graphs.ridge,
    "mlp_regression": homework_graphs.mlp_regression,
    "multiclass": homework_graphs.multiclass,
}


@pytest.fixture(scope="module")
def programs() -> dict[str, tg.Program]:
    return {name: build() for name, build in HOMEWORK.items()}


def _drawn(figure, prefix: str) -> list:
    """Artists whose gid starts with ``prefix`` (``tg-node-<kind>-<n>``, ``tg-box-...``, ``tg-value-<n>``)."""
    return [artist for artist in figure.findobj() if (artist.get_gid() or "").startswith(prefix)]


def _kind(artist) -> str:
    return artist.get_gid().split("-")[2]


def _graph(program: tg.Program) -> nx.DiGraph:
    return build_graph([program.objective, *program.outputs.values(), *program.gradients])


def _overlapping(boxes) -> list[tuple[int, int]]:
    return [(first, second) for (first, a), (second, b) in itertools.combinations(enumerate(boxes), 2)
            if a.overlaps(b)]


def _assert_saved(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000
    if path.suffix == ".png":
        assert data.startswith(PNG_SIGNATURE)
    else:
        assert ElementTree.fromstring(data).tag.endswith("svg")


@pytest.mark.parametrize("name", HOMEWORK)
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_graph_and_tape_pictures_save_as_png_and_svg(programs, name, suffix, tmp_path):
    graph_path = tmp_path / f"{name}_graph{suffix}"
    tape_path = tmp_path / f"{name}_tape{suffix}"
    assert draw_graph(programs[name], graph_path) is not None
    draw_tape(programs[name], str(tape_path))
    _assert_saved(graph_path)
    _assert_saved(tape_path)


@pytest.mark.parametrize("name", HOMEWORK)
def test_graph_draws_one_box_per_node_and_one_arrow_per_edge(programs, name):
    program = programs[name]
    graph = _graph(program)
    figure = draw_graph(program)
    assert len(_drawn(figure, "tg-node-")) == graph.number_of_nodes()
    assert len(_drawn(figure, "tg-box-")) == graph.number_of_nodes()
    arrows = [patch for patch in figure.axes[0].patches if type(patch).__name__ == "FancyArrowPatch"]
    assert len(arrows) == graph.number_of_edges()
    labels = "\n".join(text.get_text() for text in _drawn(figure, "tg-node-"))
    for param in program.wrt:
        assert f"grad {param.name}" in labels
        assert f"param {param.type_str}" in labels


@pytest.mark.parametrize("name", HOMEWORK)
def test_reverse_nodes_are_those_only_gradients_need_and_have_their_own_colour(programs, name):
    program = programs[name]
    graph = _graph(program)
    forward = set(nx.ancestors(graph, program.objective)) | {program.objective}
    for output in program.outputs.values():
        forward |= set(nx.ancestors(graph, output)) | {output}
    reverse_ops = [node for node in graph if node not in forward and not node.is_leaf]
    figure = draw_graph(program)
    boxes = _drawn(figure, "tg-box-")
    drawn_reverse = [box for box in boxes if _kind(box) in ("reverse", "gradient")]
    assert len(drawn_reverse) == len(reverse_ops) > 0
    assert sum(_kind(box) == "gradient" for box in boxes) == len(set(program.gradients))
    reverse_colours = {tuple(box.get_facecolor()) for box in drawn_reverse}
    forward_colours = {tuple(box.get_facecolor()) for box in boxes if box not in drawn_reverse}
    assert reverse_colours.isdisjoint(forward_colours)
    assert sum(_kind(box) == "objective" for box in boxes) == 1


def test_without_gradients_only_the_forward_graph_is_drawn(programs):
    program = programs["ridge"]
    figure = draw_graph(program, gradients=False)
    forward = build_graph([program.objective, *program.outputs.values()])
    assert len(_drawn(figure, "tg-node-")) == forward.number_of_nodes()
    assert not [box for box in _drawn(figure, "tg-box-") if _kind(box) in ("reverse", "gradient")]


def test_a_scalar_node_is_drawn_with_the_gradients_of_its_parameters():
    w = tg.param("w", shape=(3,))
    loss = tg.sum(tg.square(w))
    with_gradients = draw_graph(loss)
    without = draw_graph(loss, gradients=False)
    assert len(_drawn(without, "tg-node-")) == 3
    assert any(_kind(box) == "gradient" for box in _drawn(with_gradients, "tg-box-"))


@pytest.mark.parametrize("name", HOMEWORK)
def test_labels_and_boxes_do_not_overlap(programs, name):
    figure = draw_graph(programs[name])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = sorted(_drawn(figure, "tg-node-"), key=lambda artist: artist.get_gid())
    boxes = sorted(_drawn(figure, "tg-box-"), key=lambda artist: artist.get_gid().replace("box", "node"))
    text_extents = [text.get_window_extent(renderer) for text in texts]
    box_extents = [box.get_window_extent(renderer) for box in boxes]
    assert _overlapping(text_extents) == []
    assert _overlapping(box_extents) == []
    for text, box in zip(text_extents, box_extents):
        # the label lies inside its own box
        assert box.x0 <= text.x0 and text.x1 <= box.x1 and box.y0 <= text.y0 and text.y1 <= box.y1
    canvas = figure.bbox
    headings = [figure.legends[0].get_window_extent(renderer), figure.texts[0].get_window_extent(renderer)]
    for extent in box_extents + headings:
        assert canvas.x0 <= extent.x0 and extent.x1 <= canvas.x1 and canvas.y0 <= extent.y0 and extent.y1 <= canvas.y1
    assert not any(heading.overlaps(box) for heading in headings for box in box_extents)


@pytest.mark.parametrize("name", HOMEWORK)
def test_tape_picture_has_one_row_per_slot_and_one_bar_per_value(programs, name):
    program = programs[name]
    tape = program.tape()
    figure = draw_tape(program)
    axes = figure.axes[0]
    rows = [label.get_text() for label in axes.get_yticklabels()]
    assert rows == [f"s{buffer.slot} {format_type(buffer.shape, buffer.dtype)}" for buffer in tape.buffers]
    bars = {int(bar.get_gid().rsplit("-", 1)[1]): bar for bar in _drawn(figure, "tg-value-")}
    assert len(bars) == len(tape.feeds) + len(tape.constants) + len(tape.instructions)
    for row, buffer in enumerate(tape.buffers):
        # every value of the slot sits on its row, in tape order, and none overlaps the next
        spans = [(bars[value].get_x(), bars[value].get_x() + bars[value].get_width()) for value in buffer.values]
        assert all(abs(bars[value].get_y() + bars[value].get_height() / 2 - row) < 1e-9 for value in buffer.values)
        assert all(left_end <= right_start for (_, left_end), (right_start, _) in zip(spans, spans[1:]))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert _overlapping([label.get_window_extent(renderer) for label in axes.get_yticklabels()]) == []
    assert _overlapping([label.get_window_extent(renderer) for label in axes.get_xticklabels()]) == []


def test_reuse_of_a_slot_shows_as_several_bars_on_its_row(programs):
    tape = programs["ridge"].tape()
    shared = [buffer for buffer in tape.buffers if len(buffer.values) > 1]
    assert shared, "ridge's tape reuses buffers"
    figure = draw_tape(tape)
    gids = {bar.get_gid() for bar in _drawn(figure, "tg-value-")}
    for buffer in shared:
        assert {f"tg-value-{value}" for value in buffer.values} <= gids


def test_sgd_tape_shows_an_update_section():
    program = homework_graphs.ridge(num_features=3)
    step = tg.sgd(program, step_size=0.01)
    figure = draw_tape(step)
    section_names = [text.get_text() for text in figure.axes[0].texts]
    assert {"forward", "reverse", "update"} <= set(section_names)


def test_symbolic_sizes_are_filled_in_when_given():
    program = homework_graphs.ridge(num_features=4, batch=True)
    symbolic = "\n".join(text.get_text() for text in _drawn(draw_graph(program), "tg-node-"))
    concrete = "\n".join(text.get_text() for text in _drawn(draw_graph(program, sizes={"batch": 8}), "tg-node-"))
    assert "f64[batch,4]" in symbolic
    assert "f64[8,4]" in concrete and "batch" not in concrete
    with pytest.raises(tg.CallError, match="batch"):
        draw_tape(program)
    rows = [label.get_text() for label in draw_tape(program, sizes={"batch": 8}).axes[0].get_yticklabels()]
    assert "f64[8,4]" in "\n".join(rows)


@pytest.mark.parametrize("draw", [draw_graph, draw_tape])
def test_bad_suffix_and_bad_target_are_clear_errors(programs, draw, tmp_path):
    with pytest.raises(ValueError, match=r"\.png or \.svg.*|PNG or SVG") as raised:
        draw(programs["linear"], tmp_path / "picture.pdf")
    assert "picture.pdf" in str(raised.value)
    assert not (tmp_path / "picture.pdf").exists()
    with pytest.raises(ValueError, match="no suffix"):
        draw(programs["linear"], tmp_path / "picture")
    with pytest.raises(TypeError, match="got int"):
        draw(3)


def test_drawing_does_not_touch_pyplot_or_the_chosen_backend(tmp_path):
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "import tapegraph as tg\n"
        "from tapegraph.inspect.draw import draw_graph, draw_tape\n"
        "w = tg.param('w', shape=(2,))\n"
        "prog = tg.compile(tg.sum(tg.square(w)), wrt=[w])\n"
        "draw_graph(prog, sys.argv[1] + '/g.png'); draw_tape(prog, sys.argv[1] + '/t.png')\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split() == ["svg", "False"]
    assert (tmp_path / "g.png").read_bytes().startswith(PNG_SIGNATURE)


# Notebook display, called directly: no notebook server needed.

class _Collect(HTMLParser):
    """The text of each <pre> and the src of each <img>."""

    def __init__(self) -> None:
        super().__init__()
        self.pre: list[str] = []
        self.images: list[str] = []
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self._in_pre = True
            self.pre.append("")
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._in_pre:
            self.pre[-1] += data


def _parse(text: str) -> _Collect:
    parser = _Collect()
    parser.feed(text)
    parser.close()
    return parser


def _png_of(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return base64.b64decode(src[len(prefix):])


def test_program_html_shows_the_dump_escaped_and_the_graph_picture(programs):
    program = programs["ridge"]
    page = _parse(program_html(program))
    assert page.pre == [program.dump()]
    assert len(page.images) == 1
    assert _png_of(page.images[0]).startswith(PNG_SIGNATURE)
    assert "<Program" not in program_html(program)  # the repr's angle brackets are escaped


def test_program_png_is_the_graph_picture(programs):
    assert program_png(programs["multiclass"]).startswith(PNG_SIGNATURE)


def test_program_html_of_an_unspecialised_program_is_a_note_not_an_error():
    program = homework_graphs.mlp_regression(batch=True)
    text = program_html(program)
    page = _parse(text)
    assert page.pre == []
    assert "No tape yet" in text and "batch" in text
    assert len(page.images) == 1
    params = homework_graphs.random_params(program, np.random.default_rng(0))
    program.value_and_grad(params, {"x": np.ones((5, 1)), "y": np.ones(5)})
    assert _parse(program_html(program)).pre == [program.dump()]


def test_display_never_raises_even_for_something_that_is_not_a_program():
    class Broken:
        objective = None

        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    assert "Broken" in program_html(Broken())
    assert program_png(Broken()) is None
    assert node_html(Broken())


def test_node_html_shows_type_name_origin_and_a_picture():
    x = tg.input("x", shape=(3,))
    hidden = tg.tanh(x, name="hidden")
    text = node_html(hidden)
    assert "tanh f64[3]" in text and "&#x27;hidden&#x27;" in text and "test_draw.py:" in text
    page = _parse(text)
    assert _png_of(page.images[0]).startswith(PNG_SIGNATURE)
    assert page.pre == ["%0:f64[3] = input x\n%1:f64[3] = tanh %0  # hidden"]


def test_node_html_lists_a_large_expression_as_text_only():
    total = tg.input("x", shape=(2,))
    for _ in range(50):
        total = tg.tanh(total)
    page = _parse(node_html(total))
    assert page.images == []
    assert len(page.pre[0].splitlines()) == 51


def test_programs_and_expressions_display_in_jupyter_through_these_functions():
    program = homework_graphs.ridge(num_features=3)
    assert program._repr_html_() == program_html(program)
    assert program._repr_png_() == program_png(program)
    assert program.objective._repr_html_() == node_html(program.objective)
    assert tg.draw_graph is draw_graph and tg.draw_tape is draw_tape
