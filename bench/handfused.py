"""Baseline: hand-fused numpy SGD steps, the floor for an op-by-op tape.

One class per model. Each allocates every buffer it needs once, in
`__init__`; its `step(params, x, y, step_size)` then runs numpy kernels that
write into those buffers (`out=`) and updates the parameters in place. It
is written as a careful numpy programmer writes an SGD step by hand, with
every trick that keeps the count of numpy calls down (each costs about
0.3-0.5 us on these small arrays, more than the arithmetic):

- the backward pass is written with the algebra done (softmax + NLL gives
  p - onehot(y), no Jacobian);
- the step size is folded into the first scalar of the backward pass, so
  the buffers hold step_size * gradient and each update is one subtraction;
- single numbers (residuals, the log-sum-exp) are Python floats, and a 0-d
  parameter is updated with `b[()] = ...`, which costs no ufunc call;
- a number that a numpy call over arrays takes is first stored in a
  preallocated 0-d array (`scaled_0d[()] = scaled`, about 0.02 us) and the
  call gets that: numpy converts a Python float operand at every call,
  which costs each such call about 0.1 us more;
- ridge's update is `w <- (1 - 2 step_size l2_reg) w - 2 step_size r x`,
  three vector calls where materialising the gradient takes four;
- the multiclass step folds the step size into the exponent:
  exp(z - logsumexp(z) + log step_size) is step_size * softmax(z).

Products are the arrays' own ``dot`` method (``W1.dot(x, out=h)``): it
runs the product np.dot runs, and measured 0.12 us a call cheaper than
np.dot, which first looks for ``__array_function__`` overrides, and
cheaper still than np.matmul on these small arrays.

Each step computes the same gradients as the homework graph; `grads` gives
them for the last step (for bench/check_baselines.py), recovered from the
buffers after the fact so that the step itself pays nothing for it.
Parameters are a dict of float64 arrays, biases of output size one being 0-d
arrays; they are updated in place. `step` returns the objective before the
update, as a Python float.
"""

import math

import numpy as np


class Ridge:
    """(x . w + b - y)^2 + l2_reg ||w||^2 for x, w in R^d and scalar b."""

    def __init__(self, d=400, l2_reg=1.0):
        self.l2_reg = l2_reg
        self.data_step = np.zeros(d)  # 2 step_size r x, the data term's share of the step
        self.scaled = np.zeros(())  # 0-d operands: 2 step_size r, and the decay
        self.decay = np.zeros(())
        self._last = None

    def step(self, params, x, y, step_size):
        w = params["w"]
        b = params["b"]
        data_step = self.data_step

        residual = float(x.dot(w)) + float(b) - float(y)
        objective = residual * residual + self.l2_reg * float(w.dot(w))

        # d/dw = 2 r x + 2 l2_reg w, so w - step_size d/dw = (1 - 2 step_size l2_reg) w - 2 step_size r x.
        scaled = 2.0 * step_size * residual
        scaled_0d = self.scaled
        scaled_0d[()] = scaled
        decay = self.decay
        decay[()] = 1.0 - 2.0 * step_size * self.l2_reg
        np.multiply(x, scaled_0d, out=data_step)
        np.multiply(w, decay, out=w)
        np.subtract(w, data_step, out=w)
        b[()] = float(b) - scaled
        self._last = (w, scaled, step_size)
        return objective

    @property
    def grads(self):
        """The gradients at the parameters the last step started from."""
        w, scaled, step_size = self._last
        decay = 1.0 - 2.0 * step_size * self.l2_reg
        w_before = (w + self.data_step) / decay
        return {"w": (self.data_step + 2.0 * step_size * self.l2_reg * w_before) / step_size,
                "b": np.array(scaled / step_size)}


