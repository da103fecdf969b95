"""No allocation per step: repeated calls on one specialisation allocate
no array memory beyond the arrays they return.

The bound tested, for one call after warm-up: the peak of traced memory
above its level before the call is at most the bytes of the arrays the
call returns plus ``PYTHON_OBJECTS`` (4 KiB) for the bookkeeping of the
call itself: the result dict, array headers, a float, and the transient
iterator state (up to about 2.5 KiB) numpy takes inside a broadcasting
ufunc call. With ``donate=True`` nothing is returned that was not given,
so the peak must stay under 4 KiB even when the parameters are 32 KB,
which rules out any per-step array allocation.
Across many calls, numpy's array-data memory (its tracemalloc domain)
does not grow at all.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import tapegraph as tg

import homework_graphs as hw

PYTHON_OBJECTS = 4096
NUMPY_DOMAIN = np.lib.tracemalloc_domain


def _cases():
    rng = np.random.default_rng(0)
    ridge = hw.ridge()
    mlp = hw.mlp_regression(num_inputs=400)
    multiclass = hw.multiclass()
    batched = hw.multiclass(batch=True)
    return [
        ("ridge", ridge, hw.random_params(ridge, rng), {"x": rng.standard_normal(400), "y": np.array(0.5)}),
        ("mlp-features", mlp, hw.random_params(mlp, rng), {"x": rng.standard_normal(400), "y": np.array(0.5)}),
        ("multiclass", multiclass, hw.random_params(multiclass, rng), {"x": rng.standard_normal(2), "y": np.array(2)}),
        ("multiclass-batch", batched, hw.random_params(batched, rng),
         {"x": rng.standard_normal((16, 2)), "y": rng.integers(0, 3, size=16)}),
    ]


CASES = _cases()


def _peak_of_one_call(call) -> tuple[int, object]:
    for _ in range(5):
        call()
    tracemalloc.start()
    try:
        call()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return peak, result


@pytest.mark.parametrize("name, program, params, inputs", CASES, ids=[case[0] for case in CASES])
def test_value_and_grad_allocates_only_what_it_returns(name, program, params, inputs):
    peak, (_, grads) = _peak_of_one_call(lambda: program.value_and_grad(params, inputs))
    returned = sum(array.nbytes for array in grads.values())
    assert peak <= returned + PYTHON_OBJECTS


@pytest.mark.parametrize("name, program, params, inputs", CASES, ids=[case[0] for case in CASES])
def test_sgd_step_allocates_only_what_it_returns(name, program, params, inputs):
    step = tg.sgd(program, step_size=1e-3)
    peak, (new_params, _) = _peak_of_one_call(lambda: step(params, inputs))
    returned = sum(array.nbytes for array in new_params.values())
    assert peak <= returned + PYTHON_OBJECTS


@pytest.mark.parametrize("name, program, params, inputs", CASES, ids=[case[0] for case in CASES])
def test_donated_step_allocates_no_arrays(name, program, params, inputs):
    step = tg.sgd(program, step_size=1e-3, donate=True)
    donated = {key: value.copy() for key, value in params.items()}
    peak, _ = _peak_of_one_call(lambda: step(donated, inputs))
    assert peak <= PYTHON_OBJECTS


@pytest.mark.parametrize("name, program, params, inputs", CASES, ids=[case[0] for case in CASES])
def test_array_memory_does_not_grow_over_many_steps(name, program, params, inputs):
    step = tg.sgd(program, step_size=1e-3, donate=True)
    donated = {key: value.copy() for key, value in params.items()}
    for _ in range(5):
        step(donated, inputs)
    only_numpy = [tracemalloc.DomainFilter(True, NUMPY_DOMAIN)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only_numpy)
        for _ in range(200):
            step(donated, inputs)
        after = tracemalloc.take_snapshot().filter_traces(only_numpy)
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth <= 0
