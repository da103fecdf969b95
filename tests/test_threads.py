"""Calls from several threads give the results that sequential calls give.

Each test runs the same work twice: once in one thread (the reference),
then split over two threads that start together at a ``threading.Barrier``
with the interpreter's switch interval at a microsecond, so that the
threads interleave inside calls (between the numpy calls of one step).
Before each call had buffers of its own, two threads calling one
specialisation wrote into the same buffers and most results were wrong.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest

import tapegraph as tg

import homework_graphs as hw

CALLS = 1000
THREADS = 2


def _in_threads(work: Callable[[int], list]) -> list[list]:
    """``work(thread_index)`` in each of THREADS threads at once: their results."""
    barrier = threading.Barrier(THREADS)
    results: list = [None] * THREADS
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as error:  # re-raised in the main thread
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=target, args=(index,)) for index in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    if errors:
        raise errors[0]
    return results


def _examples(thread_index: int, size: int, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + thread_index)
    return rng.standard_normal((size, num_features)), rng.standard_normal(size)


def _assert_same(threaded: list, sequential: list) -> None:
    """Exactly equal, call by call: floats, arrays and dicts of arrays."""
    assert len(threaded) == len(sequential)
    for index, (got, expected) in enumerate(zip(threaded, sequential)):
        if isinstance(expected, dict):
            assert got.keys() == expected.keys()
            for key in expected:
                assert np.array_equal(got[key], expected[key]), f"call {index}, {key!r} differs"
        else:
            assert np.array_equal(got, expected), f"call {index} differs: {got} != {expected}"


def _flatten(result) -> dict:
    """A call's results as one dict (the objective under 'objective')."""
    if isinstance(result, tuple):
        first, second = result
        if isinstance(first, dict):  # an SGD step: (new params, objective)
            return {"objective": second, **first}
        return {"objective": first, **second}  # value_and_grad: (objective, grads)
    return result


@pytest.mark.parametrize("kind", ["value_and_grad", "run"])
def test_calls_from_two_threads_match_sequential_calls(kind):
    program = hw.mlp_regression(num_inputs=20)
    params = hw.random_params(program, np.random.default_rng(0))
    data = [_examples(index, CALLS, 20) for index in range(THREADS)]
    call = getattr(program, kind)

    def work(index: int) -> list:
        X, Y = data[index]
        return [_flatten(call(params, {"x": X[i], "y": Y[i]})) for i in range(CALLS)]

    sequential = [work(index) for index in range(THREADS)]
    for threaded, expected in zip(_in_threads(work), sequential):
        _assert_same(threaded, expected)
    assert len(program.specializations()) == 1  # both threads ran one specialisation


def test_pure_sgd_from_two_threads_matches_sequential_training():
    program = hw.multiclass()
    step = tg.sgd(program, step_size=0.05)
    start = hw.random_params(program, np.random.default_rng(0))
    data = []
    for index in range(THREADS):
        rng = np.random.default_rng(200 + index)
        data.append((rng.standard_normal((CALLS, 2)), rng.integers(0, 3, size=CALLS)))

    def work(index: int) -> list:
        X, Y = data[index]
        params = start
        trajectory = []
        for i in range(CALLS):
            params, value = step(params, {"x": X[i], "y": Y[i]})
            trajectory.append(_flatten((params, value)))
        return trajectory

    sequential = [work(index) for index in range(THREADS)]
    for threaded, expected in zip(_in_threads(work), sequential):
        _assert_same(threaded, expected)


