"""Per-step cost of SGD epochs: tapegraph native, tapegraph numpy, and a hand-written numba loop.

Run with ``OPENBLAS_NUM_THREADS=1 python bench/native.py`` (``--compile-time``:
the first epoch in a fresh process, with a cold and a warm cache). Each model
trains one epoch per contender, the contenders interleaved, several times;
the medians per step are printed with their ratios (docs/performance.md,
"The native backend"). The hand-written loops below are the same models
written directly in numba, one example at a time: the limit the native
backend is measured against.

Models: the homework's four, per example (ridge on 400 features, the MLP
on the raw 1-D x and on 400 step-function features, the multiclass MLP on
2-D blobs), and a minibatch MLP classifier 256-512-10 with batches of 256.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tapegraph as tg  # noqa: E402
from models import catalog  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "7"))
#: The numpy backend is timed on this many rows of each epoch (it is slow).
NUMPY_ROWS = 300


@numba.njit(cache=True, error_model="numpy")
def ridge_epoch(w, b, X, y, order, step_size, l2_reg):
    objectives = np.empty(len(order))
    d = w.shape[0]
    for i in range(len(order)):
        x = X[order[i]]
        prediction = b[0]
        for k in range(d):
            prediction += x[k] * w[k]
        residual = prediction - y[order[i]]
        penalty = 0.0
        for k in range(d):
            penalty += w[k] * w[k]
        objectives[i] = residual * residual + l2_reg * penalty
        g = 2.0 * residual * step_size
        for k in range(d):
            w[k] -= g * x[k] + step_size * 2.0 * l2_reg * w[k]
        b[0] -= g
    return objectives


@numba.njit(cache=True, error_model="numpy")
def mlp_epoch(W1, b1, w2, b2, X, y, order, step_size):
    m, d = W1.shape
    hidden = np.empty(m)
    objectives = np.empty(len(order))
    for i in range(len(order)):
        x = X[order[i]]
        prediction = b2[0]
        for j in range(m):
            total = b1[j]
            for k in range(d):
                total += W1[j, k] * x[k]
            hidden[j] = np.tanh(total)
            prediction += hidden[j] * w2[j]
        residual = prediction - y[order[i]]
        objectives[i] = residual * residual
        g = 2.0 * residual * step_size
        for j in range(m):
            g_pre = g * w2[j] * (1.0 - hidden[j] * hidden[j])
            w2[j] -= g * hidden[j]
            b1[j] -= g_pre
            for k in range(d):
                W1[j, k] -= g_pre * x[k]
        b2[0] -= g
    return objectives


@numba.njit(cache=True, error_model="numpy")
def multiclass_epoch(W1, b1, W2, b2, X, y, order, step_size):
    m, d = W1.shape
    classes = W2.shape[0]
    hidden = np.empty(m)
    scores = np.empty(classes)
    objectives = np.empty(len(order))
    for i in range(len(order)):
        x = X[order[i]]
        label = y[order[i]]
        for j in range(m):
            total = b1[j]
            for k in range(d):
                total += W1[j, k] * x[k]
            hidden[j] = np.tanh(total)
        top = -np.inf
        for c in range(classes):
            total = b2[c]
            for j in range(m):
                total += W2[c, j] * hidden[j]
            scores[c] = total
            top = max(top, total)
        norm = 0.0
        for c in range(classes):
            norm += np.exp(scores[c] - top)
        objectives[i] = np.log(norm) - (scores[label] - top)
        for c in range(classes):
            scores[c] = np.exp(scores[c] - top) / norm * step_size  # the scaled residual, in place
        scores[label] -= step_size
        for j in range(m):
            g_hidden = 0.0
            for c in range(classes):
                g_hidden += W2[c, j] * scores[c]
            g_pre = g_hidden * (1.0 - hidden[j] * hidden[j])
            b1[j] -= g_pre
            for k in range(d):
                W1[j, k] -= g_pre * x[k]
        for c in range(classes):
            b2[c] -= scores[c]
            for j in range(m):
                W2[c, j] -= scores[c] * hidden[j]
    return objectives


@numba.njit(cache=True, error_model="numpy")
def minibatch_epoch(W1, b1, W2, b2, X, y, order, batch, step_size):
    steps = len(order) // batch
    hidden_units, classes = W1.shape[0], W2.shape[0]
    xb = np.empty((batch, X.shape[1]))
    hidden = np.empty((batch, hidden_units))
    scores = np.empty((batch, classes))
    g_hidden = np.empty((batch, hidden_units))
    g_W1 = np.empty(W1.shape)
    g_W2 = np.empty(W2.shape)
    objectives = np.empty(steps)
    for s in range(steps):
        for r in range(batch):
            xb[r] = X[order[s * batch + r]]
        np.dot(xb, W1.T, hidden)
        for r in range(batch):
            for j in range(hidden_units):
                hidden[r, j] = np.tanh(hidden[r, j] + b1[j])
        np.dot(hidden, W2.T, scores)
        total = 0.0
        for r in range(batch):
            label = y[order[s * batch + r]]
            top = -np.inf
            for c in range(classes):
                scores[r, c] += b2[c]
                top = max(top, scores[r, c])
            norm = 0.0
            for c in range(classes):
                norm += np.exp(scores[r, c] - top)
            total += np.log(norm) - (scores[r, label] - top)
            for c in range(classes):
                scores[r, c] = np.exp(scores[r, c] - top) / norm * (step_size / batch)
            scores[r, label] -= step_size / batch
        objectives[s] = total / batch
        np.dot(scores, W2, g_hidden)
        for r in range(batch):
            for j in range(hidden_units):
                g_hidden[r, j] *= 1.0 - hidden[r, j] * hidden[r, j]
        np.dot(scores.T, hidden, g_W2)
        np.dot(g_hidden.T, xb, g_W1)
        for c in range(classes):
            for r in range(batch):
                b2[c] -= scores[r, c]
        for j in range(hidden_units):
            for r in range(batch):
                b1[j] -= g_hidden[r, j]
        W1 -= g_W1
        W2 -= g_W2
    return objectives


def _minibatch_model():
    x = tg.input("x", shape=("batch", 256))
    y = tg.input("y", shape=("batch",), dtype="int64")
    W1 = tg.param("W1", shape=(512, 256))
    b1 = tg.param("b1", shape=(512,))
    W2 = tg.param("W2", shape=(10, 512))
    b2 = tg.param("b2", shape=(10,))
    hidden = tg.tanh(tg.matmul(x, W1, transpose_b=True) + b1)
    scores = tg.matmul(hidden, W2, transpose_b=True) + b2
    objective = tg.mean(tg.cross_entropy(scores, y))
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(512, 256)) * 0.05, "b1": np.zeros(512),
              "W2": rng.normal(size=(10, 512)) * 0.05, "b2": np.zeros(10)}
    data = {"x": rng.normal(size=(256 * 16, 256)), "y": rng.integers(0, 10, size=256 * 16)}
    return objective, [W1, b1, W2, b2], params, data


def _homework(name: str, features: int | None, epochs_of_rows: int):
    program, params, _ = catalog.build(name, num_features=features)
    model = catalog.MODELS[name]
    X, y = model.data(features or model.num_features)
    reps = max(1, epochs_of_rows // len(X))
    data = {"x": np.tile(X, (reps, 1)), "y": np.tile(y, reps)}
    return program.objective, program.wrt, params, data, model.make().step_size


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _copy(params):
    return {name: np.array(value, dtype=float, copy=True) for name, value in params.items()}


def main() -> None:
    print(f"numba {numba.__version__}, numpy {np.__version__}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, {REPEATS} interleaved repeats")
    cases = []
    for label, name, features, hand in (("ridge, 400 features", "ridge", None, "ridge"),
                                        ("MLP, raw x", "mlp", None, "mlp"),
                                        ("MLP, 400 features", "mlp", 400, "mlp"),
                                        ("multiclass", "multiclass", None, "multiclass")):
        objective, wrt, params, data, step_size = _homework(name, features, 3000)
        cases.append((label, objective, wrt, params, data, step_size, None, hand))
    objective, wrt, params, data = _minibatch_model()
    cases.append(("minibatch MLP 256-512-10, batch 256", objective, wrt, params, data, 0.1, 256, "minibatch"))
    print(f"{'model':<38}{'native us/step':>16}{'numpy us/step':>16}{'hand numba':>12}"
          f"{'numpy/native':>14}{'native/hand':>13}{'best native':>13}{'best hand':>11}{'best ratio':>12}")
    for label, objective, wrt, params, data, step_size, batch, hand in cases:
        native_step = tg.sgd(tg.compile(objective, wrt=wrt, backend="native"), step_size=step_size)
        numpy_step = tg.sgd(tg.compile(objective, wrt=wrt), step_size=step_size)
        rows = len(data["y"])
        order = tg.shuffled(rows, seed=0)
        numpy_rows = order[:NUMPY_ROWS] if batch is None else order
        size = batch or 1
        native_steps, numpy_steps = rows // size, len(numpy_rows) // size

        def run_native():
            native_step.epoch(_copy(params), data, order=order, batch_size=size)

        def run_numpy():
            numpy_step.epoch(_copy(params), data, order=numpy_rows, batch_size=size)

        def run_hand():
            p = _copy(params)
            ordered = np.ascontiguousarray(order, dtype=np.int64)
            if hand == "ridge":
                ridge_epoch(p["w"], p["b"].reshape(1), data["x"], data["y"], ordered, step_size, 1.0)
            elif hand == "mlp":
                mlp_epoch(p["W1"], p["b1"], p["w2"], p["b2"].reshape(1), data["x"], data["y"], ordered, step_size)
            elif hand == "multiclass":
                multiclass_epoch(p["W1"], p["b1"], p["W2"], p["b2"], data["x"], data["y"], ordered, step_size)
            else:
                minibatch_epoch(p["W1"], p["b1"], p["W2"], p["b2"], data["x"], data["y"], ordered, batch, step_size)
        for warm in (run_native, run_numpy, run_hand):
            warm()  # compile, and fill caches
        times: dict[str, list[float]] = {"native": [], "numpy": [], "hand": []}
        for _ in range(REPEATS):
            times["native"].append(_time(run_native) / native_steps * 1e6)
            times["numpy"].append(_time(run_numpy) / numpy_steps * 1e6)
            times["hand"].append(_time(run_hand) / native_steps * 1e6)
        native_us, numpy_us, hand_us = (statistics.median(times[key]) for key in ("native", "numpy", "hand"))
        # the best of the repeats too: on a loaded machine a short epoch is
        # often preempted, and the best is closest to its cost on a quiet one
        best_native, best_hand = min(times["native"]), min(times["hand"])
        print(f"{label:<38}{native_us:>16.3f}{numpy_us:>16.2f}{hand_us:>12.3f}"
              f"{numpy_us / native_us:>13.1f}x{native_us / hand_us:>12.2f}x"
              f"{best_native:>13.3f}{best_hand:>11.3f}{best_native / best_hand:>11.2f}x", flush=True)


_FIRST_EPOCH = """
import sys, time
started = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np, tapegraph as tg
from models import catalog
program, params, _ = catalog.build({name!r}, num_features={features!r})
model = catalog.MODELS[{name!r}]
X, y = model.data({features!r} or model.num_features)
native = tg.compile(program.objective, wrt=program.wrt, outputs=program.outputs, backend="native")
imported = time.perf_counter()
tg.sgd(native, step_size=model.make().step_size).epoch(params, {{"x": X, "y": y}}, batch_size=1)
print(imported - started, time.perf_counter() - imported)
"""


def compile_times() -> None:
    """First epoch of each homework model in a fresh process: cold cache, then warm."""
    import subprocess
    import tempfile
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"{'model':<24}{'import+build s':>16}{'cold first epoch s':>20}{'warm first epoch s':>20}")
    with tempfile.TemporaryDirectory() as cache:
        environment = {**os.environ, "TAPEGRAPH_CACHE_DIR": cache}
        for label, name, features in (("ridge, 400 features", "ridge", None), ("MLP, raw x", "mlp", None),
                                      ("MLP, 400 features", "mlp", 400), ("multiclass", "multiclass", None)):
            script = _FIRST_EPOCH.format(root=root, name=name, features=features)
            figures = []
            for _ in ("cold", "warm"):
                done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True,
                                      text=True, check=True)
                figures.append([float(item) for item in done.stdout.split()])
            print(f"{label:<24}{figures[1][0]:>16.2f}{figures[0][1]:>20.2f}{figures[1][1]:>20.2f}", flush=True)


if __name__ == "__main__":
    if "--compile-time" in sys.argv:
        compile_times()
    else:
        main()
