"""Time one per-example SGD step: homework engine, hand-fused numpy, tapegraph.

Run from the repository root:

    python bench/run.py               # the full run (about 10 seconds)
    python bench/run.py --quick       # a smoke run, under a second
    python bench/run.py --markdown    # the table as markdown (docs/performance.md)
    python bench/run.py --profile     # also: where tapegraph's ridge step spends its time
    python bench/run.py --profile ridge multiclass   # ... or these models' steps
    python bench/run.py --statistic p10   # a loaded machine: the fast tenth of the batches

For each of the homework's four models (ridge on 400 features, MLP regression
on raw x and on 400 features, the multiclass MLP), all per example with no
batch dimension:

1. the tapegraph model is built with the public API, compiled with
   ``tg.compile(loss, wrt=[...])`` and turned into a pure step
   ``tg.sgd(prog, step_size)`` and a donated one (``donate=True``);
2. one tapegraph step (pure and donated) from the same parameters and example
   as the hand-fused step must give the same objective and new parameters,
   within 1e-12; then a run of steps through the whole data set must still
   agree (which catches state leaking between calls through reused buffers);
3. the four contenders are timed in this one process, interleaved: each
   round times one batch of ``--number`` steps of every contender, in an
   order rotated from round to round, with ``timing.median_us(fn, repeats=1)``
   (so each batch follows its own untimed warm-up batch); the figure
   reported is the median over ``--rounds`` (51) rounds of the per-step mean
   of a batch of ``--number`` (200) steps, the statistic
   ``median_us(fn, repeats=51)`` reports, with the
   machine's noise spread over all contenders alike.

Every contender cycles through the same small random data set (100
examples), one example per step, starting from its own copy of the same
initial parameters. The inputs are fed as a user's training loop feeds
them: the data set is a 2-D float64 array ``X`` and a 1-D ``Y``, and each
step takes ``x = X[i]`` (a row view) and ``y = Y[i]`` (a numpy scalar:
``np.float64``, or ``np.int64`` for a class label).

The ``tapegraph`` imported is the one in this checkout (the script puts
the repository root first on ``sys.path``), not an installed copy.

Exits with status 1 if a check fails.
"""

import argparse
import itertools
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

# this checkout's tapegraph, whatever copy is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tapegraph as tg  # noqa: E402
from tapegraph.backends.codegen import kernel_functions, tape_ops  # noqa: E402

import handfused  # noqa: E402
import homework_engine  # noqa: E402
from timing import median_us  # noqa: E402

L2_REG = 1.0
STEP_SIZE = 0.01
NUM_EXAMPLES = 100
HIDDEN = 10
CHECK_ATOL = 1e-12  # one step: largest |difference| allowed in any new parameter
RUN_ATOL = 1e-10    # a run of NUM_EXAMPLES steps: rounding may accumulate a little
TARGET_RATIO = 1.3  # tapegraph step within 1.3x of the hand-fused step
#: Timed batches per contender, and steps per batch. On this shared
#: machine other jobs take the cores for a few milliseconds at a time; a
#: batch of 200 steps (1-5 ms) is then either spoiled or not, and the
#: median of 51 batches is one that was not. (7 batches of 1000 steps, the
#: old default, left one contender or another 1.8-3x slow in busy runs.)
ROUNDS = 51
NUMBER = 200

CONTENDERS = ("homework", "handfused", "tg_pure", "tg_donated")


# ---------------------------------------------------------------- models


def tapegraph_ridge(d):
    x = tg.input("x", shape=(d,))
    y = tg.input("y")
    w = tg.param("w", shape=(d,))
    b = tg.param("b")
    loss = tg.squared_l2_distance(tg.vector_scalar_affine(x, w, b), y) + tg.l2_norm_penalty(w, l2_reg=L2_REG)
    return loss, [w, b]


def tapegraph_mlp_regression(d, m=HIDDEN):
    x = tg.input("x", shape=(d,))
    y = tg.input("y")
    W1 = tg.param("W1", shape=(m, d))
    b1 = tg.param("b1", shape=(m,))
    w2 = tg.param("w2", shape=(m,))
    b2 = tg.param("b2")
    pred = tg.vector_scalar_affine(tg.tanh(tg.affine(W1, x, b1)), w2, b2)
    loss = tg.squared_l2_distance(pred, y)
    return loss, [W1, b1, w2, b2]


