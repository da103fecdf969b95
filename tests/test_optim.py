"""Optimizers: trajectories against plain-numpy references, runtime hyperparameters, schedules, state."""

import math

import numpy as np
import pytest

import tapegraph as tg

STEPS = 100


def _problem():
    """A small MLP-free regression: a linear model with an L2 term, per example."""
    x = tg.input("x", shape=(3,))
    y = tg.input("y")
    w = tg.param("w", shape=(3,))
    b = tg.param("b")
    loss = tg.squared_l2_distance(tg.vector_scalar_affine(x, w, b), y) + tg.l2_norm_penalty(w, l2_reg=0.1)
    rng = np.random.default_rng(3)
    data = {"x": rng.normal(size=(STEPS, 3)), "y": rng.normal(size=STEPS)}
    params = {"w": rng.normal(size=3), "b": np.array(0.3)}
    return tg.compile(loss, wrt=[w, b]), data, params


def _gradient(params, x, y):
    """d/dw, d/db of (x.w + b - y)^2 + 0.1 |w|^2, and the objective."""
    residual = x @ params["w"] + params["b"] - y
    value = residual ** 2 + 0.1 * np.sum(params["w"] ** 2)
    return value, {"w": 2 * residual * x + 0.2 * params["w"], "b": np.array(2 * residual)}


def _reference(update, slots, params, data, steps=STEPS):
    """A plain-numpy trajectory: ``update(p, g, slots_of_p, t)`` for each parameter and step."""
    params = {name: np.array(value, dtype=float) for name, value in params.items()}
    state = {name: {slot: np.zeros_like(params[name]) for slot in slots} for name in params}
    values = []
    for t in range(1, steps + 1):
        value, grads = _gradient(params, data["x"][t - 1], data["y"][t - 1])
        values.append(value)
        for name in params:
            params[name] = update(params[name], grads[name], state[name], t)
    return params, np.array(values)


def _sgd_momentum(lr, momentum, nesterov, decay):
    def update(p, g, s, t):
        g = g + decay * p
        s["buf"] = momentum * s["buf"] + g
        d = g + momentum * s["buf"] if nesterov else s["buf"]
        return p - lr * d
    return update


def _adam(lr, b1, b2, eps, decay, decoupled):
    def update(p, g, s, t):
        if decoupled:
            p = p * (1 - lr * decay)
        else:
            g = g + decay * p
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        m_hat = s["m"] / (1 - b1 ** t)
        v_hat = s["v"] / (1 - b2 ** t)
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return update


def _rmsprop(lr, alpha, eps, decay):
    def update(p, g, s, t):
        g = g + decay * p
        s["sq"] = alpha * s["sq"] + (1 - alpha) * g * g
        return p - lr * g / (np.sqrt(s["sq"]) + eps)
    return update


CASES = {
    "sgd": (lambda prog, **donate: tg.sgd(prog, 0.05, **donate), _sgd_momentum(0.05, 0.0, False, 0.0), ["buf"]),
    "sgd weight decay": (lambda prog, **donate: tg.sgd(prog, 0.05, weight_decay=0.3, **donate), _sgd_momentum(0.05, 0.0, False, 0.3), ["buf"]),
    "sgd momentum": (lambda prog, **donate: tg.sgd(prog, 0.02, momentum=0.9, **donate), _sgd_momentum(0.02, 0.9, False, 0.0), ["buf"]),
    "sgd nesterov": (lambda prog, **donate: tg.sgd(prog, 0.02, momentum=0.8, nesterov=True, weight_decay=0.01, **donate),
                     _sgd_momentum(0.02, 0.8, True, 0.01), ["buf"]),
    "adam": (lambda prog, **donate: tg.adam(prog, learning_rate=0.05, **donate), _adam(0.05, 0.9, 0.999, 1e-8, 0.0, False), ["m", "v"]),
    "adam l2": (lambda prog, **donate: tg.adam(prog, learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1, **donate),
                _adam(0.05, 0.8, 0.99, 1e-6, 0.1, False), ["m", "v"]),
    "adamw": (lambda prog, **donate: tg.adamw(prog, learning_rate=0.05, weight_decay=0.2, **donate), _adam(0.05, 0.9, 0.999, 1e-8, 0.2, True),
              ["m", "v"]),
    "rmsprop": (lambda prog, **donate: tg.rmsprop(prog, learning_rate=0.01, weight_decay=0.05, **donate), _rmsprop(0.01, 0.99, 1e-8, 0.05),
                ["sq"]),
}


def _steps(opt, params, data, steps=STEPS, **hypers):
    state = opt.init(params)
    values = []
    for t in range(steps):
        state, value = opt(state, {"x": data["x"][t], "y": data["y"][t]}, **hypers)
        values.append(value)
    return (state.params if isinstance(state, tg.OptimizerState) else state), np.array(values)


