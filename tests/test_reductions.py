"""Reductions over axes, the softmax family on an axis, and their numerics at the extremes.

Values at extreme logits are compared with values computed exactly, in
50-digit decimal arithmetic from the floats given (``decimal``).
"""

from __future__ import annotations

import decimal
import math

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.ops import Arg, Op, Sample, register_op
from tapegraph.ops.registry import allocate_workspace
from tapegraph.ops.softmax import LOG_SOFTMAX
from tapegraph.testing import check_grads, check_op

CONTEXT = decimal.Context(prec=50)


def _exact_softmax(z) -> list[decimal.Decimal]:
    """softmax of floats, exactly (to 50 digits)."""
    values = [CONTEXT.create_decimal(float(value)) for value in z]
    top = max(values)
    exps = [CONTEXT.exp(CONTEXT.subtract(value, top)) for value in values]
    total = sum(exps, decimal.Decimal(0))
    return [CONTEXT.divide(value, total) for value in exps]


def _exact_cross_entropy(z, label: int) -> float:
    values = [CONTEXT.create_decimal(float(value)) for value in z]
    top = max(values)
    total = sum((CONTEXT.exp(value - top) for value in values), decimal.Decimal(0))
    return float(CONTEXT.ln(total) - (values[label] - top))


def _normwise(actual, exact) -> float:
    actual = np.asarray(actual, dtype=float)
    exact = np.asarray([float(value) for value in np.ravel(exact)]).reshape(actual.shape)
    return float(np.linalg.norm(actual - exact) / np.linalg.norm(exact))


def _cross_entropy_program(classes: int, batched: bool = False):
    z = tg.param("z", shape=(1, classes) if batched else (classes,))
    y = tg.input("y", shape=(1,) if batched else (), dtype="int64")
    return tg.compile(tg.sum(tg.cross_entropy(z, y)), wrt=[z])


# Cross-entropy: exact gradients, values and Hessian-vector products.

@pytest.mark.parametrize("batched", [False, True], ids=["one-example", "batch"])
@pytest.mark.parametrize("label", [0, 1, 2])
def test_cross_entropy_gradient_at_logits_near_1e10_is_exact(label, batched):
    logits = 1e10 + np.array([0.5, 0.0, -10.0])
    program = _cross_entropy_program(3, batched)
    feed = logits[None] if batched else logits
    value, grads = program.value_and_grad({"z": feed}, {"y": np.array([label] if batched else label)})
    exact = _exact_softmax(logits)
    exact[label] -= 1
    assert _normwise(grads["z"].ravel(), exact) < 4e-16
    assert value == pytest.approx(_exact_cross_entropy(logits, label), rel=4e-16)


@pytest.mark.parametrize("shift", [1e3, 1e10])
@pytest.mark.parametrize("label", [0, 1])
def test_cross_entropy_hessian_vector_product_near_one_hot_is_exact(shift, label):
    logits = shift + np.array([18.0, 0.0, 0.0])
    direction = np.array([0.3, -1.1, 0.7])
    z = tg.param("z", shape=(3,))
    y = tg.input("y", shape=(), dtype="int64")
    (gradient,) = tg.grad(tg.cross_entropy(z, y), [z])
    program = tg.compile(tg.sum(gradient * tg.const(direction)), wrt=[z])
    _, grads = program.value_and_grad({"z": logits}, {"y": np.array(label)})
    # H v = p * (v - <v, p>), exactly
    p = _exact_softmax(logits)
    v = [CONTEXT.create_decimal(float(value)) for value in direction]
    dot = sum((a * b for a, b in zip(p, v)), decimal.Decimal(0))
    exact = [a * (b - dot) for a, b in zip(p, v)]
    assert _normwise(grads["z"], exact) < 4e-16


def test_cross_entropy_of_a_near_one_hot_row_keeps_its_digits():
    logits = 1e3 + np.array([18.0, 0.0, 0.0])  # ce = log(1 + 2 e^-18), about 3e-8
    for program, feed, label in ((_cross_entropy_program(3), logits, np.array(0)),
                                 (_cross_entropy_program(3, batched=True), logits[None], np.array([0]))):
        value, grads = program.value_and_grad({"z": feed}, {"y": label})
        assert value == pytest.approx(_exact_cross_entropy(logits, 0), rel=4e-16)
        exact = _exact_softmax(logits)
        exact[0] -= 1
        assert _normwise(grads["z"].ravel(), exact) < 4e-16


