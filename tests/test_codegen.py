"""The generated code that runs tapes, its standalone form, and the check mode.

Every op's ``source`` and ``scalar`` forms are held to its kernel (the
readable reference) on the op's own samples, registry-driven like the VJP
checks, so a template that drifts from its kernel fails here.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.backends.codegen import identifiers
from tapegraph.compile.tape import Destination
from tapegraph.ops import REGISTRY
from tapegraph.testing import build_node

import homework_graphs as hw
from conftest import draw

CASES = [(name, op, index, sample) for name, op in REGISTRY.items() for index, sample in enumerate(op.samples)]


def _inputs_program(op, sample, arrays):
    """The op applied to inputs (not constants, which would fold away)."""
    leaves = [tg.input(f"a{position}", shape=array.shape, dtype=array.dtype.name) for position, array in enumerate(arrays)]
    node = build_node(op, leaves, sample.static)
    number = tg.where(node, 1.0, 0.0) if node.dtype == "bool" else node * 1.0  # a comparison's booleans
    return tg.compile(tg.sum(number), outputs={"out": node}), node


@pytest.mark.parametrize("name, op, index, sample", CASES, ids=[f"{case[0]}-{case[2]}" for case in CASES])
def test_generated_code_computes_what_the_kernel_computes(name, op, index, sample, rng):
    arrays = [draw(arg, rng) for arg in sample.args]
    program, node = _inputs_program(op, sample, arrays)
    generated = program.run({}, {f"a{position}": array for position, array in enumerate(arrays)}, outputs=["out"])["out"]
    reference = op.evaluate(arrays, node.shape, node.dtype, dict(node.static))
    np.testing.assert_allclose(generated, reference, rtol=1e-15, atol=0)


SCALAR_OPS = [name for name, op in REGISTRY.items() if op.scalar is not None]


@pytest.mark.parametrize("name", SCALAR_OPS)
def test_scalar_forms_agree_with_the_kernel_on_0d_values(name, rng):
    op = REGISTRY[name]
    for sample in op.samples:
        arrays = [draw(arg, rng) for arg in sample.args]
        program, node = _inputs_program(op, sample, arrays)
        if node.shape != ():
            continue
        source = program.tape("run", outputs=["out"]).instructions
        value = program.run({}, {f"a{position}": array for position, array in enumerate(arrays)}, outputs=["out"])["out"]
        reference = op.evaluate(arrays, node.shape, node.dtype, dict(node.static))
        assert float(value) == float(reference), (name, sample)
        assert source  # the op ran as an instruction, not folded


def test_scalars_are_python_floats_in_the_generated_step():
    program = hw.ridge(num_features=3)
    text = program.source()
    assert "v6 = v4 - v5" in text  # the residual, as float arithmetic
    assert "np.subtract(s" not in text.split("# reverse")[0]


@pytest.mark.parametrize("build", [hw.linear, hw.ridge, hw.mlp_regression, hw.multiclass])
def test_standalone_source_computes_what_the_program_computes(build, rng):
    program = build()
    params = hw.random_params(program, rng)
    inputs = {name: (rng.integers(0, 3, size=node.shape) if node.dtype.startswith("int") else rng.standard_normal(node.shape))
              for name, node in program.inputs.items()}
    value, grads = program.value_and_grad(params, inputs)
    namespace: dict = {}
    exec(program.source(name="step"), namespace)
    arguments = [feed.name for feed in program.tape().feeds]
    computed = namespace["step"](*[params.get(name, inputs.get(name)) for name in arguments])
    assert computed["objective"] == value
    for name, gradient in grads.items():
        np.testing.assert_array_equal(computed[f"grad {name}"], gradient)


def test_standalone_source_needs_only_numpy_and_names_its_sizes():
    program = hw.multiclass(batch=True)
    text = program.source(sizes={"batch": 4})
    assert "import numpy as np" in text and "tapegraph" not in text.split('"""')[2].split("def ")[0]
    assert "Specialised to batch=4." in text
    namespace: dict = {}
    exec(text, namespace)  # kernels it calls (softmax, cross-entropy) are defined in the text itself
    assert "_cross_entropy_kernel" in namespace


