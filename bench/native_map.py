"""``Program.map`` on the native backend: one native call against the loop of calls it replaces.

Run with ``OPENBLAS_NUM_THREADS=1 python bench/native_map.py``. The
homework's ridge model (400 features, the program ``fit`` compiles, with a
batch dimension) predicts 1000 rows, one row per step (``batch_size=1``)
and in batches of 10: ``prog.map`` on a native program (one native call)
against the loop of ``run`` calls that ``map`` was before (one native call
per step, the results concatenated), and against ``map`` on the numpy
backend. The contenders are interleaved; medians are printed, with their
ratios (docs/performance.md, "The native backend").
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tapegraph as tg  # noqa: E402
from models import catalog  # noqa: E402

REPEATS = int(os.environ.get("BENCH_REPEATS", "9"))
ROWS = 1000


def _loop_of_runs(program: tg.Program, params, X: np.ndarray, batch: int) -> np.ndarray:
    """What ``map`` ran before: one ``run`` per batch of rows, the predictions concatenated."""
    runs = [program.run(params, {"x": X[start:start + batch]}, outputs=["prediction"])["prediction"]
            for start in range(0, len(X), batch)]
    return np.concatenate(runs)


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"{REPEATS} interleaved repeats, {ROWS} rows")
    program, params, _ = catalog.build("ridge")
    X, _ = catalog.MODELS["ridge"].data(400)
    X = np.ascontiguousarray(np.tile(X, (ROWS // len(X) + 1, 1))[:ROWS])
    native_program = tg.compile(program.objective, wrt=program.wrt, outputs=program.outputs, backend="native")
    print(f"{'batch_size':<12}{'native map ms':>15}{'native loop ms':>16}{'numpy map ms':>14}"
          f"{'loop/map':>10}{'numpy/map':>11}")
    for batch in (1, 10):
        contenders = {
            "map": lambda: native_program.map(params, {"x": X}, outputs=["prediction"], batch_size=batch),
            "loop": lambda: _loop_of_runs(native_program, params, X, batch),
            "numpy": lambda: program.map(params, {"x": X}, outputs=["prediction"], batch_size=batch),
        }
        results = {name: np.asarray(function()["prediction"] if name != "loop" else function())
                   for name, function in contenders.items()}  # warm: compiled, specialised
        assert np.array_equal(results["map"], results["loop"]), "the native map differs from its loop of runs"
        assert np.allclose(results["map"], results["numpy"], rtol=1e-12, atol=1e-12)
        times = {name: [] for name in contenders}
        for _ in range(REPEATS):
            for name, function in contenders.items():
                times[name].append(_time(function))
        median = {name: statistics.median(values) * 1e3 for name, values in times.items()}
        print(f"{batch:<12}{median['map']:>15.3f}{median['loop']:>16.3f}{median['numpy']:>14.3f}"
              f"{median['loop'] / median['map']:>10.1f}{median['numpy'] / median['map']:>11.1f}")


if __name__ == "__main__":
    main()
