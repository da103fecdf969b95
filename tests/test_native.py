"""The native (numba) backend agrees with the numpy backend.

Registry-driven: every registered op and composite (on its samples),
every optimizer, the random differential graphs and the homework models
run on both backends and must agree to rounding. numba's compile time
adds up, so programs are shared across tests (module-scoped fixtures),
shapes are small, and the op samples are compiled as one program.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import tapegraph as tg  # noqa: E402
from tapegraph.backends import native  # noqa: E402
from tapegraph.errors import MissingExtraError, OpError, TapeError  # noqa: E402
from tapegraph.ops import COMPOSITES, REGISTRY, Arg, Op, Sample  # noqa: E402
from tapegraph.testing import build_node  # noqa: E402

from conftest import draw  # noqa: E402

CASES = [(name, op, index, sample) for name, op in {**REGISTRY, **COMPOSITES}.items()
         for index, sample in enumerate(op.samples)]


def _close(actual, expected, what: str, rtol: float = 1e-12) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, \
        f"{what}: {actual.dtype}{actual.shape} != {expected.dtype}{expected.shape}"
    tolerance = rtol if actual.dtype == np.float64 else 1e-6
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    assert np.allclose(actual, expected, rtol=tolerance, atol=tolerance * scale, equal_nan=True), \
        f"{what}: native {actual} != numpy {expected}"


def _both(objective, wrt, outputs=None):
    return (tg.compile(objective, wrt=wrt, outputs=outputs),
            tg.compile(objective, wrt=wrt, outputs=outputs, backend="native"))


def _samples_program(name: str):
    """Every sample of one op or composite in one objective: (programs, params, inputs).

    One program per op: numba's compile time grows faster than the code,
    so small functions compile sooner in all than one large one.
    """
    rng = np.random.default_rng(7)
    objective = None
    wrt, params, inputs = [], {}, {}
    for _, op, index, sample in [case for case in CASES if case[0] == name]:
        nodes = []
        for position, arg in enumerate(sample.args):
            label = f"{name}_{index}_{position}"
            value = draw(arg, rng)
            if np.dtype(arg.dtype).kind in "iub":  # labels, indices and conditions are fed
                nodes.append(tg.input(label, shape=arg.shape, dtype=arg.dtype))
                inputs[label] = value
            else:
                node = tg.param(label, shape=arg.shape, dtype=arg.dtype)
                nodes.append(node)
                wrt.append(node)
                params[label] = value
        result = build_node(op, nodes, sample.static)
        if result.dtype == "bool":  # a comparison: as numbers, through where
            result = tg.where(result, 1.0, 0.0)
        # random weights, so that every entry of the result reaches the objective differently
        weights = tg.const(rng.uniform(0.5, 1.5, size=result.shape).astype(result.dtype))
        term = tg.sum(tg.cast(result * weights, dtype="float64"))
        objective = term if objective is None else objective + term
    return _both(objective, wrt), params, inputs


def test_every_registered_op_declares_a_native_form():
    missing = [name for name, op in REGISTRY.items() if op.native is None]
    assert not missing, f"ops without a native form (Op.native): {missing}"


@pytest.mark.parametrize("name", list({**REGISTRY, **COMPOSITES}))
def test_every_op_and_composite_runs_natively_as_on_numpy(name):
    (numpy_program, native_program), params, inputs = _samples_program(name)
    value, grads = numpy_program.value_and_grad(params, inputs)
    native_value, native_grads = native_program.value_and_grad(params, inputs)
    _close(native_value, value, f"{name}: objective")
    for key in grads:
        _close(native_grads[key], grads[key], f"{name}: gradient of {key}")


def test_numpys_edge_values_natively():
    x = tg.param("x", shape=(4,))
    z = tg.param("z", shape=(4,))
    objective = tg.sum(tg.log(x) + tg.div(1.0, z) + tg.sqrt(x))
    numpy_program, native_program = _both(objective, [x, z])
    params = {"x": np.array([1.0, -1.0, 0.0, 2.0]), "z": np.array([0.0, -0.0, 1.0, 2.0])}
    with np.errstate(all="ignore"):
        expected = numpy_program.run(params)["objective"]
    assert np.isnan(expected)
    assert np.isnan(native_program.run(params)["objective"])
    single = tg.param("s", shape=())
    numpy_single, native_single = _both(tg.log(single) + 1.0 / single, [single])
    with np.errstate(all="ignore"):
        assert numpy_single.run({"s": 0.0})["objective"] == native_single.run({"s": 0.0})["objective"] or \
            np.isnan(native_single.run({"s": 0.0})["objective"])


def test_an_op_without_a_native_form_is_refused_naming_it():
    def _twice_kernel(x, out):
        np.multiply(x, 2.0, out=out)
    twice = tg.register_op(Op(name="twice_no_native", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype),
                              kernel=_twice_kernel, vjp=lambda g, ans, x: (g * 2.0,),
                              samples=[Sample([Arg((3,))])]))
    x = tg.param("x", shape=(3,))
    program = tg.compile(tg.sum(twice(x)), wrt=[x], backend="native")
    with pytest.raises(OpError, match="twice_no_native.*no native form"):
        program.run({"x": np.ones(3)})


def test_a_user_op_with_a_native_form_runs_natively():
    def _thrice_kernel(x, out):
        np.multiply(x, 3.0, out=out)
    thrice = tg.register_op(Op(name="thrice_native", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype),
                               kernel=_thrice_kernel, vjp=lambda g, ans, x: (g * 3.0,), native="3.0 * {0}",
                               samples=[Sample([Arg((3,))])]))
    x = tg.param("x", shape=(3,))
    value, grads = tg.compile(tg.sum(thrice(x)), wrt=[x], backend="native").value_and_grad({"x": np.ones(3)})
    assert value == 9.0
    np.testing.assert_array_equal(grads["x"], [3.0, 3.0, 3.0])


def test_without_numba_the_native_backend_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_numba)
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    x = tg.param("x", shape=(2,))
    with pytest.raises(MissingExtraError, match=r"tapegraph\[native\]"):
        tg.compile(tg.sum(x), wrt=[x], backend="native")
    # nothing else changes
    assert tg.compile(tg.sum(x), wrt=[x]).run({"x": np.ones(2)})["objective"] == 2.0


# Optimizers and epochs.

def _ridge(features: int = 6):
    x = tg.input("x", shape=("batch", features))
    y = tg.input("y", shape=("batch",))
    w = tg.param("w", shape=(features,))
    b = tg.param("b")
    prediction = tg.matmul(x, w) + b
    objective = tg.mean(tg.square(prediction - y)) + 0.1 * tg.sum_squares(w)
    return _both(objective, [w, b], {"prediction": prediction})


@pytest.fixture(scope="module")
def ridge():
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=6) * 0.1, "b": np.array(0.2)}
    data = {"x": rng.normal(size=(23, 6)), "y": rng.normal(size=23)}
    return _ridge(), params, data


OPTIMIZERS = {
    "sgd": lambda p: tg.sgd(p, step_size=0.05),
    "sgd weight_decay": lambda p: tg.sgd(p, step_size=0.05, weight_decay=0.01),
    "sgd donated": lambda p: tg.sgd(p, step_size=0.05, donate=True),
    "momentum": lambda p: tg.sgd(p, step_size=0.05, momentum=0.9),
    "nesterov schedule": lambda p: tg.sgd(p, step_size=lambda count: 0.05 / (1 + count), momentum=0.5,
                                          nesterov=True),
    "adam": lambda p: tg.adam(p, learning_rate=0.01),
    "adamw donated": lambda p: tg.adamw(p, learning_rate=0.01, donate=True),
    "rmsprop": lambda p: tg.rmsprop(p, learning_rate=0.01, weight_decay=0.01),
}


def _params_of(state):
    return state if isinstance(state, dict) else state.params


def _copy(params):
    return {name: np.array(value, copy=True) for name, value in params.items()}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_steps_and_runs_epochs_natively_as_on_numpy(ridge, name):
    (numpy_program, native_program), params, data = ridge
    results = []
    for program in (numpy_program, native_program):
        optimizer = OPTIMIZERS[name](program)
        state = optimizer.init(_copy(params))
        state, value = optimizer(state, {"x": data["x"][:4], "y": data["y"][:4]})
        state, values = optimizer.epoch(state, data, order=tg.shuffled(23, seed=1), batch_size=5)
        results.append((value, values, _params_of(state), getattr(state, "slots", {})))
    (value, values, new_params, slots), (native_value, native_values, native_params, native_slots) = results
    _close(native_value, value, "first step's objective")
    _close(native_values, values, "epoch objectives")
    for key in new_params:
        _close(native_params[key], new_params[key], f"parameter {key}")
    for slot in slots:
        for key in slots[slot]:
            _close(native_slots[slot][key], slots[slot][key], f"slot {slot} of {key}")


def test_a_native_epoch_is_pure_and_a_donated_one_updates_in_place(ridge):
    (_, native_program), params, data = ridge
    given = _copy(params)
    before = _copy(given)
    step = tg.sgd(native_program, step_size=0.05)
    first, _ = step.epoch(given, data, batch_size=4)
    for key in given:
        np.testing.assert_array_equal(given[key], before[key])
    second, _ = step.epoch(given, data, batch_size=4)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
        assert first[key] is not second[key]
    donated = _copy(params)
    step = tg.sgd(native_program, step_size=0.05, donate=True)
    result, _ = step.epoch(donated, data, batch_size=4)
    for key in donated:
        assert result[key] is donated[key]
        np.testing.assert_array_equal(donated[key], first[key])
    with pytest.raises(tg.CallError if hasattr(tg, "CallError") else ValueError, match="writable"):
        frozen = _copy(params)
        frozen["w"].setflags(write=False)
        step.epoch(frozen, data, batch_size=4)


def test_native_run_results_are_new_arrays_never_overwritten(ridge):
    (_, native_program), params, data = ridge
    inputs = {"x": data["x"][:3], "y": data["y"][:3]}
    first = native_program.run(params, inputs)
    kept = first["prediction"].copy()
    _, grads = native_program.value_and_grad(params, inputs)
    native_program.run(params, {"x": data["x"][3:6], "y": data["y"][3:6]})
    np.testing.assert_array_equal(first["prediction"], kept)
    assert grads["w"] is not params["w"]


def _classifier():
    x = tg.input("x", shape=("batch", 2))
    y = tg.input("y", shape=("batch",), dtype="int64")
    W = tg.param("W", shape=(3, 2))
    objective = tg.mean(tg.cross_entropy(tg.matmul(x, W, transpose_b=True), y))
    return _both(objective, [W])


def test_a_bad_label_in_the_data_is_refused_before_any_step_runs():
    numpy_program, native_program = _classifier()
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(10, 2)), "y": np.array([0, 1, 2, 0, 1, 2, 7, 0, 1, 2])}
    params = {"W": np.zeros((3, 2))}
    step = tg.sgd(native_program, step_size=0.1, donate=True)
    with pytest.raises(TapeError, match=r"step 3 \(rows \[6, 7\]\), refused before the epoch's first step ran: "
                       r"forward instruction \d+ failed \(IndexError: label 7 at index \(0,\) is outside 0\.\.2\)"):
        step.epoch(params, data, batch_size=2)
    np.testing.assert_array_equal(params["W"], np.zeros((3, 2)))  # no step ran
    with pytest.raises(TapeError, match=r"forward instruction \d+ failed \(IndexError: label 7"):
        native_program.run(params, {"x": data["x"][5:7], "y": data["y"][5:7]})


def test_check_finite_names_the_instruction_on_native_programs():
    x = tg.param("x", shape=(2,))
    program = tg.compile(tg.sum(tg.log(x, name="log x")), wrt=[x], backend="native")
    with tg.check_finite():
        with pytest.raises(tg.errors.NonFiniteError, match="forward instruction 0 \\(log, from log x\\)"):
            program.value_and_grad({"x": np.array([1.0, -1.0])})


def test_stacks_of_matrices_at_blas_sizes_agree():
    # one BLAS product per matrix of the batch, broadcasting a size-1 batch axis
    a = tg.param("a", shape=(2, 1, 8, 8))
    b = tg.param("b", shape=(3, 64, 8))
    product = tg.matmul(a, b, transpose_b=True)
    numpy_program, native_program = _both(tg.sum(product * product), [a, b])
    rng = np.random.default_rng(3)
    params = {"a": rng.normal(size=(2, 1, 8, 8)), "b": rng.normal(size=(3, 64, 8))}
    assert "np.dot(" in native_program.source(backend="native")
    value, grads = numpy_program.value_and_grad(params)
    native_value, native_grads = native_program.value_and_grad(params)
    _close(native_value, value, "objective")
    for key in grads:
        _close(native_grads[key], grads[key], f"gradient of {key}")


def test_long_inner_sums_in_lanes_agree():
    # A @ v and a @ b.T with a long inner index: sums in lanes (ops.native.lane_sum), with a remainder
    A = tg.param("A", shape=(3, 300))
    v = tg.param("v", shape=(300,))
    x = tg.input("x", shape=("batch", 200))
    W = tg.param("W", shape=(4, 200))
    objective = tg.sum(tg.square(tg.matmul(A, v))) + tg.sum(tg.square(tg.matmul(x, W, transpose_b=True)))
    numpy_program, native_program = _both(objective, [A, v, W])
    assert "_lanes" in native_program.source(backend="native", sizes={"batch": 5})
    rng = np.random.default_rng(4)
    params = {"A": rng.normal(size=(3, 300)), "v": rng.normal(size=300), "W": rng.normal(size=(4, 200))}
    inputs = {"x": rng.normal(size=(5, 200))}
    value, grads = numpy_program.value_and_grad(params, inputs)
    native_value, native_grads = native_program.value_and_grad(params, inputs)
    _close(native_value, value, "objective")
    for key in grads:
        _close(native_grads[key], grads[key], f"gradient of {key}")


def _mlp_epoch_source_and_result(features: int):
    """The native epoch source of a per-example MLP's SGD step, and its parameters after one epoch."""
    x = tg.input("x", shape=("batch", features))
    y = tg.input("y", shape=("batch",))
    W1 = tg.param("W1", shape=(10, features))
    b1 = tg.param("b1", shape=(10,))
    w2 = tg.param("w2", shape=(10,))
    hidden = tg.tanh(tg.matmul(x, W1, transpose_b=True) + b1)
    objective = tg.mean(tg.square(tg.matmul(hidden, w2) - y))
    step = tg.sgd(tg.compile(objective, wrt=[W1, b1, w2], backend="native"), step_size=0.01)
    rng = np.random.default_rng(5)
    params = {"W1": rng.normal(size=(10, features)) / features, "b1": rng.normal(size=10), "w2": rng.normal(size=10)}
    data = {"x": rng.normal(size=(30, features)), "y": rng.normal(size=30)}
    new_params, values = step.epoch(params, data, batch_size=1)
    tape = tg.sgd(step.program, step_size=0.01, donate=True).tape({"batch": 1})  # what an epoch runs
    text = native.NativeExecutable(tape, [feed.name for feed in tape.feeds])._epoch_source(None, ("step_size",))
    return text, new_params, values, step.dump({"batch": 1})