def test_standalone_source_allocates_scratch_and_writes_out_only_fixed_data(rng):
    # the minibatch multiclass model: cross-entropy's flat indices are integer
    # scratch, which source() once printed as a literal of whatever memory held
    program = hw.multiclass(batch=True)
    tape = program.tape(sizes={"batch": 4})
    text = program.source(sizes={"batch": 4}, name="step")
    assert tape.workspaces, "the model should use workspaces"
    for workspace in tape.workspaces:
        name = f"w{workspace.instruction}_{workspace.name}"
        line = next(line.strip() for line in text.splitlines() if line.strip().startswith(f"{name} = "))
        if workspace.contents is None:
            assert line == f"{name} = np.empty({workspace.shape!r}, dtype=np.{workspace.dtype})"
        else:
            rebuilt = eval(line.split(" = ", 1)[1], {"np": np})
            np.testing.assert_array_equal(rebuilt, workspace.contents, strict=True)
    assert any(workspace.contents is None and workspace.dtype.startswith("int") for workspace in tape.workspaces)
    params = hw.random_params(program, rng)
    inputs = {"x": rng.standard_normal((4, 2)), "y": np.array([0, 2, 1, 2])}
    value, grads = program.value_and_grad(params, inputs)
    namespace: dict = {}
    exec(text, namespace)
    computed = namespace["step"](**{feed.name: {**params, **inputs}[feed.name] for feed in tape.feeds})
    assert computed["objective"] == value
    for name, gradient in grads.items():
        np.testing.assert_array_equal(computed[f"grad {name}"], gradient)


def test_the_executor_writes_donated_results_where_the_tape_says(rng):
    program = hw.ridge(num_features=3)
    step = tg.sgd(program, 0.1, donate=True)
    step(hw.random_params(program, rng), {"x": np.ones(3), "y": np.array(1.0)})
    tape = step._plan.last.tape
    text = step._plan.last.source()
    destinations = {instruction.value: instruction.destination for instruction in tape.instructions}
    scalars = {value for value, destination in destinations.items() if destination.kind == "scalar"}
    assert scalars  # b's new value is a Python float
    assert [how.kind for how in tape.returns.values()] == ["float", "donated", "donated"]
    for name, how in tape.returns.items():
        if how.kind != "donated":
            continue
        if destinations.get(tape.results[name][1]) == Destination("donated", how.feed):
            assert f"out={how.feed})" in text  # computed straight into the caller's array
        elif tape.results[name][1] in scalars:
            assert f"{how.feed}[()] = v" in text  # a Python float stored after every read
        else:
            assert f"np.copyto({how.feed}, " in text  # copied in after every read


def test_feed_names_become_distinct_identifiers():
    assert identifiers(["x", "hidden layer", "2nd", "class", "s3", "x"]) == ["x", "hidden_layer", "_2nd", "_class", "_s3", "x_2"]
    x = tg.input("hidden layer", shape=(2,))
    w = tg.param("class", shape=(2,))
    program = tg.compile(tg.sum(x * w), wrt=[w])
    value, grads = program.value_and_grad({"class": np.array([1.0, 2.0])}, {"hidden layer": np.array([3.0, 4.0])})
    assert value == 11.0
    np.testing.assert_array_equal(grads["class"], [3.0, 4.0])


def test_a_gradient_that_is_an_input_is_returned_as_a_copy():
    x = tg.input("x", shape=(2,))
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(x * w), wrt=[w])
    given = np.array([3.0, 4.0])
    _, grads = program.value_and_grad({"w": np.ones(2)}, {"x": given})
    assert grads["w"] is not given and np.shares_memory(grads["w"], given) is False
    np.testing.assert_array_equal(grads["w"], given)


def test_donated_updates_are_written_into_the_callers_arrays():
    program = hw.ridge(num_features=3)
    params = {"w": np.array([1.0, 2.0, 3.0]), "b": np.array(0.5)}
    inputs = {"x": np.array([0.1, 0.2, 0.3]), "y": np.array(1.0)}
    expected, value = tg.sgd(program, 0.1)(params, inputs)
    donated = {name: array.copy() for name, array in params.items()}
    arrays = dict(donated)
    new, donated_value = tg.sgd(program, 0.1, donate=True)(donated, inputs)
    assert donated_value == value
    for name in params:
        assert new[name] is arrays[name]
        np.testing.assert_array_equal(arrays[name], expected[name])


# ---------------------------------------------------------------- check mode


def test_check_mode_names_the_log_of_a_negative_value():
    x = tg.param("x", shape=(3,))
    logged = tg.log(x, name="log x")
    program = tg.compile(tg.sum(tg.square(logged)), wrt=[x])
    with tg.check_finite(), pytest.raises(tg.NonFiniteError) as caught, np.errstate(invalid="ignore"):
        program.value_and_grad({"x": np.array([1.0, -2.0, 3.0])})
    message = str(caught.value)
    assert message == (
        "forward instruction 0 (log, from log x) produced f64[3] [0, nan, 1.09861]:\n"
        "  0  s2:f64[3]          = log s0                              # %1 log x\n"
        "  operand 0 (s0, %0): f64[3] [1, -2, 3]")
    assert isinstance(caught.value, FloatingPointError)


