"""Where ``contract`` switches from einsum's own loops to its BLAS path.

Run from the repository root:  OPENBLAS_NUM_THREADS=1 python bench/einsum_blas.py

For n x n matrix products ``ij,jk->ik`` at growing n, the median time of
``np.einsum(..., out=out)`` (its C loops) and of ``np.einsum(...,
optimize=True, out=out)`` (a plan, then tensordot's BLAS call), the two
interleaved run by run so that a noisy machine slows both alike. The
crossover in multiply-adds is what ``tapegraph.ops.linalg.BLAS_WORK``
is set from; the last column is the path that threshold chooses.
"""

import statistics
import timeit

import numpy as np

from tapegraph.ops.linalg import BLAS_WORK

SIZES = (8, 16, 24, 32, 40, 48, 64, 128, 256)
RUNS = 15


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'n':>4} {'n^3':>9} {'loops us':>10} {'blas us':>10}  chosen (BLAS_WORK={BLAS_WORK})")
    for n in SIZES:
        a, b, out = rng.random((n, n)), rng.random((n, n)), np.empty((n, n))
        number = max(1, 20000 // (n * n))
        loops, blas = [], []
        for _ in range(RUNS):
            loops.append(timeit.timeit(lambda: np.einsum("ij,jk->ik", a, b, out=out), number=number) / number)
            blas.append(timeit.timeit(lambda: np.einsum("ij,jk->ik", a, b, out=out, optimize=True),
                                      number=number) / number)
        chosen = "blas" if n ** 3 > BLAS_WORK else "loops"
        print(f"{n:>4} {n ** 3:>9} {statistics.median(loops) * 1e6:>10.1f} {statistics.median(blas) * 1e6:>10.1f}  {chosen}")


if __name__ == "__main__":
    main()
