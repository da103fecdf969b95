"""Gradient checks in float32: correct gradients pass with the defaults, wrong ones still fail.

``check_grads`` and ``check_op`` take their step and tolerances from the
precision a program computes in (``tapegraph.testing.SETTINGS``); before,
a correct float32 gradient failed with a relative error of about 5e-3
against the float64 tolerance of 1e-6. The wrong gradients planted here
are user ops whose VJP has a typical mistake: a factor 1.05 off, the
wrong sign, a missing term of the product rule.
"""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.ops import COMPOSITES, REGISTRY
from tapegraph.testing import SETTINGS, CheckSettings, build_node, check_grads, check_op, numeric_gradient, settings_for

from conftest import draw

CASES = [(name, op, index, sample) for name, op in {**REGISTRY, **COMPOSITES}.items()
         for index, sample in enumerate(op.samples)]


def _single(arrays):
    return [array.astype("float32") if array.dtype.kind == "f" else array for array in arrays]


#: Above this many result entries, the rounding of check_op's float32 objective (a weighted sum of
#: them all) grows past the defaults' margin; docs/testing.md says to widen rtol there.
LARGEST_RESULT = 1000


def _kinked_here(op, arrays, static, eps):
    """Whether central differences at ``eps`` fail even in float64: the step straddles a kink (relu at 0,
    a tie of max), which no precision fixes, so that case says nothing about float32."""
    errors = check_op(op, [array.astype("float64") if array.dtype.kind == "f" else array for array in arrays],
                      static, eps=eps, rtol=np.inf)
    return max(errors.values(), default=0.0) > SETTINGS["float32"].rtol / 10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_op_and_composite_passes_check_op_in_float32_with_the_defaults(seed):
    rng = np.random.default_rng(seed)
    worst, kinked = {}, []
    for name, op, index, sample in CASES:
        arrays = _single([draw(arg, rng) for arg in sample.args])
        result = build_node(op, [tg.const(array) for array in arrays], sample.static)
        if result.dtype == "bool" or name == "stop_gradient" or np.prod(result.shape) > LARGEST_RESULT:
            continue  # a comparison has no gradient, stop_gradient's is not its derivative by design
        errors = check_op(op, arrays, sample.static, rtol=np.inf)
        error = max(errors.values(), default=0.0)
        if error >= SETTINGS["float32"].rtol / 2 and _kinked_here(op, arrays, sample.static, SETTINGS["float32"].eps):
            kinked.append(f"{name}-{index}")
            continue
        worst[f"{name}-{index}"] = error
    # the defaults leave room: the worst correct gradient is several times below rtol
    assert max(worst.values()) < SETTINGS["float32"].rtol / 2, sorted(worst.items(), key=lambda item: -item[1])[:3]
    # a few kinks straddled by chance (float32's step is 1e-2); many would mean the test checks little
    assert len(kinked) <= len(worst) / 10, kinked


def _mlp(dtype, classes=None):
    x = tg.input("x", shape=("batch", 5), dtype=dtype)
    W1 = tg.param("W1", shape=(8, 5), dtype=dtype)
    b1 = tg.param("b1", shape=(8,), dtype=dtype)
    hidden = tg.tanh(x @ tg.transpose(W1) + b1)
    if classes is None:
        y = tg.input("y", shape=("batch",), dtype=dtype)
        w2 = tg.param("w2", shape=(8,), dtype=dtype)
        b2 = tg.param("b2", dtype=dtype)
        return tg.compile(tg.mean(tg.square(hidden @ w2 + b2 - y)), wrt=[W1, b1, w2, b2])
    y = tg.input("y", shape=("batch",), dtype="int64")
    W2 = tg.param("W2", shape=(classes, 8), dtype=dtype)
    return tg.compile(tg.mean(tg.cross_entropy(hidden @ tg.transpose(W2), y)), wrt=[W1, b1, W2])


