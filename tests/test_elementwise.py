"""The elementwise ops at their extremes and kinks, comparisons, where, and their errors.

The registry-driven tests (``test_ops.py``) check every op's gradient to
second order on its samples, away from kinks; this module pins what
samples cannot show: values in the far tails against exact values
(``decimal`` at 60 digits), the gradient conventions at kinks and ties,
how ``==`` and comparisons behave on nodes, and the errors bad input gets.
"""

from __future__ import annotations

import decimal
import math

import numpy as np
import pytest

import tapegraph as tg

decimal.getcontext().prec = 60
D = decimal.Decimal


def _run(node, **arrays):
    """The value of ``node`` for the given input arrays, through a compiled program."""
    names = {name: tg.input(name, shape=np.shape(value)) for name, value in arrays.items()}
    built = node(**names)
    program = tg.compile(tg.sum(built * 1.0), outputs={"out": built})
    return program.run({}, {name: np.asarray(value, dtype=float) for name, value in arrays.items()})["out"]


def _gradient(function, point):
    """d/dw sum(function(w)) at ``point``, compiled."""
    w = tg.param("w", shape=np.shape(point))
    program = tg.compile(tg.sum(function(w)), wrt=[w])
    return program.value_and_grad({"w": np.asarray(point, dtype=float)})[1]["w"]


def _exact_sigmoid(x: float) -> D:
    with decimal.localcontext() as context:
        context.prec = 1000  # 1 + e^-745 still holds e^-745
        return +(1 / (1 + D(-x).exp()))


def _exact_softplus(x: float) -> D:
    with decimal.localcontext() as context:
        context.prec = 1000
        return +(1 + D(x).exp()).ln()


def _ulps(value: float, exact: D) -> float:
    """The error of ``value`` in units of the spacing of floats at the exact value."""
    nearest = float(exact)
    if nearest == 0.0:
        return 0.0 if value == 0.0 else math.inf
    return float(abs(D(value) - exact) / D(math.ulp(nearest)))


TAIL_POINTS = [-745.0, -700.0, -300.0, -40.0, -37.0, -25.0, -1.0, -1e-10, 0.0, 1e-10, 1.0, 25.0, 37.0, 40.0, 300.0]


def test_sigmoid_is_exact_in_both_tails():
    values = _run(lambda x: tg.sigmoid(x), x=TAIL_POINTS)
    for x, value in zip(TAIL_POINTS, values):
        assert _ulps(value, _exact_sigmoid(x)) <= 4, (x, value, float(_exact_sigmoid(x)))
    # the cases: 0.0, 35% off and 1.8e-7 off under 0.5 tanh(x/2) + 0.5
    assert values[TAIL_POINTS.index(-40.0)] == pytest.approx(4.248354255291589e-18, rel=1e-15)


def test_the_derivative_of_sigmoid_is_exact_in_both_tails():
    points = np.array([-40.0, -5.0, 0.0, 5.0, 40.0])
    gradient = _gradient(tg.sigmoid, points)
    for x, value in zip(points, gradient):
        exact = _exact_sigmoid(x) * _exact_sigmoid(-x)
        assert _ulps(value, exact) <= 8, (x, value, float(exact))
    assert gradient[-1] > 0  # 1 - sigmoid(40) would be 0


def test_log_of_sigmoid_is_log_sigmoid_and_finite_where_sigmoid_underflows():
    x = tg.input("x", shape=(3,))
    assert tg.log(tg.sigmoid(x)).op is tg.log_sigmoid.op
    values = _run(lambda x: -tg.log(tg.sigmoid(x)), x=[-40.0, -1000.0, 30.0])
    assert values[0] == 40.0 and values[1] == 1000.0
    assert _ulps(values[2], _exact_softplus(-30.0)) <= 2
    # a named sigmoid is the user's value, kept as it is
    named = tg.sigmoid(x, name="p")
    assert tg.log(named).inputs[0] is named


@pytest.mark.parametrize("x", TAIL_POINTS + [-1e308, 1e308])
def test_softplus_and_log_sigmoid_are_exact_for_any_x(x):
    softplus, log_sigmoid = _run(lambda x: tg.softplus(x), x=[x])[0], _run(lambda x: tg.log_sigmoid(x), x=[x])[0]
    if abs(x) > 1000:  # e^x overflows decimal's context too; the limits are exact
        assert softplus == max(x, 0.0) and log_sigmoid == min(x, 0.0)
        return
    assert _ulps(softplus, _exact_softplus(x)) <= 2
    assert _ulps(log_sigmoid, -_exact_softplus(-x)) <= 2