def tapegraph_multiclass(d=2, m=HIDDEN, k=3):
    x = tg.input("x", shape=(d,))
    y = tg.input("y", shape=(), dtype="int64")
    W1 = tg.param("W1", shape=(m, d))
    b1 = tg.param("b1", shape=(m,))
    W2 = tg.param("W2", shape=(k, m))
    b2 = tg.param("b2", shape=(k,))
    probs = tg.softmax(tg.affine(W2, tg.tanh(tg.affine(W1, x, b1)), b2))
    loss = tg.nll(probs, y)
    return loss, [W1, b1, W2, b2]


class Case:
    """One model: its three implementations, initial parameters and data."""

    def __init__(self, name, graph, homework, fused, shapes, xs, ys, rng):
        self.name = name
        self.homework = homework
        self.fused = fused
        loss, wrt = graph
        self.program = tg.compile(loss, wrt=wrt)
        self.step = tg.sgd(self.program, STEP_SIZE)
        self.donated_step = tg.sgd(self.program, STEP_SIZE, donate=True)
        # Normal entries scaled by 1/sqrt(fan-in), as in check_baselines.py;
        # scalars are 0-d arrays (the baselines update them in place).
        self.params = {}
        for param_name, shape in shapes.items():
            scale = 1 / np.sqrt(shape[-1]) if shape else 1.0
            self.params[param_name] = np.array(rng.normal(size=shape) * scale)
        #: The data set as a user holds it, and its examples as a loop
        #: indexing it gets them: (row view, numpy scalar).
        self.X = np.ascontiguousarray(xs)
        self.Y = np.asarray(ys)
        self.examples = [(self.X[i], self.Y[i]) for i in range(len(self.Y))]

    def fresh_params(self):
        return {key: value.copy() for key, value in self.params.items()}


def make_cases(rng, n=NUM_EXAMPLES):
    cases = []
    d = 400
    cases.append(Case(
        "ridge", tapegraph_ridge(d), homework_engine.build_ridge(L2_REG), handfused.Ridge(d, L2_REG),
        {"w": (d,), "b": ()}, rng.normal(size=(n, d)) / np.sqrt(d), rng.normal(size=n), rng))
    for name, d in [("mlp_raw_x", 1), ("mlp_features", 400)]:
        cases.append(Case(
            name, tapegraph_mlp_regression(d), homework_engine.build_mlp_regression(), handfused.MLPRegression(d),
            {"W1": (HIDDEN, d), "b1": (HIDDEN,), "w2": (HIDDEN,), "b2": ()},
            rng.normal(size=(n, d)) / np.sqrt(d), rng.normal(size=n), rng))
    cases.append(Case(
        "multiclass", tapegraph_multiclass(), homework_engine.build_multiclass(), handfused.Multiclass(),
        {"W1": (HIDDEN, 2), "b1": (HIDDEN,), "W2": (3, HIDDEN), "b2": (3,)},
        rng.normal(size=(n, 2)), rng.integers(0, 3, size=n), rng))
    return cases


# ---------------------------------------------------------------- checks


def max_difference(a, b):
    return max(float(np.max(np.abs(a[key] - b[key]))) for key in a)


def check_case(case):
    """One step, then a run of steps: tapegraph (pure and donated) vs hand-fused."""
    ok = True
    x, y = case.examples[0]
    fused_params = case.fresh_params()
    fused_objective = case.fused.step(fused_params, x, y, STEP_SIZE)
    for label, step in [("pure", case.step), ("donated", case.donated_step)]:
        given = case.fresh_params()
        before = case.fresh_params()
        new_params, objective = step(given, {"x": x, "y": y})
        worst = max(max_difference(new_params, fused_params), abs(objective - fused_objective))
        good = worst <= CHECK_ATOL and set(new_params) == set(fused_params)
        if label == "pure":  # a pure step must leave its arguments alone
            untouched = max_difference(given, before) == 0.0
            good = good and untouched
        else:  # a donated step returns the caller's arrays, updated
            good = good and all(new_params[key] is given[key] for key in given)
        print(f"check {case.name:13s} one step, tapegraph {label:7s} vs hand-fused: "
              f"max |diff| {worst:.1e}  {'ok' if good else 'FAIL'}")
        ok = ok and good

    fused_params = case.fresh_params()
    pure_params = case.fresh_params()
    donated_params = case.fresh_params()
    for x, y in case.examples:
        case.fused.step(fused_params, x, y, STEP_SIZE)
        pure_params, _ = case.step(pure_params, {"x": x, "y": y})
        donated_params, _ = case.donated_step(donated_params, {"x": x, "y": y})
    worst = max(max_difference(pure_params, fused_params), max_difference(donated_params, fused_params))
    good = worst <= RUN_ATOL
    print(f"check {case.name:13s} {len(case.examples)} steps, tapegraph pure and donated vs hand-fused: "
          f"max |diff| {worst:.1e}  {'ok' if good else 'FAIL'}")
    return ok and good


