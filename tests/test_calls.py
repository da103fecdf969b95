"""The call path: each specialisation's generated entry and the general path behind it.

After a first call, a call goes through the generated entry of the
specialisation used last; it takes what a training loop passes (a row of
a 2-D array, a numpy scalar or a Python number for a 0-d input) and hands
anything else to the general path, whose errors must read as before.
"""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.calls import entry_source

import homework_graphs as hw


def _error_text(call) -> str:
    with pytest.raises(tg.CallError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize("label", [np.int64(2), 2, np.array(2)], ids=["np.int64", "int", "0-d array"])
def test_a_label_as_numpy_scalar_or_python_int_gives_the_same_step(label):
    program = hw.multiclass()
    params = hw.random_params(program, np.random.default_rng(0))
    step = tg.sgd(program, step_size=0.1)
    x = np.array([0.5, -1.0])
    expected, expected_value = step(params, {"x": x, "y": np.array(2)})
    step(params, {"x": x, "y": np.array(1)})  # the entry is in place
    new_params, value = step(params, {"x": x, "y": label})
    assert value == expected_value
    for name in expected:
        assert np.array_equal(new_params[name], expected[name])


@pytest.mark.parametrize("target", [np.float64(0.25), 0.25, np.array(0.25)], ids=["np.float64", "float", "0-d array"])
def test_a_target_as_numpy_scalar_or_python_float_gives_the_same_gradient(target):
    program = hw.ridge(num_features=5)
    params = hw.random_params(program, np.random.default_rng(0))
    X = np.arange(10.0).reshape(2, 5)
    expected_value, expected = program.value_and_grad(params, {"x": X[1], "y": np.array(0.25)})
    value, grads = program.value_and_grad(params, {"x": X[1], "y": target})
    assert value == expected_value
    for name in expected:
        assert np.array_equal(grads[name], expected[name])
        assert type(grads[name]) is np.ndarray


def _bad_calls(params, x):
    """(label, params, inputs) of calls the general path must explain."""
    return [
        ("missing input", params, {"x": x}),
        ("unknown name", params, {"x": x, "y": 0.5, "z": 1.0}),
        ("input as a parameter", {**params, "y": 0.5}, {"x": x}),
        ("wrong shape", params, {"x": x[:3], "y": 0.5}),
        ("integer data", params, {"x": np.arange(5), "y": 0.5}),
        ("a bool target", params, {"x": x, "y": True}),
        ("a string target", params, {"x": x, "y": "0.5"}),
        ("a list for params", [1, 2], {"x": x, "y": 0.5}),
        ("a node", params, {"x": tg.input("x", shape=(5,)), "y": 0.5}),
    ]


def test_errors_after_the_entry_is_in_place_read_as_on_a_first_call():
    params = hw.random_params(hw.ridge(num_features=5), np.random.default_rng(0))
    x = np.ones(5)
    warm = hw.ridge(num_features=5)
    warm.value_and_grad(params, {"x": x, "y": 0.5})
    for label, bad_params, bad_inputs in _bad_calls(params, x):
        fresh = hw.ridge(num_features=5)
        first = _error_text(lambda: fresh.value_and_grad(bad_params, bad_inputs))
        later = _error_text(lambda: warm.value_and_grad(bad_params, bad_inputs))
        assert later == first, label


def test_an_integer_too_large_for_the_label_dtype_is_explained():
    program = hw.multiclass()
    params = hw.random_params(program, np.random.default_rng(0))
    program.value_and_grad(params, {"x": np.ones(2), "y": 1})
    with pytest.raises(tg.CallError, match="input 'y'"):
        program.value_and_grad(params, {"x": np.ones(2), "y": 2**70})


def test_a_donated_parameter_is_never_converted():
    program = hw.ridge(num_features=3)
    step = tg.sgd(program, step_size=0.1, donate=True)
    params = {"w": np.zeros(3), "b": np.array(0.0)}
    step(params, {"x": np.ones(3), "y": 1.0})
    for given, described in [(0.0, "float"), (np.float64(0.0), "float64")]:
        with pytest.raises(tg.CallError, match=f"'b' must be a writable numpy array .*; got {described}$"):
            step({"w": params["w"], "b": given}, {"x": np.ones(3), "y": 1.0})
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(tg.CallError, match="got a read-only array"):
        step({"w": frozen, "b": params["b"]}, {"x": np.ones(3), "y": 1.0})


def test_check_mode_still_checks_once_the_entry_is_in_place():
    x = tg.param("x", shape=(2,))
    program = tg.compile(tg.sum(tg.log(x)), wrt=[x])
    program.value_and_grad({"x": np.array([1.0, 2.0])})
    with tg.check_finite(), pytest.raises(tg.NonFiniteError, match="log"):
        program.value_and_grad({"x": np.array([1.0, -1.0])})


def test_each_batch_size_has_its_own_entry_and_both_keep_working():
    program = hw.ridge(num_features=4, batch=True)
    params = hw.random_params(program, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    small = {"x": rng.standard_normal((2, 4)), "y": rng.standard_normal(2)}
    large = {"x": rng.standard_normal((7, 4)), "y": rng.standard_normal(7)}
    expected = {id(inputs): program.value_and_grad(params, inputs)[0] for inputs in (small, large)}
    for inputs in (small, large, large, small, small):
        assert program.value_and_grad(params, inputs)[0] == expected[id(inputs)]
    assert len(program.specializations()) == 2


def test_the_entry_checks_the_concrete_shapes_of_its_specialisation():
    feeds = [("w", True, np.dtype("float64"), (3,)), ("x", False, np.dtype("float64"), (8, 3)),
             ("y", False, np.dtype("int64"), ())]
    text = entry_source(feeds, ("dict, value", ("w",)), donated=["w"])
    assert "a1.shape != (8, 3)" in text
    assert "not a0.flags.writeable" in text
    assert "if type(a2) is r0_scalar2:" in text and "elif type(a2) is int:" in text
    assert "return ({'w': r0_results[1]}, r0_results[0])" in text
    compile(text, "<entry>", "exec")


def test_a_float_the_step_reads_only_as_a_number_is_not_converted():
    feeds = [("b", True, np.dtype("float64"), ()), ("y", False, np.dtype("float64"), ())]
    text = entry_source(feeds, numbers=["y"])
    assert "a1 = r0_asarray" not in text and "a0 = r0_asarray" in text
    program = hw.ridge(num_features=3)
    program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.ones(3), "y": 1.0})
    executable = program._value_and_grad_plan().last
    assert executable.number_feeds() == {"b", "y"}


