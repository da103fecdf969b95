"""Differential tests: compiled programs against the reference interpreter.

For random well-typed graphs (``tests/strategies.py``), each centred on one
op or composite of the registry, the compiled program must agree with
``tapegraph.reference`` (plain numpy, node by node, no buffers):

- ``prog.run`` gives the objective and every named output, in float64, to
  within rounding (``RTOL``);
- ``prog.value_and_grad`` gives the same objective, gradients equal to the
  reference's values of the gradient expressions (to within rounding), and
  equal to central differences of the reference objective (``GRAD_RTOL``);
- some graphs are float32, some mixed (float32 and float64 leaves, which
  ops promote with explicit ``cast`` nodes): every gradient and every
  parameter an SGD step returns is an array of the parameter's declared
  dtype and shape (0-d arrays too), compared to float32 rounding
  (``SINGLE_RTOL``), and with central differences of the graph computed
  in float64 (``SINGLE_GRAD_RTOL``);
- leaves are sometimes named like a builtin (``float``), or like the
  generated code's own names (``s0``, ``np``, a kernel function's), which
  must change nothing;
- a donated SGD step given one array for two parameters, or a
  parameter's array (a view of it) as an input, is refused, changing
  nothing;
- calling again, after calls at another batch size, gives bit-identical
  results, and earlier results and the caller's arrays are left as they
  were: buffer reuse leaks no state between calls or sizes.

Graphs with a symbolic ``"batch"`` dimension are run at two batch sizes.
The number of graphs is set by a Hypothesis profile chosen with the
environment variable ``TAPEGRAPH_HYPOTHESIS_PROFILE``:

- ``ci`` (the default): derandomized, so every run draws the same graphs;
  ``CI_EXAMPLES`` per op, a few hundred in all, well under a minute;
- ``thorough``: random, ``THOROUGH_EXAMPLES`` per op (thousands in all),
  for running by hand::

      TAPEGRAPH_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_differential.py -s

With ``-s`` the module prints what it ran: graphs, the ops they held and
the ops of the compiled tapes (gradient ops such as ``sum_to`` and
``unpick`` come from differentiation).
"""

from __future__ import annotations

import collections
import copy
import itertools
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tapegraph as tg
from tapegraph import reference
from tapegraph.ops import COMPOSITES, REGISTRY
from tapegraph.testing import numeric_gradient, relative_errors

import homework_graphs as hw
from strategies import FOCUS_OPS, TRICKY_NAMES, DrawnGraph, graphs, reachable, size_unknown

CI_EXAMPLES = 8
THOROUGH_EXAMPLES = 100

# one failure at a time: each shrinks faster than a batch of them would
_COMMON = {"deadline": None, "print_blob": True, "report_multiple_bugs": False,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=THOROUGH_EXAMPLES, **_COMMON)
PROFILE = os.environ.get("TAPEGRAPH_HYPOTHESIS_PROFILE", "ci")

#: Compiled and reference values differ only by rounding (summation order,
#: vdot against sum of squares), so a real bug is far outside this.
RTOL = 1e-9
#: The SGD step checked against p - step * gradient.
STEP_SIZE = 0.25
#: Central differences against analytic gradients (see tapegraph.testing).
GRAD_RTOL = 1e-6
#: The same two bounds for graphs holding float32 values: compiled and
#: reference then round differently at each float32 op (1.2e-7 each), and
#: the gradients are compared with central differences of the float64
#: value the graph approximates.
SINGLE_RTOL = 1e-4
SINGLE_GRAD_RTOL = 1e-3

#: What the differential tests ran, printed at the end of the module.
STATS: dict[str, collections.Counter] = {
    "graphs": collections.Counter(), "forward ops": collections.Counter(), "tape ops": collections.Counter(),
}