@pytest.mark.parametrize("classes", [3, 20], ids=["float-path", "array-path"])
def test_logits_at_the_largest_floats_give_exact_gradients(classes):
    logits = np.zeros(classes)
    logits[:2] = [1e308, -1e308]
    program = _cross_entropy_program(classes)
    expected_values = {0: 0.0, 1: math.inf, 2: 1e308}  # 2e308 is past the largest float: inf
    for label, expected in expected_values.items():
        value, grads = program.value_and_grad({"z": logits}, {"y": np.array(label)})
        assert value == expected
        gradient = np.zeros(classes)
        gradient[0] += 1.0
        gradient[label] -= 1.0
        np.testing.assert_array_equal(grads["z"], gradient)
    z = tg.param("z", shape=(classes,))
    values = tg.compile(tg.sum(tg.softmax(z)), outputs={"s": tg.softmax(z), "l": tg.log_softmax(z)}).run(
        {"z": logits}, {})
    np.testing.assert_array_equal(values["s"][:3], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(values["l"][:3], [0.0, -math.inf, -1e308])


def test_logsumexp_at_logits_near_1e10_is_exact():
    logits = 1e10 + np.array([0.5, 0.0, -10.0])
    x = tg.param("x", shape=(3,))
    value, grads = tg.compile(tg.logsumexp(x), wrt=[x]).value_and_grad({"x": logits})
    values = [CONTEXT.create_decimal(float(item)) for item in logits]
    exact = CONTEXT.ln(sum((CONTEXT.exp(item) for item in (v - values[0] for v in values)), decimal.Decimal(0)))
    assert value == float(values[0] + exact)  # correctly rounded
    assert _normwise(grads["x"], _exact_softmax(logits)) < 4e-16
    # a sum just above 1: the log-sum keeps its digits
    pair = tg.param("w", shape=(2,))
    value = tg.compile(tg.logsumexp(pair)).run({"w": np.array([0.0, -40.0])}, {})["objective"]
    assert value == pytest.approx(math.log1p(math.exp(-40.0)), rel=1e-15)


def test_logsumexp_of_infinities():
    x = tg.param("x", shape=(2,))
    program = tg.compile(tg.logsumexp(x))
    assert program.run({"x": np.array([-np.inf, -np.inf])}, {})["objective"] == -np.inf
    assert program.run({"x": np.array([np.inf, 0.0])}, {})["objective"] == np.inf
    assert program.run({"x": np.array([-np.inf, 3.0])}, {})["objective"] == 3.0


# check_grads: quiet on correct gradients at large logits, loud on wrong ones.

LARGE = [1000.0 + np.array([0.1, 0.2, 0.3, 0.4]), 1e10 + np.array([0.5, 0.0, -10.0, 1.0])]


@pytest.mark.parametrize("logits", LARGE, ids=["1e3", "1e10"])
def test_check_grads_is_quiet_on_correct_gradients_at_large_logits(logits):
    for op in (tg.log_softmax, tg.softmax, tg.logsumexp):
        errors = check_op(op.op, [logits])
        assert max(errors.values()) < 1e-6, (op, errors)
    errors = check_op(tg.cross_entropy.op, [logits, np.array(2)])
    assert max(errors.values()) < 1e-6, errors


def _wrong_log_softmax(relative_error: float) -> Op:
    """log-softmax with a VJP off by ``relative_error`` (a planted bug)."""
    def vjp(g, ans, z):
        (right,) = LOG_SOFTMAX.vjp(g, ans, z, axis=(z.ndim - 1,))
        return (right * (1.0 + relative_error),)

    def wrong_log_softmax_kernel(z, out):
        axis = (z.ndim - 1,)
        scratch = allocate_workspace(LOG_SOFTMAX.workspace([z.shape], z.shape, "float64", axis=axis))
        derived = LOG_SOFTMAX.specialize([z.shape], z.shape, axis=axis)
        LOG_SOFTMAX.kernel(z, out, axis=axis, **derived, **scratch)

    return register_op(Op(
        name=f"wrong_log_softmax_{str(relative_error).replace('.', '_').replace('-', '_')}", operands=("z",),
        shape_rule=lambda z: (z.shape, z.dtype), kernel=wrong_log_softmax_kernel, vjp=vjp,
        samples=[Sample([Arg((4,))])], doc="log-softmax with a wrong gradient, for the tests"), replace=True)


@pytest.mark.parametrize("logits", [np.array([0.1, 0.2, 0.3, 0.4]), *LARGE], ids=["1", "1e3", "1e10"])
def test_check_grads_catches_a_planted_wrong_gradient(logits):
    with pytest.raises(AssertionError, match=r"gradient of parameter 'a0' is wrong at index \(\d,\)"):
        check_op(_wrong_log_softmax(1e-5), [logits])


def test_check_grads_still_scales_its_step_for_functions_that_grow_with_x():
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(tg.square(tg.square(w))), wrt=[w])
    check_grads(program, {"w": np.array([1e5, -3e4])})


