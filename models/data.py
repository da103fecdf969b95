"""The homework's problems: a 1-D regression built from step functions, and three blobs.

The regression problem is the homework's ``setup_problem``: a target
function on [0, 1) that is a sparse combination of 400 step functions
``x >= s`` (thresholds ``s = 0, 1/400, ..., 399/400``), observed with
t-distributed noise. Features are the 400 step functions evaluated at
``x``, so a linear model in the features can represent the target exactly.

Everything is generated from a seed with numpy's ``default_rng``, so the
project ships no data file. ``load_problem`` reads the same problem from an
``.npz`` file (never a pickle), for instance the homework's own data set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from tapegraph.persist import read_npz, write_atomically

#: The keys of a problem file, as the homework's pickle had them.
PROBLEM_KEYS = ("x_train", "y_train", "x_test", "y_test", "coefs_true")

#: The homework's three classes: centres of the 2-D blobs.
BLOB_CENTERS = ((-3.0, 1.0), (0.0, 2.0), (3.0, 1.0))


class Problem(NamedTuple):
    """What the homework's ``load_problem`` returns, in its order (so it unpacks the same way)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    #: The noiseless target (the Bayes prediction function): ``featurize(x) @ coefs_true``.
    target_fn: Callable[[np.ndarray], np.ndarray]
    coefs_true: np.ndarray
    #: ``x`` of shape (n,) to the step-function features, shape (n, len(coefs_true)).
    featurize: Callable[[np.ndarray], np.ndarray]


def step_features(num_basis_fns: int) -> Callable[[np.ndarray], np.ndarray]:
    """``featurize(x)[i, j] = 1.0 if x[i] >= j / num_basis_fns else 0.0`` (the homework's basis)."""
    thresholds = np.linspace(0.0, 1.0, num_basis_fns, endpoint=False)

    def featurize(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"featurize takes a 1-D array of inputs in [0, 1), got shape {x.shape}")
        return (x[:, None] >= thresholds).astype(np.float64)

    return featurize


def problem_from_arrays(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        coefs_true: np.ndarray) -> Problem:
    """Rebuild ``target_fn`` and ``featurize`` around stored arrays (the homework's ``reconstitute_problem``)."""
    coefs_true = np.asarray(coefs_true, dtype=np.float64)
    featurize = step_features(len(coefs_true))

    def target_fn(x: np.ndarray) -> np.ndarray:
        return featurize(x) @ coefs_true

    return Problem(x_train, y_train, x_val, y_val, target_fn, coefs_true, featurize)


def generate_problem(seed: int = 0, num_points: int = 1000, num_train: int = 100, num_basis_fns: int = 400,
                     num_nonzero: int = 10, noise_scale: float = 0.25, tdof: float = 6) -> Problem:
    """The homework's regression problem, drawn from ``seed``.

    ``num_nonzero`` distinct step functions get standard normal
    coefficients; ``num_points`` inputs are uniform on [0, 1), with targets
    ``target_fn(x) + noise_scale * t(tdof)``; ``num_train`` random points
    are for training and the rest for validation. (The homework drew the
    nonzero positions with replacement, which can give fewer than 10.)
    """
    if not 0 < num_train < num_points:
        raise ValueError(f"num_train must be between 1 and num_points - 1 = {num_points - 1}, got {num_train}")
    if not 0 < num_nonzero <= num_basis_fns:
        raise ValueError(f"num_nonzero must be between 1 and num_basis_fns = {num_basis_fns}, got {num_nonzero}")
    rng = np.random.default_rng(seed)
    coefs_true = np.zeros(num_basis_fns)
    coefs_true[rng.choice(num_basis_fns, size=num_nonzero, replace=False)] = rng.standard_normal(num_nonzero)
    x = np.sort(rng.random(num_points))
    featurize = step_features(num_basis_fns)
    y = featurize(x) @ coefs_true + noise_scale * rng.standard_t(tdof, size=num_points)
    # the homework's split: a random permutation, validation first, training the rest
    order = rng.permutation(num_points)
    val, train = order[:num_points - num_train], order[num_points - num_train:]
    return problem_from_arrays(x[train], y[train], x[val], y[val], coefs_true)


