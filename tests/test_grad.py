"""Differentiation as a graph transformation: higher order, activity, zeros."""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg


def test_hessian_vector_product_matches_finite_differences_of_the_gradient():
    x = tg.param("x", shape=(4,))
    v = tg.input("v", shape=(4,))
    f = tg.sum(tg.exp(x) * tg.tanh(x)) + tg.square(tg.dot(x, x)) + tg.sum(tg.log_softmax(x))
    (gradient,) = tg.grad(f, [x])
    (hvp,) = tg.grad(tg.dot(gradient, v), [x])
    program = tg.compile(f, wrt=[x], outputs={"hvp": hvp})

    point = np.array([0.3, -0.2, 0.7, 0.1])
    direction = np.array([1.0, -2.0, 0.5, 3.0])
    analytic = program.run({"x": point}, {"v": direction}, outputs=["hvp"])["hvp"]
    eps = 1e-5
    upper = program.value_and_grad({"x": point + eps * direction}, {"v": direction})[1]["x"]
    lower = program.value_and_grad({"x": point - eps * direction}, {"v": direction})[1]["x"]
    np.testing.assert_allclose(analytic, (upper - lower) / (2 * eps), rtol=1e-7, atol=1e-8)


def test_gradient_of_a_gradient_passes_the_program_check():
    x = tg.param("x", shape=(3,))
    (gradient,) = tg.grad(tg.sum(tg.sigmoid(x) * tg.square(x)), [x])
    program = tg.compile(tg.sum(tg.square(gradient)), wrt=[x])
    tg.testing.check_grads(program, {"x": np.array([0.5, -1.0, 2.0])})


def test_unused_wrt_parameter_gets_a_zero_gradient():
    x = tg.param("x", shape=(2,))
    unused = tg.param("unused", shape=(3, 2))
    program = tg.compile(tg.sum(tg.square(x)), wrt=[x, unused])
    value, grads = program.value_and_grad({"x": np.array([1.0, 2.0]), "unused": np.ones((3, 2))}, {})
    assert value == 5.0
    np.testing.assert_array_equal(grads["unused"], np.zeros((3, 2)))
    assert grads["unused"].shape == (3, 2)


def test_inactive_branches_get_no_gradient_work():
    # tanh(x) depends on data only: nothing in the reverse tape differentiates it
    x = tg.input("x", shape=(5,))
    w = tg.param("w", shape=(5,))
    features = tg.tanh(tg.exp(x))
    program = tg.compile(tg.sum(features * w), wrt=[w])
    reverse = program.tape().section("reverse")
    assert not any("grad of tanh" in instruction.label or "grad of exp" in instruction.label for instruction in reverse)
    assert len(reverse) == 0  # d/dw = features, already computed by the forward tape
    _, grads = program.value_and_grad({"w": np.zeros(5)}, {"x": np.arange(5.0)})
    np.testing.assert_allclose(grads["w"], np.tanh(np.exp(np.arange(5.0))))


def test_labels_get_no_gradient_and_are_not_differentiable():
    z = tg.param("z", shape=(3,))
    y = tg.input("y", shape=(), dtype="int64")
    with pytest.raises(tg.GraphError, match="wrt must list parameters"):
        tg.grad(tg.cross_entropy(z, y), [y])


def test_grad_needs_a_scalar_objective():
    w = tg.param("w", shape=(3,))
    with pytest.raises(tg.GraphError, match=r"objective must be a scalar.*f64\[3\].*tg.sum or tg.mean"):
        tg.grad(tg.tanh(w), [w])