@pytest.mark.parametrize("donate", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_a_100_step_trajectory_matches_the_numpy_reference(case, donate):
    prog, data, params = _problem()
    make, update, slots = CASES[case]
    opt = make(prog, donate=donate)
    expected, expected_values = _reference(update, slots, params, data)
    given = {name: np.array(value) for name, value in params.items()}
    got, values = _steps(opt, given, data)
    if not donate or isinstance(opt, tg.Optimizer):
        for name in params:  # nothing given is changed, unless donated to plain sgd (whose state it is)
            np.testing.assert_array_equal(given[name], params[name])
    np.testing.assert_allclose(values, expected_values, rtol=1e-12, atol=1e-12)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=1e-12)


def _example(data, t):
    return {"x": data["x"][t], "y": data["y"][t]}


def test_changing_the_step_size_every_step_compiles_nothing():
    prog, data, params = _problem()
    step = tg.sgd(prog, 0.1)
    step(params, _example(data, 0))
    before = prog.specializations()
    with tg.no_new_specializations():
        current = params
        for t in range(50):
            current, _ = step(current, _example(data, t), step_size=0.1 / (1 + t))
        tg.sgd(prog, 0.01)(params, _example(data, 0))  # a new step size, a new step object: the same tape
    assert prog.specializations() == before
    # and the decaying step sizes are the ones applied
    expected = {name: np.array(value, dtype=float) for name, value in params.items()}
    for t in range(50):
        _, grads = _gradient(expected, data["x"][t], data["y"][t])
        expected = {name: expected[name] - 0.1 / (1 + t) * grads[name] for name in expected}
    for name in expected:
        np.testing.assert_allclose(current[name], expected[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", ["sgd momentum", "adam", "adamw", "rmsprop"])
def test_overriding_hyperparameters_compiles_nothing(case):
    prog, data, params = _problem()
    opt = CASES[case][0](prog)
    state, _ = opt(opt.init(params), _example(data, 0))
    name = "step_size" if case.startswith("sgd") else "learning_rate"
    with tg.no_new_specializations():
        for t in range(1, 20):
            state, _ = opt(state, _example(data, t), **{name: 0.01 * t})
        if case == "adam":
            state, _ = opt(state, _example(data, 0), b1=0.5, b2=0.9, eps=1e-3)
    assert state.count == 20 + (case == "adam")


def test_a_whole_schedule_runs_on_one_tape_and_matches_a_reference():
    prog, data, params = _problem()
    schedules = [tg.schedules.constant(0.05), tg.schedules.exponential(0.1, 0.97),
                 tg.schedules.exponential(0.1, 0.5, decay_steps=10, staircase=True),
                 tg.schedules.step_decay(0.1, drop=0.5, every=25),
                 tg.schedules.cosine(0.1, total_steps=STEPS, warmup_steps=10)]
    tg.sgd(prog, schedules[0], momentum=0.5)(tg.sgd(prog, 0.1, momentum=0.5).init(params), _example(data, 0))
    for schedule in schedules:
        opt = tg.sgd(prog, schedule, momentum=0.5)
        with tg.no_new_specializations():
            got, _ = _steps(opt, params, data)
        rates = [schedule(count) for count in range(STEPS)]
        expected, _ = _reference(lambda p, g, s, t: _sgd_momentum(rates[t - 1], 0.5, False, 0.0)(p, g, s, t),
                                 ["buf"], params, data)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=1e-14)


def test_schedules_give_the_documented_values():
    cosine = tg.schedules.cosine(1.0, total_steps=10, warmup_steps=4, final=0.1)
    assert [cosine(count) for count in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine(4) == 1.0
    assert cosine(7) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.5)) / 2)
    assert cosine(10) == pytest.approx(0.1) and cosine(100) == pytest.approx(0.1)
    assert tg.schedules.exponential(2.0, 0.5, decay_steps=2)(3) == pytest.approx(2.0 * 0.5 ** 1.5)
    assert tg.schedules.step_decay(1.0, 0.1, every=3)(6) == pytest.approx(0.01)
    assert repr(tg.schedules.constant(0.5)) == "Constant(value=0.5)"
    with pytest.raises(tg.CallError, match="warmup_steps"):
        tg.schedules.cosine(1.0, total_steps=5, warmup_steps=5)


def test_adam_state_is_a_frozen_record_and_pure_steps_change_nothing():
    prog, data, params = _problem()
    opt = tg.adam(prog, learning_rate=0.01)
    state = opt.init(params)
    assert state.count == 0 and set(state.slots) == {"exp_avg", "exp_avg_sq"}
    assert set(state.slots["exp_avg"]) == {"w", "b"} and not state.slots["exp_avg"]["w"].any()
    kept = {name: value.copy() for name, value in state.params.items()}
    new_state, value = opt(state, _example(data, 0))
    assert isinstance(value, float) and new_state.count == 1
    for name in kept:
        np.testing.assert_array_equal(state.params[name], kept[name])
        assert not state.slots["exp_avg"][name].any()
        assert new_state.params[name] is not state.params[name]
    with pytest.raises(AttributeError):
        state.count = 3
    assert repr(state) == "<adam state: count=0, params=['w', 'b'], slots: exp_avg, exp_avg_sq>"
    assert repr(opt) == "<adam step learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-08 over ['w', 'b']>"
    # init copies: the caller's arrays are never the state's
    assert state.params["w"] is not params["w"]