# ---------------------------------------------------------------- timing


def contender(case, which):
    """A no-argument function doing one SGD step on the next example, and its parameters.

    Each step indexes the data set as a training loop does: ``X[i]``, ``Y[i]``.
    """
    rows = itertools.cycle(range(len(case.Y)))
    X, Y = case.X, case.Y
    params = case.fresh_params()
    if which == "homework":
        model = case.homework

        def run():
            i = next(rows)
            model.step(params, X[i], Y[i], STEP_SIZE)
    elif which == "handfused":
        model = case.fused

        def run():
            i = next(rows)
            model.step(params, X[i], Y[i], STEP_SIZE)
    elif which == "tg_pure":
        step = case.step

        def run():
            nonlocal params
            i = next(rows)
            params, _ = step(params, {"x": X[i], "y": Y[i]})
    elif which == "tg_donated":
        step = case.donated_step

        def run():
            i = next(rows)
            step(params, {"x": X[i], "y": Y[i]})
    else:
        raise ValueError(which)
    return run, lambda: params


def lowest_decile(values):
    """The 10th percentile: on a loaded machine most batches are slowed by
    other processes, and the fast tenth is what the code itself costs."""
    return sorted(values)[len(values) // 10]


def time_case(case, rounds, number, statistic=statistics.median):
    """µs per step of each contender (``statistic`` of its batches), timed interleaved round by round."""
    runs = {}
    finals = {}
    for which in CONTENDERS:
        runs[which], finals[which] = contender(case, which)
    batches = {which: [] for which in CONTENDERS}
    for round_index in range(rounds):
        shift = round_index % len(CONTENDERS)
        for which in CONTENDERS[shift:] + CONTENDERS[:shift]:
            batches[which].append(median_us(runs[which], repeats=1, number=number))
    for which in CONTENDERS:
        if not all(np.all(np.isfinite(value)) for value in finals[which]().values()):
            print(f"warning: {case.name} {which}: parameters are not finite after timing", file=sys.stderr)
    return {which: statistic(values) for which, values in batches.items()}


def instruction_counts(step):
    """(instructions in the step's tape, how many of them write a 0-d value)."""
    instructions = step.tape().instructions
    return len(instructions), sum(1 for instruction in instructions if instruction.shape == ())


# ---------------------------------------------------------------- report


def rows_for(results):
    header = ["model", "homework µs", "hand-fused µs", "tg pure µs", "tg donated µs",
              "tg pure / fused", "tg donated / fused", "homework / tg pure", "homework / tg donated",
              "tape instr. (0-d)", f"≤{TARGET_RATIO}× (pure, donated)"]
    rows = []
    for name, medians, (count, scalar_count) in results:
        pure_ratio = medians["tg_pure"] / medians["handfused"]
        donated_ratio = medians["tg_donated"] / medians["handfused"]
        rows.append([
            name,
            f"{medians['homework']:.1f}", f"{medians['handfused']:.1f}",
            f"{medians['tg_pure']:.1f}", f"{medians['tg_donated']:.1f}",
            f"{pure_ratio:.2f}×", f"{donated_ratio:.2f}×",
            f"{medians['homework'] / medians['tg_pure']:.1f}×", f"{medians['homework'] / medians['tg_donated']:.1f}×",
            f"{count} ({scalar_count})",
            f"{'met' if pure_ratio <= TARGET_RATIO else 'MISS'}, {'met' if donated_ratio <= TARGET_RATIO else 'MISS'}",
        ])
    return header, rows


def print_table(header, rows, markdown):
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if index == 0 else "---:" for index in range(len(header))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, *rows]:
        print("  ".join(str(cell).rjust(width) if index else str(cell).ljust(width)
                        for index, (cell, width) in enumerate(zip(line, widths))))


# ---------------------------------------------------------------- profile


