"""Per-call cost of carrying the user's lines in a step's code object.

A compiled step runs with a code object whose location table names the
user's file and lines (so numpy's warnings point there); its bytecode is
the code compiled from the generated text. This times the same entry with
each of the two code objects, interleaved round by round (alternating
which goes first), on two small programs (the README's linear model on
400 features, and a 3-parameter sum of logs), and prints the medians,
their ratio and the median of each round's ratio.

    OPENBLAS_NUM_THREADS=1 python bench/warning_lines.py
"""

from __future__ import annotations

import statistics

import numpy as np

import tapegraph as tg
from timing import median_us


def _programs():
    x = tg.input("x", shape=(400,))
    y = tg.input("y", shape=())
    w = tg.param("w", shape=(400,))
    b = tg.param("b", shape=())
    pred = tg.vector_scalar_affine(x, w, b)
    loss = tg.squared_l2_distance(pred, y) + tg.l2_norm_penalty(w, l2_reg=1.0)
    rng = np.random.default_rng(0)
    linear = tg.compile(loss, wrt=[w, b])
    yield "linear 400", linear, {"w": rng.normal(size=400), "b": np.array(0.0)}, {"x": rng.normal(size=400), "y": 1.0}
    v = tg.param("v", shape=(3,))
    logs = tg.compile(tg.sum(tg.log(v)), wrt=[v])
    yield "sum of logs", logs, {"v": np.array([1.0, 2.0, 3.0])}, {}


def main(rounds: int = 15) -> None:
    for label, program, params, inputs in _programs():
        program.value_and_grad(params, inputs)  # specialise: the entry exists from here on
        plan = program._value_and_grad_plan()
        executable = next(iter(plan.cache.values()))
        entry = plan.enter
        relocated = entry.__code__
        compiled = executable._generated[relocated][0]
        assert compiled.co_code == relocated.co_code and compiled.co_filename != relocated.co_filename

        def call():
            return entry(None, params, inputs)

        times = {"user's lines": [], "generated lines": []}
        for round_ in range(rounds):
            order = [("user's lines", relocated), ("generated lines", compiled)]
            for name, code in order if round_ % 2 else reversed(order):  # neither always first
                entry.__code__ = code
                times[name].append(median_us(call, repeats=5, number=2000))
        entry.__code__ = relocated
        user, generated = (statistics.median(times[name]) for name in ("user's lines", "generated lines"))
        # each round's two timings ran back to back: their ratio is the least noisy comparison
        paired = statistics.median(a / b for a, b in zip(times["user's lines"], times["generated lines"]))
        print(f"{label}: user's lines {user:.3f} us, generated lines {generated:.3f} us, "
              f"ratio of medians {user / generated:.3f}, median of paired ratios {paired:.3f}")


if __name__ == "__main__":
    main()