def test_a_step_on_two_batch_sizes_from_two_threads_matches_sequential_training():
    # each thread's batches have their own size: the step's plan changes its
    # entry back and forth, and the step follows it, while both call it
    program = hw.ridge(num_features=5, batch=True)
    step = tg.sgd(program, step_size=0.01)
    start = hw.random_params(program, np.random.default_rng(0))
    data = [_examples(index, CALLS // 10 * (3 + index), 5) for index in range(THREADS)]

    def work(index: int) -> list:
        X, Y = data[index]
        rows = 3 + index
        params, trajectory = start, []
        for first in range(0, len(Y), rows):
            params, value = step(params, {"x": X[first:first + rows], "y": Y[first:first + rows]})
            trajectory.append(_flatten((params, value)))
        return trajectory

    sequential = [work(index) for index in range(THREADS)]
    for threaded, expected in zip(_in_threads(work), sequential):
        _assert_same(threaded, expected)
    assert len(step._plan.cache) == 2  # one specialisation per size


def test_donated_steps_on_separate_arrays_from_two_threads_match_sequential_training():
    # Each thread donates its own arrays: the step's buffers are still shared
    # by the program, and must not be shared by the calls.
    program = hw.mlp_regression(num_inputs=20)
    step = tg.sgd(program, step_size=0.01, donate=True)
    start = hw.random_params(program, np.random.default_rng(0))
    data = [_examples(index, CALLS, 20) for index in range(THREADS)]

    def work(index: int) -> list:
        X, Y = data[index]
        params = {name: np.array(value) for name, value in start.items()}
        values = []
        for i in range(CALLS):
            _, value = step(params, {"x": X[i], "y": Y[i]})
            values.append(value)
        return [values, params]

    sequential = [work(index) for index in range(THREADS)]
    for (values, params), (expected_values, expected_params) in zip(_in_threads(work), sequential):
        assert values == expected_values
        _assert_same([params], [expected_params])


def test_two_threads_specialising_at_once_make_each_size_once(caplog):
    # a fresh program: both threads find its cache empty at the same moment
    program = hw.mlp_regression(num_inputs=8, batch=True)
    params = hw.random_params(program, np.random.default_rng(0))
    rng = np.random.default_rng(3)
    batches = {size: {"x": rng.standard_normal((size, 8)), "y": rng.standard_normal(size)} for size in (3, 5)}
    expected = {size: _flatten(hw.mlp_regression(num_inputs=8, batch=True).value_and_grad(params, inputs))
                for size, inputs in batches.items()}

    def work(index: int) -> list:
        results = []
        for call in range(200):
            size = (3, 5)[call // 50 % 2]
            results.append((size, _flatten(program.value_and_grad(params, batches[size]))))
        return results

    with caplog.at_level(logging.INFO, logger="tapegraph"):
        for results in _in_threads(work):
            for size, result in results:
                _assert_same([result], [expected[size]])
    assert sorted(spec.sizes["batch"] for spec in program.specializations()) == [3, 5]
    made = [record.getMessage() for record in caplog.records if "specialised" in record.getMessage()]
    assert len(made) == 2, made  # one lowering per size, however the threads raced


def test_a_step_in_use_by_another_call_runs_on_fresh_buffers():
    # what the threads rely on, shown without threads: a call that finds
    # every buffer set taken allocates another and gives it back when done
    program = hw.ridge(num_features=4)
    params = hw.random_params(program, np.random.default_rng(0))
    inputs = {"x": np.arange(4.0), "y": np.array(1.0)}
    expected = program.value_and_grad(params, inputs)
    plan = program._value_and_grad_plan()
    executable = plan.last
    free = executable.buffer_sets()
    assert len(free) == 1
    taken = executable._pool(False).free.pop()  # as a call in another thread would
    result = program.value_and_grad(params, inputs)
    assert result[0] == expected[0]
    _assert_same([result[1]], [expected[1]])
    free = executable.buffer_sets()
    assert len(free) == 1 and all(array is not mine for array, mine in zip(free[0].values(), taken))


def test_a_fresh_buffer_set_holds_the_constants():
    # an array constant lives in a buffer: each fresh set must have it written in
    w = tg.param("w", shape=(3,))
    scale = tg.const(np.array([1.0, 2.0, 3.0]))
    program = tg.compile(tg.sum(tg.square(w * scale)), wrt=[w])
    params = {"w": np.array([1.0, -1.0, 0.5])}
    expected_value, expected = program.value_and_grad(params)
    plan = program._value_and_grad_plan()
    free = plan.last._pool(False).free
    taken = [free.pop() for _ in range(len(free))]  # every set in use elsewhere
    value, grads = program.value_and_grad(params)
    assert value == expected_value and np.array_equal(grads["w"], expected["w"])
    assert len(free) == 1 and not any(array is mine for array in free[0] for mine in taken[0])
    assert value == 1.0 + 4.0 + 2.25