def _values(program, rng, rows=20, classes=3):
    params = {name: rng.standard_normal(node.shape).astype(node.dtype) for name, node in program.params.items()}
    inputs = {"x": rng.standard_normal((rows, 5)).astype(program.inputs["x"].dtype)}
    label = program.inputs["y"]
    inputs["y"] = (rng.integers(0, classes, rows) if label.dtype == "int64"
                   else rng.standard_normal(rows).astype(label.dtype))
    return params, inputs


@pytest.mark.parametrize("classes", [None, 3], ids=["regression", "classifier"])
def test_float32_models_pass_check_grads_with_the_defaults(classes, rng):
    program = _mlp("float32", classes)
    params, inputs = _values(program, rng)
    errors = check_grads(program, params, inputs)
    assert set(errors) == set(program.params) and max(errors.values()) < 1e-2
    # the float64 tolerance would call these correct gradients wrong (the report)
    with pytest.raises(AssertionError, match="relative error"):
        check_grads(program, params, inputs, eps=1e-5, rtol=1e-6)


def test_ridge_on_400_float32_features_passes(rng):
    x = tg.input("x", shape=("batch", 400), dtype="float32")
    y = tg.input("y", shape=("batch",), dtype="float32")
    w = tg.param("w", shape=(400,), dtype="float32")
    b = tg.param("b", dtype="float32")
    program = tg.compile(tg.mean(tg.square(x @ w + b - y)) + tg.sum(tg.square(w)), wrt=[w, b])
    params = {"w": (0.1 * rng.standard_normal(400)).astype("float32"), "b": np.array(0.3, "float32")}
    inputs = {"x": rng.standard_normal((10, 400)).astype("float32"), "y": rng.standard_normal(10).astype("float32")}
    assert max(check_grads(program, params, inputs).values()) < 1e-2


def _tanh_kernel(x, out):
    np.tanh(x, out=out)


def _product_kernel(x, out):
    np.multiply(x, np.tanh(x), out=out)


def _declare(name, kernel, vjp):
    return tg.register_op(tg.Op(name=name, operands=("x",), shape_rule=lambda x: (x.shape, x.dtype), kernel=kernel,
                                vjp=vjp, samples=[tg.Sample([tg.Arg((5,))])], doc="a test op with a planted VJP bug"))


#: User ops whose VJPs are wrong in the ways VJPs are: scaled, negated, a term missing.
PLANTED = {
    "five percent": _declare("float32_tests_tanh_scaled", _tanh_kernel,
                             lambda g, ans, x: (tg.mul(tg.mul(g, 1.05), tg.sub(1.0, tg.square(ans))),)),
    "sign": _declare("float32_tests_tanh_negated", _tanh_kernel,
                     lambda g, ans, x: (tg.mul(g, tg.sub(tg.square(ans), 1.0)),)),
    # d/dx x tanh x = tanh x + x (1 - tanh^2 x): the second term forgotten
    "missing term": _declare("float32_tests_product_rule", _product_kernel,
                             lambda g, ans, x: (tg.mul(g, tg.tanh(x)),)),
}
#: The same ops with the VJPs right, to show the planted ones fail for their bug alone.
CORRECT = {
    "tanh": _declare("float32_tests_tanh", _tanh_kernel,
                     lambda g, ans, x: (tg.mul(g, tg.sub(1.0, tg.square(ans))),)),
    "product": _declare("float32_tests_product", _product_kernel,
                        lambda g, ans, x: (tg.mul(g, tg.add(tg.tanh(x), tg.mul(x, tg.sub(1.0, tg.square(tg.tanh(x)))))),)),
}


@pytest.mark.parametrize("seed", range(5))
def test_planted_wrong_gradients_fail_in_float32_and_the_right_ones_pass(seed):
    rng = np.random.default_rng(seed)
    point = rng.uniform(-2.0, 2.0, size=(6,)).astype("float32")
    for op in CORRECT.values():
        assert max(check_op(op, [point], seed=seed).values()) < 1e-2
    for bug, op in PLANTED.items():
        with pytest.raises(AssertionError, match=r"gradient of parameter 'a0' is wrong .* > 0\.01 "):
            check_op(op, [point], seed=seed)