def test_a_donated_state_is_updated_in_place():
    prog, data, params = _problem()
    opt = tg.adam(prog, learning_rate=0.01, donate=True)
    state = opt.init(params)
    w, m = state.params["w"], state.slots["exp_avg"]["w"]
    new_state, _ = opt(state, _example(data, 0))
    assert new_state.params["w"] is w and new_state.slots["exp_avg"]["w"] is m
    assert m.any()
    pure = tg.adam(prog, learning_rate=0.01)
    expected, _ = pure(pure.init(params), _example(data, 0))
    np.testing.assert_array_equal(w, expected.params["w"])


def test_the_dump_shows_hyperparameters_as_named_scalar_feeds():
    prog, data, params = _problem()
    text = tg.adam(prog).dump()
    for name in ("learning_rate", "b1", "b2", "eps", "bias_correction1", "bias_correction2_sqrt"):
        assert f":f64[] <- hyper {name}  #" in text
    assert "<- param exp_avg.w" in text and "update tape" in text
    text = tg.sgd(prog, 0.1).dump()
    assert ":f64[] <- hyper step_size  #" in text
    assert "sgd step: step_size=0.1" in text


def test_bad_hyperparameters_and_states_are_refused_before_any_step():
    prog, data, params = _problem()
    for bad in (-0.1, 0.0, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(tg.CallError, match="step_size"):
            tg.sgd(prog, bad)
        with pytest.raises(tg.CallError, match="learning_rate"):
            tg.adam(prog, learning_rate=bad)
    with pytest.raises(tg.CallError, match="b1 must be a finite number in \\[0, 1\\)"):
        tg.adam(prog, b1=1.0)
    opt = tg.adam(prog)
    state = opt.init(params)
    with pytest.raises(tg.CallError, match="unknown hyperparameter 'learning_rat' \\(did you mean 'learning_rate'\\?\\)"):
        opt(state, _example(data, 0), learning_rat=0.1)
    with pytest.raises(tg.CallError, match="learning_rate must be a positive finite number"):
        opt(state, _example(data, 0), learning_rate=-1.0)
    with pytest.raises(tg.CallError, match="made with weight_decay=0"):
        opt(state, _example(data, 0), weight_decay=0.1)
    with pytest.raises(tg.CallError, match="made with weight_decay=0"):
        tg.sgd(prog, 0.1)(params, _example(data, 0), weight_decay=0.1)
    with pytest.raises(tg.CallError, match="0 must be|step_size must be a positive"):
        tg.sgd(prog, 0.0)
    with pytest.raises(tg.CallError, match="schedule for learning_rate at step count 3"):
        tg.adam(prog, learning_rate=lambda count: 0.1 - 0.05 * count)(state.__class__(
            state.params, 3, state.slots, state.owner), _example(data, 0))
    with pytest.raises(tg.CallError, match="this state was made by a rmsprop optimizer"):
        opt(tg.rmsprop(prog).init(params), _example(data, 0))
    other, _, _ = _problem()
    with pytest.raises(tg.CallError, match="an optimizer of another program"):
        opt(tg.adam(other).init(params), _example(data, 0))
    with pytest.raises(tg.CallError, match="plain tg.sgd takes the parameters"):
        opt(params, _example(data, 0))
    with pytest.raises(tg.CallError, match="nesterov=True needs a momentum"):
        tg.sgd(prog, 0.1, nesterov=True)
    # the same rule and program, a new optimizer object: the state carries over
    again, _ = tg.adam(prog, learning_rate=0.5)(state, _example(data, 0))
    assert again.count == 1


def test_a_hyperparameter_named_like_a_feed_is_refused():
    step_size = tg.input("step_size")
    w = tg.param("w", shape=(2,))
    prog = tg.compile(tg.sum(tg.square(w)) * step_size, wrt=[w])
    with pytest.raises(tg.GraphError, match="input named 'step_size'"):
        tg.sgd(prog, 0.1)


def test_a_step_whose_tape_reads_no_hyperparameter_still_runs():
    # no parameter reaches the objective: zero gradients, nothing reads the step size
    x = tg.input("x", shape=(2,))
    w = tg.param("w", shape=(2,))
    prog = tg.compile(tg.sum(tg.square(x)), wrt=[w])
    new_params, value = tg.sgd(prog, 0.1)({"w": np.ones(2)}, {"x": np.ones(2)}, step_size=0.2)
    assert value == 2.0 and new_params["w"].tolist() == [1.0, 1.0]
    opt = tg.adam(prog)
    state, value = opt(opt.init({"w": np.ones(2)}), {"x": np.ones(2)})
    assert value == 2.0 and state.params["w"].tolist() == [1.0, 1.0]