def test_a_result_read_once_elementwise_is_computed_in_its_readers_loop_with_the_same_values(monkeypatch):
    fused_text, fused_params, fused_values, fused_dump = _mlp_epoch_source_and_result(40)
    # W1's gradient, an outer product (a matmul with inner size 1), is
    # computed in the update's loop over W1 instead of stored and loaded
    assert "fused into" in fused_text
    update = [line for line in fused_text.split("\n") if "update sub" in line and "W1" in line][0]
    assert "(computes %" in update
    assert "= W1[" in fused_text.split(update)[1].split("\n")[3]
    monkeypatch.setattr(native, "FUSE_ENTRIES", False)
    text, params, values, dump = _mlp_epoch_source_and_result(40)
    assert "fused into" not in text and "computes %" not in text
    assert dump == fused_dump  # the tape is the same; only its translation differs
    np.testing.assert_array_equal(fused_values, values)  # bit for bit
    for name in params:
        np.testing.assert_array_equal(fused_params[name], params[name])


def test_a_result_read_twice_or_returned_is_stored_not_fused():
    x = tg.param("x", shape=(5,))
    hidden = tg.tanh(x)
    shifted = hidden + 1.0
    outputs = {"hidden": hidden, "scaled": 2.0 * shifted}
    program = tg.compile(tg.sum(shifted * shifted), wrt=[x], outputs=outputs, backend="native")
    gradient_text = program.source(backend="native")
    for line in gradient_text.split("\n"):
        if "forward add" in line:  # shifted is read twice (the product, and its gradient)
            assert "fused into" not in line
    run_text = program.source("run", backend="native")
    assert "fused into" not in run_text  # tanh is returned; shifted is read twice
    rng = np.random.default_rng(6)
    numpy_program = tg.compile(tg.sum(shifted * shifted), wrt=[x], outputs=outputs)
    params = {"x": rng.normal(size=5)}
    expected, actual = numpy_program.run(params), program.run(params)
    for name in expected:
        _close(actual[name], expected[name], name)