@pytest.fixture(scope="module", autouse=True)
def _print_stats():
    yield
    graph_counts = STATS["graphs"]
    if not graph_counts["graphs"]:
        return
    forward = STATS["forward ops"]
    tape = STATS["tape ops"]
    primitives_seen = sorted(set(forward) & set(REGISTRY))
    lines = [
        f"\ndifferential tests (profile {PROFILE}): {graph_counts['graphs']} graphs "
        f"({graph_counts['batched']} batched, run at two batch sizes), {graph_counts['nodes']} nodes, "
        f"{graph_counts['outputs']} named outputs, {graph_counts['unused params']} parameters unused by the objective",
        f"leaves named like a builtin or the generated code's own names: {graph_counts['builtin or generated-code names']}; "
        f"donated steps refused for aliasing: {graph_counts['aliased parameters refused']} (two parameters), "
        f"{graph_counts['aliased inputs refused']} (a parameter and an input)",
        f"precision: {graph_counts['precision float64']} float64, {graph_counts['precision float32']} float32, "
        f"{graph_counts['precision mixed']} mixed graphs; {graph_counts['float32 params']} float32 parameters",
        f"registered ops in drawn graphs: {len(primitives_seen)}/{len(REGISTRY)}; "
        f"in compiled tapes: {len(set(tape) & set(REGISTRY))}/{len(REGISTRY)}; "
        f"composites drawn: {len(set(graph_counts) & set(COMPOSITES))}/{len(COMPOSITES)}",
        "graphs holding each op: " + ", ".join(f"{op} {count}" for op, count in sorted(forward.items())),
        "tapes holding each op: " + ", ".join(f"{op} {count}" for op, count in sorted(tape.items())),
    ]
    sys.stdout.write("\n".join(lines) + "\n")


# Comparing.

def _assert_close_to(actual, expected, what: str, rtol: float = RTOL) -> None:
    if isinstance(actual, float):  # the objective, a Python float whatever its dtype
        expected = float(expected)
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, reference {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, reference {expected.dtype}"
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    # values that cancel can lose all relative precision: compare those
    # against the size of the values in the same array
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


_assert_close = _assert_close_to


def _assert_identical(first, second, what: str) -> None:
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second), err_msg=what, strict=True)


def _feeds(program: tg.Program, graph: DrawnGraph, batch_size: int | None):
    params, inputs = graph.data(batch_size)
    return ({name: params[name] for name in program.params},
            {name: inputs[name] for name in program.inputs})


def _gradients(program: tg.Program) -> dict[str, tg.Node]:
    return {param.name: gradient for param, gradient in zip(program.wrt, program.gradients)}


def _sizes(program: tg.Program, inputs) -> dict[str, int]:
    """The sizes of symbolic dimensions, read off the inputs as the program does."""
    sizes = {}
    for name, node in program.inputs.items():
        for dim, size in zip(node.shape, np.shape(inputs[name])):
            if isinstance(dim, str):
                sizes[dim] = size
    return sizes


def _numeric_gradients(objective, params, inputs, float_dtype: str | None = None) -> dict[str, np.ndarray]:
    if float_dtype is not None:  # perturbed in float64, computed in float64
        params = {name: np.asarray(array, dtype=float_dtype) for name, array in params.items()}

    def value(trial):
        return float(reference.evaluate(objective, trial, inputs, float_dtype=float_dtype))
    return {name: numeric_gradient(value, params, name) for name in params}


def _assert_declared_type(array, node: tg.Node, what: str) -> None:
    """A gradient or new parameter is an array of the parameter's own dtype and shape (0-d included)."""
    assert type(array) is np.ndarray, f"{what}: a {type(array).__name__}, not a numpy array"
    assert array.dtype == node.dtype and array.shape == node.shape, (
        f"{what}: {array.dtype}{list(array.shape)}, but the parameter is declared {node.type_str}")


