"""The homework's four computation graphs, declared with the public API.

Shared by the tests (gradient checks, golden dumps, purity, memory); kept
in its own module so the source lines recorded in dumps stay put.
"""

from __future__ import annotations

import numpy as np

import tapegraph as tg


def ridge(num_features: int = 400, l2_reg: float = 1.0, batch: bool = False) -> tg.Program:
    """Ridge regression: ``w`` is used twice (prediction and penalty)."""
    x = tg.input("x", shape=("batch", num_features) if batch else (num_features,))
    y = tg.input("y", shape=("batch",) if batch else ())
    w = tg.param("w", shape=(num_features,))
    b = tg.param("b", shape=())
    prediction = tg.vector_scalar_affine(x, w, b, name="prediction")
    loss = tg.squared_l2_distance(prediction, y) + tg.l2_norm_penalty(w, l2_reg=l2_reg)
    return tg.compile(loss, wrt=[w, b], outputs={"prediction": prediction})


def linear(num_features: int = 400) -> tg.Program:
    """Linear regression: ridge without the penalty."""
    x = tg.input("x", shape=(num_features,))
    y = tg.input("y", shape=())
    w = tg.param("w", shape=(num_features,))
    b = tg.param("b", shape=())
    prediction = tg.vector_scalar_affine(x, w, b, name="prediction")
    return tg.compile(tg.squared_l2_distance(prediction, y), wrt=[w, b], outputs={"prediction": prediction})


def mlp_regression(num_inputs: int = 1, num_hidden: int = 10, batch: bool = False) -> tg.Program:
    """One tanh hidden layer and a square loss."""
    x = tg.input("x", shape=("batch", num_inputs) if batch else (num_inputs,))
    y = tg.input("y", shape=("batch",) if batch else ())
    W1 = tg.param("W1", shape=(num_hidden, num_inputs))
    b1 = tg.param("b1", shape=(num_hidden,))
    w2 = tg.param("w2", shape=(num_hidden,))
    b2 = tg.param("b2", shape=())
    hidden = tg.tanh(tg.affine(W1, x, b1), name="hidden")
    prediction = tg.vector_scalar_affine(hidden, w2, b2, name="prediction")
    loss = tg.mean(tg.square(prediction - y)) if batch else tg.squared_l2_distance(prediction, y)
    return tg.compile(loss, wrt=[W1, b1, w2, b2], outputs={"prediction": prediction})


def multiclass(num_inputs: int = 2, num_hidden: int = 10, num_classes: int = 3, batch: bool = False) -> tg.Program:
    """Softmax of an MLP's scores, trained by negative log-likelihood."""
    x = tg.input("x", shape=("batch", num_inputs) if batch else (num_inputs,))
    y = tg.input("y", shape=("batch",) if batch else (), dtype="int64")
    W1 = tg.param("W1", shape=(num_hidden, num_inputs))
    b1 = tg.param("b1", shape=(num_hidden,))
    W2 = tg.param("W2", shape=(num_classes, num_hidden))
    b2 = tg.param("b2", shape=(num_classes,))
    hidden = tg.tanh(tg.affine(W1, x, b1), name="hidden")
    probabilities = tg.softmax(tg.affine(W2, hidden, b2), name="probabilities")
    loss = tg.mean(tg.nll(probabilities, y)) if batch else tg.nll(probabilities, y)
    return tg.compile(loss, wrt=[W1, b1, W2, b2], outputs={"probabilities": probabilities})


def random_params(program: tg.Program, rng: np.random.Generator, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Random float64 values for every parameter of ``program``."""
    return {name: np.asarray(scale * rng.standard_normal(node.shape)) for name, node in program.params.items()}
