"""What the four estimators share: parameters, input checks, training by epochs, the log.

scikit-learn's conventions: constructor arguments are stored as given and
checked in ``fit``; ``get_params`` reads them back from the ``__init__``
signature; everything learned ends in ``_``. When scikit-learn is installed
(the optional extra ``tapegraph[sklearn]``), the estimators also inherit
its ``BaseEstimator`` and ``RegressorMixin``/``ClassifierMixin`` (so its
tags, ``clone``, ``Pipeline``, ``GridSearchCV`` and ``check_estimator``
see real scikit-learn estimators), ``NotFittedError`` is a subclass of
scikit-learn's and ``DataConversionWarning`` is scikit-learn's. Without it
everything else is the same: the checks, the messages and the results
are this module's own, not scikit-learn's (docs/sklearn.md).

A subclass declares its model once, with a symbolic ``"batch"`` leading
dimension (``_declare``), and says how to start its parameters
(``_init_params``). The same compiled program then trains one example per
step (``batch_size=1``, the homework's SGD), on minibatches, and predicts
on any number of rows (``Program.map``).

Training is ``tapegraph``'s own: one ``epoch`` of the chosen optimizer per
epoch, over a fresh random order of the rows. ``optimizer=`` chooses it:

- ``"sgd"`` (the default): the homework's plain SGD, ``tg.sgd(program,
  step_size)``, so the homework's figures and log are reproduced;
- ``"adam"``, ``"adamw"``, ``"rmsprop"``: ``tg.adam`` (and so on) with
  ``learning_rate=step_size`` and their other defaults;
- a callable ``optimizer(program) -> optimizer`` for anything else, say
  ``lambda program: tg.sgd(program, 0.01, momentum=0.9)`` (a model trained
  with one cannot be saved: ``save`` keeps only named choices).
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

import tapegraph as tg

try:
    from sklearn.base import BaseEstimator as _BaseEstimator
    from sklearn.base import ClassifierMixin as _ClassifierMixin
    from sklearn.base import RegressorMixin as _RegressorMixin
    from sklearn.exceptions import DataConversionWarning as _DataConversionWarning
    from sklearn.exceptions import NotFittedError as _NotFittedError
    #: Whether scikit-learn was found: the estimators then inherit its bases and mixins.
    HAVE_SKLEARN = True
except ImportError:
    HAVE_SKLEARN = False

    class _BaseEstimator:
        """Stands in for ``sklearn.base.BaseEstimator`` when scikit-learn is not installed."""

    class _RegressorMixin:
        """Stands in for ``sklearn.base.RegressorMixin``."""

    class _ClassifierMixin:
        """Stands in for ``sklearn.base.ClassifierMixin``."""

    class _NotFittedError(ValueError, AttributeError):
        """Stands in for ``sklearn.exceptions.NotFittedError`` (a ValueError and an AttributeError)."""

    class DataConversionWarning(UserWarning):  # noqa: F811 (the same name as scikit-learn's, as warnings print it)
        """Stands in for ``sklearn.exceptions.DataConversionWarning``."""

    _DataConversionWarning = DataConversionWarning

#: The homework logs every 50 epochs.
LOG_EVERY = 50

#: ``optimizer=`` by name: how each makes its optimizer from the program and the step size.
OPTIMIZERS = {
    "sgd": lambda program, step_size: tg.sgd(program, step_size),
    "adam": lambda program, step_size: tg.adam(program, learning_rate=step_size),
    "adamw": lambda program, step_size: tg.adamw(program, learning_rate=step_size),
    "rmsprop": lambda program, step_size: tg.rmsprop(program, learning_rate=step_size),
}

#: ``step_size="auto"`` with an adaptive optimizer: its own default learning rate (tg.adam's, ...).
AUTO_LEARNING_RATES = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-2}


class NotFittedError(_NotFittedError):
    """``predict`` or ``score`` called before ``fit``.

    A ValueError and an AttributeError, and with scikit-learn installed a
    ``sklearn.exceptions.NotFittedError``.
    """


#: Warned when a column vector ``y`` of shape (n, 1) is taken as the 1-D targets
#: (scikit-learn's own class when it is installed).
DataConversionWarning = _DataConversionWarning


class DivergenceError(FloatingPointError):
    """The training objective became NaN or infinite.

    The estimator keeps the last parameters whose objective was finite in
    ``params_`` (so it can still predict), and ``epoch`` says when it
    happened, counted from 0 as in the log.
    """

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


class Estimator(_BaseEstimator):
    """Base class: ``get_params``/``set_params``, checks, and the training loop.

    Attributes set by ``fit``:

    - ``program_``: the compiled ``tapegraph.Program`` (objective, gradients,
      outputs); ``program_.dump(sizes={"batch": 1})`` prints the per-example tape.
    - ``params_``: the trained parameters, a dict of name -> array.
    - ``history_``: one dict per logged epoch: ``epoch``, ``objective`` (the
      epoch's average), ``loss`` (on the training set after the epoch), and
      for the classifier ``accuracy``.
    - ``n_features_in_``, ``n_iter_`` (epochs run), ``fit_time_`` (seconds),
      ``step_size_`` (the step size used: ``step_size``, or what ``"auto"`` chose).

    A fitted estimator pickles (``pickle``, ``joblib.dump``) without its
    compiled program, which is compiled again, from the same declaration,
    when it is unpickled: it predicts bit for bit the same.
    """

    #: ``"regressor"`` or ``"classifier"``; scikit-learn < 1.6 reads this.
    _estimator_type = "regressor"

    # Subclass interface.

    def _declare(self, num_features: int) -> tuple[tg.Node, list[tg.Node], dict[str, tg.Node]]:
        """The model: (objective, parameters to train, named outputs)."""
        raise NotImplementedError

    def _init_params(self, num_features: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    #: Whether ``step_size="auto"`` is allowed (the linear models: see ``_auto_step_size``).
    _has_auto_step_size = False

    def _check_hyperparameters(self) -> None:
        if not (self._has_auto_step_size and isinstance(self.step_size, str) and self.step_size == "auto"):
            _check_number(self, "step_size", positive=True, auto=self._has_auto_step_size)
        _check_int(self, "max_num_epochs", minimum=1)
        _check_int(self, "batch_size", minimum=1)
        optimizer = self.optimizer
        if not callable(optimizer) and not (isinstance(optimizer, str) and optimizer in OPTIMIZERS):
            raise ValueError(f"{type(self).__name__}: optimizer must be one of {sorted(OPTIMIZERS)} or a callable "
                             f"optimizer(program) -> a tapegraph optimizer, got {optimizer!r}")
        rs = self.random_state
        if not (rs is None or isinstance(rs, np.random.Generator)
                or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and rs >= 0)):
            raise ValueError(f"{type(self).__name__}: random_state must be None, a non-negative int or a "
                             f"numpy Generator, got {rs!r}")

    def _fit_targets(self, y: Any) -> np.ndarray:
        """``y`` as ``fit`` trains on it: real targets (the classifier: class indices, setting ``classes_``)."""
        return _finite_floats(y, "y", owner=type(self).__name__, warn_column=True)

    def _auto_step_size(self, X: np.ndarray) -> float:
        """The step size ``step_size="auto"`` gives plain SGD on ``X`` (only where ``_has_auto_step_size``)."""
        raise NotImplementedError

    def _step_size_for(self, X: np.ndarray) -> float:
        """The step size this fit uses: ``step_size``, or what ``"auto"`` picks for this data and optimizer."""
        if not isinstance(self.step_size, str):
            return float(self.step_size)
        if isinstance(self.optimizer, str) and self.optimizer in AUTO_LEARNING_RATES:
            return AUTO_LEARNING_RATES[self.optimizer]
        return self._auto_step_size(X)

    def _training_loss(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Figures logged every 50 epochs, after ``Ave objective``."""
        return {"loss": float(np.mean((self.predict(X) - y) ** 2))}

    # scikit-learn's parameter protocol.

    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given (``deep`` is accepted for scikit-learn)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "Estimator":
        """Set constructor arguments by name; returns ``self``. Takes effect at the next ``fit``."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; its parameters are {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {name: parameter.default for name, parameter in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                   if not (isinstance(value, type(defaults[name])) and value == defaults[name])]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):
        # Only scikit-learn (>= 1.6) calls this, and then BaseEstimator and the
        # mixins are in the bases: they give the estimator type and its tags.
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # supervised: fit needs y
        return tags

    # Pickling: the compiled program holds generated code, so it is left out and compiled again.

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__() or {})  # BaseEstimator's adds the scikit-learn version
        state.pop("program_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore = getattr(super(), "__setstate__", None)
        if restore is not None:
            restore(state)  # BaseEstimator's warns if pickled by another scikit-learn version
        else:
            self.__dict__.update(state)
        if "params_" in self.__dict__:
            self.program_ = self._compile(int(self.n_features_in_))

    def _compile(self, num_features: int) -> tg.Program:
        """The model's program for ``num_features`` inputs, as ``fit`` compiles it."""
        objective, wrt, outputs = self._declare(num_features)
        return tg.compile(objective, wrt=wrt, outputs=outputs, backend=self._backend)

    # Training.

    def fit(self, X: Any, y: Any) -> "Estimator":
        """Train on ``X`` (n, d) and ``y`` (n,) with ``optimizer`` (SGD by default); returns ``self``.

        Each epoch visits the rows in a fresh random order, ``batch_size``
        at a time (the last batch may be smaller), stepping on the mean
        objective of the batch: one ``epoch`` of the optimizer. With
        ``verbose``, prints the homework's log line every 50 epochs
        (counted from 0) and after the last one. Raises
        ``DivergenceError`` if the objective becomes NaN or infinite.
        """
        self._check_hyperparameters()
        X = self._check_X(X, fitting=True)
        if y is None:  # scikit-learn's words, which its checks look for
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = self._fit_targets(y)
        if len(y) != len(X):
            raise ValueError(f"{type(self).__name__}: X has {len(X)} rows but y has {len(y)} entries; "
                             "they must match, one target per row")
        num_rows, num_features = X.shape
        rng = np.random.default_rng(self.random_state)
        self.step_size_ = self._step_size_for(X)
        self.program_ = self._compile(num_features)
        self.n_features_in_ = num_features
        self.params_ = self._init_params(num_features, rng)
        self.history_: list[dict[str, float]] = []
        optimizer = self._make_optimizer()
        data = {"x": X, "y": y}
        batch = min(int(self.batch_size), num_rows)
        sizes = [min(batch, num_rows - low) for low in range(0, num_rows, batch)]
        epochs = int(self.max_num_epochs)
        start = time.perf_counter()
        state = optimizer.init(self.params_)
        before = (state, None)  # the state an epoch started from, and its order: to replay up to a failing step
        # Overflow is detected below, from the objectives, with a clearer message than numpy's warnings.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(epochs):
                order = rng.permutation(num_rows)
                new_state, objectives = optimizer.epoch(state, data, order=order, batch_size=batch)
                failed = np.flatnonzero(~np.isfinite(objectives))
                if len(failed):
                    previous = self._before_step(optimizer, data, batch, int(failed[0]), (state, order), before)
                    self._diverged(epoch, int(failed[0]), float(objectives[failed[0]]), previous, start)
                total = 0.0
                for value, size in zip(objectives.tolist(), sizes):
                    total += value * size
                before, state = (state, order), new_state
                self.params_ = _params_of(state)
                if epoch % LOG_EVERY == 0 or epoch == epochs - 1:
                    self._log(epoch, total / num_rows, X, y, start)
        self.n_iter_ = epochs
        self.fit_time_ = time.perf_counter() - start
        return self

    def _make_optimizer(self) -> Any:
        """The optimizer ``optimizer=`` names, for ``program_``."""
        if isinstance(self.optimizer, str):
            return OPTIMIZERS[self.optimizer](self.program_, self.step_size_)
        optimizer = self.optimizer(self.program_)
        if not all(callable(getattr(optimizer, name, None)) for name in ("init", "epoch")):
            raise TypeError(f"{type(self).__name__}: optimizer(program) must return a tapegraph optimizer "
                            f"(with init and epoch, as tg.adam(program) does), got {type(optimizer).__name__}")
        return optimizer

    @staticmethod
    def _before_step(optimizer: Any, data: dict[str, np.ndarray], batch: int, failed: int,
                     current: tuple[Any, np.ndarray], before: tuple[Any, np.ndarray | None]) -> dict[str, np.ndarray]:
        """The parameters given to the step before step ``failed`` of this epoch: the last with a finite objective.

        ``current`` and ``before`` are (state, order) of this epoch and the
        one before. The epochs are pure and deterministic, so replaying the
        steps up to that one, from the state its epoch started from, gives
        exactly those parameters.
        """
        state, order = current
        if failed == 0:
            state, order = before
            if order is None:  # the very first step: nothing came before the initial parameters
                return _params_of(state)
            failed = -(-len(order) // batch)  # the previous epoch's number of steps
        if failed == 1:
            return _params_of(state)
        replayed, _ = optimizer.epoch(state, data, order=order[:(failed - 1) * batch], batch_size=batch)
        return _params_of(replayed)
    #: What ``fit`` compiles for (``tg.compile(..., backend=...)``): the main
    #: job sets ``"native"`` on its estimators when numba is installed. Not
    #: a constructor parameter: it changes how fast, not what is learned.
    _backend = "numpy"

    def _diverged(self, epoch: int, step: int, value: float, previous: dict[str, np.ndarray], start: float) -> None:
        # The parameters given to the failing step already have a non-finite
        # objective; the ones before them (or the initial ones) are the last with a finite one.
        self.params_ = previous
        self.n_iter_ = epoch
        self.fit_time_ = time.perf_counter() - start
        raise DivergenceError(
            f"{type(self).__name__}: training diverged in epoch {epoch} (counted from 0, step {step} of the epoch): "
            f"the objective became {value}. params_ holds the last parameters with a finite objective; "
            f"try a smaller step_size than {self.step_size_!r}.", epoch)

    def _log(self, epoch: int, objective: float, X: np.ndarray, y: np.ndarray, start: float) -> None:
        figures = self._training_loss(X, y)
        self.history_.append({"epoch": epoch, "objective": objective, **figures})
        if not self.verbose:
            return
        line = f"Epoch {epoch}: Ave objective={objective:.6g} Ave training loss: {figures['loss']:.6g}"
        if "accuracy" in figures:
            line += f" Training accuracy: {figures['accuracy']:.3f}"
        # progress, so a long run shows how far it is and how long is left
        done, epochs = epoch + 1, int(self.max_num_epochs)
        elapsed = time.perf_counter() - start
        line += f"  [{done}/{epochs} epochs, {elapsed:.1f}s, ~{elapsed / done * (epochs - done):.0f}s left]"
        print(line, file=sys.stdout, flush=True)

    # Checks shared by fit and predict.

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _check_X(self, X: Any, fitting: bool = False) -> np.ndarray:
        """``X`` as a 2-D float64 array with finite entries (and the fitted width, after fit)."""
        name = type(self).__name__
        if not fitting:
            self._check_fitted()
        X = _finite_floats(X, "X", ndim=2, owner=name)
        if X.shape[1] == 0:
            raise ValueError(f"{name}: X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
        if not fitting and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting {self.n_features_in_} "
                             "features as input (the number of columns it was fitted with)")
        return X

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to ``path`` (``.npz``, no pickles, replaced atomically).

        ``models.load(path)`` reads it back; see ``models/persist.py``.
        """
        from .persist import save
        save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Estimator":
        """Read a model written by ``save``; ``RidgeRegression.load(path)`` insists on a ridge model.

        The same as ``models.load(path, model=cls)`` (any model when called on ``Estimator`` itself).
        """
        from .persist import load
        return load(path, model=None if cls is Estimator else cls)

    def _forward(self, X: Any, output: str) -> np.ndarray:
        X = self._check_X(X)
        return self.program_.map(self.params_, {"x": X}, outputs=[output])[output]


class Regressor(_RegressorMixin, Estimator):
    """Regression: ``predict`` gives real values, ``score`` is R²."""

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for the rows of ``X``, shape (n,)."""
        return self._forward(X, "prediction")

    def score(self, X: Any, y: Any) -> float:
        """Coefficient of determination R² of ``predict(X)`` against ``y``."""
        y = _finite_floats(y, "y", owner=type(self).__name__)
        predicted = self.predict(X)
        if len(predicted) != len(y):
            raise ValueError(f"{type(self).__name__}: X has {len(predicted)} rows but y has {len(y)} entries")
        residual = float(np.sum((y - predicted) ** 2))
        total = float(np.sum((y - y.mean()) ** 2))
        if total == 0.0:  # constant y: as scikit-learn, 1 if perfect, else 0
            return 1.0 if residual == 0.0 else 0.0
        return 1.0 - residual / total


def _params_of(state: Any) -> dict[str, np.ndarray]:
    """The parameters of an optimizer's state (plain SGD's state is the parameters)."""
    return state.params if isinstance(state, tg.OptimizerState) else state


def _finite_floats(values: Any, name: str, ndim: int = 1, owner: str = "", warn_column: bool = False) -> np.ndarray:
    """``values`` as a float64 array of ``ndim`` dimensions, all finite, at least one row.

    For targets (``ndim=1``) a column vector (n, 1) is taken as its one
    column, with a ``DataConversionWarning`` if ``warn_column``. Messages
    carry the phrases scikit-learn's own checks use ("Reshape your data",
    "Complex data not supported", "sparse"), so tools that look for them
    find them.
    """
    prefix = f"{owner}: " if owner else ""
    array = _numeric_array(values, name, prefix)
    if ndim == 1 and array.ndim == 2 and array.shape[1] == 1:
        if warn_column:
            _warn_column_vector()
        array = array[:, 0]
    if array.ndim != ndim:
        if ndim == 2 and array.ndim < 2:
            got = "a single number" if array.ndim == 0 else f"shape {array.shape}"
            raise ValueError(f"{prefix}{name} must be a 2-D array, got {got}. Reshape your data: "
                             f"{name}.reshape(-1, 1) if it has a single feature, {name}.reshape(1, -1) if it is a "
                             "single example")
        if ndim == 1:
            raise ValueError(f"{prefix}{name} should be a 1d array (one target per row), got an array of shape "
                             f"{array.shape} instead")
        raise ValueError(f"{prefix}{name} must be a {ndim}-D array, got shape {array.shape}")
    if len(array) == 0:
        raise ValueError(f"{prefix}{name} is empty (shape {array.shape}); it needs at least one row")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        where = ", ".join(str(int(i)) for i in bad[0])
        raise ValueError(f"{prefix}{name} contains NaN or infinity ({len(bad)} entries; first at index ({where}))")
    return array


def _warn_column_vector() -> None:
    """The warning for targets given as a column (n, 1), in scikit-learn's words: its checks look for them."""
    warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
                  "(n_samples,), for example using ravel().", DataConversionWarning, stacklevel=5)


def _numeric_array(values: Any, name: str, prefix: str) -> np.ndarray:
    """``values`` as a float64 array: not sparse, not masked, not complex, and numbers only."""
    if type(values).__module__.startswith("scipy.sparse"):  # without importing scipy
        raise TypeError(f"{prefix}sparse data was passed for {name} ({type(values).__name__}), but dense data is "
                        f"required: use {name}.toarray() to convert it to a dense numpy array")
    if isinstance(values, np.ma.MaskedArray):  # np.asarray would drop the mask and use the masked values
        raise ValueError(f"{prefix}{name} is a masked array ({int(np.ma.count_masked(values))} of {values.size} entries "
                         f"masked); the masked values would be used: pass {name}.filled(value), or leave those rows out")
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{prefix}{name} must be numeric: {error}") from None
    if array.dtype.kind == "c":
        raise ValueError(f"{prefix}Complex data not supported: {name} has dtype {array.dtype}; pass np.real({name}) "
                         "if its imaginary parts are meant to be zero")
    # numpy's own error says what was not a number; its type is kept (TypeError for a dict, ValueError for 'a')
    try:
        return np.asarray(array, dtype=np.float64)
    except TypeError as error:
        raise TypeError(f"{prefix}{name} must be numeric: {error}") from None
    except ValueError as error:
        raise ValueError(f"{prefix}{name} must be numeric: {error}") from None


def _check_number(estimator: Estimator, name: str, positive: bool = False, auto: bool = False) -> None:
    value = getattr(estimator, name)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        need = "a positive" if positive else "a non-negative"
        alternative = " or 'auto'" if auto else ""
        raise ValueError(f"{type(estimator).__name__}: {name} must be {need} finite number{alternative}, got {value!r}")


def _check_int(estimator: Estimator, name: str, minimum: int) -> None:
    value = getattr(estimator, name)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{type(estimator).__name__}: {name} must be an int >= {minimum}, got {value!r}")

