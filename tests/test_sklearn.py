"""The estimators as scikit-learn estimators: its conformance checks, its tools, pickling, sweeps.

Skipped without scikit-learn (the optional extra ``tapegraph[sklearn]``,
installed by ``test``); ``test_without_scikit_learn_*`` then simulates its
absence in a subprocess. The Dask test needs ``distributed`` (the extra
``tapegraph[distributed]``).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import joblib  # noqa: E402  (scikit-learn's dependency)
import joblib.externals.loky  # noqa: E402
from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.datasets import load_diabetes, load_wine  # noqa: E402
from sklearn.exceptions import DataConversionWarning, NotFittedError  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import models  # noqa: E402
from models import (  # noqa: E402
    DivergenceError, LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent


# scikit-learn's own conformance suite, every check on every estimator. The
# estimators' defaults are kept but for fewer epochs (the checks fit dozens
# of times; 20 epochs meet their accuracy and R² thresholds). No check is
# expected to fail, so no expected_failed_checks are given; two are skipped
# by scikit-learn itself: without pandas, and without SCIPY_ARRAY_API=1 set
# before scipy is imported (with it set, that check passes too).

CHECKED = [LinearRegression(max_num_epochs=20), RidgeRegression(max_num_epochs=20),
           MLPRegression(max_num_epochs=20), MulticlassClassifier(max_num_epochs=20)]


@parametrize_with_checks(CHECKED)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_the_estimators_are_scikit_learn_estimators():
    assert models.base.HAVE_SKLEARN
    for estimator in CHECKED:
        assert isinstance(estimator, sklearn.base.BaseEstimator)
    assert all(is_regressor(estimator) for estimator in CHECKED[:3]) and is_classifier(CHECKED[3])
    tags = sklearn.utils.get_tags(CHECKED[3])
    assert tags.estimator_type == "classifier" and tags.target_tags.required and not tags.input_tags.sparse
    assert issubclass(models.NotFittedError, NotFittedError)
    assert models.DataConversionWarning is DataConversionWarning


# scikit-learn's tools: clone, Pipeline, cross_val_score, GridSearchCV.

@pytest.fixture(scope="module")
def diabetes():
    # unscaled: ages around 50, blood serum measurements in the hundreds
    return load_diabetes(return_X_y=True, scaled=False)


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)  # unscaled: proline in the thousands
    return X, np.array(["barolo", "grignolino", "barbera"])[y]


def test_pipeline_cross_val_score_grid_search_and_clone(diabetes, wine):
    X, y = diabetes
    pipeline = make_pipeline(StandardScaler(), RidgeRegression(l2_reg=1e-3, max_num_epochs=20, random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3)
    exact = cross_val_score(make_pipeline(StandardScaler(), Ridge(alpha=0.5)), X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.3) and scores.mean() > exact.mean() - 0.1  # SGD's noise
    search = GridSearchCV(pipeline, {"ridgeregression__l2_reg": [0.0, 100.0]}, cv=3).fit(X, y)
    assert search.best_params_ == {"ridgeregression__l2_reg": 0.0}  # a heavy penalty shrinks w to nothing
    fitted = search.best_estimator_[-1]
    assert fitted.n_features_in_ == 10 and fitted.l2_reg == 0.0

    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "params_")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        copy.predict(X)

    X, labels = wine
    pipeline = make_pipeline(StandardScaler(), MulticlassClassifier(max_num_epochs=10, random_state=0))
    assert np.all(cross_val_score(pipeline, X, labels, cv=3) > 0.9)
    assert list(pipeline.fit(X, labels).classes_) == ["barbera", "barolo", "grignolino"]
    assert set(pipeline.predict(X)) <= set(labels)


# The classifier's labels.

def test_any_labels_are_mapped_through_classes(wine):
    X, names = wine
    X = StandardScaler().fit_transform(X)
    classes, indices = np.unique(names, return_inverse=True)
    settings = {"max_num_epochs": 3, "random_state": 0}
    by_index = MulticlassClassifier(**settings).fit(X, indices)
    for labels in (names, names.astype(object), np.array([-5, 7, 100])[indices], indices + 0.0):
        model = MulticlassClassifier(**settings).fit(X, labels)
        expected_classes = np.unique(labels)
        assert np.array_equal(model.classes_, expected_classes) and model.classes_.dtype == expected_classes.dtype
        # the same training as on the indices 0 .. 2: the mapping keeps the order
        for name in by_index.params_:
            assert np.array_equal(model.params_[name], by_index.params_[name])
        assert np.array_equal(model.predict(X), expected_classes[by_index.predict(X)])
        assert model.score(X, labels) == by_index.score(X, indices)
        assert model.log_loss(X, labels) == by_index.log_loss(X, indices)

    binary = MulticlassClassifier(**settings).fit(X[names != "barbera"], names[names != "barbera"] == "barolo")
    assert binary.classes_.tolist() == [False, True] and binary.predict_proba(X).shape == (len(X), 2)


def test_bad_labels_get_scikit_learn_s_messages(wine):
    X, names = wine
    classifier = MulticlassClassifier(max_num_epochs=1)
    for labels, message in [
        (np.linspace(0, 1, len(X)), r"Unknown label type: continuous \(y holds non-integer values such as"),
        (np.full(len(X), "barolo"), r"y has only one class \('barolo'\); a classifier needs labels of at least 2"),
        (np.array([{"a": 1}] * len(X)), r"Unknown label type: y mixes dict"),
        (np.ones(len(X)) + 1j, "Complex data not supported"),
    ]:
        with pytest.raises(ValueError, match=message):
            classifier.fit(X, labels)
    with pytest.raises(ValueError, match=r"labels must be integers 0 \.\. 2, got an array of dtype <U10 \(with "
                                         r"num_class=None the classes are taken from y\)"):
        MulticlassClassifier(num_class=3).fit(X, names)
    fitted = classifier.fit(X, names)
    with pytest.raises(ValueError, match=r"y holds labels the model was not fitted with: \['nebbiolo'\]; its "
                                         r"classes_ are \['barbera', 'barolo', 'grignolino'\]"):
        fitted.log_loss(X[:2], ["barolo", "nebbiolo"])
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed when a 1d array was expected"):
        classifier.fit(X, names[:, None])


# Bad data: scikit-learn's phrases.

def test_bad_data_gets_scikit_learn_s_messages(diabetes):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = diabetes
    ridge = RidgeRegression(max_num_epochs=1)
    with pytest.raises(TypeError, match=r"RidgeRegression: sparse data was passed for X \(csr_matrix\), but dense "
                                        r"data is required: use X.toarray\(\)"):
        ridge.fit(scipy_sparse.csr_matrix(X), y)
    with pytest.raises(ValueError, match="RidgeRegression: Complex data not supported: X has dtype complex128"):
        ridge.fit(X + 1j, y)
    with pytest.raises(ValueError, match=r"X has 0 feature\(s\) \(shape=\(442, 0\)\) while a minimum of 1 is required"):
        ridge.fit(X[:, :0], y)
    with pytest.raises(ValueError, match="RidgeRegression requires y to be passed, but the target y is None"):
        ridge.fit(X, None)
    with pytest.raises(ValueError, match=r"y should be a 1d array \(one target per row\), got an array of shape "
                                         r"\(442, 2\) instead"):
        ridge.fit(X, np.stack([y, y], axis=1))
    bad = X.astype(object)
    bad[0, 0] = {"age": 59}
    with pytest.raises(TypeError, match="X must be numeric: float.. argument must be a string or a real number, "
                                        "not 'dict'"):
        ridge.fit(bad, y)
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        ridge.fit(X, y[:, None])
    with pytest.raises(ValueError, match=r"X must be a 2-D array, got a single number\. Reshape your data"):
        ridge.predict(3.0)
    with pytest.raises(ValueError, match=r"X has 9 features, but RidgeRegression is expecting 10 features as input"):
        ridge.score(X[:, 1:], y)


# Defaults that do not diverge on unscaled data.

def test_the_linear_models_default_step_is_scaled_to_the_data(diabetes):
    X, y = diabetes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(DivergenceError):  # the homework's step size: its rows have |x|**2 near 1e5
            LinearRegression(step_size=0.005, max_num_epochs=2, random_state=0).fit(X, y)
    largest = max(float(row @ row) for row in X)
    for model, curvature in [(LinearRegression(max_num_epochs=20, random_state=0), 0.0),
                             (RidgeRegression(l2_reg=0.1, max_num_epochs=20, random_state=0), 0.1)]:
        model.fit(X, y)
        assert model.step_size == "auto" and model.step_size_ == pytest.approx(0.5 / (largest + 1.0 + curvature))
        losses = [entry["loss"] for entry in model.history_]
        assert np.isfinite(losses).all() and losses[-1] < np.var(y)  # converging, slowly, as SGD on unscaled data
    assert LinearRegression(optimizer="adam", max_num_epochs=1).fit(X, y).step_size_ == 1e-3
    assert LinearRegression(step_size=1e-7, max_num_epochs=1).fit(X, y).step_size_ == 1e-7


def test_the_networks_defaults_do_not_diverge_on_unscaled_data(diabetes, wine):
    # tanh bounds the hidden layer, so the output layer's step stays stable for any scale of x
    X, y = diabetes
    mlp = MLPRegression(max_num_epochs=5, random_state=0).fit(X, y)
    assert np.isfinite([entry["loss"] for entry in mlp.history_]).all() and np.isfinite(mlp.predict(X)).all()
    X, labels = wine
    classifier = MulticlassClassifier(max_num_epochs=5, random_state=0).fit(X, labels)
    assert np.isfinite(classifier.predict_proba(X)).all()


# Pickling through joblib (plain pickle: tests/test_models.py).

@pytest.mark.parametrize("estimator", CHECKED, ids=lambda estimator: type(estimator).__name__)
def test_joblib_round_trip_predicts_bit_for_bit(estimator, diabetes, wine, tmp_path):
    X, y = wine if is_classifier(estimator) else diabetes
    X = StandardScaler().fit_transform(X)
    fitted = clone(estimator).set_params(max_num_epochs=2, random_state=0).fit(X, y)
    joblib.dump(fitted, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    assert loaded.program_ is not fitted.program_ and loaded.get_params() == fitted.get_params()
    assert np.array_equal(loaded.predict(X), fitted.predict(X))
    if is_classifier(estimator):
        assert np.array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


# Sweeps: processes, and a Dask cluster.

def _small_search(**kwargs):
    grid = {"l2_reg": [0.0, 0.1], "batch_size": [1, 8]}
    return GridSearchCV(RidgeRegression(max_num_epochs=5, random_state=0), grid, cv=KFold(3), **kwargs)


def _same_search(search, serial, X):
    assert search.best_params_ == serial.best_params_
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        assert np.array_equal(search.cv_results_[key], serial.cv_results_[key]), key
    assert np.array_equal(search.predict(X), serial.predict(X))


@pytest.fixture(scope="module")
def sweep_data(diabetes):
    X, y = diabetes
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def serial_search(sweep_data):
    return _small_search().fit(*sweep_data)


def test_grid_search_in_two_processes_equals_the_serial_one(sweep_data, serial_search):
    try:
        _same_search(_small_search(n_jobs=2).fit(*sweep_data), serial_search, sweep_data[0])
    finally:  # joblib keeps its worker processes for reuse: stop them
        joblib.externals.loky.get_reusable_executor().shutdown(wait=True)


#: The longest the Dask test may take; on a hang the cluster is closed and the test fails.
DASK_TIMEOUT = 120


@pytest.fixture
def dask_client():
    """A local Dask cluster of two worker processes, and its client; closed after, leaving no process behind."""
    distributed = pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR, timeout=DASK_TIMEOUT)
    try:
        client = distributed.Client(cluster, timeout=DASK_TIMEOUT)
        try:
            yield client
        finally:
            client.close(timeout=DASK_TIMEOUT)
    finally:
        cluster.close(timeout=DASK_TIMEOUT)
    # multiprocessing's resource tracker is one per parent process, for its whole life: not the cluster's
    started = [child for child in psutil.Process().children(recursive=True)
               if child.pid not in before and "multiprocessing.resource_tracker" not in " ".join(child.cmdline())]
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"the Dask cluster left processes behind: {[process.pid for process in alive]}"


def test_grid_search_on_a_local_dask_cluster_equals_the_serial_one(dask_client, sweep_data, serial_search):
    workers = dask_client.run(lambda: (os.getpid(), models.__file__))
    assert len(workers) == 2
    # the workers run this checkout's estimators, in processes of their own
    assert {path for _, path in workers.values()} == {models.__file__}
    assert os.getpid() not in {pid for pid, _ in workers.values()}

    def search():
        with joblib.parallel_config(backend="dask"):
            return _small_search(n_jobs=-1).fit(*sweep_data)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(search).result(timeout=DASK_TIMEOUT)
    _same_search(result, serial_search, sweep_data[0])


# Without scikit-learn: the same estimators, minus the mixins.

_SAME_EITHER_WAY = textwrap.dedent('''
    import io, json, pickle, sys, warnings
    if sys.argv[1] == "hide":
        sys.modules["sklearn"] = None  # `import sklearn` now raises ImportError
    import numpy as np
    import models
    from models import LinearRegression, RidgeRegression, MLPRegression, MulticlassClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(scale=30.0, size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
    labels = np.array(["b", "a", "c", "a"])[np.arange(40) % 4]
    report = {"sklearn": models.base.HAVE_SKLEARN,
              "bases": [cls.__module__ for cls in MulticlassClassifier.__mro__]}
    for model in (LinearRegression(max_num_epochs=3, random_state=0), RidgeRegression(max_num_epochs=3, random_state=0),
                  MLPRegression(max_num_epochs=3, random_state=0), MulticlassClassifier(max_num_epochs=3, random_state=0)):
        name = type(model).__name__
        try:
            model.predict(X)
        except models.NotFittedError as error:
            report[name + " unfitted"] = [str(error), isinstance(error, ValueError), isinstance(error, AttributeError)]
        targets = labels if name == "MulticlassClassifier" else y
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X, targets[:, None])
        report[name + " warning"] = [(type(w.message).__name__, str(w.message)) for w in caught]
        report[name + " repr"] = repr(model)
        report[name + " params"] = sorted(model.get_params())
        report[name + " step"] = model.step_size_
        report[name + " predictions"] = pickle.loads(pickle.dumps(model)).predict(X).tolist()
        for bad in (X[:, 0], X + 1j, X[:, :2]):
            try:
                model.predict(bad)
            except ValueError as error:
                report.setdefault(name + " errors", []).append(str(error))
    print(json.dumps(report))
''')


def _report(mode):
    result = subprocess.run([sys.executable, "-c", _SAME_EITHER_WAY, mode], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_without_scikit_learn_the_estimators_behave_the_same_minus_the_mixins():
    with_it, without = _report("use"), _report("hide")
    assert with_it.pop("sklearn") and not without.pop("sklearn")
    assert any(module.startswith("sklearn.") for module in with_it.pop("bases"))
    assert not any(module.startswith("sklearn.") for module in without.pop("bases"))
    assert with_it == without
    assert without["MulticlassClassifier unfitted"][1:] == [True, True]
    assert without["RidgeRegression warning"] == [["DataConversionWarning", "A column-vector y was passed when a 1d "
                                                   "array was expected. Please change the shape of y to (n_samples,), "
                                                   "for example using ravel()."]]
