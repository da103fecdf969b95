"""The main job: the homework's experiments on built-in data, with logs, a table and plots.

    python -m models --out out                  # everything (40 s to a minute on 2 cores)
    python -m models ridge mlp-raw --quick      # some experiments, 1/20 of the epochs
    python -m models --data hw_lasso_data.npz   # the regression problem from a file

Experiments (the homework's settings): linear, ridge-1, ridge-0, mlp-raw,
mlp-features, multiclass; ``ridge`` and ``mlp`` name both of their kind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from .base import DivergenceError, Estimator
from .data import Problem, classification_problem, generate_problem, load_problem
from .estimators import LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression


class Experiment(NamedTuple):
    """One homework run: an estimator factory, its epochs, and what it is trained on."""

    name: str
    label: str
    #: ``"features"`` (400 step functions), ``"raw"`` (x as one column) or ``"blobs"``.
    data: str
    epochs: int
    #: ``make(max_num_epochs, random_state)``
    make: Callable[[int, int], Estimator]
    #: The file its curve is drawn in (experiments sharing a figure are drawn together).
    figure: str


EXPERIMENTS = {experiment.name: experiment for experiment in (
    Experiment("linear", "Linear regression", "features", 1000,
               lambda epochs, seed: LinearRegression(step_size=0.001, max_num_epochs=epochs, random_state=seed, verbose=True),
               "linear_regression"),
    Experiment("ridge-1", "Ridge with L2Reg=1", "features", 2000,
               lambda epochs, seed: RidgeRegression(l2_reg=1, step_size=5e-5, max_num_epochs=epochs, random_state=seed, verbose=True),
               "ridge_regression"),
    Experiment("ridge-0", "Ridge with L2Reg=0", "features", 500,
               lambda epochs, seed: RidgeRegression(l2_reg=0, step_size=5e-4, max_num_epochs=epochs, random_state=seed, verbose=True),
               "ridge_regression"),
    Experiment("mlp-raw", "MLP regression - no features", "raw", 5000,
               lambda epochs, seed: MLPRegression(num_hidden_units=10, step_size=1e-3, init_param_scale=5e-4,
                                                  max_num_epochs=epochs, random_state=seed, verbose=True),
               "mlp_regression"),
    Experiment("mlp-features", "MLP regression - with features", "features", 500,
               lambda epochs, seed: MLPRegression(num_hidden_units=10, step_size=5e-4, init_param_scale=1e-2,
                                                  max_num_epochs=epochs, random_state=seed, verbose=True),
               "mlp_regression"),
    Experiment("multiclass", "Multiclass MLP", "blobs", 1000,
               lambda epochs, seed: MulticlassClassifier(max_num_epochs=epochs, random_state=seed, verbose=True),
               "multiclass"),
)}

FIGURE_TITLES = {"linear_regression": "Linear regression", "ridge_regression": "Ridge regression",
                 "mlp_regression": "MLP regression"}

GROUPS = {"all": list(EXPERIMENTS), "ridge": ["ridge-1", "ridge-0"], "mlp": ["mlp-raw", "mlp-features"]}

#: --quick runs this fraction of each experiment's epochs.
QUICK_FRACTION = 20


class Row(NamedTuple):
    """One line of the final table."""

    label: str
    epochs: int
    train_loss: float
    val_loss: float
    test_accuracy: float | None
    seconds_per_epoch: float
    note: str = ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    prog = os.path.basename(sys.argv[0]) if not sys.argv[0].endswith("__main__.py") else "python -m models"
    parser = argparse.ArgumentParser(prog=prog, description="Train the homework's models with tapegraph: "
                                     "logs, a final table, and PNG plots.")
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT", default=["all"],
                        help=f"which to run (default all): {', '.join([*EXPERIMENTS, *GROUPS])}")
    parser.add_argument("--out", default="out", help="folder for the plots and summary.txt (default: out)")
    parser.add_argument("--data", metavar="PATH",
                        help="an .npz regression problem (keys x_train y_train x_test y_test coefs_true) "
                             "instead of the generated one")
    parser.add_argument("--quick", action="store_true", help=f"a short run: 1/{QUICK_FRACTION} of the epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data and of training (default 0)")
    parser.add_argument("--backend", choices=["auto", "numpy", "native"], default="auto",
                        help="what trains the models: native (numba, a whole epoch per call), numpy, or auto "
                             "(default: native when numba is installed)")
    args = parser.parse_args(argv)
    args.backend = _backend(args.backend, parser)
    names: list[str] = []
    for name in args.experiments:
        if name not in EXPERIMENTS and name not in GROUPS:
            parser.error(f"unknown experiment {name!r}; choose from {', '.join([*EXPERIMENTS, *GROUPS])}")
        names += [item for item in GROUPS.get(name, [name]) if item not in names]
    args.names = names
    if args.data is not None:
        try:
            args.problem = load_problem(args.data)
        except (OSError, ValueError) as error:
            parser.error(f"--data: {error}")
    else:
        args.problem = generate_problem(seed=args.seed)
    try:  # now, not after minutes of training
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        parser.error(f"--out: cannot create the folder: {error}")
    return args


def _backend(choice: str, parser: argparse.ArgumentParser) -> str:
    """The backend to train on: ``auto`` is native when numba can be imported."""
    if choice == "numpy":
        return choice
    try:
        import numba  # noqa: F401
    except ImportError:
        if choice == "native":
            parser.error("--backend native needs numba: pip install 'tapegraph[native]'")
        return "numpy"
    return "native"


def run_experiment(experiment: Experiment, epochs: int, seed: int, problem: Problem,
                   blobs: tuple[np.ndarray, ...] | None, backend: str = "numpy") -> tuple[Row, Estimator]:
    """Fit one experiment on ``backend``; its row of the table and the fitted estimator."""
    estimator = experiment.make(epochs, seed)
    estimator._backend = backend
    print(f"\n== {experiment.label}: {estimator!r}", flush=True)
    if experiment.data == "blobs":
        X_train, y_train, X_val, y_val = blobs
    elif experiment.data == "raw":
        X_train, y_train, X_val, y_val = problem.x_train[:, None], problem.y_train, problem.x_val[:, None], problem.y_val
    else:
        X_train, y_train = problem.featurize(problem.x_train), problem.y_train
        X_val, y_val = problem.featurize(problem.x_val), problem.y_val
    note = ""
    try:
        estimator.fit(X_train, y_train)
    except DivergenceError as error:
        print(error, flush=True)
        note = f"diverged in epoch {error.epoch}"
    epochs_run = max(estimator.n_iter_, 1)
    if isinstance(estimator, MulticlassClassifier):
        train_loss, val_loss = estimator.log_loss(X_train, y_train), estimator.log_loss(X_val, y_val)
        accuracy = estimator.score(X_val, y_val)
        print(f"Test set accuracy = {accuracy:.3f}")
    else:
        train_loss = float(np.mean((estimator.predict(X_train) - y_train) ** 2))
        val_loss = float(np.mean((estimator.predict(X_val) - y_val) ** 2))
        accuracy = None
    return Row(experiment.label, estimator.n_iter_, train_loss, val_loss, accuracy,
               estimator.fit_time_ / epochs_run, note), estimator


def format_table(rows: Sequence[Row]) -> str:
    """The final table as aligned text."""
    header = f"{'experiment':<32} {'epochs':>6} {'train loss':>10} {'val loss':>9} {'test acc':>8} {'ms/epoch':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        accuracy = "-" if row.test_accuracy is None else f"{row.test_accuracy:.3f}"
        line = (f"{row.label:<32} {row.epochs:>6} {row.train_loss:>#10.4g} {row.val_loss:>#9.4g} {accuracy:>8} "
                f"{row.seconds_per_epoch * 1e3:>8.2f}")
        lines.append(line + (f"  ({row.note})" if row.note else ""))
    return "\n".join(lines)


def draw(out: str, results: list[tuple[Experiment, Estimator]], problem: Problem, blobs, grid: np.ndarray) -> list[str]:
    """Write one PNG per figure that has curves; returns their paths."""
    from . import plots  # matplotlib only when drawing
    target = ("Target function (Bayes optimal)", problem.target_fn(grid))
    figures: dict[str, list[tuple[str, np.ndarray]]] = {}
    paths = []
    for experiment, estimator in results:
        if experiment.data == "blobs":
            path = os.path.join(out, f"{experiment.figure}.png")
            plots.plot_decision_regions(path, estimator.predict, *blobs)
            paths.append(path)
            continue
        X = grid[:, None] if experiment.data == "raw" else problem.featurize(grid)
        figures.setdefault(experiment.figure, [target]).append((experiment.label, estimator.predict(X)))
    for figure, curves in figures.items():
        path = os.path.join(out, f"{figure}.png")
        plots.plot_prediction_functions(path, grid, curves, problem.x_train, problem.y_train,
                                        title=FIGURE_TITLES.get(figure, figure))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen experiments; 0 if all trained, 1 if any diverged."""
    started = time.perf_counter()
    args = parse_args(argv)
    problem = args.problem
    source = args.data or f"generated (seed {args.seed})"
    print(f"regression problem: {source}; {len(problem.x_train)} training and {len(problem.x_val)} validation "
          f"points, {len(problem.coefs_true)} step-function features")
    print(f"training on the {args.backend} backend" + (" (numba: a whole epoch per native call)"
                                                      if args.backend == "native" else ""))
    blobs = classification_problem(seed=args.seed) if "multiclass" in args.names else None
    # the homework's plotting grid: a fine grid on [0, 1) plus the training inputs
    grid = np.sort(np.concatenate([np.arange(0.0, 1.0, 0.001), problem.x_train]))
    rows, results = [], []
    for name in args.names:
        experiment = EXPERIMENTS[name]
        epochs = max(1, experiment.epochs // QUICK_FRACTION) if args.quick else experiment.epochs
        row, estimator = run_experiment(experiment, epochs, args.seed, problem, blobs, args.backend)
        rows.append(row)
        results.append((experiment, estimator))
    table = format_table(rows)
    bayes = float(np.mean((problem.target_fn(problem.x_val) - problem.y_val) ** 2))
    table += f"\n(target function on the validation set: square loss {bayes:.4f}; losses are square loss " \
             "for regression, average NLL for the classifier)"
    paths = draw(args.out, results, problem, blobs, grid)
    with open(os.path.join(args.out, "summary.txt"), "w") as summary:
        summary.write(table + "\n")
    print("\n" + table)
    print(f"\nwrote {', '.join(paths + [os.path.join(args.out, 'summary.txt')])}")
    print(f"total time {time.perf_counter() - started:.1f}s")
    return 1 if any(row.note for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
