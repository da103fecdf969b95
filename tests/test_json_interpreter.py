"""The JSON export is enough to run a tape: ``json_interpreter`` agrees with the programs.

Each tape is exported, written as JSON text and read back, then run by
``tests/json_interpreter.py`` (numpy and the reference rules only) and
compared with what the compiled program returns: the four homework
models (as ``tests/homework_graphs.py`` and ``models/estimators.py``
declare them), every kind of call (``run``, ``value_and_grad``, a pure and
a donated SGD step), and random graphs from ``tests/strategies.py``.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tapegraph as tg
from tapegraph.inspect.export import dumps, tape_to_dict

import homework_graphs as hw
import json_interpreter
from json_interpreter import JsonTapeError, run_json
from models import LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression
from strategies import FOCUS_OPS, graphs, reachable

#: The reference rules and the kernels differ only by rounding: in float64,
#: and in float32 (whose rounding a chain of ops accumulates) for graphs
#: with a float32 or float16 value anywhere.
RTOL = {"float64": 1e-9, "float32": 1e-4}
STEP_SIZE = 0.25


def _exported(tape) -> dict:
    """The tape as another program would see it: JSON text, read back."""
    return json.loads(dumps(tape_to_dict(tape)))


def _precision(program: tg.Program) -> str:
    """float32 when any value of the program (a feed, or a cast inside) holds fewer than 64-bit floats."""
    roots = [node for node in [program.objective, *program.outputs.values()] if node is not None]
    narrow = any(np.dtype(node.dtype).kind == "f" and np.dtype(node.dtype).itemsize < 8
                 for node in [*program.params.values(), *program.inputs.values(), *reachable(roots)])
    return "float32" if narrow else "float64"


def _assert_close(actual, expected, what: str, precision: str = "float64") -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{what}: {actual.dtype}{list(actual.shape)} from the JSON, {expected.dtype}{list(expected.shape)} from the program")
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    rtol = RTOL[precision]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _feeds(program: tg.Program, rng: np.random.Generator, batch: int | None = None) -> tuple[dict, dict]:
    def shape(node):
        return tuple(batch if isinstance(dim, str) else dim for dim in node.shape)
    params = {name: np.asarray(0.5 * rng.standard_normal(shape(node))) for name, node in program.params.items()}
    inputs = {}
    for name, node in program.inputs.items():
        if node.dtype == "int64":
            inputs[name] = np.asarray(rng.integers(0, 3, size=shape(node)), dtype=np.int64)
        else:
            inputs[name] = np.asarray(rng.standard_normal(shape(node)))
    return params, inputs


def _check_every_kind(program: tg.Program, params: dict, inputs: dict, where: str) -> None:
    """run, value_and_grad and SGD steps (pure, donated): the JSON tape gives what the program gives."""
    given = copy.deepcopy((params, inputs))
    feeds = {**params, **inputs}
    precision = _precision(program)

    outs = program.run(params, inputs)
    tape = program.tape("run")
    from_json = run_json(_exported(tape), feeds)
    assert type(from_json["objective"]) is float
    for name, value in outs.items():
        _assert_close(from_json[name], value, f"{where}: run, {name}", precision)

    value, grads = program.value_and_grad(params, inputs)
    from_json = run_json(_exported(program.tape()), feeds)
    _assert_close(from_json["objective"], value, f"{where}: value_and_grad, objective", precision)
    for name, gradient in grads.items():
        _assert_close(from_json[f"grad {name}"], gradient, f"{where}: value_and_grad, gradient of {name}", precision)
        assert from_json[f"grad {name}"] is not params[name]

    if program.wrt:
        step = tg.sgd(program, STEP_SIZE)
        new_params, step_value = step(params, inputs)
        # the step size is the tape's hyper feed: given like any other
        hyper = {"step_size": np.array(STEP_SIZE)}
        from_json = run_json(_exported(step.tape()), {**feeds, **hyper})
        _assert_close(from_json["objective"], step_value, f"{where}: sgd, objective", precision)
        for name, array in new_params.items():
            _assert_close(from_json[f"new {name}"], array, f"{where}: sgd, new {name}", precision)

        donated_step = tg.sgd(program, STEP_SIZE, donate=True)
        mine, theirs = copy.deepcopy(params), copy.deepcopy(params)
        donated_params, _ = donated_step(mine, inputs)
        from_json = run_json(_exported(donated_step.tape()), {**theirs, **inputs, **hyper})
        for name, array in donated_params.items():
            # the donated arrays are updated in place and returned
            assert from_json[f"new {name}"] is theirs[name], f"{where}: donated sgd returned a new array for {name}"
            _assert_close(theirs[name], array, f"{where}: donated sgd, new {name}", precision)

    for before, arrays in zip(given, (params, inputs), strict=True):
        for name, array in before.items():
            np.testing.assert_array_equal(arrays[name], array, err_msg=f"{where}: the caller's {name} was modified")


HOMEWORK = {
    "ridge": lambda batch: hw.ridge(num_features=5, batch=batch),
    "linear": lambda batch: hw.linear(num_features=5) if not batch else None,
    "mlp": lambda batch: hw.mlp_regression(num_inputs=3, num_hidden=4, batch=batch),
    "multiclass": lambda batch: hw.multiclass(num_inputs=3, num_hidden=4, batch=batch),
}


@pytest.mark.parametrize("batch", [None, 4])
@pytest.mark.parametrize("name", sorted(HOMEWORK))
def test_homework_graphs_run_from_their_json(name, batch, rng):
    program = HOMEWORK[name](batch is not None)
    if program is None:
        pytest.skip("the homework's linear regression has no batched form")
    params, inputs = _feeds(program, rng, batch)
    _check_every_kind(program, params, inputs, f"{name}, batch {batch}")


@pytest.mark.parametrize("estimator", [LinearRegression(), RidgeRegression(l2_reg=0.5), MLPRegression(num_hidden_units=4),
                                       MulticlassClassifier(num_hidden_units=4, num_class=3)],
                         ids=lambda estimator: type(estimator).__name__)
@pytest.mark.parametrize("batch", [1, 5])
def test_estimator_programs_run_from_their_json(estimator, batch, rng):
    objective, wrt, outputs = estimator._declare(3)
    program = tg.compile(objective, wrt=wrt, outputs=outputs)
    params, inputs = _feeds(program, rng, batch)
    _check_every_kind(program, params, inputs, f"{type(estimator).__name__}, batch {batch}")


@pytest.mark.parametrize("focus", FOCUS_OPS)
@settings(max_examples=2, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_graphs_run_from_their_json(focus, data):
    graph = data.draw(graphs(focus), label="graph")
    program = tg.compile(graph.objective, wrt=graph.wrt, outputs=graph.outputs)
    for size in graph.batch_sizes:
        params, inputs = graph.data(size)
        params = {name: params[name] for name in program.params}
        inputs = {name: inputs[name] for name in program.inputs}
        _check_every_kind(program, params, inputs, f"{focus} graph, batch {size}")


def test_a_constant_of_one_number_is_exported_as_that_number(rng):
    # the gradient of a sum over a large parameter is one number broadcast:
    # written out, the export of a 1000 x 1000 parameter's tape was 5 MB
    w = tg.param("w", shape=(1000, 1000))
    program = tg.compile(tg.sum(w * 2.0) + tg.sum(tg.square(w[:2, :3])), wrt=[w])
    data = _exported(program.tape())
    fills = [constant for constant in data["constants"] if constant["fill"] is not None]
    assert fills and all(constant["values"] is None for constant in fills)
    assert len(dumps(data)) < 20_000
    params = {"w": rng.standard_normal((1000, 1000))}
    value, grads = program.value_and_grad(params)
    from_json = run_json(data, params)
    _assert_close(from_json["objective"], value, "large fill: objective")
    _assert_close(from_json["grad w"], grads["w"], "large fill: gradient")
    # a constant of several different numbers is written out in full
    small = tg.compile(tg.sum(tg.param("v", shape=(3,)) * tg.const(np.array([1.0, 2.0, 3.0]))), wrt=[])
    (written,) = [constant for constant in _exported(small.tape()).get("constants") if constant["shape"] == [3]]
    assert written["fill"] is None and written["values"] == [1.0, 2.0, 3.0]


def _reuse_too_early(data: dict) -> dict:
    """The export with one buffer reused while its value is still to be read.

    Finds a value ``a`` written to its slot and read later, and an
    instruction in between that writes a slot of the same type; that
    instruction (and the readers of its value) are moved to ``a``'s slot.
    """
    instructions = data["instructions"]
    types = {buffer["slot"]: (buffer["shape"], buffer["dtype"]) for buffer in data["buffers"]}
    for first in instructions:
        if first["destination"]["kind"] != "slot":
            continue
        readers = [item["index"] for item in instructions if first["value"] in item["input_values"]]
        for between in instructions[first["index"] + 1:max(readers, default=0)]:
            if (between["destination"]["kind"] == "slot" and between["output"] != first["output"]
                    and types[between["output"]] == types[first["output"]] and first["value"] not in between["input_values"]):
                moved = [dict(item) for item in instructions]
                moved[between["index"]]["output"] = first["output"]
                for item in moved:
                    item["inputs"] = [first["output"] if value == between["value"] else slot
                                      for slot, value in zip(item["inputs"], item["input_values"])]
                return {**data, "instructions": moved}
    raise AssertionError("no buffer to reuse too early in this tape")


def test_the_interpreter_follows_the_buffer_plan_and_refuses_a_buffer_reused_too_early(rng):
    program = hw.multiclass(num_inputs=3, num_hidden=4, batch=True)
    params, inputs = _feeds(program, rng, 4)
    data = _exported(program.tape(sizes={"batch": 4}))
    run_json(data, {**params, **inputs})
    with pytest.raises(JsonTapeError, match=r"is read from s\d+, which holds %\d+"):
        run_json(_reuse_too_early(data), {**params, **inputs})


def test_the_interpreter_needs_the_whole_export(rng):
    program = hw.ridge(num_features=3)
    data = json.loads(dumps(tape_to_dict(program.tape(), sections=["reverse"])))
    with pytest.raises(JsonTapeError, match="only some sections"):
        run_json(data, {})
    assert json_interpreter.FORMAT == ("tapegraph-tape", data["version"])
