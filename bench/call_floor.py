"""What a tapegraph SGD step costs beyond its tape: the floor without argument checks.

Run from the repository root (with OPENBLAS_NUM_THREADS=1, as bench/run.py):

    python bench/call_floor.py            # about 30 seconds
    python bench/call_floor.py --quick    # a smoke run

For each of bench/run.py's four models, five contenders are timed
interleaved as bench/run.py times them (a user's loop: ``X[i]``, ``Y[i]``,
a dict of inputs, the new parameters fed back):

- ``hand-fused``: bench/handfused.py's step;
- ``step``: the ``tg.sgd`` step, ``step(params, inputs)``, pure and donated;
- ``entry``: the specialisation's generated entry, called as the step
  calls it (a ``functools.partial`` of it bound to the step size): the
  same as ``step`` but for noise, a check of this script;
- ``no type checks``: the entry compiled again from its own text with
  every test of a feed's type, dtype and shape taken out;
- ``no checks``: also without the count of names given, the test for
  check mode and a donated step's tests that no donated array shares
  memory with another feed: what is left is taking the feeds out of the
  dicts, the tape, and the returned dict (of new arrays, for a pure step).

The last two are not tapegraph: they would run on a wrong argument (a
float32 array, a row too short to broadcast) and give a wrong answer, or
fail deep inside numpy. They measure how much of the gap to the
hand-fused step is the checking that ``docs/errors.md`` promises, and how
much is the pure step's API (dicts in and out, new arrays). This uses
tapegraph internals (the plan's entry and its generated text): a
measurement, not an API.
"""

import argparse
import functools
import itertools
import re
import statistics
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (bench/run.py: the models, data and steps)
from timing import median_us  # noqa: E402

FALLBACK = r"\n( +)return r0_fallback\(r0_params, r0_inputs, r0_hypers\)"
#: An ``if`` testing a feed's type, dtype or shape, whose body is the general path.
TYPE_CHECK = re.compile(r"\n +if [(]?type\([^\n]*:[^\n]*" + FALLBACK)
#: The count of names given, and the test for check mode.
OTHER_CHECKS = [re.compile(r"\n +if len\(r0_params\)[^\n]*" + FALLBACK),
                re.compile(r"\n +if r0_checking\(\):" + FALLBACK)]
#: A donated step's tests that no donated array shares memory with another feed.
OVERLAP_CHECKS = re.compile(r"(\n +if type\(\w+\) is r0_ndarray:)?(\n +r0_base = \w+\.base)?"
                            r"\n +if [^\n]*:  # [^\n]*look closer\n +r0_overlap\(r0_params, r0_inputs\)")


def entry_and_text(case, step):
    """The plan's generated entry after one call, and the text it was compiled from."""
    x, y = case.examples[0]
    step(case.fresh_params(), {"x": x, "y": y})
    entry = step._plan.enter
    executable = next(executable for executable in step._plan.cache.values() if executable.enter is entry)
    return entry, executable._texts[entry]  # (source() gives the step's text, without the checks)


def recompiled(entry, text):
    """``text`` compiled as ``entry`` was: the same globals and closed-over values."""
    cells = dict(zip(entry.__code__.co_freevars, (cell.cell_contents for cell in entry.__closure__)))
    scope = dict(entry.__globals__)
    exec(compile(text, "<variant of a generated entry>", "exec"), scope)
    make = scope["make"]
    names = make.__code__.co_varnames[:make.__code__.co_argcount]
    return make(*[cells.get(name) for name in names])


def variants(case, step):
    entry, text = entry_and_text(case, step)
    without_types, found = TYPE_CHECK.subn("", text)
    assert found, "no type checks found in the entry's text"
    without_any = without_types
    for pattern in OTHER_CHECKS:
        without_any, found = pattern.subn("", without_any)
        assert found == 1, f"{pattern.pattern!r} not found in the entry's text"
    without_any, found = OVERLAP_CHECKS.subn("", without_any)
    assert found or not step.donate, "a donated step's entry without its overlap tests"
    assert "r0_overlap(" not in without_any
    return entry, recompiled(entry, without_types), recompiled(entry, without_any)


def contenders(case, step):
    """name -> a no-argument function doing one step on the next example."""
    entry, without_types, without_any = variants(case, step)
    hypers = step._hyper_values
    X, Y = case.X, case.Y
    made = {}

    def fused():
        rows, params, model = itertools.cycle(range(len(Y))), case.fresh_params(), case.fused

        def one():
            i = next(rows)
            model.step(params, X[i], Y[i], run.STEP_SIZE)
        return one

    def calling(call):
        def make():
            rows, params = itertools.cycle(range(len(Y))), case.fresh_params()

            def one():
                nonlocal params
                i = next(rows)
                params, _ = call(params, {"x": X[i], "y": Y[i]})
            return one
        return make

    made["hand-fused"] = fused()
    made["step"] = calling(step)()
    for name, function in [("entry", entry), ("no type checks", without_types), ("no checks", without_any)]:
        # called as the step calls its entry (a partial of it bound to the values)
        made[name] = calling(functools.partial(types.MethodType(function, hypers)))()
    return made


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 rounds of 100 steps")
    args = parser.parse_args(argv)
    rounds, number = (5, 100) if args.quick else (101, 200)
    print(f"{rounds} rounds x {number} steps per contender, interleaved; median µs per step "
          "(ratio to the hand-fused step)")
    for case, kind in itertools.product(run.make_cases(np.random.default_rng(0)), ["pure", "donated"]):
        made = contenders(case, case.step if kind == "pure" else case.donated_step)
        names = list(made)
        batches = {name: [] for name in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                batches[name].append(median_us(made[name], repeats=1, number=number))
        medians = {name: statistics.median(values) for name, values in batches.items()}
        print(f"{case.name + ' ' + kind:21s} " + "  ".join(
            f"{name} {medians[name]:.2f} ({medians[name] / medians['hand-fused']:.2f}×)" for name in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