def test_fed_indices_out_of_bounds_are_refused_as_on_numpy_before_any_step_runs():
    x = tg.param("x", shape=(4, 3))
    indices = tg.input("i", shape=("batch",), dtype="int64")
    numpy_program, native_program = _both(tg.sum(tg.take(x, indices, 0)), [x])
    params = {"x": np.arange(12.0).reshape(4, 3)}
    bad = {"i": np.array([0, -4, 4])}
    with pytest.raises(TapeError) as expected:
        numpy_program.run(params, bad)
    with pytest.raises(TapeError) as refused:
        native_program.run(params, bad)
    assert str(refused.value) == str(expected.value)
    assert "index 4 at position (2,) of indices is out of bounds for axis 0 of size 4" in str(refused.value)
    step = tg.sgd(native_program, step_size=0.1, donate=True)
    with pytest.raises(TapeError, match=r"step 2 \(rows \[4, 5\]\), refused before the epoch's first step ran: "
                       r"forward instruction \d+ failed \(IndexError: index 9 at position \(0,\)"):
        step.epoch(params, {"i": np.array([0, 1, 2, 3, 9, 1])}, batch_size=2)
    np.testing.assert_array_equal(params["x"], np.arange(12.0).reshape(4, 3))  # no step ran



def test_source_and_dump_say_native():
    x = tg.param("x", shape=(3,))
    program = tg.compile(tg.sum(tg.tanh(x)), wrt=[x], backend="native")
    text = program.source(backend="native")
    assert "@numba.njit(" in text and "np.tanh(" in text and "def step(" in text
    assert "native backend" in program.dump()
    assert "native backend" not in tg.compile(tg.sum(tg.tanh(x)), wrt=[x]).dump()


