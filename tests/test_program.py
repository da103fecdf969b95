"""Programs: return conventions, purity, specialisation, determinism, the dump."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.compile.tape import TapeCheckError, check_tape

import homework_graphs as hw

GOLDEN = pathlib.Path(__file__).parent / "golden"


def _ridge_call(rng, num_features=6):
    program = hw.ridge(num_features=num_features)
    params = {"w": rng.standard_normal(num_features), "b": np.array(0.25)}
    inputs = {"x": rng.standard_normal(num_features), "y": np.array(1.5)}
    return program, params, inputs


def test_return_conventions(rng):
    program, params, inputs = _ridge_call(rng)
    value, grads = program.value_and_grad(params, inputs)
    assert type(value) is float
    assert grads["w"].shape == (6,) and grads["b"].shape == () and isinstance(grads["b"], np.ndarray)
    outs = program.run(params, inputs)
    assert set(outs) == {"objective", "prediction"} and type(outs["objective"]) is float
    assert outs["objective"] == value
    # plain numbers are accepted for scalar parameters and inputs
    value_again, _ = program.value_and_grad({"w": params["w"], "b": 0.25}, {"x": inputs["x"], "y": 1.5})
    assert value_again == value


def test_run_computes_only_the_named_outputs_from_the_inputs_they_need(rng):
    program, params, inputs = _ridge_call(rng)
    outs = program.run(params, {"x": inputs["x"]}, outputs=["prediction"])  # no label needed
    assert set(outs) == {"prediction"}
    assert outs["prediction"] == pytest.approx(inputs["x"] @ params["w"] + 0.25)
    tape = program.tape("run", outputs=["prediction"])
    assert {feed.name for feed in tape.feeds} == {"x", "w", "b"}
    assert [instruction.op.name for instruction in tape.instructions] == ["matmul", "add"]


def test_value_and_grad_and_step_leave_their_arguments_alone(rng):
    program, params, inputs = _ridge_call(rng)
    saved = {key: value.copy() for key, value in {**params, **inputs}.items()}
    program.value_and_grad(params, inputs)
    step = tg.sgd(program, step_size=0.1)
    step(params, inputs)
    program.run(params, inputs)
    for key, value in {**params, **inputs}.items():
        np.testing.assert_array_equal(value, saved[key])


def test_results_of_a_call_survive_the_next_call(rng):
    program, params, inputs = _ridge_call(rng)
    first_value, first_grads = program.value_and_grad(params, inputs)
    kept = {key: value.copy() for key, value in first_grads.items()}
    step = tg.sgd(program, step_size=0.1)
    new_params, _ = step(params, inputs)
    kept_params = {key: value.copy() for key, value in new_params.items()}
    first_run = program.run(params, inputs)
    kept_prediction = first_run["prediction"].copy()

    other = {"w": -params["w"], "b": np.array(3.0)}
    program.value_and_grad(other, inputs)
    step(new_params, inputs)
    program.run(other, inputs)
    for key in kept:
        np.testing.assert_array_equal(first_grads[key], kept[key])
        np.testing.assert_array_equal(new_params[key], kept_params[key])
    np.testing.assert_array_equal(first_run["prediction"], kept_prediction)


def test_sgd_step_matches_a_manual_update(rng):
    program, params, inputs = _ridge_call(rng)
    value, grads = program.value_and_grad(params, inputs)
    new_params, step_value = tg.sgd(program, step_size=0.05)(params, inputs)
    assert step_value == value
    for key in params:
        np.testing.assert_allclose(new_params[key], params[key] - 0.05 * grads[key], rtol=1e-14)


def test_donated_step_updates_the_given_arrays_in_place(rng):
    program, params, inputs = _ridge_call(rng)
    expected, _ = tg.sgd(program, step_size=0.05)(params, inputs)
    donated = {key: value.copy() for key, value in params.items()}
    new_params, _ = tg.sgd(program, step_size=0.05, donate=True)(donated, inputs)
    for key in params:
        assert new_params[key] is donated[key]
        np.testing.assert_array_equal(donated[key], expected[key])
    with pytest.raises(tg.CallError, match="donate=True updates parameters in place, so 'b' must be a writable numpy array"):
        tg.sgd(program, step_size=0.05, donate=True)({"w": donated["w"], "b": 0.5}, inputs)


def test_each_batch_size_is_specialised_once_and_cached(rng):
    program = hw.ridge(num_features=3, batch=True)
    params = {"w": np.ones(3), "b": np.array(0.0)}
    for batch in (4, 4, 2, 4):
        program.value_and_grad(params, {"x": np.ones((batch, 3)), "y": np.zeros(batch)})
    assert sorted(entry.sizes["batch"] for entry in program.specializations()) == [2, 4]
    with pytest.raises(tg.CallError, match=r"input 'y' has batch=3 .* but input 'x' has batch=4"):
        program.value_and_grad(params, {"x": np.ones((4, 3)), "y": np.zeros(3)})


def test_minibatch_gradient_is_the_sum_of_per_example_gradients(rng):
    batched = hw.ridge(num_features=3, l2_reg=0.0, batch=True)
    single = hw.ridge(num_features=3, l2_reg=0.0)
    params = {"w": rng.standard_normal(3), "b": np.array(0.1)}
    x, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    _, batch_grads = batched.value_and_grad(params, {"x": x, "y": y})
    total = sum(single.value_and_grad(params, {"x": x[i], "y": y[i]})[1]["w"] for i in range(5))
    np.testing.assert_allclose(batch_grads["w"], total, rtol=1e-12)


def test_the_same_model_gives_the_same_tape_byte_for_byte():
    assert hw.multiclass().dump() == hw.multiclass().dump()
    assert hw.ridge(batch=True).dump(sizes={"batch": 8}) == hw.ridge(batch=True).dump(sizes={"batch": 8})


def test_common_subexpressions_are_computed_once():
    x = tg.input("x", shape=(3,))
    w = tg.param("w", shape=(3,))
    first = tg.tanh(x * w)
    second = tg.tanh(x * w)  # built again, equal by structure
    program = tg.compile(tg.sum(first + second), wrt=[w])
    forward = [instruction.op.name for instruction in program.tape().section("forward")]
    assert forward.count("tanh") == 1 and forward.count("mul") == 1


def test_dump_matches_the_golden_file():
    # rerun with TAPEGRAPH_UPDATE_GOLDEN=1 after an intended change to the tape
    import os
    import re
    # origins without line numbers, as in tests/test_golden.py
    text = re.sub(r"\b([\w.-]+\.py):\d+\b", r"\1", hw.ridge(num_features=3).dump() + "\n")
    path = GOLDEN / "ridge_dump.txt"
    if os.environ.get("TAPEGRAPH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_dump_lists_sections_buffers_and_total():
    text = hw.mlp_regression(num_inputs=2).dump()
    for heading in ("feeds:", "forward tape (", "reverse tape (", "results:", "buffers (", "total: "):
        assert heading in text
    assert "hidden" in text and "homework_graphs.py:" in text


def test_the_tape_checker_rejects_a_clobbered_buffer(rng):
    import attrs
    program, params, inputs = _ridge_call(rng)
    tape = program.tape()
    check_tape(tape)
    broken = list(tape.instructions)
    broken[1] = attrs.evolve(broken[1], inputs=(broken[1].inputs[0], broken[0].output))
    with pytest.raises(TapeCheckError, match="instruction 1"):
        check_tape(attrs.evolve(tape, instructions=tuple(broken)))


def test_a_failing_instruction_is_named_in_the_error(rng):
    program = hw.multiclass()
    params = hw.random_params(program, rng)
    with pytest.raises(tg.TapeError, match=r"forward instruction \d+ failed \(IndexError: label 7 is outside 0..2\):\n .*= cross_entropy"):
        program.value_and_grad(params, {"x": np.zeros(2), "y": np.array(7)})
