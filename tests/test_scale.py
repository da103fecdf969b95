"""Graphs far deeper than the recursion limit: build, compare, compile, run, print.

Every test runs at Python's default recursion limit (1000), which a
recursive hash, ``==``, walk or printer would exceed at the first few
thousand nodes. Values are checked against plain numpy loops.
"""

from __future__ import annotations

import copy
import gc
import pickle
import sys
import threading
import weakref

import networkx as nx
import numpy as np
import pytest

import tapegraph as tg
from tapegraph import reference
from tapegraph.compile.graph import assign_sections, build_graph, order_by_section, post_order, topological_order
from tapegraph.errors import GraphError
from tapegraph.inspect.display import node_html, program_png
from tapegraph.inspect.draw import MAX_DRAWN_INSTRUCTIONS, MAX_DRAWN_NODES, draw_graph, draw_tape
from tapegraph.inspect.dump import format_expression


@pytest.fixture(autouse=True)
def default_recursion_limit():
    # the point of this file: nothing may need a higher limit
    assert sys.getrecursionlimit() == 1000


def _chain(steps: int, size: int = 8) -> tuple[tg.Node, tg.Node]:
    """``h = tanh(h) + w`` ``steps`` times from ``h = w``; returns (sum(h), w)."""
    w = tg.param("w", shape=(size,))
    h = w
    for _ in range(steps):
        h = tg.tanh(h) + w
    return tg.sum(h), w