class MLPRegression:
    """(w2 . tanh(W1 x + b1) + b2 - y)^2 with W1 (m, d), b1, w2 (m,), b2 ()."""

    def __init__(self, d, m=10):
        #: step_size * gradient of each parameter, after a step.
        self.steps = {
            "W1": np.zeros((m, d)),
            "b1": np.zeros(m),
            "w2": np.zeros(m),
            "b2": 0.0,
        }
        self.hidden = np.zeros(m)
        self.scratch_m = np.zeros(m)
        self.one = np.ones(())  # 0-d operands (see the module's docstring)
        self.scaled = np.zeros(())
        # An (m, 1) view of the hidden pre-activation's step: the outer
        # product with x is then a dot of (m, 1) by (1, d), which measured
        # faster than a broadcasting np.multiply (2 vs 5 us for d = 400).
        self.step_b1_column = self.steps["b1"][:, np.newaxis]
        self.step_size = None

    def step(self, params, x, y, step_size):
        W1 = params["W1"]
        b1 = params["b1"]
        w2 = params["w2"]
        b2 = params["b2"]
        steps = self.steps
        h = self.hidden
        step_a = steps["b1"]  # the step of b1 is that of W1 x + b1
        step_w2 = steps["w2"]
        scratch_m = self.scratch_m

        # Forward: h = tanh(W1 x + b1), prediction = w2 . h + b2.
        W1.dot(x, out=h)
        np.add(h, b1, out=h)
        np.tanh(h, out=h)
        residual = float(w2.dot(h)) + float(b2) - float(y)
        objective = residual * residual

        # Backward, scaled by the step size: d prediction = 2 r; d a = d prediction * w2 * (1 - h^2).
        scaled = 2.0 * step_size * residual
        scaled_0d = self.scaled
        scaled_0d[()] = scaled
        np.square(h, out=scratch_m)
        np.subtract(self.one, scratch_m, out=scratch_m)
        np.multiply(w2, scaled_0d, out=step_a)
        np.multiply(step_a, scratch_m, out=step_a)
        self.step_b1_column.dot(x[np.newaxis, :], out=steps["W1"])
        np.multiply(h, scaled_0d, out=step_w2)

        np.subtract(W1, steps["W1"], out=W1)
        np.subtract(b1, step_a, out=b1)
        np.subtract(w2, step_w2, out=w2)
        b2[()] = float(b2) - scaled
        steps["b2"] = scaled
        self.step_size = step_size
        return objective

    @property
    def grads(self):
        """The gradients at the parameters the last step started from."""
        return {name: np.asarray(value) / self.step_size for name, value in self.steps.items()}


class Multiclass:
    """-log softmax(W2 tanh(W1 x + b1) + b2)[y] with W1 (m, d), W2 (k, m)."""

    def __init__(self, d=2, m=10, k=3):
        #: step_size * gradient of each parameter, after a step.
        self.steps = {
            "W1": np.zeros((m, d)),
            "b1": np.zeros(m),
            "W2": np.zeros((k, m)),
            "b2": np.zeros(k),
        }
        self.hidden = np.zeros(m)
        self.scores = np.zeros(k)
        self.scratch_m = np.zeros(m)
        self.one = np.ones(())  # 0-d operands (see the module's docstring)
        self.shift = np.zeros(())
        # Column and row views so outer products are dot calls (see MLPRegression).
        self.step_b1_column = self.steps["b1"][:, np.newaxis]
        self.step_b2_column = self.steps["b2"][:, np.newaxis]
        self.hidden_row = self.hidden[np.newaxis, :]
        self.step_size = None

    def step(self, params, x, y, step_size):
        W1 = params["W1"]
        b1 = params["b1"]
        W2 = params["W2"]
        b2 = params["b2"]
        steps = self.steps
        h = self.hidden
        z = self.scores
        step_a = steps["b1"]
        step_z = steps["b2"]  # step_size * (p - onehot(y))
        scratch_m = self.scratch_m
        label = int(y)

        # Forward: h = tanh(W1 x + b1), z = W2 h + b2.
        W1.dot(x, out=h)
        np.add(h, b1, out=h)
        np.tanh(h, out=h)
        W2.dot(h, out=z)
        np.add(z, b2, out=z)

        # The k scores as floats: log-sum-exp shifted by max(z) so exp cannot overflow.
        values = z.tolist()
        top = max(values)
        log_total = top + math.log(sum([math.exp(value - top) for value in values]))
        objective = log_total - values[label]

        # Backward: step_size (p - onehot(y)), with p = exp(z - log_total); d h = W2^T d z; d a = d h * (1 - h^2).
        shift = self.shift
        shift[()] = log_total - math.log(step_size)
        np.subtract(z, shift, out=step_z)
        np.exp(step_z, out=step_z)
        step_z[label] -= step_size
        self.step_b2_column.dot(self.hidden_row, out=steps["W2"])
        step_z.dot(W2, out=step_a)
        np.square(h, out=scratch_m)
        np.subtract(self.one, scratch_m, out=scratch_m)
        np.multiply(step_a, scratch_m, out=step_a)
        self.step_b1_column.dot(x[np.newaxis, :], out=steps["W1"])

        np.subtract(W1, steps["W1"], out=W1)
        np.subtract(b1, step_a, out=b1)
        np.subtract(W2, steps["W2"], out=W2)
        np.subtract(b2, step_z, out=b2)
        self.step_size = step_size
        return objective

    @property
    def grads(self):
        """The gradients at the parameters the last step started from."""
        return {name: value / self.step_size for name, value in self.steps.items()}
