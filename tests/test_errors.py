"""Bad input gets one clear paragraph naming what was expected and what was given."""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg

import homework_graphs as hw


def _one_paragraph(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_shape_mismatch_at_declaration_names_op_shapes_and_line():
    W = tg.param("W", shape=(10, 400))
    x = tg.input("x", shape=(3,))
    b = tg.param("b", shape=(10,))
    with pytest.raises(tg.ShapeError) as error:
        tg.affine(W, x, b)
    text = _one_paragraph(error)
    assert "matmul(x: f64[3], W: f64[10,400])" in text
    assert "test_errors.py:" in text and "inner dimensions differ" in text


def test_broadcast_mismatch_names_both_shapes():
    with pytest.raises(tg.ShapeError, match=r"add\(a: f64\[batch,4\], b: f64\[3\]\) at test_errors.py:\d+: shapes \[batch,4\], \[3\] do not broadcast"):
        tg.input("a", shape=("batch", 4)) + tg.param("b", shape=(3,))


def test_integer_data_in_a_float_op_is_rejected_at_declaration():
    label = tg.input("label", shape=(), dtype="int64")
    with pytest.raises(tg.ShapeError, match="'label' has integer dtype int64; this op needs floating-point data"):
        tg.tanh(label)


def test_unknown_parameter_name_at_call(rng):
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0, "W": np.zeros(3)}, {"x": np.zeros(3), "y": 0.0})
    assert _one_paragraph(error) == "unknown name 'W' in params; this program's params are ['b', 'w']"


def test_missing_input_name_at_call():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.zeros(3)})
    assert _one_paragraph(error) == ("input(s) ['y'] missing from inputs (given: ['x']). "
                                     "This call needs params ['b', 'w'] and inputs ['x', 'y'].")


def test_name_passed_in_the_wrong_dict():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError, match="'y' is declared as an input; pass it in inputs, not params"):
        program.value_and_grad({"w": np.zeros(3), "b": 0.0, "y": 1.0}, {"x": np.zeros(3)})


def test_wrong_shape_at_call():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.zeros(4), "y": 0.0})
    assert _one_paragraph(error) == "input 'x' expects shape [3], got an array of shape (4,) (axis 0 differs)"
    with pytest.raises(tg.CallError, match=r"parameter 'w' expects shape \[3\] \(1 dimension\(s\)\), got an array of shape \(3, 1\)"):
        program.value_and_grad({"w": np.zeros((3, 1)), "b": 0.0}, {"x": np.zeros(3), "y": 0.0})


def test_wrong_dtype_at_call():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.arange(3), "y": 0.0})
    assert _one_paragraph(error) == ("input 'x' expects floating-point data (f64[3]), got an array of dtype int64; "
                                     "convert integer data with .astype(float)")
    classifier = hw.multiclass()
    params = hw.random_params(classifier, np.random.default_rng(0))
    with pytest.raises(tg.CallError, match=r"input 'y' expects integer data \(i64\[\]\), such as class labels, got dtype float64"):
        classifier.value_and_grad(params, {"x": np.zeros(2), "y": np.array(1.0)})


def test_wrt_that_is_not_a_parameter():
    x = tg.input("x", shape=(3,))
    w = tg.param("w", shape=(3,))
    with pytest.raises(tg.GraphError) as error:
        tg.compile(tg.sum(x * w), wrt=[w, x])
    assert _one_paragraph(error) == "wrt must list parameters made with tg.param, but got input 'x' (f64[3])"


def test_two_different_nodes_under_one_name():
    first = tg.param("w", shape=(3,))
    second = tg.param("w", shape=(4,))
    with pytest.raises(tg.GraphError, match=r"two different nodes are named 'w': param f64\[3\] at test_errors.py:\d+ and param f64\[4\] at test_errors.py:\d+"):
        tg.compile(tg.sum(first) + tg.sum(second), wrt=[first, second])


