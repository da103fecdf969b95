"""Saving a fitted estimator and loading it back, through ``tapegraph.save_params``.

The ``.npz`` file holds the trained parameters and, as metadata, what
rebuilds the model: the estimator's class, its constructor arguments,
the number of input features, and its training record (``n_iter_``,
``history_``). Loading compiles the model's program again from its own
declaration and checks the file's parameters against it, name by name.

>>> import numpy as np, os, tempfile
>>> from models import RidgeRegression, load
>>> X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20.0)
>>> ridge = RidgeRegression(step_size=1e-3, max_num_epochs=3, random_state=0).fit(X, y)
>>> path = os.path.join(tempfile.mkdtemp(), "ridge.npz")
>>> ridge.save(path)
>>> bool(np.array_equal(load(path).predict(X), ridge.predict(X)))
True
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

import tapegraph as tg

from .base import Estimator


def _estimator_classes() -> dict[str, type[Estimator]]:
    from .estimators import LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression
    return {cls.__name__: cls for cls in (LinearRegression, RidgeRegression, MLPRegression, MulticlassClassifier)}


def _jsonable(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.random.Generator) and name == "random_state":
        return None  # a generator's state is not a hyper-parameter; a loaded model is already fitted
    raise tg.PersistError(f"cannot save hyper-parameter {name}={value!r}: only numbers, strings, booleans and None "
                          "are saved")


def _entry(meta: dict, key: str, default: Any, kind: type, described: str, where: str) -> Any:
    """``meta[key]``, checked to be a ``kind`` (a hand-edited file may hold anything)."""
    value = meta.get(key, default)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise tg.PersistError(f"{where}: its {key!r} must be {described}, got {value!r}"[:300])
    return value


def save(estimator: Estimator, path: str | os.PathLike) -> None:
    """Write a fitted ``estimator`` to ``path`` (an ``.npz`` file, replaced atomically)."""
    estimator._check_fitted()
    meta = {
        "class": type(estimator).__name__,
        "hyperparameters": {name: _jsonable(name, value) for name, value in estimator.get_params().items()},
        "n_features_in": int(estimator.n_features_in_),
        "n_iter": int(getattr(estimator, "n_iter_", 0)),
        "history": [{key: _jsonable(key, value) for key, value in entry.items()} for entry in getattr(estimator, "history_", [])],
    }
    if hasattr(estimator, "step_size_"):
        meta["step_size_used"] = float(estimator.step_size_)
    if hasattr(estimator, "classes_"):
        classes = estimator.classes_
        if classes.dtype.kind not in "iufbUO" or not all(isinstance(label, (bool, int, float, str)) for label in classes.tolist()):
            raise tg.PersistError(f"cannot save the class labels {classes.tolist()[:5]} (dtype {classes.dtype}): "
                                  "only numbers, strings and booleans are saved")
        meta["classes"] = classes.tolist()
        meta["classes_dtype"] = classes.dtype.str
    tg.save_params(path, estimator.params_, meta)


def load(path: str | os.PathLike, model: type[Estimator] | None = None) -> Estimator:
    """Read an estimator written by ``save``, ready to ``predict``.

    With ``model`` (a class, such as ``RidgeRegression``), the file must
    hold that kind of model. A file whose parameters do not match the
    model's declaration raises ``tapegraph.PersistError`` naming each
    missing, unexpected or misshapen parameter.
    """
    if model is not None and not (isinstance(model, type) and issubclass(model, Estimator)):
        raise TypeError(f"model must be an estimator class such as RidgeRegression, got {model!r}")
    params, meta = tg.load_params(path, what="model file")
    where = f"model file {os.fspath(path)!r}"
    classes = _estimator_classes()
    name = meta.get("class")
    if not isinstance(name, str) or name not in classes:
        raise tg.PersistError(f"{where} holds no estimator this package knows (class {name!r}); "
                              f"it knows {sorted(classes)}")
    if model is not None and classes[name] is not model:
        raise tg.PersistError(f"{where} holds a model of class {name}, not {model.__name__}")
    hyperparameters = _entry(meta, "hyperparameters", {}, dict, "a dict", where)
    num_features = _entry(meta, "n_features_in", None, int, "a number of features >= 1", where)
    n_iter = _entry(meta, "n_iter", 0, int, "a number of epochs >= 0", where)
    history = _entry(meta, "history", [], list, "a list of dicts", where)
    if num_features < 1 or n_iter < 0 or not all(isinstance(entry, dict) for entry in history):
        raise tg.PersistError(f"{where}: its record does not describe a fitted model (n_features_in={num_features!r}, "
                              f"n_iter={n_iter!r}, history of {len(history)} entries)")
    try:
        estimator = classes[name](**hyperparameters)
        estimator._check_hyperparameters()
    except (TypeError, ValueError) as error:
        raise tg.PersistError(f"{where}: its hyper-parameters do not rebuild the model ({error})") from None
    if name == "MulticlassClassifier":
        estimator.classes_ = _classes(meta, estimator, where)  # the program's number of classes
    program = estimator._compile(num_features)
    tg.persist.check_params(params, program, where=where)
    estimator.program_ = program
    estimator.n_features_in_ = num_features
    estimator.params_ = params
    estimator.n_iter_ = n_iter
    estimator.history_ = list(history)
    step_size = meta.get("step_size_used", estimator.step_size)  # files written before step_size_ have a number
    if isinstance(step_size, numbers.Real) and not isinstance(step_size, bool):
        estimator.step_size_ = float(step_size)
    return estimator


def _classes(meta: dict, estimator: Estimator, where: str) -> np.ndarray:
    """The classifier's ``classes_`` from the file (files written before ``classes`` have ``num_class``)."""
    if "classes" not in meta:
        if estimator.num_class is None:
            raise tg.PersistError(f"{where}: a classifier's file must hold its 'classes' or num_class")
        return np.arange(int(estimator.num_class))
    labels = _entry(meta, "classes", None, list, "a list of class labels", where)
    dtype = _entry(meta, "classes_dtype", "|O", str, "a numpy dtype", where)
    try:
        classes = np.asarray(labels, dtype=np.dtype(dtype))
    except (TypeError, ValueError) as error:
        raise tg.PersistError(f"{where}: its classes do not make an array of dtype {dtype!r} ({error})"[:300]) from None
    if classes.ndim != 1 or len(classes) < 2:
        raise tg.PersistError(f"{where}: its 'classes' must list at least 2 labels, got {labels!r}"[:300])
    return classes