def test_check_mode_catches_infinity_in_the_reverse_pass_and_in_sgd_steps():
    x = tg.param("x", shape=(2,))
    program = tg.compile(tg.sum(tg.log(x)), wrt=[x])
    with np.errstate(divide="ignore"), tg.check_finite():
        with pytest.raises(tg.NonFiniteError, match=r"^forward instruction 0 \(log"):
            program.value_and_grad({"x": np.array([0.0, 1.0])})
        with pytest.raises(tg.NonFiniteError, match=r"^forward instruction 0 \(log"):
            tg.sgd(program, 0.1)({"x": np.array([0.0, 1.0])})
    y = tg.param("y", shape=())
    program = tg.compile(tg.exp(y * 1000.0) * 0.0 + y, wrt=[y])
    with np.errstate(over="ignore", invalid="ignore"), tg.check_finite(), pytest.raises(tg.NonFiniteError) as caught:
        program.value_and_grad({"y": np.array(1.0)})
    assert "exp" in str(caught.value) and "inf" in str(caught.value)


def test_check_mode_is_off_by_default_and_its_tests_are_not_in_the_fast_code():
    x = tg.param("x", shape=(2,))
    program = tg.compile(tg.sum(tg.log(x)), wrt=[x])
    with np.errstate(invalid="ignore"):
        value, _ = program.value_and_grad({"x": np.array([-1.0, 1.0])})
    assert np.isnan(value)
    executable = program._value_and_grad_plan().last
    assert "isfinite" not in executable.source()
    assert "isfinite" in executable.source(check=True)
    with tg.check_finite(False):
        with np.errstate(invalid="ignore"):
            assert np.isnan(program.value_and_grad({"x": np.array([-1.0, 1.0])})[0])


def test_check_mode_passes_finite_runs_and_gives_the_same_results(rng):
    program = hw.multiclass(batch=True)
    params = hw.random_params(program, rng)
    inputs = {"x": rng.standard_normal((5, 2)), "y": rng.integers(0, 3, size=5)}
    value, grads = program.value_and_grad(params, inputs)
    with tg.check_finite():
        checked_value, checked_grads = program.value_and_grad(params, inputs)
    assert checked_value == value
    for name in grads:
        np.testing.assert_array_equal(checked_grads[name], grads[name])


# ---------------------------------------------------------------- specialisations


def test_specializations_list_their_kind_sizes_and_the_shapes_that_keyed_them(caplog):
    program = hw.ridge(num_features=3, batch=True)
    params = {"w": np.ones(3), "b": np.array(0.0)}
    with caplog.at_level(logging.INFO, logger="tapegraph"):
        program.value_and_grad(params, {"x": np.ones((4, 3)), "y": np.zeros(4)})
        program.value_and_grad(params, {"x": np.ones((4, 3)), "y": np.zeros(4)})
        tg.sgd(program, 0.5)(params, {"x": np.ones((2, 3)), "y": np.zeros(2)})
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        "tapegraph: specialised value_and_grad to batch=4",
        "tapegraph: specialised sgd to batch=2",
    ]
    entries = program.specializations()
    assert [(entry.kind, entry.sizes, entry.shapes) for entry in entries] == [
        ("value_and_grad", {"batch": 4}, {"x": (4, 3), "y": (4,)}),
        ("sgd", {"batch": 2}, {"x": (2, 3), "y": (2,)}),
    ]
    assert all(entry.instructions > 0 and entry.bytes > 0 for entry in entries)


def test_no_new_specializations_refuses_a_new_batch_size_and_allows_cached_ones():
    program = hw.ridge(num_features=3, batch=True)
    params = {"w": np.ones(3), "b": np.array(0.0)}
    program.value_and_grad(params, {"x": np.ones((4, 3)), "y": np.zeros(4)})
    with tg.no_new_specializations():
        program.value_and_grad(params, {"x": np.ones((4, 3)), "y": np.zeros(4)})
        with pytest.raises(tg.SpecializationError, match=r"^value_and_grad would specialise to batch=3 inside "
                                                         r"no_new_specializations\(\); cached: batch=4$"):
            program.value_and_grad(params, {"x": np.ones((3, 3)), "y": np.zeros(3)})
    program.value_and_grad(params, {"x": np.ones((3, 3)), "y": np.zeros(3)})
    assert sorted(entry.sizes["batch"] for entry in program.specializations()) == [3, 4]