def test_generated_modules_are_cached_in_the_folder_the_environment_names(tmp_path):
    script = ("import numpy as np, tapegraph as tg\n"
              "x = tg.param('x', shape=(3,))\n"
              "print(tg.compile(tg.sum(tg.exp(x)), wrt=[x], backend='native').run({'x': np.zeros(3)})['objective'])\n")
    environment = {**os.environ, "TAPEGRAPH_CACHE_DIR": str(tmp_path)}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "3.0"
    modules = list((tmp_path / "native").glob("tapegraph_native_step_*.py"))
    assert len(modules) == 1
    assert list((tmp_path / "native" / "__pycache__").glob("*.nbi")), "numba cached no machine code"
    assert native.cache_dir() != str(tmp_path / "native") or os.environ.get("TAPEGRAPH_CACHE_DIR") == str(tmp_path)


# The homework models: a native epoch equals the numpy epoch.

@pytest.mark.parametrize("model, batch, features", [("ridge", None, 40), ("mlp", None, None), ("multiclass", None, None),
                                                     ("mlp", 4, None), ("mlp", None, 400)])
def test_a_native_epoch_equals_the_numpy_epoch_on_the_homework_models(model, batch, features):
    from models import catalog
    program, params, _ = catalog.build(model, num_features=features)
    spec = catalog.MODELS[model]
    X, y = spec.data(features or spec.num_features)
    data = {"x": X[:60], "y": y[:60]}
    native_program = tg.compile(program.objective, wrt=program.wrt, outputs=program.outputs, backend="native")
    order = tg.shuffled(60, seed=5)
    results = []
    for each in (program, native_program):
        step = tg.sgd(each, step_size=spec.make().step_size if hasattr(spec.make(), "step_size") else 0.01)
        results.append(step.epoch(_copy(params), data, order=order, batch_size=batch or 1))
    (expected, values), (actual, native_values) = results
    _close(native_values, values, f"{model} epoch objectives")
    for key in expected:
        _close(actual[key], expected[key], f"{model} parameter {key}")