def test_binary_cross_entropy_is_exact_for_any_logit():
    z = tg.param("z", shape=(6,))
    t = tg.input("t", shape=(6,))
    loss = tg.binary_cross_entropy(z, t)
    program = tg.compile(tg.sum(loss), wrt=[z], outputs={"loss": loss})
    logits = np.array([40.0, -1000.0, 1e308, -1e308, 0.3, 2.0])
    targets = np.array([1.0, 1.0, 0.0, 0.0, 0.25, 1.0])
    values = program.run({"z": logits}, {"t": targets})["loss"]
    assert _ulps(values[0], _exact_softplus(-40.0)) <= 2  # 4.25e-18, not 0
    assert values[1] == 1000.0 and values[2] == 1e308 and values[3] == 0.0
    exact = D(0.25) * _exact_softplus(-0.3) + D(0.75) * _exact_softplus(0.3)
    assert _ulps(values[4], exact) <= 4
    _, grads = program.value_and_grad({"z": logits}, {"t": targets})
    # sigmoid(z) - t, exact in the tails too
    assert _ulps(grads["z"][0], -_exact_sigmoid(-40.0)) <= 8
    np.testing.assert_array_equal(grads["z"][1:4], [-1.0, 1.0, 0.0])
    assert _ulps(grads["z"][4], _exact_sigmoid(0.3) - D(0.25)) <= 8
    tg.testing.check_grads(program, {"z": np.array([0.5, -2.0, 3.0, 0.1, -0.7, 1.5])}, {"t": targets})


def test_log1p_and_expm1_keep_tiny_arguments_exactly():
    tiny = [1e-20, -1e-300, 3e-30]
    np.testing.assert_array_equal(_run(lambda x: tg.log1p(x), x=tiny), tiny)
    np.testing.assert_array_equal(_run(lambda x: tg.expm1(x), x=tiny), tiny)
    # the derivative of expm1 is e^x, which ans + 1 would round to 0 below -37
    assert _gradient(tg.expm1, np.array([-40.0]))[0] == pytest.approx(math.exp(-40.0), rel=1e-15)


def test_trigonometric_values_and_derivatives():
    points = np.array([-1.3, 0.0, 0.4, 1.0])
    np.testing.assert_allclose(_run(lambda x: tg.tan(x), x=points), np.tan(points), rtol=1e-15)
    np.testing.assert_allclose(_gradient(tg.sin, points), np.cos(points), rtol=1e-15)
    np.testing.assert_allclose(_gradient(tg.cos, points), -np.sin(points), rtol=1e-15)
    np.testing.assert_allclose(_gradient(tg.tan, points), 1 / np.cos(points) ** 2, rtol=1e-14)
    np.testing.assert_allclose(_gradient(tg.arctan, points), 1 / (1 + points ** 2), rtol=1e-15)


# Kinks and ties.

def test_abs_has_derivative_zero_at_zero():
    np.testing.assert_array_equal(_gradient(abs, np.array([-2.0, 0.0, -0.0, 3.0])), [-1.0, 0.0, 0.0, 1.0])
    assert abs(tg.param("w", shape=(2,))).op is tg.abs.op