def test_a_planted_error_in_a_float32_model_gradient_is_found(rng):
    program = _mlp("float32")
    params, inputs = _values(program, rng)
    gradient = program.value_and_grad(params, inputs)[1]["W1"]
    # 5% of the largest entry, well above float32's rounding
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(gradient)), gradient.shape))

    class Wrong:
        """The model, with one gradient entry 5% off."""
        params = program.params

        def value_and_grad(self, params, inputs):
            value, grads = program.value_and_grad(params, inputs)
            grads["W1"][worst] *= 1.05
            return value, grads

        def run(self, params, inputs, outputs):
            return program.run(params, inputs, outputs)

    with pytest.raises(AssertionError, match=rf"parameter 'W1' is wrong at index \({worst[0]}, {worst[1]}\)"):
        check_grads(Wrong(), params, inputs)


def test_the_settings_follow_the_least_precise_dtype_of_the_program():
    w64 = tg.param("w", shape=(3,))
    assert settings_for(tg.compile(tg.sum(tg.tanh(w64)), wrt=[w64])) == SETTINGS["float64"] == (1e-5, 1e-6, 1e-3)
    # a float64 parameter through a float32 computation: float32 rounding decides
    through = tg.sum(tg.tanh(tg.ops.cast(w64, dtype="float32")))
    assert settings_for(tg.compile(through, wrt=[w64])) == SETTINGS["float32"]
    assert settings_for(tg.compile(through, wrt=[w64]), eps=1e-3) == CheckSettings(1e-3, 1e-2, 1e-2)


def test_float16_needs_its_settings_given():
    w = tg.param("w", shape=(3,), dtype="float16")
    program = tg.compile(tg.sum(tg.square(w)), wrt=[w])
    with pytest.raises(tg.CallError, match="computes in float16, for which there are no default gradient-check "
                                           "settings .* pass both eps= and rtol="):
        check_grads(program, {"w": np.array([0.5, -1.0, 2.0], dtype="float16")})
    errors = check_grads(program, {"w": np.array([0.5, -1.0, 2.0], dtype="float16")}, eps=0.1, rtol=0.1)
    assert errors["w"] < 0.1


def test_central_differences_divide_by_the_step_as_stored():
    # x + step rounds in float32: dividing by the step asked for was off by the rounding
    for value in (0.3, 1.7, 123.456):
        point = {"x": np.array([value], dtype="float32")}
        assert numeric_gradient(lambda trial: float(trial["x"][0]), point, "x", eps=1e-5)[0] == 1.0
    assert point["x"].dtype == np.float32 and point["x"][0] == np.float32(123.456)  # not modified
    # a step below the float32 spacing is raised to 64 spacings of the entry, so x +- step stay apart
    assert numeric_gradient(lambda trial: float(trial["x"][0]), {"x": np.ones(1, dtype="float32")}, "x", eps=1e-9)[0] == 1.0
    with pytest.raises(tg.CallError, match=r"numeric gradient of 'x' at index \(0,\): a step of .* vanishes in "
                                           r"float32 at inf; give a larger eps"):
        numeric_gradient(lambda trial: float(trial["x"][0]), {"x": np.full(1, np.inf, dtype="float32")}, "x")


def test_tapegraph_testing_exports_its_own_names_only():
    import tapegraph.testing as testing
    namespace: dict = {}
    exec("from tapegraph.testing import *", namespace)
    exported = set(namespace) - {"__builtins__"}
    assert exported == set(testing.__all__)
    assert {"check_grads", "check_op", "numeric_gradient", "settings_for", "SETTINGS"} <= exported
    assert not exported & {"Any", "np", "Node", "Op", "Mapping", "annotations"}
    for name in testing.__all__:
        assert name == "SETTINGS" or getattr(testing, name).__module__ == "tapegraph.testing"