def _check_against_reference(program: tg.Program, graph: DrawnGraph, batch_size: int | None) -> dict:
    """One call of ``run`` and of ``value_and_grad`` at one size, checked; returns what they gave."""
    params, inputs = _feeds(program, graph, batch_size)
    given = copy.deepcopy((params, inputs))
    where = f"batch size {batch_size}" if batch_size is not None else "no batch dimension"
    single = graph.single_precision
    rtol, grad_rtol = (SINGLE_RTOL, SINGLE_GRAD_RTOL) if single else (RTOL, GRAD_RTOL)

    def _assert_close(actual, expected, what: str) -> None:
        _assert_close_to(actual, expected, what, rtol)

    outs = program.run(params, inputs)
    outs_then = copy.deepcopy(outs)  # to see that no later call overwrites them
    expected = reference.evaluate({"objective": program.objective, **program.outputs}, params, inputs)
    # a gradient may hold "batch" in a shape but no input (a parameter added to
    # each row has the gradient batch * g), so the sizes come from the objective
    expected_grads = reference.evaluate(_gradients(program), params, inputs, sizes=_sizes(program, inputs))
    assert isinstance(outs["objective"], float)
    for name, value in expected.items():
        _assert_close(outs[name], value, f"run: {name} ({where})")

    value, grads = program.value_and_grad(params, inputs)
    grads_then = copy.deepcopy(grads)
    _assert_close(value, expected["objective"], f"value_and_grad: objective ({where})")
    numeric = _numeric_gradients(program.objective, params, inputs, "float64" if single else None)
    floor = 1e-3 * max(1.0, abs(value))
    for name, gradient in grads.items():
        _assert_declared_type(gradient, program.params[name], f"value_and_grad: gradient of {name} ({where})")
        _assert_close(gradient, expected_grads[name], f"value_and_grad: gradient of {name} ({where})")
        errors = relative_errors(gradient, numeric[name], floor)
        assert errors.size == 0 or errors.max() <= grad_rtol, (
            f"gradient of {name} ({where}) differs from central differences of the reference: "
            f"analytic {gradient}, numeric {numeric[name]}, worst relative error {errors.max():.3g}")

    # the same call in check mode, and as the standalone source of its tape
    with tg.check_finite():
        checked_value, checked_grads = program.value_and_grad(params, inputs)
    _assert_close(checked_value, value, f"check mode: objective ({where})")
    for name, gradient in grads.items():
        _assert_close(checked_grads[name], gradient, f"check mode: gradient of {name} ({where})")
    standalone = _run_source(program, params, inputs)
    _assert_close(standalone["objective"], value, f"prog.source(): objective ({where})")
    for name, gradient in grads.items():
        _assert_close(standalone[f"grad {name}"], gradient, f"prog.source(): gradient of {name} ({where})")
    # an SGD step, returning new arrays or updating donated ones in place
    if program.wrt:
        new_params, step_value = tg.sgd(program, step_size=STEP_SIZE)(params, inputs)
        _assert_close(step_value, expected["objective"], f"sgd: objective ({where})")
        donated = copy.deepcopy(params)
        donated_params, donated_value = tg.sgd(program, step_size=STEP_SIZE, donate=True)(donated, inputs)
        _assert_close(donated_value, expected["objective"], f"sgd, donated: objective ({where})")
        for name, gradient in expected_grads.items():
            updated = params[name] - STEP_SIZE * gradient
            _assert_declared_type(new_params[name], program.params[name], f"sgd: new {name} ({where})")
            _assert_close(new_params[name], updated, f"sgd: new {name} ({where})")
            _assert_close(donated_params[name], updated, f"sgd, donated: new {name} ({where})")
        _check_aliasing_is_refused(program, params, inputs, where)
    # one output alone: its own tape, fed only what it needs (which must give its sizes)
    for name, node in program.outputs.items():
        if size_unknown([node]):
            continue
        needed = reachable([node])
        alone = program.run({key: array for key, array in params.items() if program.params[key] in needed},
                            {key: array for key, array in inputs.items() if program.inputs[key] in needed},
                            outputs=[name])
        _assert_close(alone[name], expected[name], f"run(outputs=[{name!r}]) ({where})")
        break

    for given_arrays, arrays in zip(given, (params, inputs), strict=True):
        for name, before in given_arrays.items():
            _assert_identical(arrays[name], before, f"the caller's array {name!r} was modified ({where})")
    return {"run": outs, "run then": outs_then, "value": value, "grads": grads, "grads then": grads_then}


def _check_aliasing_is_refused(program: tg.Program, params, inputs, where: str) -> None:
    """A donated step given one array for two parameters, or a parameter's
    array also as an input (or a view of it), refuses; nothing is changed."""
    step = tg.sgd(program, step_size=STEP_SIZE, donate=True)
    names = [param.name for param in program.wrt]
    for first, second in itertools.combinations(names, 2):
        if params[first].shape == params[second].shape:
            donated = copy.deepcopy(params)
            donated[second] = donated[first]
            before = donated[first].copy()
            pair = rf"({first!r} and {second!r}|{second!r} and {first!r})"  # named in the tape's feed order
            with pytest.raises(tg.CallError, match=rf"must not share memory: {pair} are the same array"):
                step(donated, inputs)
            _assert_identical(donated[first], before, f"a refused aliased step changed {first!r} ({where})")
            STATS["graphs"]["aliased parameters refused"] += 1
            break
    read_by_the_step = reachable([program.objective])
    for name in names:
        for input_name, array in inputs.items():
            if program.inputs[input_name] in read_by_the_step and array.shape == params[name].shape and array.dtype == params[name].dtype and array.ndim:
                donated = copy.deepcopy(params)
                with pytest.raises(tg.CallError, match=rf"parameter {name!r} and input {input_name!r} share memory"):
                    step(donated, {**inputs, input_name: donated[name][::-1]})
                STATS["graphs"]["aliased inputs refused"] += 1
                return


