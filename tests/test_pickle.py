"""Pickling: programs, optimizers, their states and fitted estimators round-trip.

A program pickles as its expressions and compiles again on first use; an
optimizer as how it was made (program, hyperparameters, flags); a state
with the optimizer that made it. Copies compute the same bits as the
originals, in this process and in another one (what ``joblib`` and
process pools need). Sharing parameters is still best done with the
``.npz`` files of ``tg.save``: unpickling runs code, loading ``.npz`` never.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tapegraph as tg


def _classifier():
    x = tg.input("x", shape=("batch", 4))
    y = tg.input("y", shape=("batch",), dtype="int64")
    W1 = tg.param("W1", shape=(6, 4))
    c1 = tg.param("c1", shape=(6,))
    W2 = tg.param("W2", shape=(3, 6))
    scores = tg.tanh(x @ tg.transpose(W1) + c1) @ tg.transpose(W2)
    objective = tg.mean(tg.cross_entropy(scores, y)) + tg.l2_norm_penalty(W2, l2_reg=0.01)
    return tg.compile(objective, wrt=[W1, c1, W2], outputs={"scores": scores})


def _values(seed=0, rows=16):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((6, 4)), "c1": rng.standard_normal(6), "W2": rng.standard_normal((3, 6))}
    data = {"x": rng.standard_normal((rows, 4)), "y": rng.integers(0, 3, rows)}
    return params, data


def _same_bits(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype and first[name].tobytes() == second[name].tobytes(), name


def test_a_program_pickles_as_its_expressions_and_compiles_again_on_first_use():
    program = _classifier()
    params, data = _values()
    value, grads = program.value_and_grad(params, data)  # compiled and cached here
    text = pickle.dumps(program)
    assert b"tapegraph tape" not in text and len(text) < 20_000  # no generated code, no buffers
    copied = pickle.loads(text)
    assert isinstance(copied, tg.Program) and copied is not program
    assert copied.specializations() == []
    assert copied.objective == program.objective and copied.wrt == program.wrt
    assert list(copied.params) == list(program.params) and list(copied.inputs) == list(program.inputs)
    copied_value, copied_grads = copied.value_and_grad(params, data)
    assert copied_value == value
    _same_bits(copied_grads, grads)
    _same_bits(copied.run(params, data, outputs=["scores"]), program.run(params, data, outputs=["scores"]))
    assert copied.dump(sizes={"batch": 16}) == program.dump(sizes={"batch": 16})
    assert repr(copied) == repr(program)
    for duplicate in (copy.copy(program), copy.deepcopy(program)):
        assert duplicate.value_and_grad(params, data)[0] == value


#: Each optimizer form: pure and donated steps, momentum, Nesterov, decay, a schedule.
OPTIMIZERS = {
    "sgd": lambda prog: tg.sgd(prog, step_size=0.1),
    "sgd decay donated": lambda prog: tg.sgd(prog, step_size=0.1, weight_decay=0.01, donate=True),
    "sgd nesterov": lambda prog: tg.sgd(prog, step_size=0.05, momentum=0.9, nesterov=True),
    "sgd schedule": lambda prog: tg.sgd(prog, step_size=tg.schedules.cosine(0.1, total_steps=10, warmup_steps=2)),
    "adam": lambda prog: tg.adam(prog, learning_rate=0.01, weight_decay=0.001),
    "adamw donated": lambda prog: tg.adamw(prog, learning_rate=0.01, donate=True),
    "rmsprop": lambda prog: tg.rmsprop(prog, learning_rate=0.01),
}


def _train(optimizer, state, data, steps, start=0):
    values = []
    for index in range(start, start + steps):
        rows = {name: array[index % 4 * 4:(index % 4 + 1) * 4] for name, array in data.items()}
        state, value = optimizer(state, rows)
        values.append(value)
    return state, values


def _params_of(state):
    return state.params if isinstance(state, tg.optim.OptimizerState) else state


def _copy_arrays(state):
    if isinstance(state, tg.optim.OptimizerState):
        return tg.optim.OptimizerState({name: value.copy() for name, value in state.params.items()}, state.count,
                                       {slot: {name: value.copy() for name, value in arrays.items()}
                                        for slot, arrays in state.slots.items()}, state.owner)
    return {name: value.copy() for name, value in state.items()}


@pytest.mark.parametrize("form", OPTIMIZERS)
def test_an_optimizer_and_its_state_pickled_mid_training_go_on_as_the_originals(form):
    program = _classifier()
    params, data = _values()
    optimizer = OPTIMIZERS[form](program)
    state, _ = _train(optimizer, optimizer.init(params), data, 3)
    copied_optimizer, copied_state = pickle.loads(pickle.dumps((optimizer, _copy_arrays(state))))
    assert type(copied_optimizer) is type(optimizer) and repr(copied_optimizer) == repr(optimizer)
    assert copied_optimizer.program is not program
    if isinstance(state, tg.optim.OptimizerState):
        assert repr(copied_state) == repr(state) and copied_state.count == 3
        # pickled together, the state belongs to the copied optimizer: its step takes it at once
        assert copied_state.owner is copied_optimizer._owner
    expected_state, expected = _train(optimizer, state, data, 4, start=3)
    copied_state, values = _train(copied_optimizer, copied_state, data, 4, start=3)
    assert values == expected
    _same_bits(_params_of(copied_state), _params_of(expected_state))


def test_a_state_pickled_alone_goes_on_with_the_original_optimizer_and_a_copy_of_it():
    program = _classifier()
    params, data = _values()
    adam = tg.adam(program, learning_rate=0.01)
    state, _ = _train(adam, adam.init(params), data, 2)
    alone = pickle.loads(pickle.dumps(state))
    # its owner is an adam made again on a copy of the program: equal expressions, the same form
    assert alone.owner is not state.owner and alone.owner.optimizer.program is not program
    _, expected = _train(adam, state, data, 2, start=2)
    assert _train(adam, alone, data, 2, start=2)[1] == expected
    separately = pickle.loads(pickle.dumps(adam))
    assert _train(separately, pickle.loads(pickle.dumps(state)), data, 2, start=2)[1] == expected
    # another rule's state is still refused, pickled or not
    rmsprop = tg.rmsprop(program)
    with pytest.raises(tg.CallError, match="this state was made by a adam optimizer, not by this one"):
        rmsprop(alone, {name: array[:4] for name, array in data.items()})
    other = _classifier()  # other leaves: another model, though it reads the same
    with pytest.raises(tg.CallError, match="an optimizer of another program"):
        tg.adam(other, learning_rate=0.01)(alone, {name: array[:4] for name, array in data.items()})


@pytest.mark.parametrize("form", ["sgd", "sgd nesterov", "adamw donated"])
def test_pickles_naming_the_single_module_paths_of_before_the_split_still_load(form):
    # tapegraph.optim was one module until it became a package: a pickle made
    # then names tapegraph.optim._made_again, tapegraph.optim.Adam,
    # tapegraph.optim.OptimizerState, tapegraph.optim._owner_of. Protocol 2
    # writes each global as the text "c<module>\n<name>\n", so today's
    # submodule paths can be written back to the old one.
    program = _classifier()
    params, data = _values()
    optimizer = OPTIMIZERS[form](program)
    state, _ = _train(optimizer, optimizer.init(params), data, 2)
    text = pickle.dumps((optimizer, _copy_arrays(state)), protocol=2)
    for module in (b"tapegraph.optim.step", b"tapegraph.optim.stateful"):
        text = text.replace(b"c" + module + b"\n", b"ctapegraph.optim\n")
    assert b"ctapegraph.optim\n_made_again\n" in text and b"tapegraph.optim." not in text
    if isinstance(state, tg.optim.OptimizerState):
        assert b"ctapegraph.optim\nOptimizerState\n" in text and b"ctapegraph.optim\n_owner_of\n" in text
    copied_optimizer, copied_state = pickle.loads(text)
    assert type(copied_optimizer) is type(optimizer) and repr(copied_optimizer) == repr(optimizer)
    expected_state, expected = _train(optimizer, state, data, 2, start=2)
    copied_state, values = _train(copied_optimizer, copied_state, data, 2, start=2)
    assert values == expected
    _same_bits(_params_of(copied_state), _params_of(expected_state))


def test_deep_graphs_pickle_and_deepcopy_at_the_default_recursion_limit():
    # a chain of 2,000 ops and a 1,000-layer MLP: each node pickled with
    # its operands nested would pass the recursion limit of pickle and of
    # copy.deepcopy at a few hundred ops
    assert sys.getrecursionlimit() <= 1000
    x = tg.param("x", shape=(3,))
    chain = x
    for index in range(2000):
        chain = tg.tanh(chain) if index % 2 else chain * 1.001
    h = tg.input("h", shape=(2,))
    layers = []
    for index in range(1000):
        layers.append(tg.param(f"W{index}", shape=(2, 2)))
        h = tg.tanh(layers[-1] @ h)
    for objective, wrt, params, inputs in [
            (tg.sum(chain), [x], {"x": np.array([0.1, -0.2, 0.3])}, {}),
            (tg.sum(h), layers[:3], {f"W{index}": np.eye(2) * 0.9 for index in range(1000)}, {"h": np.ones(2)})]:
        program = tg.compile(objective, wrt=wrt)
        copy_ = pickle.loads(pickle.dumps(program))
        value, grads = program.value_and_grad(params, inputs)
        copied_value, copied_grads = copy_.value_and_grad(params, inputs)
        assert copied_value == value
        for name in grads:
            np.testing.assert_array_equal(copied_grads[name], grads[name])
        deep = copy.deepcopy(objective)
        assert deep is not objective and bool(deep == objective) and deep.origin == objective.origin
    # shared subexpressions stay shared: one object each in the copy
    shared = tg.exp(x)
    both = pickle.loads(pickle.dumps(shared + shared))
    assert both.inputs[0] is both.inputs[1]


def test_a_program_with_a_user_op_pickles_by_the_ops_registered_name():
    from test_custom_op import SOFTSIGN
    w = tg.param("w", shape=(3,))
    program = tg.compile(tg.sum(SOFTSIGN(w, 2.0)), wrt=[w])
    copied = pickle.loads(pickle.dumps(program))
    point = {"w": np.array([0.5, -1.0, 3.0])}
    assert copied.value_and_grad(point)[0] == program.value_and_grad(point)[0]


def test_a_program_unpickled_in_another_process_computes_the_same_bits(tmp_path):
    program = _classifier()
    params, data = _values()
    value, grads = program.value_and_grad(params, data)
    path = tmp_path / "program.pickle"
    path.write_bytes(pickle.dumps((program, tg.adam(program, learning_rate=0.01), params, data)))
    script = textwrap.dedent(f"""
        import pickle, sys
        program, adam, params, data = pickle.loads(open({str(path)!r}, "rb").read())
        value, grads = program.value_and_grad(params, data)
        state, step_value = adam(adam.init(params), data)
        pickle.dump((value, grads, step_value, state.params), sys.stdout.buffer)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(_root()), "PATH": "/usr/bin:/bin"})
    other_value, other_grads, step_value, new_params = pickle.loads(result.stdout)
    assert other_value == value
    _same_bits(other_grads, grads)
    adam = tg.adam(program, learning_rate=0.01)
    expected_state, expected_value = adam(adam.init(params), data)
    assert step_value == expected_value
    _same_bits(new_params, expected_state.params)