def test_a_feed_returned_as_an_output_comes_back_as_an_array():
    # the step returns y itself, so a number given for it must become an array
    x = tg.input("x", shape=(2,))
    y = tg.input("y")
    program = tg.compile(tg.sum(x) * y, outputs={"echo": y})
    program.run({}, {"x": np.ones(2), "y": np.array(1.0)})
    for given in (np.float64(2.5), 2.5):
        echo = program.run({}, {"x": np.ones(2), "y": given})["echo"]
        assert type(echo) is np.ndarray and echo.shape == () and echo == 2.5


def test_the_numpy_step_holds_its_checks_even_for_a_feed_named_like_a_builtin_the_checks_use():
    program = hw.ridge(num_features=3)
    program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.ones(3), "y": 1.0})
    enter = program._value_and_grad_plan().last.enter
    assert enter.__code__.co_varnames[:3] == ("r0_hypers", "r0_params", "r0_inputs")
    assert "np" in enter.__code__.co_freevars  # the step's own code, not a call of it
    # a feed called len would shadow the checks' len(), but feeds' identifiers step aside for builtins
    length = tg.input("len", shape=(2,))
    weight = tg.param("weight", shape=(2,))
    program = tg.compile(tg.sum(tg.square(length * weight)), wrt=[weight])
    params, inputs = {"weight": np.array([1.0, 2.0])}, {"len": np.array([3.0, -1.0])}
    first = program.value_and_grad(params, inputs)
    second = program.value_and_grad(params, inputs)
    assert first[0] == second[0] == 9.0 + 4.0
    assert np.array_equal(first[1]["weight"], second[1]["weight"])
    executable = program._value_and_grad_plan().last
    assert "np" in executable.enter.__code__.co_freevars and executable.arguments["len"] == "_len"
    with pytest.raises(tg.CallError, match=r"input 'len' expects f64\[2\]"):
        program.value_and_grad(params, {"len": np.ones(3)})


def _equal_steps(first, second) -> bool:
    (params_a, value_a), (params_b, value_b) = first, second
    return value_a == value_b and params_a.keys() == params_b.keys() \
        and all(np.array_equal(params_a[name], params_b[name]) for name in params_a)


def test_an_sgd_step_passes_its_hyperparameters_to_the_entry_apart_from_the_inputs():
    program = hw.multiclass()
    params = hw.random_params(program, np.random.default_rng(0))
    step = tg.sgd(program, step_size=0.1)
    inputs = {"x": np.array([0.5, -1.0]), "y": np.int64(1)}
    expected = step(params, inputs)
    plan = step._plan
    code = plan.enter.__code__  # the entry's: it does not look the step size up by name
    assert "r0_hypers" in code.co_varnames and "step_size" not in code.co_consts and "x" in code.co_consts
    # the same values taken in the inputs (the general path) or given as
    # a numpy scalar or a 0-d array give the same step
    assert _equal_steps(plan.enter(None, params, {**inputs, "step_size": 0.1}), expected)
    assert _equal_steps(plan.enter((np.float64(0.1),), params, inputs), expected)
    assert _equal_steps(plan.enter((np.array(0.1),), params, inputs), expected)
    # a step size in the caller's inputs is the step's own, as before
    assert _equal_steps(step(params, {**inputs, "step_size": 5.0}), expected)
    assert _equal_steps(step(params, inputs, step_size=0.1), expected)
    assert not _equal_steps(step(params, inputs, step_size=0.2), expected)