def _run_source(program: tg.Program, params, inputs) -> dict:
    """Run ``program.source()`` (the value_and_grad tape as a standalone module)."""
    tape = program.tape()
    namespace: dict = {}
    exec(program.source(name="step"), namespace)
    feeds = {**params, **inputs}
    # positionally, in the tape's feed order: a name the generated code uses
    # itself (say, float) is a different identifier in the source
    return namespace["step"](*[feeds[feed.name] for feed in tape.feeds])


def _record(program: tg.Program, graph: DrawnGraph) -> None:
    counts = STATS["graphs"]
    counts["graphs"] += 1
    counts[graph.focus] += 1
    counts["batched"] += graph.batched
    counts["outputs"] += len(graph.outputs)
    counts["nodes"] += len(reachable([program.objective, *program.outputs.values()]))
    used = reachable([program.objective])
    counts["builtin or generated-code names"] += sum(1 for name in graph.leaves if name in TRICKY_NAMES
                                                     or name.rsplit("_", 1)[0] in TRICKY_NAMES)
    counts["unused params"] += sum(1 for param in graph.wrt if param not in used)
    counts[f"precision {graph.precision}"] += 1
    counts["float32 params"] += sum(1 for param in graph.wrt if param.dtype == "float32")
    STATS["forward ops"].update(set(graph.forward_ops()))
    tape_ops = {instruction.op.name for instruction in program.tape().instructions}
    tape_ops |= {instruction.op.name for instruction in program.tape("run").instructions}
    STATS["tape ops"].update(tape_ops)


# The differential test.

@pytest.mark.parametrize("focus", FOCUS_OPS)
@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_compiled_program_matches_the_reference_interpreter(focus, data):
    graph = data.draw(graphs(focus), label="graph")
    if focus in REGISTRY:
        assert focus in graph.forward_ops(), f"the strategy lost its focus op {focus}"
    program = tg.compile(graph.objective, wrt=graph.wrt, outputs=graph.outputs)
    first = {size: _check_against_reference(program, graph, size) for size in graph.batch_sizes}
    # again, after every other call: the same bits, and nothing returned earlier was overwritten
    for size, results in first.items():
        params, inputs = _feeds(program, graph, size)
        outs = program.run(params, inputs)
        value, grads = program.value_and_grad(params, inputs)
        for name, then in results["run then"].items():
            _assert_identical(outs[name], then, f"second run: {name} at batch size {size}")
            _assert_identical(results["run"][name], then,
                              f"the first run's {name} at batch size {size} was overwritten by a later call")
        assert value == results["value"]
        for name, then in results["grads then"].items():
            _assert_identical(grads[name], then, f"second gradient of {name} at batch size {size}")
            _assert_identical(results["grads"][name], then,
                              f"the first gradient of {name} at batch size {size} was overwritten by a later call")
    _record(program, graph)


def test_the_strategy_draws_every_registered_op_and_composite():
    # a newly registered op fails here until the strategy can draw it
    assert set(FOCUS_OPS) == set(REGISTRY) | set(COMPOSITES)


def test_every_registered_op_has_a_reference_rule():
    missing = sorted(op.name for op in REGISTRY.values() if op not in reference.RULES)
    assert not missing, f"ops without a rule in tapegraph.reference.RULES: {missing}"


# The homework's graphs against the reference.

HOMEWORK = [
    ("linear", lambda: hw.linear(num_features=6), None),
    ("ridge", lambda: hw.ridge(num_features=6, l2_reg=0.3), None),
    ("ridge-batch", lambda: hw.ridge(num_features=6, batch=True), 5),
    ("mlp", lambda: hw.mlp_regression(num_inputs=2, num_hidden=4), None),
    ("mlp-batch", lambda: hw.mlp_regression(num_inputs=2, num_hidden=4, batch=True), 5),
    ("multiclass", lambda: hw.multiclass(num_hidden=4), None),
    ("multiclass-batch", lambda: hw.multiclass(num_hidden=4, batch=True), 5),
]


