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

from typing import Any

import numpy as np

import tapegraph as tg
from .base import Estimator, Regressor, _check_int, _check_number


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
    """

    def __init__(self, step_size: float = 0.005, max_num_epochs: int = 5000, batch_size: int = 1,
                 random_state: Any = None, verbose: bool = False, optimizer: Any = "sgd") -> None:
        self.step_size = step_size
        self.max_num_epochs = max_num_epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose
        self.optimizer = optimizer

    def _penalty(self, w: tg.Node) -> tg.Node | None:
        return None

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
    """

    def __init__(self, l2_reg: float = 1, step_size: float = 0.005, max_num_epochs: int = 5000, batch_size: int = 1,
                 random_state: Any = None, verbose: bool = False, optimizer: Any = "sgd") -> None:
        super().__init__(step_size=step_size, max_num_epochs=max_num_epochs, batch_size=batch_size,
                         random_state=random_state, verbose=verbose, optimizer=optimizer)
        self.l2_reg = l2_reg

    def _check_hyperparameters(self) -> None:
        super()._check_hyperparameters()
        _check_number(self, "l2_reg")

    def _penalty(self, w: tg.Node) -> tg.Node:
        return tg.l2_norm_penalty(w, l2_reg=float(self.l2_reg), name="penalty")


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


class MulticlassClassifier(Estimator):
    """An MLP with a softmax output, trained by negative log-likelihood.

    Scores ``z = W2 @ tanh(W1 @ x + b1) + b2``; class probabilities
    ``softmax(z)``; objective per example ``-log softmax(z)[y]``. The
    homework builds that as ``nll(softmax(z), y)``; this uses the equal but
    fused ``cross_entropy(z, y)``, which cannot take the log of an
    underflowed zero. Labels are integers ``0 .. num_class - 1``.
    """

    _estimator_type = "classifier"

    def __init__(self, num_hidden_units: int = 10, step_size: float = 0.005, init_param_scale: float = 0.01,
                 max_num_epochs: int = 1000, num_class: int = 3, batch_size: int = 1, random_state: Any = None,
                 verbose: bool = False, optimizer: Any = "sgd") -> None:
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
        _check_int(self, "num_class", minimum=2)

    def _check_targets(self, y: Any) -> np.ndarray:
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"MulticlassClassifier: y must be a non-empty 1-D array of labels, got shape {labels.shape}")
        if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and not np.all(labels == np.round(labels))):
            raise ValueError(f"MulticlassClassifier: labels must be integers 0 .. {self.num_class - 1}, "
                             f"got an array of dtype {labels.dtype}")
        outside = labels[(labels < 0) | (labels >= self.num_class)]
        if len(outside):
            raise ValueError(f"MulticlassClassifier: labels must be in 0 .. {self.num_class - 1} (num_class="
                             f"{self.num_class}), got {np.unique(outside)[:5].tolist()}")
        return labels.astype(np.int64)

    def _declare(self, num_features: int):
        m, k = int(self.num_hidden_units), int(self.num_class)
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
        m, k = int(self.num_hidden_units), int(self.num_class)
        return _scaled_normal(rng, float(self.init_param_scale),
                              {"W1": (m, num_features), "b1": (m,), "W2": (k, m), "b2": (k,)})

    def fit(self, X: Any, y: Any) -> "MulticlassClassifier":
        """Train on ``X`` (n, d) and integer labels ``y`` in ``0 .. num_class - 1``; returns ``self``."""
        super().fit(X, y)
        self.classes_ = np.arange(int(self.num_class))
        return self

    def _training_loss(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        probabilities = self.predict_proba(X)
        return {"loss": _mean_nll(probabilities, y), "accuracy": float(np.mean(probabilities.argmax(axis=1) == y))}

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, num_class); rows sum to 1."""
        return self._forward(X, "probabilities")

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row, shape (n,)."""
        return self.predict_proba(X).argmax(axis=1)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy: the fraction of rows whose predicted label equals ``y``."""
        labels = self._check_targets(y)
        predicted = self.predict(X)
        if len(predicted) != len(labels):
            raise ValueError(f"MulticlassClassifier: X has {len(predicted)} rows but y has {len(labels)} labels")
        return float(np.mean(predicted == labels))

    def log_loss(self, X: Any, y: Any) -> float:
        """Average negative log-likelihood of the labels ``y`` under ``predict_proba(X)``."""
        labels = self._check_targets(y)
        return _mean_nll(self.predict_proba(X), labels)


def _mean_nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    # a probability that underflowed to 0 counts as the largest finite loss, not inf
    return float(np.mean(-np.log(np.maximum(picked, np.finfo(float).tiny))))