def test_a_wrong_argument_to_a_step_gives_the_general_paths_error_with_its_hyperparameters_apart():
    program = hw.ridge(num_features=3)
    step = tg.sgd(program, step_size=0.1)
    params = {"w": np.zeros(3), "b": np.array(0.0)}
    step(params, {"x": np.ones(3), "y": 1.0})
    text = _error_text(lambda: step(params, {"x": np.ones(4), "y": 1.0}))
    assert text.startswith("input 'x' expects f64[3]")
    text = _error_text(lambda: step(params, {"x": np.ones(3), "y": 1.0, "z": 2.0}))
    assert text.startswith("unknown name 'z' in inputs")
    text = _error_text(lambda: step(params, {"x": np.ones(3)}))
    assert "input(s) ['y'] missing from inputs" in text


# An SGD step is a functools.partial of its plan's entry, bound to its
# hyperparameter values (optim.step.SGDStep): these hold it to what a step
# promises however it is called.


def test_a_step_calls_its_plans_entry_and_follows_it_to_a_new_specialisation():
    program = hw.ridge(num_features=3, batch=True)
    step = tg.sgd(program, step_size=0.1)
    params = {"w": np.array([0.5, -1.0, 2.0]), "b": np.array(0.25)}
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(size=(rows, 3)), "y": rng.normal(size=rows)} for rows in (4, 3, 4, 3)]
    for inputs in batches:
        expected = program.value_and_grad(params, inputs)
        new_params, value = step(params, inputs)
        assert value == expected[0]
        for name in params:  # (the step folds its step size into the gradient: rounding differs)
            assert np.allclose(new_params[name], params[name] - 0.1 * expected[1][name], rtol=1e-14, atol=1e-15)
        # the step runs the entry of the specialisation it was last given
        assert step.func.__func__ is step._plan.enter
    assert len(step._plan.cache) == 2


def test_steps_sharing_a_plan_keep_their_own_step_sizes():
    program = hw.ridge(num_features=3)
    slow, fast = tg.sgd(program, step_size=0.01), tg.sgd(program, step_size=0.5)
    assert slow._plan is fast._plan
    params = {"w": np.array([0.5, -1.0, 2.0]), "b": np.array(0.25)}
    inputs = {"x": np.array([1.0, 2.0, 3.0]), "y": np.float64(0.5)}
    _, grads = program.value_and_grad(params, inputs)
    for step, size in [(slow, 0.01), (fast, 0.5), (slow, 0.01)]:
        new_params, _ = step(params, inputs)
        assert np.allclose(new_params["w"], params["w"] - size * grads["w"], rtol=1e-14, atol=0)
        # a size given for one call, then the step's own again
        new_params, _ = step(params, inputs, step_size=0.2)
        assert np.allclose(new_params["w"], params["w"] - 0.2 * grads["w"], rtol=1e-14, atol=0)


def test_a_step_given_a_wrong_keyword_says_which_whatever_the_entry():
    program = hw.ridge(num_features=3)
    step = tg.sgd(program, step_size=0.1)
    params = {"w": np.zeros(3), "b": np.array(0.0)}
    inputs = {"x": np.ones(3), "y": 1.0}
    for _ in range(2):  # before the first specialisation and through its entry
        with pytest.raises(tg.CallError, match=r"unknown hyperparameter 'stepsize' \(did you mean 'step_size'\?\)"):
            step(params, inputs, stepsize=0.2)
        with pytest.raises(tg.CallError, match="made with weight_decay=0"):
            step(params, inputs, weight_decay=0.1)
        step(params, inputs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'step_size'"):
        program.value_and_grad(params, inputs, step_size=0.1)


def test_a_step_reads_as_a_step_to_inspect_pickle_and_a_class_holding_it():
    import inspect
    import pickle

    program = hw.ridge(num_features=3)
    step = tg.sgd(program, step_size=0.1, donate=True)
    assert str(inspect.signature(step)) == "(params, inputs=None, **hypers)"
    # the class's is its constructor's
    assert list(inspect.signature(tg.optim.SGDStep).parameters) == ["program", "step_size", "donate", "weight_decay"]
    assert repr(step) == "<sgd step step_size=0.1, donate=True over ['w', 'b']>"

    class Trainer:
        held = step  # a partial is no descriptor: the class attribute is the step itself

    assert Trainer().held is step
    copy = pickle.loads(pickle.dumps(step))
    assert type(copy) is tg.optim.SGDStep and copy.donate and copy.step_size == 0.1
    params = {"w": np.zeros(3), "b": np.array(0.0)}
    new_params, value = copy(params, {"x": np.ones(3), "y": 1.0})
    assert new_params["w"] is params["w"] and value == 1.0


def test_a_step_no_longer_used_leaves_its_plan():
    import gc

    program = hw.ridge(num_features=3)
    kept = tg.sgd(program, step_size=0.1)
    dropped = tg.sgd(program, step_size=0.2)
    plan = kept._plan
    assert set(plan._followers) == {kept, dropped}
    del dropped
    gc.collect()
    assert set(plan._followers) == {kept}
