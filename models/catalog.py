"""The built-in models of the ``tapegraph`` command: the homework's four, as ``fit`` trains them.

Each entry makes the estimator with the main job's settings
(``python -m models``), declares its graph through the estimator's own
``_declare`` and compiles it as ``fit`` does, so ``tapegraph dump ridge``
prints exactly the tape that training runs (with a symbolic ``batch``
dimension: ``batch=1`` is the homework's per-example step). ``build`` also
gives the parameters ``fit`` starts from and a few rows of the homework's
data, for gradient checks.

>>> program, params, inputs = build("ridge", num_features=3, batch=2)
>>> sorted(params), inputs["x"].shape, inputs["y"].shape
(['b', 'w'], (2, 3), (2,))
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np

import tapegraph as tg
from .base import Estimator
from .data import BLOB_CENTERS, classification_problem, generate_problem, make_blobs, step_features
from .estimators import LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression


@attrs.frozen
class BuiltinModel:
    """One built-in model: how to make its estimator and its training data."""

    name: str
    #: One line for ``tapegraph --help``.
    summary: str
    #: The estimator with the main job's settings.
    make: Callable[[], Estimator]
    #: Features of the homework's data for this model.
    num_features: int
    #: ``data(num_features) -> (X_train, y_train)``: the homework's training set with that many features.
    data: Callable[[int], tuple[np.ndarray, np.ndarray]]

    @property
    def step_size(self) -> float:
        """The SGD step size the main job trains this model with."""
        return float(self.make().step_size)


def _step_function_data(num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The regression problem's training set, x featurised by ``num_features`` step functions."""
    problem = generate_problem(seed=0)
    return step_features(num_features)(problem.x_train), problem.y_train


def _raw_or_step_function_data(num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The raw x as one column (the main job's mlp-raw), or step-function features."""
    if num_features == 1:
        problem = generate_problem(seed=0)
        return problem.x_train[:, None], problem.y_train
    return _step_function_data(num_features)


def _blob_data(num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The three blobs; in other dimensions, the same centres cut or padded with zeros."""
    if num_features == len(BLOB_CENTERS[0]):
        X_train, y_train, _, _ = classification_problem()
        return X_train, y_train
    centers = np.zeros((len(BLOB_CENTERS), num_features))
    kept = min(num_features, len(BLOB_CENTERS[0]))
    centers[:, :kept] = np.asarray(BLOB_CENTERS, dtype=np.float64)[:, :kept]
    return make_blobs(centers=centers, seed=2)


#: The built-in models by name, with the main job's settings (see models/__main__.py).
MODELS: dict[str, BuiltinModel] = {model.name: model for model in (
    BuiltinModel("linear", "linear regression on 400 step-function features (square loss)",
                 lambda: LinearRegression(step_size=0.001), 400, _step_function_data),
    BuiltinModel("ridge", "ridge regression (l2_reg=1) on 400 step-function features",
                 lambda: RidgeRegression(l2_reg=1, step_size=5e-5), 400, _step_function_data),
    BuiltinModel("mlp", "MLP regression, 10 tanh hidden units, on the raw 1-D x",
                 lambda: MLPRegression(num_hidden_units=10, step_size=1e-3, init_param_scale=5e-4), 1,
                 _raw_or_step_function_data),
    BuiltinModel("multiclass", "multiclass MLP, 10 tanh hidden units, 3 classes, on 2-D blobs",
                 lambda: MulticlassClassifier(num_class=3), 2, _blob_data),
)}


def build(name: str, num_features: int | None = None, *, batch: int = 1,
          seed: int = 0) -> tuple[tg.Program, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(program, params, inputs)`` of a built-in model.

    ``program`` is what ``fit`` compiles (batch dimension symbolic);
    ``params`` are the values ``fit(..., random_state=seed)`` starts from;
    ``inputs`` are ``batch`` rows of the homework's training data, drawn
    with ``seed``. ``num_features`` defaults to the homework's data (400
    for linear and ridge, 1 for mlp, 2 for multiclass).
    """
    if name not in MODELS:
        raise ValueError(f"unknown built-in model {name!r}; the built-in models are {', '.join(MODELS)}")
    model = MODELS[name]
    num_features = model.num_features if num_features is None else num_features
    for label, number in (("num_features", num_features), ("batch", batch)):
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or number < 1:
            raise ValueError(f"{label} must be a positive integer, got {number!r}")
    estimator = model.make()
    objective, wrt, outputs = estimator._declare(int(num_features))
    program = tg.compile(objective, wrt=wrt, outputs=outputs)
    # the same generator, drawn from in the same order, as fit's
    rng = np.random.default_rng(seed)
    params = estimator._init_params(int(num_features), rng)
    X, y = model.data(int(num_features))
    rows = rng.choice(len(X), size=int(batch), replace=batch > len(X))
    return program, params, {"x": X[rows], "y": y[rows]}
