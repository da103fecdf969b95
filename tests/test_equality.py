"""``==`` and ``!=`` on nodes: elementwise comparisons whose truth, between
two nodes, is whether they are the same expression (issue 13, item 1).

The values are checked on every backend; the truth keeps every dict, set,
``in`` test and ``list.index`` over nodes working as structural equality.
"""

from __future__ import annotations

import copy
import importlib.util
import pickle

import numpy as np
import pytest

import tapegraph as tg
from tapegraph import reference

BACKENDS = ["numpy", pytest.param("native", marks=pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="the native backend needs numba (tapegraph[native])"))]


def _tree(x: tg.Node, depth: int = 50) -> tg.Node:
    h = x * 2.0
    for _ in range(depth):
        h = tg.tanh(h) + x
    return h


@pytest.mark.parametrize("backend", BACKENDS)
def test_equality_is_elementwise_on_every_backend(backend):
    x = tg.input("x", shape=(4,))
    y = tg.input("y", shape=(4,))
    outputs = {
        "x == y": x == y,
        "x != y": x != y,
        "x == 0.5": x == 0.5,
        "0.5 == x": 0.5 == x,
        "np.float64(0.5) == x": np.float64(0.5) == x,
        "array == x": np.array([0.5, 1.0, 2.0, 3.0]) == x,
        "x != 1": x != 1,
        "list == x": x == [0.5, 0.0, 2.0, 0.0],
        "where": tg.where(x == y, x, -y),
    }
    for name, node in outputs.items():
        assert isinstance(node, tg.Node) and node.type_str == ("f64[4]" if name == "where" else "bool[4]"), name
    program = tg.compile(outputs=outputs, backend=backend)
    xs, ys = np.array([0.5, 1.0, 2.0, -0.0]), np.array([0.5, 1.5, 2.0, 0.0])
    results = program.run({}, {"x": xs, "y": ys})
    expected = {
        "x == y": xs == ys, "x != y": xs != ys, "x == 0.5": xs == 0.5, "0.5 == x": xs == 0.5,
        "np.float64(0.5) == x": xs == 0.5, "array == x": xs == np.array([0.5, 1.0, 2.0, 3.0]), "x != 1": xs != 1,
        "list == x": xs == np.array([0.5, 0.0, 2.0, 0.0]), "where": np.where(xs == ys, xs, -ys),
    }
    for name, value in expected.items():
        np.testing.assert_array_equal(results[name], value, err_msg=name)
        np.testing.assert_array_equal(reference.evaluate(outputs[name], {}, {"x": xs, "y": ys}), value, err_msg=name)
    assert results["x == y"].dtype == bool


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gradient_flows_through_equality(backend):
    w = tg.param("w", shape=(3,))
    mask = tg.where(w == 0.5, 1.0, 0.0)  # piecewise constant: d mask / dw is 0
    objective = tg.sum(mask * w) + tg.sum(tg.where(w != 0.5, w * w, 3.0 * w))
    program = tg.compile(objective, wrt=[w], backend=backend)
    values = np.array([0.5, 2.0, -1.0])
    value, grads = program.value_and_grad({"w": values})
    assert value == pytest.approx(0.5 + 1.5 + 4.0 + 1.0)
    np.testing.assert_allclose(grads["w"], [1.0 + 3.0, 4.0, -2.0])
    # the rule itself gives no cotangent to either operand
    node = w == tg.param("v", shape=(3,))
    assert node.op.cotangents(tg.const(np.ones(3)), node) == (None, None)


def test_the_truth_between_nodes_is_the_same_expression():
    x = tg.input("x", shape=(3,))
    first, second, other = _tree(x), _tree(x), _tree(x, depth=49)
    assert first is not second
    assert bool(first == second) and not bool(first != second)
    assert not bool(first == other) and bool(first != other)
    assert (first == second).structural_truth is True and (first != second).structural_truth is False
    if first == second:  # as Python code asks
        pass
    else:
        pytest.fail("equal trees built apart are the same expression")
    # tuples and lists compare their items by the truth of ==
    assert (first, x) == (second, x) and [first] != [other]
    assert [other, second].index(first) == 1 and first in [other, second] and first not in [other]
    # a renamed copy is still the same comparison
    assert (first == second).named("same").structural_truth is True


def test_dicts_and_sets_keyed_by_nodes_merge_equal_trees_built_apart():
    x = tg.input("x", shape=(3,))
    first, second = _tree(x), _tree(x)
    table = {first: "first"}
    table[second] = "second"
    assert len(table) == 1 and table[first] == "second" and next(iter(table)) is first
    assert len({first, second, _tree(x)}) == 1 and second in {first}
    assert len(dict.fromkeys([tg.const(2.0), tg.const(2.0), tg.const(3.0)])) == 2
    # compiled together, they are one computation
    together = tg.compile(tg.sum(first) + tg.sum(second))
    alone = tg.compile(tg.sum(first))
    assert len(together.tape().instructions) == len(alone.tape().instructions) + 1


def test_nodes_that_equal_cannot_compare_give_a_plain_bool():
    x = tg.input("x", shape=(3,))
    wide = tg.input("wide", shape=(4,))
    batch = tg.input("rows", shape=("batch", 3))
    other_batch = tg.input("cols", shape=(5, "n"))
    complex_input = tg.input("c", shape=(3,), dtype="complex128")
    for a, b in ((x, wide), (batch, other_batch), (x, complex_input)):
        assert (a == b) is False and (a != b) is True
    assert (complex_input == complex_input) is True and (complex_input != complex_input) is False
    # so a lookup or an in test among nodes of any shapes never raises
    mixed = [wide, complex_input, batch, x]
    assert x in mixed and mixed.index(x) == 3 and len({*mixed, x}) == 4
    assert tg.const([1.0, 2.0]) not in [tg.const([1.0, 2.0, 3.0])]