def _chain_numpy(w: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
    """The chain's objective and gradient, by a forward loop and a hand-written reverse loop."""
    hs = [w]
    for _ in range(steps):
        hs.append(np.tanh(hs[-1]) + w)
    upstream = np.ones_like(w)
    gradient = np.zeros_like(w)
    for h in reversed(hs[:-1]):
        gradient += upstream  # through "+ w"
        upstream = upstream * (1.0 - np.tanh(h) ** 2)
    gradient += upstream  # h_0 = w
    return float(np.sum(hs[-1])), gradient


def _node_count(program: tg.Program) -> int:
    return len(post_order([program.objective, *program.gradients]))


def test_a_100000_node_chain_compiles_and_runs():
    steps = 16_700
    objective, w = _chain(steps)
    program = tg.compile(objective, wrt=[w])
    assert _node_count(program) >= 100_000
    w_value = np.linspace(-1.0, 1.0, 8)
    value, grads = program.value_and_grad({"w": w_value})
    expected_value, expected_gradient = _chain_numpy(w_value, steps)
    assert value == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(grads["w"], expected_gradient, rtol=1e-10)


def test_a_2000_layer_mlp_compiles_and_runs():
    layers, width = 2000, 4
    rng = np.random.default_rng(0)
    x = tg.input("x", shape=(width,))
    h = x
    wrt, params = [], {}
    for index in range(layers):
        weight = tg.param(f"W{index}", shape=(width, width))
        bias = tg.param(f"b{index}", shape=(width,))
        h = tg.tanh(tg.affine(weight, h, bias))
        wrt += [weight, bias]
        params[f"W{index}"] = 1.2 * rng.standard_normal((width, width)) / np.sqrt(width)
        params[f"b{index}"] = 0.1 * rng.standard_normal(width)
    program = tg.compile(tg.sum(tg.square(h)), wrt=wrt)
    x_value = rng.standard_normal(width)
    value, grads = program.value_and_grad(params, {"x": x_value})

    activations = [x_value]
    for index in range(layers):
        activations.append(np.tanh(params[f"W{index}"] @ activations[-1] + params[f"b{index}"]))
    assert value == pytest.approx(float(np.sum(activations[-1] ** 2)), rel=1e-12)
    upstream = 2.0 * activations[-1]
    for index in reversed(range(layers)):
        pre = upstream * (1.0 - activations[index + 1] ** 2)
        np.testing.assert_allclose(grads[f"b{index}"], pre, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(grads[f"W{index}"], np.outer(pre, activations[index]), rtol=1e-9, atol=1e-15)
        upstream = params[f"W{index}"].T @ pre


def test_python_sum_over_10000_terms():
    terms = 10_000
    w = tg.param("w", shape=(3,))
    scales = 0.5 + np.arange(terms) / terms
    objective = sum(tg.sum(tg.tanh(w * float(scale))) for scale in scales)  # a left-deep chain of adds
    program = tg.compile(objective, wrt=[w])
    w_value = np.array([0.3, -0.7, 1.1])
    value, grads = program.value_and_grad({"w": w_value})
    products = np.outer(scales, w_value)
    assert value == pytest.approx(float(np.sum(np.tanh(products))), rel=1e-12)
    np.testing.assert_allclose(grads["w"], np.sum(scales[:, None] * (1.0 - np.tanh(products) ** 2), axis=0),
                               rtol=1e-11)


X = tg.input("x", shape=(3,))


def _deep(depth: int, first_scale: float = 2.0, x: tg.Node = X) -> tg.Node:
    h = x * first_scale
    for _ in range(depth):
        h = tg.tanh(h) + x
    return h


def test_separately_built_deep_trees_are_equal_and_merge():
    depth = 10_000
    first = _deep(depth)
    # built again from the same input, on another line: equal values,
    # distinct objects, other origins
    x = X
    second = x * 2.0
    for _ in range(depth):
        second = tg.tanh(second) + x
    assert first is not second and first.origin != second.origin
    assert first == second and not first != second and hash(first) == hash(second)
    single = len(post_order([first]))
    assert len(post_order([first, second])) == single
    assert build_graph([first, second]).number_of_nodes() == single
    # compiled together, they are one computation
    together = tg.compile(tg.sum(first) + tg.sum(second))
    alone = tg.compile(tg.sum(first))
    assert len(together.tape().instructions) == len(alone.tape().instructions) + 1

    different = _deep(depth, first_scale=3.0)  # differs only at the bottom
    assert different != first and not different == first
    assert len(post_order([first, different])) > single
    assert first.named("top") != first and first.named("top") == second.named("top")


def test_a_deep_expression_prints_and_its_pictures_are_refused_not_recursed():
    depth = 10_000
    node = _deep(depth)
    listing = format_expression(node)
    lines = listing.splitlines()
    assert len(lines) == len(post_order([node])) == 2 * depth + 3
    assert lines[0] == "%0:f64[3] = input x" and lines[-1].startswith(f"%{len(lines) - 1}:f64[3] = add ")
    assert "tanh" in node_html(node)
    with pytest.raises(GraphError, match=f"more than {MAX_DRAWN_NODES}"):
        draw_graph(node, gradients=False)


def test_a_deep_program_dumps_evaluates_and_checks():
    steps = 2_000
    objective, w = _chain(steps, size=2)
    program = tg.compile(objective, wrt=[w])
    w_value = np.array([0.4, -0.9])
    dump = program.dump()
    assert dump.count(" = tanh ") == steps
    assert program_png(program) is None  # too big to show inline, and no error
    with pytest.raises(GraphError, match=f"draw_tape: the tape has .* more than {MAX_DRAWN_INSTRUCTIONS}"):
        draw_tape(program)
    expected_value, expected_gradient = _chain_numpy(w_value, steps)
    assert float(reference.evaluate(objective, {"w": w_value})) == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(reference.evaluate(program.gradients[0], {"w": w_value}), expected_gradient,
                               rtol=1e-10)
    errors = tg.testing.check_grads(program, {"w": w_value})
    assert errors["w"] < 1e-6


def test_equal_nodes_built_in_threads_are_equal():
    built: list[tg.Node] = []
    x = tg.input("x", shape=(4,))

    def build() -> None:
        h = x
        for _ in range(2_000):
            h = tg.tanh(h) + x
        built.append(h)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 4 and all(node == built[0] for node in built)


def test_structures_are_forgotten_with_their_nodes_and_survive_copies():
    node = tg.tanh(tg.input("x", shape=(3,))) * 7.25
    assert pickle.loads(pickle.dumps(node)) == node and copy.deepcopy(node) == node
    token = weakref.ref(node.structure)
    del node
    gc.collect()
    assert token() is None  # the table holds structures weakly: no leak of dead models


def test_the_sorted_order_is_networkx_lexicographic_topological_order():
    x = tg.input("x", shape=("batch", 3))
    weight = tg.param("W", shape=(4, 3))
    bias = tg.param("b", shape=(4,))
    hidden = tg.tanh(tg.affine(weight, x, bias))
    objective = tg.mean(tg.square(hidden)) + tg.sum(tg.square(weight))
    gradients = tg.grad(objective, [weight, bias])
    roots = [("objective", objective, "forward"), ("hidden", hidden, "forward")]
    roots += [(f"grad {index}", gradient, "reverse") for index, gradient in enumerate(gradients)]
    graph = build_graph([node for _, node, _ in roots])
    index = nx.get_node_attributes(graph, "index")
    section = assign_sections(graph, roots)
    assert topological_order(graph) == list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    by_networkx = list(nx.lexicographical_topological_sort(graph, key=lambda node: (section[node.structure], index[node])))
    assert topological_order(graph, section) == by_networkx
    walked = post_order([node for _, node, _ in roots])
    assert assign_sections(walked, roots) == section and order_by_section(walked, section) == by_networkx
    assert set(section.values()) == {0, 1}
