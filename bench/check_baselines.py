"""Check that the two baselines take the same SGD steps, and the right ones.

Run from the repository root:  python bench/check_baselines.py

For each model (ridge, MLP on raw x, MLP on features, multiclass), on random
float64 data:

1. one step from the same parameters: the homework engine and the hand-fused
   step must agree on the objective and the updated parameters, and the
   implied gradient (params_before - params_after) / step_size must match a
   central finite-difference gradient of a plain numpy objective;
2. many steps in a row: both baselines must still agree, which catches state
   leaking between steps through reused buffers.

Exits with status 1 if any check fails.
"""

import sys

import numpy as np

import handfused
import homework_engine

L2_REG = 1.0
STEP_SIZE = 0.05
NUM_STEPS = 50
FD_EPSILON = 1e-6

# Agreement between the two baselines is up to rounding order only.
BASELINE_RTOL = 1e-10
BASELINE_ATOL = 1e-12
# Central differences with eps = 1e-6 are good to about 1e-9 here.
FD_RTOL = 1e-6
FD_ATOL = 1e-8


def ridge_objective(params, x, y):
    """(x . w + b - y)^2 + l2_reg ||w||^2."""
    residual = x @ params["w"] + params["b"] - y
    return residual ** 2 + L2_REG * params["w"] @ params["w"]


def mlp_objective(params, x, y):
    """(w2 . tanh(W1 x + b1) + b2 - y)^2."""
    hidden = np.tanh(params["W1"] @ x + params["b1"])
    return (params["w2"] @ hidden + params["b2"] - y) ** 2


def multiclass_objective(params, x, y):
    """-log softmax(W2 tanh(W1 x + b1) + b2)[y]."""
    hidden = np.tanh(params["W1"] @ x + params["b1"])
    scores = params["W2"] @ hidden + params["b2"]
    scores = scores - scores.max()
    return np.log(np.sum(np.exp(scores))) - scores[y]


def finite_difference_gradient(objective, params, x, y):
    """Central differences of objective in every parameter entry."""
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            shifted = {key: array.copy() for key, array in params.items()}
            shifted[name][index] = value[index] + FD_EPSILON
            above = objective(shifted, x, y)
            shifted[name][index] = value[index] - FD_EPSILON
            below = objective(shifted, x, y)
            grad[index] = (above - below) / (2 * FD_EPSILON)
        grads[name] = grad
    return grads


def random_params(rng, shapes):
    """Normal entries scaled by 1/sqrt(last dimension), so tanh is not saturated.

    Scalars stay 0-d arrays: both baselines update parameters in place.
    """
    params = {}
    for name, shape in shapes.items():
        scale = 1 / np.sqrt(shape[-1]) if shape else 1.0
        params[name] = np.array(rng.normal(size=shape) * scale)
    return params


def make_cases(rng):
    """(name, homework model, hand-fused model, objective, params, data) per model."""
    cases = []
    d = 400
    xs = rng.normal(size=(NUM_STEPS, d)) / np.sqrt(d)
    ys = rng.normal(size=NUM_STEPS)
    params = random_params(rng, {"w": (d,), "b": ()})
    cases.append(("ridge", homework_engine.build_ridge(L2_REG), handfused.Ridge(d, L2_REG),
                  ridge_objective, params, xs, ys))

    for name, d in [("mlp_raw_x", 1), ("mlp_features", 400)]:
        xs = rng.normal(size=(NUM_STEPS, d))
        ys = rng.normal(size=NUM_STEPS)
        params = random_params(rng, {"W1": (10, d), "b1": (10,), "w2": (10,), "b2": ()})
        cases.append((name, homework_engine.build_mlp_regression(), handfused.MLPRegression(d),
                      mlp_objective, params, xs, ys))

    xs = rng.normal(size=(NUM_STEPS, 2))
    ys = rng.integers(0, 3, size=NUM_STEPS)
    params = random_params(rng, {"W1": (10, 2), "b1": (10,), "W2": (3, 10), "b2": (3,)})
    cases.append(("multiclass", homework_engine.build_multiclass(), handfused.Multiclass(),
                  multiclass_objective, params, xs, ys))
    return cases


def copy_params(params):
    return {name: value.copy() for name, value in params.items()}


def max_difference(a, b, rtol, atol):
    """Largest |a - b| over all parameters, and whether all are within tolerance."""
    worst = 0.0
    close = True
    for name in a:
        worst = max(worst, float(np.max(np.abs(a[name] - b[name]))))
        close = close and np.allclose(a[name], b[name], rtol=rtol, atol=atol)
    return worst, close


def check_case(name, homework, fused, objective, params, xs, ys):
    """Run both checks for one model; print a line per check, return success."""
    ok = True

    # 1. One step from the same parameters.
    x, y = xs[0], ys[0]
    after_homework = copy_params(params)
    after_fused = copy_params(params)
    obj_homework = float(homework.step(after_homework, x, y, STEP_SIZE))
    obj_fused = fused.step(after_fused, x, y, STEP_SIZE)
    obj_numpy = float(objective(params, x, y))
    objectives_agree = np.allclose([obj_homework, obj_fused], obj_numpy, rtol=BASELINE_RTOL)
    worst, close = max_difference(after_homework, after_fused, BASELINE_RTOL, BASELINE_ATOL)
    print(f"{name:14s} one step     homework vs fused: max |diff| {worst:.1e}"
          f"  objective {obj_numpy:.6f}  {'ok' if close and objectives_agree else 'FAIL'}")
    ok = ok and close and objectives_agree

    fd_grads = finite_difference_gradient(objective, params, x, y)
    for label, after in [("homework", after_homework), ("fused", after_fused)]:
        implied = {key: (params[key] - after[key]) / STEP_SIZE for key in params}
        worst, close = max_difference(implied, fd_grads, FD_RTOL, FD_ATOL)
        print(f"{name:14s} one step     {label:8s} vs finite diff grad: max |diff| {worst:.1e}"
              f"  {'ok' if close else 'FAIL'}")
        ok = ok and close
    worst, close = max_difference(fused.grads, fd_grads, FD_RTOL, FD_ATOL)
    print(f"{name:14s} one step     fused.grads vs finite diff grad: max |diff| {worst:.1e}"
          f"  {'ok' if close else 'FAIL'}")
    ok = ok and close

    # 2. Many steps in a row, each baseline on its own parameter copy.
    after_homework = copy_params(params)
    after_fused = copy_params(params)
    for x, y in zip(xs, ys):
        homework.step(after_homework, x, y, STEP_SIZE)
        fused.step(after_fused, x, y, STEP_SIZE)
    worst, close = max_difference(after_homework, after_fused, BASELINE_RTOL, BASELINE_ATOL)
    print(f"{name:14s} {NUM_STEPS} steps     homework vs fused: max |diff| {worst:.1e}"
          f"  {'ok' if close else 'FAIL'}")
    return ok and close


def main():
    rng = np.random.default_rng(0)
    results = [check_case(*case) for case in make_cases(rng)]
    if all(results):
        print("all baseline checks passed")
        return 0
    print("BASELINE CHECKS FAILED")
    return 1


if __name__ == "__main__":
    sys.exit(main())