def profile_step(case, number):
    """Time the pieces of one tapegraph step (pure) on this case, and each generated line.

    Uses tapegraph internals (the plan's generated entry, Program._prepare,
    the executable's generated step): this is a measurement, not an API.
    Each line of the generated step is timed on its own, in a namespace
    holding the step's buffers and the values the lines before it computed.
    """
    step = case.step
    program = case.program
    params = case.fresh_params()
    x, y = case.examples[0]
    inputs = {"x": x, "y": y}
    step(params, inputs)
    plan = step._plan
    # the general path takes the hyperparameters in the inputs
    fed = {**inputs, **step._hypers}
    executable, arrays = program._prepare(plan, params, fed)
    compiled = executable.function()
    enter = executable.enter
    # the step passes its hyperparameters (the step size) apart from the inputs
    hypers = step._hyper_values
    pieces = [
        ("whole pure step: step(params, inputs)", lambda: step(params, inputs)),
        ("whole donated step", lambda: case.donated_step(params, inputs)),
        ("generated entry: argument checks, then step", lambda: enter(hypers, params, inputs)),
        ("generated step alone, arrays given", lambda: compiled(*arrays)),
        ("general path: Program._prepare alone", lambda: program._prepare(plan, params, fed)),
        ("empty Python call, for scale", lambda: None),
    ]
    print(f"\nprofile: tapegraph pure step on {case.name}, median µs per call "
          f"({len(executable.tape.instructions)} instructions, {len(arrays)} feeds; "
          f"x {type(x).__name__}{list(x.shape)}, y {type(y).__name__})")
    for label, fn in pieces:
        print(f"  {label:46s} {median_us(fn, repeats=ROUNDS, number=number):7.2f}")
    empty = compile("pass", "<line>", "exec")
    overhead = median_us(lambda: exec(empty, {}), repeats=7, number=number)
    print(f"  per generated line (µs, less {overhead:.2f} for exec itself):")
    text = executable.source()
    namespace = {"np": np, **kernel_functions(text, tape_ops(executable.tape)), **executable.buffer_sets()[0],
                 **dict(zip(executable.arguments.values(), arrays))}
    lines = text.splitlines()
    first = lines.index(next(line for line in lines if line.strip().startswith("# forward")))
    body = [line.strip() for line in lines[first:] if line.startswith(" " * 8)
            and not line.strip().startswith(("#", "return", "r0_"))]
    for line in body:
        code = compile(line, "<line>", "exec")
        exec(code, namespace)
        seconds = median_us(lambda: exec(code, namespace), repeats=7, number=number) - overhead
        # below the noise of subtracting exec's own cost, a line is "about nothing"
        shown = f"{seconds:6.2f}" if seconds >= 0.05 else "  ≈0  "
        print(f"    {shown}  {line}")


# ---------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds of 100 steps")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--profile", nargs="*", metavar="MODEL", default=None,
                        help="also time the pieces of the tapegraph step of these models (default: ridge)")
    parser.add_argument("--rounds", type=int, default=None, help=f"timed batches per contender (default {ROUNDS})")
    parser.add_argument("--number", type=int, default=None, help=f"steps per batch (default {NUMBER})")
    parser.add_argument("--statistic", choices=["median", "p10"], default="median",
                        help="of each contender's batches: the median (default; a quiet machine) or the "
                             "10th percentile (a loaded one, where most batches are slowed by other jobs)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else ROUNDS)
    number = args.number or (100 if args.quick else NUMBER)

    import numpy
    print(f"python {platform.python_version()}, numpy {numpy.__version__}, tapegraph {tg.__version__}, "
          f"{platform.machine()}; {rounds} rounds x {number} steps per contender, "
          f"{NUM_EXAMPLES} examples cycled, step size {STEP_SIZE}")

    cases = make_cases(np.random.default_rng(0))
    if not all([check_case(case) for case in cases]):
        print("CHECKS FAILED: not timing")
        return 1

    results = []
    for case in cases:
        medians = time_case(case, rounds, number, lowest_decile if args.statistic == "p10" else statistics.median)
        results.append((case.name, medians, instruction_counts(case.step)))
    print()
    print_table(*rows_for(results), markdown=args.markdown)
    print(f"\nµs: {'10th-percentile' if args.statistic == 'p10' else 'median'} per-step time; tape instr.: instructions in the step's tape "
          "(in parentheses, those writing a 0-d value); target: tapegraph within "
          f"{TARGET_RATIO}× of the hand-fused step")

    if args.profile is not None:
        by_name = {case.name: case for case in cases}
        for name in args.profile or ["ridge"]:
            if name not in by_name:
                parser.error(f"--profile: unknown model {name!r}; choose from {sorted(by_name)}")
            profile_step(by_name[name], number)
    return 0


if __name__ == "__main__":
    sys.exit(main())