def test_a_comparison_of_values_has_no_truth_before_the_program_runs():
    x = tg.input("x", shape=(3,))
    a, b = tg.tanh(x), tg.tanh(x)
    message = (r"the truth of equal at test_equality.py:\d+ \(bool\[3\]\) is known only when the program runs; to "
               r"choose between values use tg.where\(cond, a, b\); to ask whether two nodes are the same "
               r"expression, compare the two nodes \(bool\(a == b\), a in nodes\)")
    for attempt in (lambda: bool(x == 0.5), lambda: bool(0.5 == x), lambda: bool(tg.equal(a, b)),
                    lambda: bool(np.float64(0.5) == x)):
        with pytest.raises(TypeError, match=message):
            attempt()
    with pytest.raises(TypeError, match=r"the truth of not_equal at test_equality.py:\d+"):
        if x != 0:
            pass
    with pytest.raises(TypeError, match="known only when the program runs"):
        x in [0.5, x]  # noqa: B015  (the first item is a number: x == 0.5 has no truth yet)


def test_a_value_is_refused_as_tg_equal_refuses_it_and_other_objects_are_not_equal():
    x = tg.input("x", shape=(3,))
    with pytest.raises(tg.ShapeError, match=r"^equal\(x: f64\[3\], f64\[4\]\) at test_equality.py:\d+: shapes \[3\], "
                                            r"\[4\] do not broadcast"):
        x == np.zeros(4)  # noqa: B015
    with pytest.raises(TypeError, match="cannot use complex"):
        x == 1j  # noqa: B015
    # anything that is not a number, an array or a node: Python's own ==
    for other in (None, "x", (x, x), object()):
        assert (x == other) is False and (x != other) is True
    assert (x == np.True_).type_str == "bool[3]"


def test_equality_builds_the_node_tg_equal_builds():
    """The node of ``a == b`` for nodes of one structure is built on a short
    path (every dict collision takes it); it is the same expression as the
    one ``tg.equal`` builds, constants folded alike."""
    x32 = tg.input("x32", shape=(2,), dtype="float32")
    rows = tg.input("rows", shape=("batch", 3))
    labels = tg.input("labels", shape=(3,), dtype="int64")
    mask = tg.input("mask", shape=(3,), dtype="bool")
    pairs = [
        (_tree(rows, 3), _tree(rows, 3)), (tg.tanh(x32), tg.tanh(x32)), (labels[1:], labels[1:]), (mask, mask),
        (tg.const(2.0), tg.const(2.0)), (tg.const(np.nan), tg.const(np.nan)),
        (tg.const([1.0, np.nan, 3.0]), tg.const([1.0, np.nan, 3.0])), (tg.expr.const_fill((2, 3), 0.5),
                                                                       tg.expr.const_fill((2, 3), 0.5)),
    ]
    for a, b in pairs:
        for built, reference_node in ((a == b, tg.equal(a, b)), (a != b, tg.not_equal(a, b))):
            assert built.structure is reference_node.structure, (a, b)
            assert built.type_str == reference_node.type_str and built.origin.startswith("test_equality.py:")
            if built.op is tg.expr.CONST:
                np.testing.assert_array_equal(built.value.array, reference_node.value.array)
    np.testing.assert_array_equal((tg.const([1.0, np.nan]) == tg.const([1.0, np.nan])).value.array, [True, False])
    # between nodes of different structures, through tg.equal itself (a cast meets the float dtypes)
    x64 = tg.input("x64", shape=(2,))
    mixed = x32 == x64
    assert mixed.structural_truth is False and [operand.op.name for operand in mixed.inputs] == ["cast", "input"]


def test_copies_of_an_equality_keep_its_truth():
    x = tg.input("x", shape=(3,))
    same, unequal, values = _tree(x) == _tree(x), _tree(x) != _tree(x), x == 0.5
    for duplicate in (pickle.loads(pickle.dumps((same, unequal, values))), copy.deepcopy((same, unequal, values))):
        copied_same, copied_unequal, copied_values = duplicate
        assert copied_same.structural_truth is True and bool(copied_same)
        assert copied_unequal.structural_truth is False and not bool(copied_unequal)
        assert copied_same.structure is same.structure and copied_same.origin == same.origin
        assert copied_values.structural_truth is None
        with pytest.raises(TypeError, match="known only when the program runs"):
            bool(copied_values)


def test_compiling_and_running_never_ask_two_nodes_whether_they_are_equal(monkeypatch):
    """The passes key their tables on ``node.structure``: in a dict keyed by
    nodes, every equal node built apart (each VJP of tanh makes its own
    constant 1.0) would call ``==``, which now builds an ``equal`` node."""
    calls = []
    compare = tg.expr._compare_expression or tg.expr._load_compare_expression()

    def counted(node, other, negated):
        calls.append((node, other))
        return compare(node, other, negated)

    monkeypatch.setattr(tg.expr, "_compare_expression", counted)
    w = tg.param("w", shape=(4,))
    h = w
    for _ in range(30):
        h = tg.tanh(h) + w
    objective = tg.sum(h) + tg.sum(tg.tanh(w) + w)  # and a subtree equal to the first, built apart
    program = tg.compile(objective, wrt=[w])
    params = {"w": np.linspace(-1.0, 1.0, 4)}
    value, grads = program.value_and_grad(params)
    np.testing.assert_allclose(reference.evaluate(program.gradients[0], params), grads["w"], rtol=1e-12)
    optimizer = tg.adam(program, learning_rate=0.01)
    state, _ = optimizer(optimizer.init(params), {})
    assert calls == []
    assert bool(h == h) and len(calls) == 1  # (the spy is in place)
