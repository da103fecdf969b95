"""A tiny timer for per-call costs in microseconds."""

import statistics
import time


def median_us(fn, repeats=7, number=1000):
    """Median microseconds per call of fn() over `repeats` batches of `number` calls.

    One untimed batch runs first so caches, lazy imports and numpy's internal
    allocator are warm. The median of batches, not the minimum, is reported
    because this machine is shared and noisy; the garbage collector is left
    on, as it would be in a training loop.
    """
    for _ in range(number):
        fn()
    batch_means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        batch_means.append(elapsed / number * 1e6)
    return statistics.median(batch_means)
