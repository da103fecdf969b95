"""The homework's four models as scikit-learn-style estimators.

Each declares its graph once with a symbolic batch dimension (``x`` is
``(batch, d)``, ``y`` is ``(batch,)``; the objective is the batch's mean of
the homework's per-example objective, so ``batch_size=1`` is exactly the
homework's SGD step); ``optimizer=`` picks what trains it (``models.base``).
After ``fit``, ``program_`` is the compiled ``tapegraph.Program``
(``est.program_.dump(sizes={"batch": 1})`` prints the per-example tape) and
``params_`` its parameters by name. ``history_`` holds the logged epochs.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

import tapegraph as tg
from .base import (
    Estimator, Regressor, _check_int, _check_number, _ClassifierMixin, _numeric_array, _warn_column_vector,
)


def _inputs(num_features: int, label_dtype: str = "float64") -> tuple[tg.Node, tg.Node]:
    x = tg.input("x", shape=("batch", num_features))
    y = tg.input("y", shape=("batch",), dtype=label_dtype)
    return x, y


def _scaled_normal(rng: np.random.Generator, scale: float, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    # np.asarray: a 0-d draw comes back as a Python float
    return {name: np.asarray(scale * rng.standard_normal(shape)) for name, shape in shapes.items()}


class LinearRegression(Regressor):
    """Linear regression ``x @ w + b`` with the square loss, trained by SGD.

    Objective per example: ``(x @ w + b - y)**2``. Parameters ``w`` and
    ``b`` start at zero, as in the homework.

    ``step_size="auto"`` (the default) scales the SGD step to the data, so
    that unscaled data does not make training diverge: ``0.5 / (max_i
    ||x_i||**2 + 1)``, half the largest step for which an SGD step on the
    largest row ``(x_i, 1)`` still shrinks its residual (a step of
    ``1 / (2 ||(x_i, 1)||**2)`` fits that row exactly; twice that is the
    edge of divergence, and every smaller row or mean over a batch is
    safer). On the homework's 400 step features it is about 0.00125.
    With ``optimizer="adam"``, ``"adamw"`` or ``"rmsprop"``, ``"auto"`` is
    that optimizer's default learning rate. ``step_size_`` is the step used.
    """

    _has_auto_step_size = True

    def __init__(self, step_size: float | str = "auto", max_num_epochs: int = 5000, batch_size: int = 1,
                 random_state: Any = None, verbose: bool = False, optimizer: Any = "sgd") -> None:
        self.step_size = step_size
        self.max_num_epochs = max_num_epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.optimizer = optimizer

    def _penalty(self, w: tg.Node) -> tg.Node | None:
        return None

    def _penalty_curvature(self) -> float:
        """Half the penalty's second derivative in ``w`` (``l2_reg`` for ridge): it adds to a row's curvature."""
        return 0.0

    def _auto_step_size(self, X: np.ndarray) -> float:
        with np.errstate(over="ignore"):
            largest = float(np.max(np.einsum("ij,ij->i", X, X)))
        if not math.isfinite(largest):
            raise ValueError(f"{type(self).__name__}: step_size='auto' cannot scale the step to X: the squared norm "
                             "of its largest row overflows float64; scale X (say with scikit-learn's StandardScaler) "
                             "or give step_size")
        return 0.5 / (largest + 1.0 + self._penalty_curvature())

    def _declare(self, num_features: int):
        x, y = _inputs(num_features)
        w = tg.param("w", shape=(num_features,))
        b = tg.param("b")
        prediction = tg.vector_scalar_affine(x, w, b, name="prediction")
        objective = tg.mean(tg.square(prediction - y), name="square_loss")
        penalty = self._penalty(w)
        if penalty is not None:
            objective = objective + penalty
        return objective, [w, b], {"prediction": prediction}

    def _init_params(self, num_features: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"w": np.zeros(num_features), "b": np.array(0.0)}


class RidgeRegression(LinearRegression):
    """Ridge regression: linear regression plus ``l2_reg * ||w||**2`` (``b`` is not penalised).

    Objective per example: ``(x @ w + b - y)**2 + l2_reg * ||w||**2``;
    ``w`` is used twice, and the tape adds its two gradient contributions.
    ``step_size="auto"`` is ``0.5 / (max_i ||x_i||**2 + 1 + l2_reg)``.
    """

    def __init__(self, l2_reg: float = 1, step_size: float | str = "auto", max_num_epochs: int = 5000,
                 batch_size: int = 1, random_state: Any = None, verbose: bool = False, optimizer: Any = "sgd") -> None:
        super().__init__(step_size=step_size, max_num_epochs=max_num_epochs, batch_size=batch_size,
                         random_state=random_state, verbose=verbose, optimizer=optimizer)
        self.l2_reg = l2_reg

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        _check_number(self, "l2_reg")

    def _penalty(self, w: tg.Node) -> tg.Node:
        return tg.l2_norm_penalty(w, l2_reg=float(self.l2_reg), name="penalty")

    def _penalty_curvature(self) -> float:
        return float(self.l2_reg)


class MLPRegression(Regressor):
    """One tanh hidden layer and a linear output, square loss.

    ``prediction = w2 @ tanh(W1 @ x + b1) + b2``; every parameter starts as
    ``init_param_scale`` times a standard normal draw, as in the homework.
    """

    def __init__(self, num_hidden_units: int = 10, step_size: float = 0.005, init_param_scale: float = 0.01,
                 max_num_epochs: int = 5000, batch_size: int = 1, random_state: Any = None,
                 verbose: bool = False, optimizer: Any = "sgd") -> None:
        self.num_hidden_units = num_hidden_units
        self.step_size = step_size
        self.init_param_scale = init_param_scale
        self.max_num_epochs = max_num_epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.optimizer = optimizer

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        _check_int(self, "num_hidden_units", minimum=1)
        _check_number(self, "init_param_scale")

    def _declare(self, num_features: int):
        m = int(self.num_hidden_units)
        x, y = _inputs(num_features)
        W1 = tg.param("W1", shape=(m, num_features))
        b1 = tg.param("b1", shape=(m,))
        w2 = tg.param("w2", shape=(m,))
        b2 = tg.param("b2")
        hidden = tg.tanh(tg.affine(W1, x, b1), name="hidden")
        prediction = tg.vector_scalar_affine(hidden, w2, b2, name="prediction")
        objective = tg.mean(tg.square(prediction - y), name="square_loss")
        return objective, [W1, b1, w2, b2], {"prediction": prediction}

    def _init_params(self, num_features: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        m = int(self.num_hidden_units)
        return _scaled_normal(rng, float(self.init_param_scale),
                              {"W1": (m, num_features), "b1": (m,), "w2": (m,), "b2": ()})


class MulticlassClassifier(_ClassifierMixin, Estimator):
    """An MLP with a softmax output, trained by negative log-likelihood.

    Scores ``z = W2 @ tanh(W1 @ x + b1) + b2``; class probabilities
    ``softmax(z)``; objective per example ``-log softmax(z)[y]``. The
    homework builds that as ``nll(softmax(z), y)``; this uses the equal but
    fused ``cross_entropy(z, y)``, which cannot take the log of an
    underflowed zero.

    Labels may be any sortable values (integers, strings, booleans):
    ``classes_`` holds the distinct labels of ``y``, sorted, and class
    ``i`` of the model (column ``i`` of ``predict_proba``) is
    ``classes_[i]``. With ``num_class=k`` given, as in the homework, the
    labels must be the integers ``0 .. k - 1`` instead, and
    ``classes_`` is all of them, even those absent from ``y``.
    """

    _estimator_type = "classifier"

    def __init__(self, num_hidden_units: int = 10, step_size: float = 0.005, init_param_scale: float = 0.01,
                 max_num_epochs: int = 1000, num_class: int | None = None, batch_size: int = 1,
                 random_state: Any = None, verbose: bool = False, optimizer: Any = "sgd") -> None:
        self.num_hidden_units = num_hidden_units
        self.step_size = step_size
        self.init_param_scale = init_param_scale
        self.max_num_epochs = max_num_epochs
        self.num_class = num_class
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.optimizer = optimizer

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        _check_int(self, "num_hidden_units", minimum=1)
        _check_number(self, "init_param_scale")
        if self.num_class is not None:
            _check_int(self, "num_class", minimum=2)

    def _fit_targets(self, y: Any) -> np.ndarray:
        """The class index of each label; sets ``classes_``."""
        labels = _labels(y, warn_column=True, discrete=self.num_class is None)
        if self.num_class is not None:
            self.classes_ = np.arange(int(self.num_class))
            return _homework_labels(labels, int(self.num_class))
        classes, indices = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"MulticlassClassifier: y has only one class ({classes[0].tolist()!r}); a classifier needs "
                             "labels of at least 2 classes to train")
        self.classes_ = classes
        return indices.reshape(-1).astype(np.int64)

    def _class_indices(self, y: Any) -> np.ndarray:
        """The index in ``classes_`` of each label of ``y``; a label the model does not know is an error."""
        labels = _labels(y, discrete=self.num_class is None)
        if self.num_class is not None:
            return _homework_labels(labels, len(self.classes_))
        try:
            positions = np.clip(np.searchsorted(self.classes_, labels), 0, len(self.classes_) - 1)
            known = self.classes_[positions] == labels
        except TypeError:  # labels that do not compare with the classes at all (strings against numbers)
            known = np.zeros(len(labels), dtype=bool)
        if not np.all(known):
            unknown = np.unique(labels[~np.asarray(known, dtype=bool)])[:5].tolist()
            raise ValueError(f"MulticlassClassifier: y holds labels the model was not fitted with: {unknown}; "
                             f"its classes_ are {self.classes_.tolist()}")
        return positions.astype(np.int64)

    def _num_classes(self) -> int:
        if hasattr(self, "classes_"):
            return len(self.classes_)
        if self.num_class is None:
            raise ValueError("MulticlassClassifier: the number of classes is known after fit, from the labels; "
                             "give num_class to declare the model before")
        return int(self.num_class)

    def _declare(self, num_features: int):
        m, k = int(self.num_hidden_units), self._num_classes()
        x, y = _inputs(num_features, label_dtype="int64")
        W1 = tg.param("W1", shape=(m, num_features))
        b1 = tg.param("b1", shape=(m,))
        W2 = tg.param("W2", shape=(k, m))
        b2 = tg.param("b2", shape=(k,))
        hidden = tg.tanh(tg.affine(W1, x, b1), name="hidden")
        scores = tg.affine(W2, hidden, b2, name="scores")
        objective = tg.mean(tg.cross_entropy(scores, y), name="nll")
        return objective, [W1, b1, W2, b2], {"probabilities": tg.softmax(scores, name="probabilities")}

    def _init_params(self, num_features: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        m, k = int(self.num_hidden_units), self._num_classes()
        return _scaled_normal(rng, float(self.init_param_scale),
                              {"W1": (m, num_features), "b1": (m,), "W2": (k, m), "b2": (k,)})

    def fit(self, X: Any, y: Any) -> "MulticlassClassifier":
        """Train on ``X`` (n, d) and labels ``y`` (n,); returns ``self``. ``classes_`` holds the classes."""
        return super().fit(X, y)

    def _training_loss(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        # y holds class indices here, as fit trains on them
        probabilities = self.predict_proba(X)
        return {"loss": _mean_nll(probabilities, y), "accuracy": float(np.mean(probabilities.argmax(axis=1) == y))}

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, number of classes), columns in the order of ``classes_``; rows sum to 1."""
        return self._forward(X, "probabilities")

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row (a label from ``classes_``), shape (n,)."""
        probabilities = self.predict_proba(X)  # first: it says if the model is not fitted
        return self.classes_[probabilities.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the fraction of rows whose predicted label equals ``y``."""
        labels = _labels(y)
        predicted = self.predict(X)
        if len(predicted) != len(labels):
            raise ValueError(f"MulticlassClassifier: X has {len(predicted)} rows but y has {len(labels)} labels")
        return float(np.mean(predicted == labels))

    def log_loss(self, X: Any, y: Any) -> float:
        """Average negative log-likelihood of the labels ``y`` under ``predict_proba(X)``."""
        indices = self._class_indices(y)
        return _mean_nll(self.predict_proba(X), indices)