def save_problem(path: str | os.PathLike, problem: Problem) -> None:
    """Write ``problem``'s arrays to an ``.npz`` file that ``load_problem`` reads.

    As ``np.savez``, adds ``.npz`` to a name without it; the file is replaced
    atomically (``tapegraph.persist.write_atomically``).
    """
    arrays = dict(zip(PROBLEM_KEYS, (problem.x_train, problem.y_train, problem.x_val, problem.y_val, problem.coefs_true)))
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


def load_problem(path: str | os.PathLike) -> Problem:
    """Read a problem from an ``.npz`` file with keys ``x_train y_train x_test y_test coefs_true``.

    ``x_test``/``y_test`` become ``x_val``/``y_val``, as in the homework.
    Never unpickles. A missing file raises ``FileNotFoundError``
    (``tapegraph.errors.MissingFileError``); anything else wrong raises
    ``ValueError`` (``tapegraph.PersistError`` when the file is not a
    readable archive) naming the file and the problem.
    """
    path = os.fspath(path)
    arrays = _read_arrays(path)
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(arrays[x_key]) != len(arrays[y_key]) or len(arrays[x_key]) == 0:
            raise ValueError(f"problem file {path!r}: {x_key!r} and {y_key!r} must be non-empty and of equal length, "
                             f"got {len(arrays[x_key])} and {len(arrays[y_key])}")
    if len(arrays["coefs_true"]) == 0:
        raise ValueError(f"problem file {path!r}: 'coefs_true' is empty")
    return problem_from_arrays(*(arrays[key] for key in PROBLEM_KEYS))


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    """The problem's arrays from an ``.npz`` file, checked one by one."""
    archive = read_npz(path, what="problem file")
    missing = [key for key in PROBLEM_KEYS if key not in archive]
    if missing:
        raise ValueError(f"problem file {path!r} lacks {missing}; it has {sorted(archive)}, "
                         f"and needs {list(PROBLEM_KEYS)}")
    arrays = {}
    for key in PROBLEM_KEYS:
        array = archive[key]
        if array.ndim != 1 or array.dtype.kind not in "iuf" or not np.isfinite(array).all():
            raise ValueError(f"problem file {path!r}: {key!r} must be a 1-D array of finite numbers, "
                             f"got shape {array.shape} and dtype {array.dtype}")
        arrays[key] = array.astype(np.float64)
    return arrays


def make_blobs(n_samples: int = 500, centers: Sequence[Sequence[float]] = BLOB_CENTERS, cluster_std: float = 0.25,
               seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs as scikit-learn's ``make_blobs``: ``X`` (n, d) and labels ``y`` (n,), shuffled.

    Blob ``k`` gets ``n_samples // len(centers)`` points (the first
    ``n_samples % len(centers)`` one more), drawn around ``centers[k]``
    with standard deviation ``cluster_std``, and label ``k``.
    """
    centers = np.asarray(centers, dtype=np.float64)
    rng = np.random.default_rng(seed)
    counts = [n_samples // len(centers) + (k < n_samples % len(centers)) for k in range(len(centers))]
    X = np.concatenate([rng.normal(center, cluster_std, size=(count, centers.shape[1]))
                        for center, count in zip(centers, counts)])
    y = np.repeat(np.arange(len(centers)), counts)
    order = rng.permutation(n_samples)
    return X[order], y[order]


def classification_problem(seed: int = 2, n_samples: int = 500, num_train: int = 300
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The homework's classification data: three blobs, the first ``num_train`` points for training.

    Returns ``X_train, y_train, X_test, y_test``.
    """
    X, y = make_blobs(n_samples=n_samples, seed=seed)
    return X[:num_train], y[:num_train], X[num_train:], y[num_train:]