def test_the_oldest_specialisation_is_dropped_beyond_the_limit():
    x = tg.input("x", shape=("batch", 2))
    program = tg.compile(tg.sum(tg.square(x)))
    sizes = range(1, tg.program.MAX_SPECIALIZATIONS + 3)
    for size in sizes:
        assert program.run({}, {"x": np.ones((size, 2))})["objective"] == 2.0 * size
    kept = [entry.sizes["batch"] for entry in program.specializations()]
    assert kept == list(sizes)[2:]
    assert program.run({}, {"x": np.ones((1, 2))})["objective"] == 2.0  # made again


@pytest.mark.parametrize("given, described", [
    (np.array([1.0, 2.0, 3.0], dtype=np.float32), "an array of f32[3]"),
    ([1.0, 2.0, 3.0], "list"),
    (np.ones(3)[::-1].copy().view(), None),
])
def test_donating_needs_writable_arrays_of_the_declared_type(given, described):
    program = hw.ridge(num_features=3)
    step = tg.sgd(program, 0.1, donate=True)
    inputs = {"x": np.ones(3), "y": np.array(1.0)}
    if described is None:  # a read-only array
        given.setflags(write=False)
        described = "a read-only array"
    with pytest.raises(tg.CallError, match=r"^donate=True updates parameters in place, so 'w' must be a writable numpy "
                                           rf"array of f64\[3\]; got {re.escape(described)}$"):
        step({"w": given, "b": np.array(0.0)}, inputs)


def test_a_feed_not_read_in_place_is_copied_into_its_slot_first(rng):
    import attrs
    from tapegraph.backends import get_backend
    from tapegraph.compile.tape import check_tape
    program = hw.ridge(num_features=3)
    params = hw.random_params(program, rng)
    inputs = {"x": rng.standard_normal(3), "y": np.array(0.5)}
    value, grads = program.value_and_grad(params, inputs)
    tape = program.tape()
    copied = attrs.evolve(tape, feeds=tuple(attrs.evolve(feed, in_place=False) if feed.name == "w" else feed
                                            for feed in tape.feeds))
    check_tape(copied)
    order = [feed.name for feed in tape.feeds]
    executable = get_backend("numpy").bind(copied, order)
    slot = next(feed.slot for feed in tape.feeds if feed.name == "w")
    assert f"np.copyto(s{slot}, w)" in executable.source()
    feeds = {**params, **inputs}
    given = feeds["w"].copy()
    computed_value, *computed = executable.function()(*[feeds[name] for name in order])
    assert computed_value == value
    for (name, gradient), array in zip(grads.items(), computed):
        np.testing.assert_array_equal(array, gradient, err_msg=name)
    np.testing.assert_array_equal(feeds["w"], given)


def test_raw_results_come_back_as_computed():
    from tapegraph.backends import get_backend
    from tapegraph.compile.lower import lower
    w = tg.param("w", shape=(2,))
    total = tg.sum(tg.square(w))
    tape = lower([("total", total, "forward"), ("w", w, "forward"), ("double", w * 2.0, "forward")], {})
    assert [how.kind for how in tape.returns.values()] == ["raw", "raw", "raw"]
    given = np.array([1.0, 2.0])
    computed_total, same, double = get_backend("numpy").bind(tape, ["w"]).function()(given)
    assert isinstance(computed_total, float) and computed_total == 5.0  # held as a number, not a 0-d array
    assert same is given  # the feed itself, read in place
    np.testing.assert_array_equal(double, [2.0, 4.0])


def test_views_of_buffers_are_made_with_each_buffer_set(rng):
    """The outer products of a per-example backward pass read column and row
    views of buffers (``s3_column``) made once per buffer set: every set,
    the first and any allocated for a concurrent call, holds views of its
    own buffers, and the standalone source makes them too."""
    program = hw.multiclass()
    step = tg.sgd(program, 0.1)
    params = hw.random_params(program, rng)
    inputs = {"x": rng.normal(size=2), "y": np.int64(1)}
    expected, _ = step(params, inputs)
    executable = step._plan.last
    assert re.search(r"\bs\d+_column\.dot\(", executable.source())
    (first,) = executable.buffer_sets()
    fresh = executable.allocate()
    views = [name for name in first if name.endswith(("_column", "_row"))]
    assert views
    for arrays in (first, fresh):
        for name in views:
            assert arrays[name].base is arrays[name.rsplit("_", 1)[0]]
    # a call that finds every set in use computes with a fresh one
    pool = executable._pools[False]
    taken = pool.free.pop()
    try:
        again, _ = step(params, inputs)
    finally:
        pool.free.append(taken)
    for name in expected:
        np.testing.assert_array_equal(again[name], expected[name])
    # the standalone source (run by the test above) defines them after the buffers
    assert re.search(r"\n    s\d+_(column|row) = s\d+\[", program.source())