@pytest.mark.parametrize("factory, batch", [case[1:] for case in HOMEWORK], ids=[case[0] for case in HOMEWORK])
def test_homework_graphs_match_the_reference_interpreter(factory, batch, rng):
    program = factory()
    params = hw.random_params(program, rng)
    inputs = {}
    for name, node in program.inputs.items():
        shape = tuple(batch if isinstance(dim, str) else dim for dim in node.shape)
        if node.dtype == "int64":
            inputs[name] = rng.integers(0, 3, size=shape)
        else:
            inputs[name] = rng.standard_normal(shape)
    outs = program.run(params, inputs)
    expected = reference.evaluate({"objective": program.objective, **program.outputs}, params, inputs)
    for name, value in expected.items():
        _assert_close(outs[name], value, f"run: {name}")
    value, grads = program.value_and_grad(params, inputs)
    _assert_close(value, expected["objective"], "value_and_grad: objective")
    expected_grads = reference.evaluate(_gradients(program), params, inputs, sizes=_sizes(program, inputs))
    numeric = _numeric_gradients(program.objective, params, inputs)
    for name, gradient in grads.items():
        _assert_close(gradient, expected_grads[name], f"gradient of {name}")
        assert relative_errors(gradient, numeric[name], 1e-3 * max(1.0, abs(value))).max() <= GRAD_RTOL, name


# The oracle itself, on graphs small enough to work out by hand.

def test_reference_ridge_by_hand():
    x = tg.input("x", shape=(2,))
    y = tg.input("y")
    w = tg.param("w", shape=(2,))
    b = tg.param("b")
    prediction = tg.vector_scalar_affine(x, w, b)
    loss = tg.squared_l2_distance(prediction, y) + tg.l2_norm_penalty(w, l2_reg=0.5)
    values = reference.evaluate([prediction, loss], {"w": np.array([3.0, 4.0]), "b": 1.0},
                                {"x": np.array([1.0, 2.0]), "y": 10.0})
    # 1*3 + 2*4 + 1 = 12; (12 - 10)^2 + 0.5 * (9 + 16) = 16.5
    assert [float(value) for value in values] == [12.0, 16.5]


def test_reference_softmax_family_by_hand():
    z = tg.param("z", shape=(2,))
    label = tg.input("label", dtype="int64")
    ce = tg.cross_entropy(z, label)
    values = reference.evaluate(
        {"softmax": tg.softmax(z), "log_softmax": tg.log_softmax(z), "ce": ce,
         "residual": tg.ops.softmax_minus_onehot(z, label, 1.0)},
        {"z": np.array([0.0, np.log(3.0)])}, {"label": np.array(1)})
    # softmax([0, log 3]) = [1/4, 3/4]
    np.testing.assert_allclose(values["softmax"], [0.25, 0.75], rtol=1e-15)
    np.testing.assert_allclose(values["log_softmax"], np.log([0.25, 0.75]), rtol=1e-15)
    np.testing.assert_allclose(values["ce"], -np.log(0.75), rtol=1e-15)
    np.testing.assert_allclose(values["residual"], [0.25, -0.25], rtol=1e-15)
    # stable for large logits: exp(1000) would overflow
    big = reference.evaluate(tg.softmax(z), {"z": np.array([1000.0, 1000.0])})
    np.testing.assert_array_equal(big, [0.5, 0.5])