# The random differential graphs (tests/strategies.py).

#: Drawn graphs per run: each is a few numba compilations.
DIFFERENTIAL_EXAMPLES = int(os.environ.get("TAPEGRAPH_NATIVE_EXAMPLES", "6"))


def _differential_settings():
    from hypothesis import HealthCheck, settings
    return settings(max_examples=DIFFERENTIAL_EXAMPLES, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _draw_and_compare(data):
    from hypothesis import strategies as st
    from strategies import FOCUS_OPS, graphs
    focus = data.draw(st.sampled_from(FOCUS_OPS), label="focus")
    graph = data.draw(graphs(focus), label="graph")
    numpy_program, native_program = _both(graph.objective, graph.wrt, graph.outputs)
    for size in graph.batch_sizes:
        params, inputs = graph.data(size)
        params = {name: params[name] for name in numpy_program.params}
        inputs = {name: inputs[name] for name in numpy_program.inputs}
        rtol = 1e-12 if graph.precision == "float64" else 1e-6
        expected, actual = numpy_program.run(params, inputs), native_program.run(params, inputs)
        for name in expected:
            _close(actual[name], expected[name], f"{focus} graph, batch {size}: run {name}", rtol)
        value, grads = numpy_program.value_and_grad(params, inputs)
        native_value, native_grads = native_program.value_and_grad(params, inputs)
        _close(native_value, value, f"{focus} graph, batch {size}: objective", rtol)
        for name in grads:
            _close(native_grads[name], grads[name], f"{focus} graph, batch {size}: gradient of {name}", rtol)


def test_random_differential_graphs_agree_on_both_backends():
    from hypothesis import given
    from hypothesis import strategies as st
    _differential_settings()(given(data=st.data())(_draw_and_compare))()


def test_a_feed_returned_as_a_result_is_a_copy_the_caller_owns():
    scores = tg.input("scores", shape=(3,))
    program = tg.compile(tg.sum(scores), outputs={"same": scores}, backend="native")
    given = np.array([1.0, 2.0, 3.0])
    result = program.run({}, {"scores": given})
    assert result["same"] is not given and not np.shares_memory(result["same"], given)
    np.testing.assert_array_equal(result["same"], given)


def test_the_main_job_trains_natively_with_the_same_figures(tmp_path, capsys):
    from models.__main__ import main
    tables = {}
    for backend in ("native", "numpy"):
        assert main(["ridge-0", "--quick", "--backend", backend, "--out", str(tmp_path / backend)]) == 0
        out = capsys.readouterr().out
        assert f"training on the {backend} backend" in out
        log = [line.split("  [")[0] for line in out.splitlines() if line.startswith("Epoch ")]
        # every column of the table but the time per epoch
        table = [line.rsplit(None, 1)[0] for line in (tmp_path / backend / "summary.txt").read_text().splitlines()[2:3]]
        tables[backend] = (log, table)
    assert tables["native"] == tables["numpy"]


def test_native_calls_from_several_threads_share_no_buffers(ridge):
    import concurrent.futures
    (numpy_program, native_program), params, data = ridge
    batches = [{"x": data["x"][start:start + 3], "y": data["y"][start:start + 3]} for start in range(0, 18, 3)]
    expected = [numpy_program.value_and_grad(params, batch) for batch in batches]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda batch: native_program.value_and_grad(params, batch), batches * 4))
    for index, (value, grads) in enumerate(results):
        want_value, want_grads = expected[index % len(batches)]
        _close(value, want_value, f"thread call {index}: objective")
        for name in want_grads:
            _close(grads[name], want_grads[name], f"thread call {index}: gradient of {name}")


