"""Epochs: equal to the steps called one by one; orders, minibatches, progress, bad input."""

import numpy as np
import pytest

import tapegraph as tg


def _per_example():
    x = tg.input("x", shape=(3,))
    y = tg.input("y")
    w = tg.param("w", shape=(3,))
    b = tg.param("b")
    loss = tg.squared_l2_distance(tg.vector_scalar_affine(x, w, b), y)
    return tg.compile(loss, wrt=[w, b])


def _batched():
    x = tg.input("x", shape=("batch", 3))
    y = tg.input("y", shape=("batch",))
    w = tg.param("w", shape=(3,))
    b = tg.param("b")
    loss = tg.mean(tg.square(x @ w + b - y))
    return tg.compile(loss, wrt=[w, b])


def _data(n=23, seed=0):
    rng = np.random.default_rng(seed)
    return ({"x": rng.normal(size=(n, 3)), "y": rng.normal(size=n)},
            {"w": rng.normal(size=3), "b": np.array(0.1)})


def _optimizers(prog):
    return [tg.sgd(prog, 0.05), tg.sgd(prog, 0.05, momentum=0.9), tg.adam(prog, learning_rate=0.01),
            tg.rmsprop(prog, learning_rate=0.01), tg.adamw(prog, learning_rate=tg.schedules.exponential(0.01, 0.9))]


def _params_of(state):
    return state.params if isinstance(state, tg.OptimizerState) else state


@pytest.mark.parametrize("index", range(5))
def test_an_epoch_is_its_steps_one_by_one_bit_for_bit(index):
    prog = _per_example()
    data, params = _data()
    opt = _optimizers(prog)[index]
    order = tg.shuffled(23, seed=4)
    order = np.concatenate([order, order[:5]])  # repeats allowed
    state, objectives = opt.epoch(opt.init(params), data, order=order)
    by_hand = opt.init(params)
    values = []
    for row in order:
        by_hand, value = opt(by_hand, {"x": data["x"][row], "y": data["y"][row]})
        values.append(value)
    assert objectives.shape == (28,) and objectives.tolist() == values
    for name in params:
        assert np.array_equal(_params_of(state)[name], _params_of(by_hand)[name])


def test_the_default_order_is_every_row_in_turn():
    prog = _per_example()
    data, params = _data()
    step = tg.sgd(prog, 0.05)
    new_params, objectives = step.epoch(params, data)
    expected, expected_objectives = step.epoch(params, data, order=np.arange(23))
    assert objectives.tolist() == expected_objectives.tolist()
    assert np.array_equal(new_params["w"], expected["w"])