def _labels(y: Any, warn_column: bool = False, discrete: bool = True) -> np.ndarray:
    """``y`` as a non-empty 1-D array of labels: numbers, strings or booleans.

    With ``discrete``, numbers must have integral values ("continuous"
    targets are refused, in scikit-learn's words); without, that is left
    to the caller (``_homework_labels`` says it in the homework's words).
    """
    owner = "MulticlassClassifier"
    if type(y).__module__.startswith("scipy.sparse"):
        _numeric_array(y, "y", f"{owner}: ")  # raises the sparse-data error
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        if warn_column:
            _warn_column_vector()
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"{owner}: y must be a non-empty 1-D array of labels, got shape {labels.shape}")
    if labels.dtype.kind == "c":
        raise ValueError(f"{owner}: Complex data not supported: y has dtype {labels.dtype}")
    if labels.dtype.kind == "O":
        labels = _object_labels(labels)  # strings (kept as objects) or numbers
    if labels.dtype.kind not in "iufbUSO":
        raise ValueError(f"{owner}: Unknown label type: y has dtype {labels.dtype}; labels must be integers, "
                         "strings or booleans")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"{owner}: y contains NaN or infinity")
        if discrete and not np.all(labels == np.round(labels)):
            example = labels[labels != np.round(labels)][0]
            raise ValueError(f"{owner}: Unknown label type: continuous (y holds non-integer values such as "
                             f"{example!r}); a classifier needs discrete labels (integers, strings or booleans): "
                             "for real-valued targets use a regressor")
    return labels