# Program.map: one native call over the whole data set.

@pytest.fixture(scope="module")
def per_example_classifier():
    """A per-example classifier (an integer label per row) on both backends, its parameters and data."""
    x = tg.input("x", shape=(2,))
    y = tg.input("y", shape=(), dtype="int64")
    W = tg.param("W", shape=(3, 2))
    scores = tg.matmul(W, x)
    programs = _both(tg.cross_entropy(scores, y), [W], {"scores": scores, "probabilities": tg.softmax(scores)})
    rng = np.random.default_rng(4)
    params = {"W": rng.normal(size=(3, 2))}
    data = {"x": rng.normal(size=(9, 2)), "y": rng.integers(0, 3, size=9)}
    return programs, params, data


def _runs_of(program, params, data, outputs, batch=None):
    """The loop ``map`` means: ``run`` on each row (or batch), stacked."""
    count = len(next(iter(data.values())))
    if batch is None:
        runs = [program.run(params, {name: array[row] for name, array in data.items()}, outputs=outputs)
                for row in range(count)]
        return {name: np.stack([np.asarray(run[name]) for run in runs]) for name in outputs}
    runs = [program.run(params, {name: array[start:start + batch] for name, array in data.items()}, outputs=outputs)
            for start in range(0, count, batch)]
    return {name: np.concatenate([run[name] for run in runs]) for name in outputs}