def test_non_scalar_objective():
    w = tg.param("w", shape=(3,))
    with pytest.raises(tg.GraphError, match=r"the objective must be a scalar, but .* has shape f64\[3\]"):
        tg.compile(w * 2.0, wrt=[w])


@pytest.mark.parametrize("step_size", [0, -0.1, float("nan"), "0.1", True])
def test_step_size_must_be_a_positive_number(step_size):
    program = hw.ridge(num_features=3)
    with pytest.raises(ValueError, match="step_size must be a positive finite number"):
        tg.sgd(program, step_size)


def test_errors_do_not_change_the_callers_arrays():
    program = hw.ridge(num_features=3)
    params = {"w": np.arange(3.0), "b": np.array(1.0)}
    with pytest.raises(tg.CallError):
        program.value_and_grad(params, {"x": np.zeros(5), "y": 0.0})
    np.testing.assert_array_equal(params["w"], np.arange(3.0))


def test_an_empty_batch_is_refused_by_name():
    x = tg.input("x", shape=("batch", 3))
    program = tg.compile(tg.mean(tg.square(x)))
    with pytest.raises(tg.CallError, match=r"^input 'x' has batch=0 \(an array of shape \(0, 3\)\): there is nothing "
                                           r"to compute on an empty batch; give at least one row$"):
        program.run({}, {"x": np.ones((0, 3))})


# Issue 10: silent traps, each now an error or the right answer.

def _two_param_program():
    u = tg.param("u", shape=(2,))
    v = tg.param("v", shape=(2,))
    x = tg.input("x", shape=(2,))
    return tg.compile(tg.sum(tg.square(u * x)) + tg.sum(tg.square(v)), wrt=[u, v])


def test_donated_arrays_that_alias_are_refused_by_name():
    """``{"u": a, "v": a}`` donated came back as zeros for both, one object."""
    program = _two_param_program()
    step = tg.sgd(program, 0.25, donate=True)
    a = np.ones(2)
    with pytest.raises(tg.CallError, match=r"^donate=True updates parameters in place, so they must not share memory: "
                                           r"'u' and 'v' are the same array"):
        step({"u": a, "v": a}, {"x": np.ones(2)})
    np.testing.assert_array_equal(a, np.ones(2))
    block = np.ones(4)
    with pytest.raises(tg.CallError, match=r"'u' and 'v' share memory \(views of one array\)"):
        step({"u": block[:2], "v": block[1:3]}, {"x": np.ones(2)})
    with pytest.raises(tg.CallError, match=r"parameter 'u' and input 'x' share memory"):
        step({"u": block[:2], "v": np.ones(2)}, {"x": block[:2]})
    owner = np.ones(2)
    with pytest.raises(tg.CallError, match=r"parameter 'u' and input 'x' share memory"):
        step({"u": owner, "v": np.ones(2)}, {"x": owner[::-1]})
    with pytest.raises(tg.CallError, match=r"parameter 'v' and input 'x' are the same array"):
        step({"u": np.ones(2), "v": owner}, {"x": owner})
    # views that do not overlap are fine
    new, _ = step({"u": block[:2], "v": block[2:]}, {"x": np.ones(2)})
    np.testing.assert_allclose(new["u"], [0.5, 0.5])
    np.testing.assert_allclose(new["v"], [0.5, 0.5])


def test_a_step_returns_every_parameter_it_was_given():
    """With ``b`` not in ``wrt`` the README's loop lost ``b`` after one step."""
    w = tg.param("w", shape=(2,))
    b = tg.param("b")
    program = tg.compile(tg.sum(tg.square(w)) + b, wrt=[w])
    for donate in (False, True):
        step = tg.sgd(program, 0.25, donate=donate)
        bias = np.array(1.5)
        params = {"w": np.ones(2), "b": bias}
        for _ in range(3):
            params, value = step(params, {})
        assert list(params) == ["w", "b"]
        assert params["b"] is bias
        np.testing.assert_allclose(params["w"], 0.5 ** 3 * np.ones(2))
        assert value == pytest.approx(2 * 0.25 ** 2 + 1.5)