def _object_labels(labels: np.ndarray) -> np.ndarray:
    """An object array of labels as strings or numbers, or the unknown-label-type error."""
    values = labels.tolist()
    if all(isinstance(value, str) for value in values):
        return labels
    if all(isinstance(value, numbers.Real) for value in values):
        return np.asarray(values)
    kinds = sorted({type(value).__name__ for value in values})
    raise ValueError(f"MulticlassClassifier: Unknown label type: y mixes {', '.join(kinds)}; labels must be all "
                     "numbers or all strings")


def _homework_labels(labels: np.ndarray, num_class: int) -> np.ndarray:
    """With ``num_class`` given: labels must be the integers ``0 .. num_class - 1`` (the homework's form)."""
    integral = labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and np.all(labels == np.round(labels)))
    if not integral:
        raise ValueError(f"MulticlassClassifier: labels must be integers 0 .. {num_class - 1}, "
                         f"got an array of dtype {labels.dtype} (with num_class=None the classes are taken from y)")
    outside = labels[(labels < 0) | (labels >= num_class)]
    if len(outside):
        raise ValueError(f"MulticlassClassifier: labels must be in 0 .. {num_class - 1} (num_class="
                         f"{num_class}), got {np.unique(outside)[:5].tolist()}")
    return labels.astype(np.int64)


def _mean_nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    # a probability that underflowed to 0 counts as the largest finite loss, not inf
    return float(np.mean(-np.log(np.maximum(picked, np.finfo(float).tiny))))