def test_maximum_and_minimum_split_the_gradient_where_they_tie():
    a = tg.param("a", shape=(3,))
    b = tg.param("b", shape=(3,))
    point = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.0, 2.0, 5.0])}
    for function, expected_a in ((tg.maximum, [1.0, 0.5, 0.0]), (tg.minimum, [0.0, 0.5, 1.0])):
        _, grads = tg.compile(tg.sum(function(a, b)), wrt=[a, b]).value_and_grad(point)
        np.testing.assert_array_equal(grads["a"], expected_a)
        np.testing.assert_array_equal(grads["b"], 1.0 - np.array(expected_a))
        # max(x, x) is x: the halves add up to 1
        np.testing.assert_array_equal(_gradient(lambda w: function(w, w), np.array([0.0, -1.5])), [1.0, 1.0])
    # with a number: relu's convention at 0 is 0, maximum's is 1/2
    np.testing.assert_array_equal(_gradient(lambda w: tg.maximum(w, 0.0), np.array([-1.0, 0.0, 2.0])), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(_gradient(tg.relu, np.array([-1.0, 0.0, 2.0])), [0.0, 0.0, 1.0])


def test_clip_passes_the_gradient_on_the_closed_interval():
    points = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    np.testing.assert_array_equal(_run(lambda x: tg.clip(x, -1.0, 0.5), x=points), [-1.0, -1.0, 0.0, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(_gradient(lambda w: tg.clip(w, -1.0, 0.5), points), [0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(_gradient(lambda w: tg.clip(w, low=0.0), points), [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(_gradient(lambda w: tg.clip(w, high=0.0), points), [1, 1, 1, 0, 0, 0])
    w = tg.param("w", shape=(2,))
    assert tg.clip(w, -np.inf, 2) == tg.clip(w, None, 2.0)  # an infinite bound is no bound


def test_pow_values_rewrites_and_derivatives():
    x = tg.param("x", shape=(3,))
    assert x ** 1 is x and (x ** 2).op is tg.square.op and (x ** 3).op is tg.pow.op
    assert (2.0 ** x).op is tg.pow.op and (2.0 ** x).inputs[1] is x
    point = np.array([0.5, 1.0, 3.0])
    np.testing.assert_allclose(_gradient(lambda w: w ** 3, point), 3 * point ** 2, rtol=1e-15)
    np.testing.assert_allclose(_gradient(lambda w: w ** -0.5, point), -0.5 * point ** -1.5, rtol=1e-15)
    np.testing.assert_allclose(_gradient(lambda w: 2.0 ** w, point), np.log(2.0) * 2.0 ** point, rtol=1e-15)
    # at 0: x ** y has derivative 0 in y (its limit for y > 0), and x ** 0 has derivative 0 in x
    base = tg.param("base", shape=(2,))
    exponent = tg.param("exponent", shape=(2,))
    program = tg.compile(tg.sum(base ** exponent), wrt=[base, exponent])
    value, grads = program.value_and_grad({"base": np.array([0.0, 0.0]), "exponent": np.array([0.0, 2.5])})
    assert value == 1.0
    np.testing.assert_array_equal(grads["base"], [0.0, 0.0])
    np.testing.assert_array_equal(grads["exponent"], [0.0, 0.0])
    tg.testing.check_grads(program, {"base": np.array([0.7, 1.9]), "exponent": np.array([-1.2, 2.5])})


def test_pow_of_a_negative_base_to_a_fractional_power():
    with pytest.raises(tg.ShapeError, match=r"^pow\(f64\[2\], f64\[\]\) at test_elementwise.py:\d+: a negative base "
                                            r"to a non-integer power has no real value \(at index \(1,\): -8.0 \*\* 0.5\)"):
        tg.const([4.0, -8.0]) ** 0.5
    assert (tg.const(-2.0) ** 3.0).value.array == -8.0  # integer powers of a negative base are fine
    # a value known only at run time gives NaN, as in numpy, which check mode stops at
    x = tg.input("x", shape=(2,))
    program = tg.compile(tg.sum(x ** 0.5))
    with np.errstate(invalid="ignore"):
        assert math.isnan(program.run({}, {"x": np.array([4.0, -1.0])})["objective"])
        with tg.check_finite(), pytest.raises(tg.NonFiniteError, match=r"^forward instruction 0 \(pow"):
            program.run({}, {"x": np.array([4.0, -1.0])})


# Comparisons and where.

def test_comparisons_give_boolean_nodes_and_where_picks():
    x = tg.input("x", shape=(4,))
    for node, op in ((x < 0, "less"), (x <= 0, "less_equal"), (x > 0, "greater"), (x >= 0, "greater_equal"),
                     (0 < x, "greater"), (tg.equal(x, 0), "equal"), (tg.not_equal(x, 0), "not_equal")):
        assert node.op.name == op and node.dtype == "bool" and node.type_str == "bool[4]"
    leaky = tg.where(x > 0, x, 0.1 * x)
    program = tg.compile(tg.sum(leaky), outputs={"leaky": leaky, "positive": x > 0, "zero": tg.equal(x, 0.0)})
    outs = program.run({}, {"x": np.array([-2.0, 0.0, 1.0, 3.0])})
    np.testing.assert_allclose(outs["leaky"], [-0.2, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(outs["positive"], [False, False, True, True])
    np.testing.assert_array_equal(outs["zero"], [False, True, False, False])
    assert outs["positive"].dtype == bool


def test_where_sends_the_gradient_to_the_branch_it_picked():
    a = tg.param("a", shape=(3,))
    b = tg.param("b", shape=())
    cond = tg.input("c", shape=(3,), dtype="bool")
    program = tg.compile(tg.sum(tg.where(cond, a * 2.0, b)), wrt=[a, b])
    _, grads = program.value_and_grad({"a": np.ones(3), "b": 0.5}, {"c": np.array([True, False, False])})
    np.testing.assert_array_equal(grads["a"], [2.0, 0.0, 0.0])
    assert grads["b"] == 2.0  # broadcast back: two entries picked it
    # comparisons pass no gradient: only the picked branches count
    np.testing.assert_array_equal(_gradient(lambda w: tg.where(w > 1.0, w * w, -w), np.array([0.5, 2.0])), [-1.0, 4.0])


def test_equality_of_nodes_is_elementwise_and_its_truth_structural():
    x = tg.input("x", shape=(3,))
    y = tg.input("y", shape=(3,))
    for node, op in ((x == y, "equal"), (x != y, "not_equal"), (x == 0.5, "equal"), (0.5 != x, "not_equal")):
        assert node.op.name == op and node.type_str == "bool[3]"
    assert bool(tg.tanh(x) == tg.tanh(x)) and not bool(x == y) and bool(x != y)
    assert len({tg.tanh(x), tg.tanh(x), x < y, x < y}) == 2  # hash-consing merges equal subtrees
    assert x in [y, x] and None != x  # noqa: E711
    # (tests/test_equality.py has the rest)


def test_the_truth_of_a_comparison_is_refused():
    x = tg.input("x", shape=(3,))
    with pytest.raises(TypeError, match=r"the truth of less at test_elementwise.py:\d+ \(bool\[3\]\) is known only "
                                        r"when the program runs; to choose between values use tg.where"):
        if x < 0:
            pass
    with pytest.raises(TypeError, match="known only when the program runs"):
        0 < x < 1  # noqa: B015  (a chain asks for the truth of its first link)
    assert bool(tg.tanh(x))  # any other node is true, as any object is


def test_bad_operands_name_the_op_the_shapes_and_the_line():
    x = tg.input("x", shape=(3,))
    with pytest.raises(tg.ShapeError, match=r"^where\(x: f64\[3\], x: f64\[3\], f64\[\]\) at test_elementwise.py:\d+: "
                                            r"the condition 'x' has dtype float64; it must be boolean"):
        tg.where(x, x, 0.0)
    with pytest.raises(tg.ShapeError, match=r"^where\(bool\[3\], z: f64\[4\], f64\[\]\) at test_elementwise.py:\d+: shapes \[3\], \[4\], \[\] do not broadcast"):
        tg.where(x > 0, tg.input("z", shape=(4,)), 0.0)
    with pytest.raises(tg.ShapeError, match=r"^less\(x: f64\[3\], f64\[2\]\) at test_elementwise.py:\d+: "):
        x < tg.const([1.0, 2.0])  # noqa: B015
    with pytest.raises(tg.ShapeError, match=r"^maximum\(x: f64\[3\], f64\[2\]\) at test_elementwise.py:\d+: "):
        tg.maximum(x, tg.const([1.0, 2.0]))
    with pytest.raises(tg.ShapeError, match=r"^clip\(x: f64\[3\]\) at test_elementwise.py:\d+: clip's low bound 2.0 "
                                            r"is above its high bound 1.0"):
        tg.clip(x, 2.0, 1.0)
    with pytest.raises(tg.ShapeError, match=r"clip needs a low or a high bound"):
        tg.clip(x)
    with pytest.raises(tg.ShapeError, match=r"clip's high must be a number \(a static bound\), got the node"):
        tg.clip(x, 0.0, tg.input("h"))
    with pytest.raises(tg.ShapeError, match=r"clip's low is NaN"):
        tg.clip(x, float("nan"), 1.0)
    with pytest.raises(tg.ShapeError, match=r"clip's low bound is inf: every value would be inf"):
        tg.clip(x, np.inf)
    labels = tg.input("y", shape=(3,), dtype="int64")
    with pytest.raises(tg.ShapeError, match=r"^binary_cross_entropy\(x: f64\[3\], y: i64\[3\]\) at "
                                            r"test_elementwise.py:\d+: logits and targets must be floating point"):
        tg.binary_cross_entropy(x, labels)
    with pytest.raises(tg.ShapeError, match=r"^binary_cross_entropy\(x: f64\[3\], f64\[2\]\) at test_elementwise.py"):
        tg.binary_cross_entropy(x, tg.const([0.0, 1.0]))
    with pytest.raises(tg.ShapeError, match=r"^sin\(y: i64\[3\]\) at test_elementwise.py:\d+: operand 'y' has integer"):
        tg.sin(labels)
    # integer labels compare as they are
    assert tg.equal(labels, 2).dtype == "bool"


def test_stop_gradient_passes_the_value_and_no_gradient():
    w = tg.param("w", shape=(2,))
    frozen = tg.stop_gradient(w)
    program = tg.compile(tg.sum(w * frozen), wrt=[w], outputs={"frozen": frozen})
    value, grads = program.value_and_grad({"w": np.array([3.0, -1.0])})
    assert value == 10.0
    np.testing.assert_array_equal(grads["w"], [3.0, -1.0])  # d/dw of w * c with c = w held fixed
    np.testing.assert_array_equal(program.run({"w": np.array([3.0, -1.0])})["frozen"], [3.0, -1.0])


def test_dumps_say_what_the_user_wrote():
    x = tg.param("x", shape=(3,))
    program = tg.compile(tg.sum(tg.sigmoid(x) + abs(x) + tg.where(x > 0, x, 0.0)), wrt=[x])
    dump = program.dump()
    for word in ("= sigmoid s0", "= abs s0", "= greater s0", "= where s"):
        assert word in dump, word
    assert "tanh" not in dump