def test_reference_pick_unpick_and_the_reductions_by_hand():
    x = tg.input("x", shape=("batch", 3))
    label = tg.input("label", shape=("batch",), dtype="int64")
    g = tg.input("g", shape=("batch",))
    arrays = {"x": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), "label": np.array([2, 0]),
              "g": np.array([7.0, 8.0])}
    values = reference.evaluate({
        "pick": tg.ops.pick(x, label),
        "unpick": tg.ops.unpick(g, label, 3),
        "sum_to": tg.ops.sum_to(x, (1, 3)),
        "sum_to_scalar": tg.ops.sum_to(x, ()),
        "expand_mean": tg.ops.expand(g, ("batch", 2), (1,), keepdims=False, mean=True),
        "broadcast_to": tg.ops.broadcast_to(tg.sum(x, axis=0), ("batch", 3)),
        "mean_rows": tg.mean(x, axis=1, keepdims=True),
        "reshape": tg.reshape(x, ("batch", 3, 1)),
        "transpose": tg.transpose(x),
        "matmul_ta": tg.matmul(x, g, transpose_a=True),
        "outer": tg.ops.outer(g, g),
        "relu_sign": tg.relu(tg.ops.sign(x - 3.0)),
    }, {}, arrays)
    np.testing.assert_array_equal(values["pick"], [3.0, 4.0])
    np.testing.assert_array_equal(values["unpick"], [[0.0, 0.0, 7.0], [8.0, 0.0, 0.0]])
    np.testing.assert_array_equal(values["sum_to"], [[5.0, 7.0, 9.0]])
    np.testing.assert_array_equal(values["sum_to_scalar"], 21.0)
    np.testing.assert_array_equal(values["expand_mean"], [[3.5, 3.5], [4.0, 4.0]])
    np.testing.assert_array_equal(values["broadcast_to"], [[5.0, 7.0, 9.0], [5.0, 7.0, 9.0]])
    np.testing.assert_array_equal(values["mean_rows"], [[2.0], [5.0]])
    np.testing.assert_array_equal(values["reshape"], arrays["x"][:, :, None])
    np.testing.assert_array_equal(values["transpose"], arrays["x"].T)
    np.testing.assert_array_equal(values["matmul_ta"], [7.0 + 32.0, 14.0 + 40.0, 21.0 + 48.0])
    np.testing.assert_array_equal(values["outer"], [[49.0, 56.0], [56.0, 64.0]])
    np.testing.assert_array_equal(values["relu_sign"], [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def test_reference_computes_a_shared_subexpression_once(monkeypatch):
    calls = []
    monkeypatch.setitem(reference.RULES, REGISTRY["tanh"], lambda x: calls.append(x) or np.tanh(x))
    w = tg.param("w", shape=(2,))
    hidden = tg.tanh(w)
    objective = tg.sum(hidden * hidden) + tg.sum(tg.tanh(w))  # tg.tanh(w) equals hidden: one node
    value = reference.evaluate(objective, {"w": np.array([0.5, -1.0])})
    assert len(calls) == 1
    np.testing.assert_allclose(value, np.sum(np.tanh([0.5, -1.0]) ** 2) + np.sum(np.tanh([0.5, -1.0])), rtol=1e-15)


def test_reference_walks_graphs_deeper_than_the_recursion_limit():
    w = tg.param("w")
    node = w
    for _ in range(sys.getrecursionlimit() + 100):
        node = node * 1.0001
        hash(node)  # node hashes are cached as the chain grows, not computed recursively at the end
    value = reference.evaluate(node, {"w": 1.0})
    np.testing.assert_allclose(value, 1.0001 ** (sys.getrecursionlimit() + 100), rtol=1e-12)


def test_reference_errors_name_what_is_wrong():
    x = tg.input("x", shape=("batch", 2))
    other = tg.input("other", shape=("batch",))
    total = tg.sum(x) + tg.sum(other)
    with pytest.raises(KeyError, match="input 'other'.*missing from inputs"):
        reference.evaluate(total, {}, {"x": np.ones((3, 2))})
    with pytest.raises(ValueError, match="'other' has batch=4, but an earlier array gave batch=3"):
        reference.evaluate(total, {}, {"x": np.ones((3, 2)), "other": np.ones(4)})
    with pytest.raises(ValueError, match=r"declared f64\[batch,2\], got an array of f64\[3,5\]"):
        reference.evaluate(total, {}, {"x": np.ones((3, 5)), "other": np.ones(3)})
    label = tg.input("label", dtype="int64")
    with pytest.raises(IndexError, match="labels must lie in 0..2"):
        reference.evaluate(tg.ops.pick(tg.param("z", shape=(3,)), label), {"z": np.zeros(3)}, {"label": np.array(-1)})
    w = tg.param("w")
    with pytest.raises(ValueError, match="size of 'batch' is not given"):
        reference.evaluate(tg.ops.broadcast_to(w, ("batch",)), {"w": 1.0})
    np.testing.assert_array_equal(reference.evaluate(tg.ops.broadcast_to(w, ("batch",)), {"w": 1.0}, sizes={"batch": 2}),
                                  [1.0, 1.0])