@pytest.mark.parametrize("donate", [False, True])
def test_minibatches_with_a_shorter_last_batch_are_the_steps_one_by_one(donate):
    prog = _batched()
    data, params = _data()
    opt = tg.adam(prog, learning_rate=0.01, donate=donate)
    order = tg.shuffled(23, seed=1)
    opt(opt.init(params), {"x": data["x"][:5], "y": data["y"][:5]})
    opt(opt.init(params), {"x": data["x"][:3], "y": data["y"][:3]})
    with tg.no_new_specializations():  # batches of 5 and a last one of 3: both compiled above
        state, objectives = opt.epoch(opt.init(params), data, order=order, batch_size=5)
    assert len(objectives) == 5
    by_hand = opt.init(params)
    for start in range(0, 23, 5):
        rows = order[start:start + 5]
        by_hand, value = opt(by_hand, {"x": data["x"][rows], "y": data["y"][rows]})
        assert value == objectives[start // 5]
    assert np.array_equal(state.params["w"], by_hand.params["w"])
    assert state.count == 5


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batched_epochs_on_any_memory_layout_are_the_steps_one_by_one(layout, shuffle):
    # the epoch gathers its rows once and slices the batches from that copy
    # (or slices the data itself, without an order): the same values as a gather per step
    prog = _batched()
    data, params = _data()
    if layout == "F":
        data = {name: np.asfortranarray(array) for name, array in data.items()}
    elif layout == "strided":
        data = {name: np.repeat(array, 2, axis=0)[::2] for name, array in data.items()}
    order = tg.shuffled(23, seed=2) if shuffle else None
    step = tg.sgd(prog, 0.05)
    new_params, objectives = step.epoch(params, data, order=order, batch_size=4)
    rows_in_order = np.arange(23) if order is None else order
    by_hand = params
    for start in range(0, 23, 4):
        rows = rows_in_order[start:start + 4]
        by_hand, value = step(by_hand, {"x": data["x"][rows], "y": data["y"][rows]})
        assert value == objectives[start // 4]
    assert np.array_equal(new_params["w"], by_hand["w"]) and np.array_equal(new_params["b"], by_hand["b"])


def test_progress_prints_to_stderr_only_when_asked(capsys):
    prog = _per_example()
    data, params = _data()
    step = tg.sgd(prog, 0.05)
    step.epoch(params, data)
    assert capsys.readouterr().err == ""
    step.epoch(params, data, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("sgd epoch: step 23/23, objective ") and len(lines) == 12


def test_shuffled_is_reproducible():
    assert tg.shuffled(10, seed=3).tolist() == tg.shuffled(10, seed=3).tolist()
    assert sorted(tg.shuffled(10, seed=3).tolist()) == list(range(10))
    with pytest.raises(tg.CallError, match="non-negative integer"):
        tg.shuffled(-1)


def _refused(opt, state, data, match, **options):
    with pytest.raises(tg.CallError, match=match):
        opt.epoch(state, data, **options)


def test_bad_epochs_are_refused_before_any_step_runs():
    prog = _per_example()
    data, params = _data()
    opt = tg.adam(prog, donate=True)
    state = opt.init(params)
    before = state.params["w"].copy()
    _refused(opt, state, data, r"order\[2\] = 23 is out of range: the data has 23 rows", order=[0, 1, 23])
    _refused(opt, state, data, r"order\[0\] = -1 is out of range", order=[-1])
    _refused(opt, state, data, "integer row indices, got dtype float64", order=[0.0, 1.0])
    _refused(opt, state, data, "1-D array of row indices", order=[[0, 1]])
    _refused(opt, state, {"x": data["x"], "y": data["y"][:20]}, "leading axes differ: {'x': 23, 'y': 20}")
    _refused(opt, state, data, "batch_size=4 given, but the program has no batch dimension", batch_size=4)
    _refused(opt, state, {"x": data["x"]}, r"data lacks input\(s\) \['y'\]")
    _refused(opt, state, {**data, "z": data["y"]}, r"unknown input\(s\) \['z'\]")
    _refused(opt, state, {"x": data["x"][:, :2], "y": data["y"]}, "each example has shape \\(2,\\)")
    _refused(opt, state, data, "unknown hyperparameter 'lr'", lr=0.1)
    _refused(opt, state, data, "learning_rate must be a positive finite number", learning_rate=float("nan"))
    _refused(opt, tg.rmsprop(prog).init(params), data, "made by a rmsprop optimizer")
    assert np.array_equal(state.params["w"], before) and state.count == 0
    step = tg.sgd(prog, 0.1)
    with pytest.raises(tg.CallError, match="out of range"):
        step.epoch(params, data, order=[99])
    batched = tg.sgd(_batched(), 0.1)
    with pytest.raises(tg.CallError, match="give batch_size"):
        batched.epoch(params, data)
    with pytest.raises(tg.CallError, match="batch_size must be a positive integer"):
        batched.epoch(params, data, batch_size=0)


def test_a_step_that_fails_midway_is_named_with_its_rows_and_keeps_its_error_class():
    z = tg.input("z", shape=(3,))
    y = tg.input("y", shape=(), dtype="int64")
    w = tg.param("w", shape=(3,))
    program = tg.compile(tg.cross_entropy(w * z, y), wrt=[w], outputs={"ce": tg.cross_entropy(z, y)})
    data = {"z": np.zeros((4, 3)), "y": np.array([0, 1, 5, 2])}
    with pytest.raises(tg.TapeError, match=r"^sgd epoch: step 1 \(row 2\): forward instruction \d+ failed "
                                           r"\(IndexError: label 5 is outside 0\.\.2\)"):
        tg.sgd(program, 0.1).epoch({"w": np.ones(3)}, data, order=np.array([0, 2, 1]))
    with pytest.raises(tg.TapeError, match=r"^adam epoch: step 2 \(row 2\): forward instruction"):
        optimizer = tg.adam(program)
        optimizer.epoch(optimizer.init({"w": np.ones(3)}), data)
    with pytest.raises(tg.TapeError, match=r"^map: step 2 \(row 2\): forward instruction"):
        program.map({"w": np.ones(3)}, data, outputs=["ce"])
    # check mode's error stays a NonFiniteError, named with its step
    finite = {"z": np.array([[1.0, 2.0, 3.0], [np.inf, 0.0, 0.0]]), "y": np.array([0, 1])}
    with tg.check_finite(), pytest.raises(tg.NonFiniteError, match=r"^sgd epoch: step 1 \(row 1\): forward instruction"):
        tg.sgd(program, 0.1).epoch({"w": np.ones(3)}, finite)