# Conventions at kinks.

def _gradient(build, x):
    w = tg.param("w", shape=np.shape(x))
    return tg.compile(tg.sum(build(w) * 1.0), wrt=[w]).value_and_grad({"w": np.asarray(x, dtype=float)})[1]["w"]


def test_max_and_min_share_the_gradient_equally_between_ties():
    np.testing.assert_array_equal(_gradient(tg.max, [1.0, 3.0, 3.0, 2.0]), [0.0, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(_gradient(tg.min, [1.0, 3.0, 1.0, 1.0]), [1 / 3, 0.0, 1 / 3, 1 / 3])
    rows = np.array([[1.0, 5.0, 5.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(_gradient(lambda w: tg.max(w, axis=-1, keepdims=True), rows),
                               [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-15)
    np.testing.assert_array_equal(_gradient(lambda w: tg.max(w, axis=0), rows), [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert np.isnan(_gradient(tg.max, [1.0, np.nan])).all()  # a NaN is not hidden


def test_prod_gradient_is_exact_at_zeros_and_std_has_zero_gradient_where_constant():
    np.testing.assert_array_equal(_gradient(tg.prod, [2.0, 0.0, 3.0]), [0.0, 6.0, 0.0])
    np.testing.assert_array_equal(_gradient(tg.prod, [2.0, 0.0, 0.0]), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(_gradient(lambda w: tg.std(w, axis=1), [[4.0, 4.0], [1.0, 3.0]]),
                                  [[0.0, 0.0], [-0.5, 0.5]])


# Axes, keepdims and values against numpy.

REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod, "var": np.var,
              "std": np.std, "logsumexp": lambda x, axis, keepdims: np.log(np.sum(np.exp(x), axis=axis,
                                                                                   keepdims=keepdims))}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (-1, 1), ()])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_take_axes_and_keepdims_as_numpy_does(name, axis, keepdims, rng):
    x = rng.uniform(0.5, 1.5, size=(2, 3, 4))
    node = getattr(tg, name)(tg.input("x", shape=(2, 3, 4)), axis=axis, keepdims=keepdims, name="r")
    out = tg.compile(tg.sum(node), outputs={"r": node}).run({}, {"x": x})["r"]
    expected = REDUCTIONS[name](x, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected) == node.shape
    np.testing.assert_allclose(out, expected, rtol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_and_std_take_ddof_as_numpy_does_with_its_gradient(name, backend, rng):
    if backend == "native":
        pytest.importorskip("numba")
    x = rng.standard_normal((4, 3))
    w = tg.param("w", shape=(4, 3))
    batch = tg.param("b", shape=(3,))
    data = tg.input("d", shape=("batch", 3))
    function, reference = getattr(tg, name), getattr(np, name)
    outputs = {"all": function(w, ddof=1), "rows": function(w, axis=1, ddof=2, keepdims=True),
               "columns": function(w, axis=0, ddof=3), "over the batch": function(data, axis=0, ddof=1)}
    objective = tg.sum(function(w, axis=0, ddof=1)) + tg.sum(function(batch * data, axis=0, ddof=1))
    program = tg.compile(objective, wrt=[w, batch], outputs=outputs, backend=backend)
    given = rng.standard_normal((5, 3))
    out = program.run({"w": x, "b": x[0]}, {"d": given})
    np.testing.assert_allclose(out["all"], reference(x, ddof=1), rtol=1e-14)
    np.testing.assert_allclose(out["rows"], reference(x, axis=1, ddof=2, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(out["columns"], reference(x, axis=0, ddof=3), rtol=1e-14)
    np.testing.assert_allclose(out["over the batch"], reference(given, axis=0, ddof=1), rtol=1e-14)
    # the gradient over a concrete axis and over the batch axis (count / (count - ddof) computed in the graph)
    check_grads(program, {"w": x, "b": rng.standard_normal(3)}, {"d": given[:4]})


def test_ddof_is_refused_when_no_degree_of_freedom_is_left_or_it_is_not_a_count():
    x = tg.input("x", shape=(2, 3))
    with pytest.raises(tg.ShapeError, match=r"var\(x: f64\[2,3\]\) at test_reductions.py:\d+: ddof=3 leaves no "
                                            r"degrees of freedom: each group over axis \(1,\) has 3 entries"):
        tg.var(x, axis=1, ddof=3)
    for bad in (-1, 1.0, True, "1"):
        with pytest.raises(tg.ShapeError, match=r"std\(x: f64\[2,3\]\) .*ddof must be a non-negative int"):
            tg.std(x, ddof=bad)


def test_a_batch_too_small_for_ddof_gives_inf_and_says_so():
    data = tg.input("d", shape=("batch", 2))
    program = tg.compile(outputs={"var": tg.var(data, axis=0, ddof=1)})
    with pytest.warns(RuntimeWarning, match=r"var/std with ddof=1: a group of 1 entries has no degree of freedom"):
        out = program.run({}, {"d": np.array([[1.0, 2.0]])})["var"]
    np.testing.assert_array_equal(out, [np.nan, np.nan])  # 0 / 0: the one entry is its own mean
    with pytest.warns(RuntimeWarning):
        assert np.isnan(np.var(np.array([[1.0, 2.0]]), axis=0, ddof=1)).all()  # as numpy


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum_runs_along_one_axis_both_ways(axis, rng):
    x = rng.standard_normal((3, 4))
    node = tg.input("x", shape=(3, 4))
    program = tg.compile(tg.sum(tg.cumsum(node, axis)), outputs={
        "forward": tg.cumsum(node, axis), "backward": tg.cumsum(node, axis, reverse=True)})
    out = program.run({}, {"x": x})
    np.testing.assert_allclose(out["forward"], np.cumsum(x, axis=axis), rtol=1e-14)
    np.testing.assert_allclose(out["backward"], np.flip(np.cumsum(np.flip(x, axis), axis=axis), axis), rtol=1e-14)
    assert tg.cumsum(tg.input("v", shape=(5,))).attr("axis") == 0  # a vector needs no axis


@pytest.mark.parametrize("axis", [0, 1, -2])
def test_softmax_family_on_another_axis_is_the_last_axis_transposed(axis, rng):
    z = rng.standard_normal((3, 4, 2)) * 5
    labels = rng.integers(0, z.shape[axis], size=np.delete(np.array(z.shape), axis % 3))
    node = tg.input("z", shape=z.shape)
    label = tg.input("y", shape=labels.shape, dtype="int64")
    moved = np.moveaxis(z, axis, -1)
    out = tg.compile(tg.sum(tg.softmax(node, axis)), outputs={
        "softmax": tg.softmax(node, axis), "log_softmax": tg.log_softmax(node, axis),
        "ce": tg.cross_entropy(node, label, axis=axis)}).run({}, {"z": z, "y": labels})
    expected = np.exp(moved) / np.exp(moved).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.moveaxis(out["softmax"], axis, -1), expected, rtol=1e-13)
    np.testing.assert_allclose(np.moveaxis(out["log_softmax"], axis, -1), np.log(expected), rtol=1e-13, atol=1e-15)
    picked = np.take_along_axis(np.log(expected), labels[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(out["ce"], -picked, rtol=1e-13, atol=1e-15)


def test_nll_of_a_softmax_over_another_axis_is_not_taken_for_a_cross_entropy():
    z = tg.input("z", shape=(3, 3))
    probs = tg.softmax(z, axis=0)
    assert tg.nll(probs, tg.input("y", shape=(3,), dtype="int64")).op is not tg.cross_entropy.op
    assert tg.nll(tg.softmax(z), tg.input("y", shape=(3,), dtype="int64")).op is tg.cross_entropy.op


# Bad input: a clear error at the user's line, naming the op and the shapes.

def test_an_axis_out_of_range_names_the_op_the_shape_and_the_line():
    x = tg.input("x", shape=("batch", 3))
    for function in (tg.max, tg.min, tg.prod, tg.logsumexp, tg.var, tg.std, tg.softmax, tg.log_softmax):
        with pytest.raises(tg.ShapeError, match=rf"{function.__name__}\(x: f64\[batch,3\]\) at test_reductions.py:\d+: "
                                                r"axis 2 is out of range for 2 dimension\(s\)"):
            function(x, axis=2)
        with pytest.raises(tg.ShapeError, match=r"axis -3 is out of range"):
            function(x, axis=(0, -3))
    with pytest.raises(tg.ShapeError, match=r"cumsum\(x: f64\[batch,3\]\) at test_reductions.py:\d+: axis 2 is out"):
        tg.cumsum(x, axis=2)
    with pytest.raises(tg.ShapeError, match=r"cross_entropy\(x: f64\[batch,3\], y: i64\[batch\]\) at "
                                            r"test_reductions.py:\d+: axis 5 is out of range"):
        tg.cross_entropy(x, tg.input("y", shape=("batch",), dtype="int64"), axis=5)


def test_other_bad_axes_are_refused_with_a_reason():
    x = tg.input("x", shape=(2, 3))
    with pytest.raises(tg.ShapeError, match=r"cumsum\(x: f64\[2,3\]\) at .*needs an axis \(numpy would flatten it"):
        tg.cumsum(x)
    with pytest.raises(tg.ShapeError, match=r"axis must be one int \(cumsum runs along one axis\), got tuple"):
        tg.cumsum(x, axis=(0, 1))
    with pytest.raises(tg.ShapeError, match=r"labels of shape \[3\] do not fit scores of shape \[2,3\] with the "
                                            r"classes on axis 1"):
        tg.cross_entropy(x, tg.input("y", shape=(3,), dtype="int64"))
    with pytest.raises(tg.ShapeError, match=r"max\(e: f64\[0,3\]\) .*axis 0 has no entries"):
        tg.max(tg.input("e", shape=(0, 3)), axis=0)
    with pytest.raises(tg.ShapeError, match=r"softmax\(x: f64\[2,3\]\) .*axis=\(\) names no axis"):
        tg.softmax(x, axis=())


def test_axes_must_be_distinct_ints():
    x = tg.input("x", shape=(2, 3))
    with pytest.raises(tg.ShapeError, match=r"max\(x: f64\[2,3\]\) at test_reductions.py:\d+: axis \(1, -1\) names axis 1 twice"):
        tg.max(x, axis=(1, -1))
    with pytest.raises(tg.ShapeError, match=r"sum\(x: f64\[2,3\]\) at .*an axis must be an int, got float 1.0"):
        tg.sum(x, axis=(1.0,))


def test_the_reductions_are_exported_at_top_level():
    for name in ("sum", "mean", "max", "min", "prod", "logsumexp", "var", "std", "cumsum", "softmax", "log_softmax",
                 "cross_entropy"):
        assert getattr(tg, name).op.name == name
    for name in ("tie_share", "prod_others", "softmax_jvp"):
        assert not hasattr(tg, name) and callable(getattr(tg.ops, name))


def _peak_of_a_donated_step(term_of, rows: int) -> int:
    import tracemalloc

    rng = np.random.default_rng(0)
    x = tg.input("x", shape=("batch", 8))
    w = tg.param("w", shape=(8,))
    labels = tg.input("y", shape=("batch",), dtype="int64")
    classes_first = tg.input("c", shape=(8,), dtype="int64")  # labels of rows as classes (axis=0)
    program = tg.compile(term_of(x * w, labels, classes_first), wrt=[w])
    step = tg.sgd(program, step_size=1e-3, donate=True)
    params = {"w": rng.standard_normal(8)}
    inputs = {"x": rng.standard_normal((rows, 8)), "y": rng.integers(0, 8, size=rows),
              "c": rng.integers(0, rows, size=8)}
    inputs = {name: array for name, array in inputs.items() if name in program.inputs}
    for _ in range(3):
        step(params, inputs)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step(params, inputs)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_a_step_through_the_reductions_allocates_no_arrays_of_their_own():
    """The kernels work in preallocated scratch: a donated step through all of them allocates
    no more than one through a plain mean (a (256, 8) temporary alone would be 16 KiB)."""
    def everything(z, labels, classes_first):
        terms = [tg.max(z, axis=1), tg.min(z, axis=0), tg.var(z, axis=0), tg.std(z, axis=-1), tg.logsumexp(z, axis=1),
                 tg.prod(tg.tanh(z), axis=1), tg.cumsum(z, axis=0), tg.softmax(z, axis=(0, 1)), tg.log_softmax(z),
                 tg.cross_entropy(z, labels), tg.cross_entropy(z, classes_first, axis=0)]
        total = tg.sum(terms[0])
        for term in terms[1:]:
            total = total + tg.mean(term)
        return total
    baseline = _peak_of_a_donated_step(lambda z, labels, classes_first: tg.mean(z), 256)
    assert _peak_of_a_donated_step(everything, 256) <= baseline + 4096