def _root():
    import pathlib
    return pathlib.Path(__file__).resolve().parent.parent


# Fitted estimators: their programs now pickle, so they do.

def _fitted():
    from models import LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(30)
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    settings = {"max_num_epochs": 5, "random_state": 0, "step_size": 0.01}
    return [(LinearRegression(**settings).fit(X, y), X), (RidgeRegression(l2_reg=0.1, **settings).fit(X, y), X),
            (MLPRegression(num_hidden_units=4, **settings).fit(X, y), X),
            (MulticlassClassifier(num_hidden_units=4, **settings).fit(X, labels), X)]


def test_fitted_estimators_round_trip_through_pickle_and_joblib_and_predict_the_same_bits(tmp_path):
    joblib = pytest.importorskip("joblib")
    for estimator, X in _fitted():
        name = type(estimator).__name__
        expected = estimator.predict(X)
        path = tmp_path / f"{name}.joblib"
        joblib.dump(estimator, path)
        for copied in (pickle.loads(pickle.dumps(estimator)), joblib.load(path)):
            assert type(copied) is type(estimator) and copied.get_params() == estimator.get_params()
            predicted = copied.predict(X)
            assert predicted.dtype == expected.dtype and predicted.tobytes() == expected.tobytes(), name
            if hasattr(estimator, "predict_proba"):
                assert copied.predict_proba(X).tobytes() == estimator.predict_proba(X).tobytes()
