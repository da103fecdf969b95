"""How compile time grows with the size of the graph.

Run from the repository root:

    OPENBLAS_NUM_THREADS=1 python bench/compile_scaling.py            # the table (about two minutes)
    OPENBLAS_NUM_THREADS=1 python bench/compile_scaling.py --quick    # 1k and 10k only
    OPENBLAS_NUM_THREADS=1 python bench/compile_scaling.py --profile chain 10000   # cProfile of one case

Three families of graphs, each at about 1,000, 10,000 and 100,000 nodes:

- ``chain``: ``h = tanh(h) + w`` repeated on a vector parameter ``w`` (8,),
  objective ``sum(h)``: a graph as deep as it is long;
- ``sum``: Python's ``sum(terms)`` over terms ``sum(tanh(w * c_i))`` with a
  different constant ``c_i`` each, a left-deep chain of adds over wide terms;
- ``mlp``: a deep MLP of width 16, ``h = tanh(W_i h + b_i)`` per layer, a
  parameter pair per layer, objective ``sum(square(h))``.

The node count is that of the compiled graph: the objective and every
gradient, common subexpressions merged. For each case the script times,
``tg.compile`` (differentiation and the program's graph checks) and the
first ``value_and_grad`` call (lowering to a tape, buffer planning, code
generation and one run), 7 times at 1k nodes, 5 times at 10k and 3 times at
100k, every case in turn (round-robin, so the noise of a shared machine
falls on all alike), and prints a markdown table of the medians with the
growth of compile-plus-first-call time from one size to the next: linear
time means a ratio near 10 (the target is at most 15 for 10k over 1k).
Wall-clock times are what a user waits; the process's CPU time, shown
beside them, is less disturbed by other work on a shared machine.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tapegraph as tg  # noqa: E402
from tapegraph.compile.graph import build_graph  # noqa: E402

WIDTH = 16
#: Runs of each case at each size; the table shows their medians.
REPEATS = {1_000: 7, 10_000: 5, 100_000: 3}


def chain(steps: int) -> tuple[tg.Node, list[tg.Node], dict, dict]:
    """``h = tanh(h) + w``, ``steps`` times, on a vector parameter."""
    w = tg.param("w", shape=(8,))
    h = w
    for _ in range(steps):
        h = tg.tanh(h) + w
    params = {"w": np.linspace(-1.0, 1.0, 8)}
    return tg.sum(h), [w], params, {}


def wide_sum(terms: int) -> tuple[tg.Node, list[tg.Node], dict, dict]:
    """Python's ``sum`` over ``terms`` terms, each with its own constant."""
    w = tg.param("w", shape=(4,))
    parts = [tg.sum(tg.tanh(w * (0.5 + index / terms))) for index in range(terms)]
    params = {"w": np.array([0.1, -0.2, 0.3, -0.4])}
    return sum(parts), [w], params, {}


def deep_mlp(layers: int) -> tuple[tg.Node, list[tg.Node], dict, dict]:
    """``layers`` tanh layers of width 16 on an input of width 16."""
    rng = np.random.default_rng(0)
    x = tg.input("x", shape=(WIDTH,))
    h = x
    wrt, params = [], {}
    for index in range(layers):
        weight = tg.param(f"W{index}", shape=(WIDTH, WIDTH))
        bias = tg.param(f"b{index}", shape=(WIDTH,))
        h = tg.tanh(tg.affine(weight, h, bias))
        wrt += [weight, bias]
        params[f"W{index}"] = rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)
        params[f"b{index}"] = np.zeros(WIDTH)
    return tg.sum(tg.square(h)), wrt, params, {"x": rng.standard_normal(WIDTH)}


Family = Callable[[int], tuple[tg.Node, list[tg.Node], dict, dict]]
FAMILIES: dict[str, Family] = {"chain": chain, "sum": wide_sum, "mlp": deep_mlp}


def node_count(objective: tg.Node, wrt: list[tg.Node]) -> int:
    """Nodes of the compiled graph: objective and gradients, merged."""
    gradients = tg.grad(objective, wrt)
    return build_graph([objective, *gradients]).number_of_nodes()