def test_a_native_per_example_map_is_one_call_equal_to_numpy_and_to_its_runs(per_example_classifier, monkeypatch):
    (numpy_program, native_program), params, data = per_example_classifier
    outputs = ("objective", "scores", "probabilities")
    expected = numpy_program.map(params, data)
    calls = []
    original = native.NativeExecutable.map
    monkeypatch.setattr(native.NativeExecutable, "map",
                        lambda self, *arguments: calls.append(arguments[3]) or original(self, *arguments))
    mapped = native_program.map(params, data)
    assert calls == [9]  # one native call, of all nine rows
    assert set(mapped) == set(outputs)
    loop = _runs_of(native_program, params, data, outputs)
    for name in outputs:
        _close(mapped[name], expected[name], f"map {name}")
        np.testing.assert_array_equal(mapped[name], loop[name])  # the same code, row by row
    assert mapped["scores"].shape == (9, 3) and mapped["objective"].dtype == np.float64


@pytest.mark.parametrize("batch", [None, 5, 23, 40])
def test_a_native_batched_map_equals_numpy_and_its_runs_with_a_shorter_last_batch(ridge, batch):
    (numpy_program, native_program), params, data = ridge
    expected = numpy_program.map(params, data, batch_size=batch)
    mapped = native_program.map(params, data, batch_size=batch)
    loop = _runs_of(native_program, params, data, ("prediction",), batch or 23)
    assert set(mapped) == {"prediction"} and mapped["prediction"].shape == (23,)
    _close(mapped["prediction"], expected["prediction"], "map prediction")
    np.testing.assert_array_equal(mapped["prediction"], loop["prediction"])
    inputs = {"x": data["x"][:0], "y": data["y"][:0]}
    assert native_program.map(params, inputs, batch_size=batch)["prediction"].shape == (0,)


