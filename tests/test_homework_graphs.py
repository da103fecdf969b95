"""The homework's four graphs pass the program-level gradient check in float64."""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg

import homework_graphs as hw

RTOL = 1e-6


def _regression_data(rng, num_features, batch=None):
    shape = (num_features,) if batch is None else (batch, num_features)
    x = rng.uniform(0.0, 1.0, size=shape)
    y = rng.standard_normal(() if batch is None else (batch,))
    return {"x": x, "y": y}


@pytest.mark.parametrize("program_factory", [hw.linear, hw.ridge], ids=["linear", "ridge"])
def test_linear_models_gradients(program_factory, rng):
    program = program_factory(num_features=20)
    errors = tg.testing.check_grads(program, hw.random_params(program, rng), _regression_data(rng, 20), rtol=RTOL)
    assert set(errors) == {"w", "b"} and max(errors.values()) < RTOL


def test_ridge_fan_out_of_w_is_accumulated(rng):
    # w feeds the prediction and the penalty: the gradient is the sum of both
    program = hw.ridge(num_features=5, l2_reg=0.3)
    params = hw.random_params(program, rng)
    inputs = _regression_data(rng, 5)
    _, grads = program.value_and_grad(params, inputs)
    residual = inputs["x"] @ params["w"] + params["b"] - inputs["y"]
    np.testing.assert_allclose(grads["w"], 2 * residual * inputs["x"] + 2 * 0.3 * params["w"], rtol=1e-12)
    reverse = program.tape().section("reverse")
    assert [instruction.op.name for instruction in reverse if instruction.label == "add at grad of w"] == ["add"]


@pytest.mark.parametrize("num_inputs", [1, 400])
def test_mlp_regression_gradients(num_inputs, rng):
    program = hw.mlp_regression(num_inputs=num_inputs)
    errors = tg.testing.check_grads(program, hw.random_params(program, rng), _regression_data(rng, num_inputs), rtol=RTOL)
    assert set(errors) == {"W1", "b1", "w2", "b2"}


def test_multiclass_gradients(rng):
    program = hw.multiclass()
    for label in range(3):
        tg.testing.check_grads(program, hw.random_params(program, rng), {"x": rng.standard_normal(2), "y": np.array(label)}, rtol=RTOL)


def test_batched_graphs_gradients(rng):
    program = hw.multiclass(batch=True)
    inputs = {"x": rng.standard_normal((6, 2)), "y": rng.integers(0, 3, size=6)}
    tg.testing.check_grads(program, hw.random_params(program, rng), inputs, rtol=RTOL)
    program = hw.mlp_regression(num_inputs=3, batch=True)
    tg.testing.check_grads(program, hw.random_params(program, rng), _regression_data(rng, 3, batch=7), rtol=RTOL)


def test_check_grads_reports_the_worst_entry():
    # a deliberately wrong gradient: compare a program against another's objective
    w = tg.param("w", shape=(3,))
    right = tg.compile(tg.sum(tg.square(w)), wrt=[w])

    class Wrong:
        params = right.params

        def value_and_grad(self, params, inputs):
            value, grads = right.value_and_grad(params, inputs)
            grads["w"][1] += 0.5
            return value, grads

        def run(self, params, inputs, outputs):
            return right.run(params, inputs, outputs)

    with pytest.raises(AssertionError, match=r"parameter 'w' is wrong at index \(1,\): analytic .* numeric .* relative error"):
        tg.testing.check_grads(Wrong(), {"w": np.array([1.0, 2.0, 3.0])})