def size_for(family: Family, nodes: int) -> int:
    """The family's size argument that gives about ``nodes`` nodes (it grows linearly)."""
    small = 20
    per_unit = node_count(*family(small)[:2]) / small
    return max(1, round(nodes / per_unit))


def measure(family: Family, size: int) -> dict[str, float]:
    """Build, compile and call once; the times in seconds and the node count."""
    objective, wrt, params, inputs = family(size)
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    program = tg.compile(objective, wrt=wrt)
    compiled = time.perf_counter()
    value, _ = program.value_and_grad(params, inputs)
    called, cpu_called = time.perf_counter(), time.process_time()
    if not np.isfinite(value):
        raise SystemExit(f"the objective is {value}, not a number")
    nodes = build_graph([program.objective, *program.gradients]).number_of_nodes()
    return {"nodes": nodes, "compile": compiled - start, "total": called - start, "cpu": cpu_called - cpu_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k nodes only")
    parser.add_argument("--profile", nargs=2, metavar=("FAMILY", "NODES"),
                        help="profile compile plus first call of one case (cProfile, top 25 by own time)")
    args = parser.parse_args()

    if args.profile:
        name, nodes = args.profile
        family = FAMILIES[name]
        objective, wrt, params, inputs = family(size_for(family, int(nodes)))
        profiler = cProfile.Profile()
        profiler.enable()
        tg.compile(objective, wrt=wrt).value_and_grad(params, inputs)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return

    targets = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    sizes = {(name, nodes): size_for(family, nodes) for name, family in FAMILIES.items() for nodes in targets}
    measure(chain, 10)  # warm up: first-use costs (imports, caches) are not the graph's
    # the cases are measured round-robin, so the machine's noise falls on all
    # of them alike; the medians are over REPEATS[nodes] runs of each
    results: dict[tuple[str, int], list[dict[str, float]]] = {case: [] for case in sizes}
    for round_number in range(max(REPEATS[nodes] for nodes in targets)):
        for (name, nodes), size in sizes.items():
            if round_number < REPEATS[nodes]:
                result = measure(FAMILIES[name], size)
                results[name, nodes].append(result)
                print(f"{name:6s} {result['nodes']:>7d} nodes: compile {result['compile']:6.2f} s, "
                      f"compile + first call {result['total']:6.2f} s ({result['cpu']:6.2f} s CPU)",
                      file=sys.stderr, flush=True)

    def median(name: str, nodes: int, key: str) -> float:
        return float(np.median([result[key] for result in results[name, nodes]]))

    header = " | ".join(f"~{nodes // 1000}k nodes: compile / + first call (CPU)" for nodes in targets)
    ratios = " | ".join(f"{later // 1000}k / {earlier // 1000}k (CPU)" for earlier, later in zip(targets, targets[1:]))
    print(f"| family | {header} | {ratios} |")
    print("|---|" + "---|" * (2 * len(targets) - 1))
    for name in FAMILIES:
        cells = " | ".join(f"{results[name, nodes][0]['nodes']:,}: {median(name, nodes, 'compile'):.2f} / "
                           f"{median(name, nodes, 'total'):.2f} ({median(name, nodes, 'cpu'):.2f})"
                           for nodes in targets)
        growth = " | ".join(f"{median(name, later, 'total') / median(name, earlier, 'total'):.1f} "
                            f"({median(name, later, 'cpu') / median(name, earlier, 'cpu'):.1f})"
                            for earlier, later in zip(targets, targets[1:]))
        print(f"| {name} | {cells} | {growth} |")
    print(f"\nseconds, wall clock (CPU time of the process in brackets); medians of "
          f"{', '.join(f'{REPEATS[nodes]} ({nodes // 1000}k)' for nodes in targets)} runs; "
          f"target: 10k / 1k at most 15 for each family")
    if not args.quick:
        print(f"100k-node chain, compile plus first call: {median('chain', 100_000, 'total'):.1f} s "
              f"(target: under 60 s)")


if __name__ == "__main__":
    main()
