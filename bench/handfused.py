"""Baseline: hand-fused numpy SGD steps, the floor for an op-by-op tape.

One class per model. Each allocates every buffer it needs once, in
`__init__`; its `step(params, x, y, step_size)` then runs numpy kernels that
write into those buffers (`out=`): forward pass, objective, the full gradient
of every parameter into its own buffer (kept in `self.grads`, so it can be
checked), and the update `param -= step_size * grad` in place. Products use
np.dot rather than np.matmul because its per-call overhead measured lower on
these small arrays.

"Fused" means the backward pass is written by hand with the algebra done
(softmax + NLL gives p - onehot(y), no Jacobian), not that work is skipped:
each step computes the same gradients as the homework graph. What is left is
roughly the cost of one numpy call per kernel, which is what a tape run
instruction by instruction from Python also pays.

Parameters are a dict of float64 arrays, biases of output size one being 0-d
arrays; they are updated in place. `step` returns the objective before the
update, as a Python float.
"""

import math

import numpy as np


def _sgd_update(param, grad, step_size, scratch):
    """param -= step_size * grad, in place, through a preallocated scratch."""
    np.multiply(grad, step_size, out=scratch)
    np.subtract(param, scratch, out=param)


class Ridge:
    """(x . w + b - y)^2 + l2_reg ||w||^2 for x, w in R^d and scalar b."""

    def __init__(self, d=400, l2_reg=1.0):
        self.l2_reg = l2_reg
        self.grads = {"w": np.zeros(d), "b": np.zeros(())}
        self.scratch = np.zeros(d)

    def step(self, params, x, y, step_size):
        w = params["w"]
        b = params["b"]
        g_w = self.grads["w"]
        scratch = self.scratch

        residual = float(np.dot(x, w)) + float(b) - float(y)
        penalty = self.l2_reg * float(np.dot(w, w))
        objective = residual * residual + penalty

        # d/dw = 2 residual x + 2 l2_reg w;  d/db = 2 residual.
        np.multiply(x, 2.0 * residual, out=g_w)
        np.multiply(w, 2.0 * self.l2_reg, out=scratch)
        np.add(g_w, scratch, out=g_w)
        self.grads["b"][()] = 2.0 * residual

        _sgd_update(w, g_w, step_size, scratch)
        b -= step_size * 2.0 * residual
        return objective


class MLPRegression:
    """(w2 . tanh(W1 x + b1) + b2 - y)^2 with W1 (m, d), b1, w2 (m,), b2 ()."""

    def __init__(self, d, m=10):
        self.grads = {
            "W1": np.zeros((m, d)),
            "b1": np.zeros(m),
            "w2": np.zeros(m),
            "b2": np.zeros(()),
        }
        self.hidden = np.zeros(m)
        self.scratch_m = np.zeros(m)
        self.scratch_md = np.zeros((m, d))
        # An (m, 1) view of the hidden pre-activation gradient: the outer
        # product with x is then np.dot of (m, 1) by (1, d), which measured
        # faster than a broadcasting np.multiply (2 vs 5 us for d = 400).
        self.g_b1_column = self.grads["b1"][:, np.newaxis]

    def step(self, params, x, y, step_size):
        W1 = params["W1"]
        b1 = params["b1"]
        w2 = params["w2"]
        b2 = params["b2"]
        grads = self.grads
        h = self.hidden
        g_a = grads["b1"]  # the gradient of b1 is that of W1 x + b1
        scratch_m = self.scratch_m

        # Forward: h = tanh(W1 x + b1), prediction = w2 . h + b2.
        np.dot(W1, x, out=h)
        np.add(h, b1, out=h)
        np.tanh(h, out=h)
        residual = float(np.dot(w2, h)) + float(b2) - float(y)
        objective = residual * residual

        # Backward: d prediction = 2 residual; d a = d prediction * w2 * (1 - h^2).
        g_prediction = 2.0 * residual
        grads["b2"][()] = g_prediction
        np.multiply(h, g_prediction, out=grads["w2"])
        np.multiply(h, h, out=scratch_m)
        np.subtract(1.0, scratch_m, out=scratch_m)
        np.multiply(w2, g_prediction, out=g_a)
        np.multiply(g_a, scratch_m, out=g_a)
        np.dot(self.g_b1_column, x[np.newaxis, :], out=grads["W1"])

        _sgd_update(W1, grads["W1"], step_size, self.scratch_md)
        _sgd_update(b1, g_a, step_size, scratch_m)
        _sgd_update(w2, grads["w2"], step_size, scratch_m)
        b2 -= step_size * g_prediction
        return objective


class Multiclass:
    """-log softmax(W2 tanh(W1 x + b1) + b2)[y] with W1 (m, d), W2 (k, m)."""

    def __init__(self, d=2, m=10, k=3):
        self.grads = {
            "W1": np.zeros((m, d)),
            "b1": np.zeros(m),
            "W2": np.zeros((k, m)),
            "b2": np.zeros(k),
        }
        self.hidden = np.zeros(m)
        self.scratch_m = np.zeros(m)
        self.scratch_md = np.zeros((m, d))
        self.scratch_km = np.zeros((k, m))
        self.scratch_k = np.zeros(k)
        # Column and row views so outer products are np.dot calls (see MLPRegression).
        self.g_b1_column = self.grads["b1"][:, np.newaxis]
        self.g_b2_column = self.grads["b2"][:, np.newaxis]
        self.hidden_row = self.hidden[np.newaxis, :]

    def step(self, params, x, y, step_size):
        W1 = params["W1"]
        b1 = params["b1"]
        W2 = params["W2"]
        b2 = params["b2"]
        grads = self.grads
        h = self.hidden
        g_a = grads["b1"]
        g_z = grads["b2"]  # scores z, then exp(z), then softmax p, then p - onehot(y)
        scratch_m = self.scratch_m
        label = int(y)

        # Forward: h = tanh(W1 x + b1), z = W2 h + b2.
        np.dot(W1, x, out=h)
        np.add(h, b1, out=h)
        np.tanh(h, out=h)
        np.dot(W2, h, out=g_z)
        np.add(g_z, b2, out=g_z)

        # Shifting by max(z) keeps exp from overflowing; softmax is unchanged.
        np.subtract(g_z, g_z.max(), out=g_z)
        np.exp(g_z, out=g_z)
        total = float(g_z.sum())
        objective = math.log(total) - math.log(float(g_z[label]))
        np.divide(g_z, total, out=g_z)

        # Backward: d z = p - onehot(y); d h = W2^T d z; d a = d h * (1 - h^2).
        g_z[label] -= 1.0
        np.dot(self.g_b2_column, self.hidden_row, out=grads["W2"])
        np.dot(g_z, W2, out=g_a)
        np.multiply(h, h, out=scratch_m)
        np.subtract(1.0, scratch_m, out=scratch_m)
        np.multiply(g_a, scratch_m, out=g_a)
        np.dot(self.g_b1_column, x[np.newaxis, :], out=grads["W1"])

        _sgd_update(W1, grads["W1"], step_size, self.scratch_md)
        _sgd_update(b1, g_a, step_size, scratch_m)
        _sgd_update(W2, grads["W2"], step_size, self.scratch_km)
        _sgd_update(b2, g_z, step_size, self.scratch_k)
        return objective