def test_a_native_map_refuses_bad_input_as_numpy_does(per_example_classifier, ridge):
    (numpy_classifier, native_classifier), params, data = per_example_classifier
    (numpy_ridge, native_ridge), ridge_params, ridge_data = ridge
    cases = [
        (numpy_classifier, native_classifier, params, {"x": data["x"], "y": data["y"][:4]}, {}),
        (numpy_classifier, native_classifier, params, {"x": data["x"][:, :1], "y": data["y"]}, {}),
        (numpy_classifier, native_classifier, params, {**data, "z": data["x"]}, {}),
        (numpy_classifier, native_classifier, params, data, {"batch_size": 2}),
        (numpy_classifier, native_classifier, {"W": np.zeros((2, 3))}, data, {}),
        (numpy_classifier, native_classifier, {}, data, {}),
        (numpy_ridge, native_ridge, ridge_params, ridge_data, {"batch_size": 0}),
        (numpy_ridge, native_ridge, ridge_params, ridge_data, {"outputs": ["objective"], "batch_size": 5}),
    ]
    for numpy_program, native_program, given, inputs, options in cases:
        with pytest.raises(tg.errors.TapegraphError) as expected:
            numpy_program.map(given, inputs, **options)
        with pytest.raises(type(expected.value)) as refused:
            native_program.map(given, inputs, **options)
        assert str(refused.value) == str(expected.value)


def test_a_bad_label_in_the_data_of_a_native_map_is_refused_before_any_step_runs(per_example_classifier,
                                                                                 monkeypatch):
    (_, shared), params, data = per_example_classifier
    # fresh programs, whose map is not made yet: refused before it is made, so before any row runs
    numpy_program, native_program = _both(shared.objective, shared.wrt, shared.outputs)
    load = native.load_module
    monkeypatch.setattr(native, "load_module",
                        lambda text, kind: pytest.fail("a native map was made") if kind == "map" else load(text, kind))
    bad = {"x": data["x"], "y": data["y"].copy()}
    bad["y"][6] = 7
    # both name the step and its row; the numpy map gets there row by row
    with pytest.raises(TapeError, match=r"^map: step 6 \(row 6\): forward instruction") as expected:
        numpy_program.map(params, bad)
    with pytest.raises(TapeError, match=r"^map: step 6 \(row 6\), refused before the map's first step ran: "
                       r"forward instruction \d+ failed \(IndexError: label 7") as refused:
        native_program.map(params, bad)
    assert str(refused.value).endswith(str(expected.value).removeprefix("map: step 6 (row 6): "))
    x = tg.input("x", shape=("batch", 2))
    y = tg.input("y", shape=("batch",), dtype="int64")
    W = tg.param("W", shape=(3, 2))
    losses = tg.cross_entropy(tg.matmul(x, W, transpose_b=True), y)
    batched = tg.compile(tg.mean(losses), wrt=[W], outputs={"losses": losses}, backend="native")
    with pytest.raises(TapeError, match=r"^map: step 1 \(rows \[2, 3\]\), refused before the map's first step "
                       r"ran: forward instruction \d+ failed \(IndexError: label 7"):
        batched.map({"W": np.zeros((3, 2))}, {"x": data["x"][:6], "y": np.array([0, 1, 7, 0, 1, 2])}, batch_size=2)
