"""The homework's estimators: gradients, training, reproducibility, conventions, bad input."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

import tapegraph as tg
from models import (
    DivergenceError, LinearRegression, MLPRegression, MulticlassClassifier, NotFittedError, RidgeRegression,
    generate_problem,
)
from models.data import classification_problem

RTOL = 1e-6


@pytest.fixture(scope="module")
def problem():
    return generate_problem(seed=0)


@pytest.fixture(scope="module")
def features(problem):
    return problem.featurize(problem.x_train), problem.y_train


@pytest.fixture(scope="module")
def blobs():
    return classification_problem()


def _small_regression(rng, rows=12, columns=3):
    X = rng.uniform(-1.0, 1.0, size=(rows, columns))
    return X, X @ np.arange(1.0, columns + 1) + 0.1 * rng.standard_normal(rows)


# Each model's compiled program passes the gradient check (float64).

ESTIMATORS = {
    "linear": lambda: LinearRegression(max_num_epochs=1, random_state=0),
    "ridge": lambda: RidgeRegression(l2_reg=0.3, max_num_epochs=1, random_state=0),
    "mlp": lambda: MLPRegression(num_hidden_units=4, max_num_epochs=1, random_state=0),
    "multiclass": lambda: MulticlassClassifier(num_hidden_units=4, max_num_epochs=1, random_state=0),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("rows", [1, 5], ids=["per-example", "minibatch"])
def test_compiled_program_passes_the_gradient_check(name, rows, rng):
    estimator = ESTIMATORS[name]()
    X, y = _small_regression(rng)
    if name == "multiclass":
        y = rng.integers(0, 3, size=len(y))
    estimator.fit(X, y)
    program = estimator.program_
    # random parameters of unit scale, so tanh and softmax are well away from linear
    params = {key: np.asarray(rng.standard_normal(node.shape)) for key, node in program.params.items()}
    errors = tg.testing.check_grads(program, params, {"x": X[:rows], "y": y[:rows]}, rtol=RTOL)
    assert set(errors) == set(estimator.params_) and max(errors.values()) < RTOL


# Each model fits its problem on a short run.

def test_linear_and_ridge_fit_the_step_function_problem(features):
    X, y = features
    linear = LinearRegression(step_size=1e-3, max_num_epochs=100, random_state=0).fit(X, y)
    ridge = RidgeRegression(l2_reg=1, step_size=5e-5, max_num_epochs=100, random_state=0).fit(X, y)
    # the variance of y (the loss of the best constant) is about 0.85
    assert linear.history_[-1]["loss"] < 0.15 < linear.history_[0]["loss"]
    assert ridge.history_[-1]["loss"] < 0.3 < ridge.history_[0]["loss"]
    assert ridge.score(X, y) > 0.6


def test_mlp_fits_with_features_and_from_the_raw_input(problem, features):
    X, y = features
    with_features = MLPRegression(step_size=5e-4, init_param_scale=1e-2, max_num_epochs=100, random_state=0).fit(X, y)
    assert with_features.history_[-1]["loss"] < 0.15
    raw = MLPRegression(step_size=1e-2, init_param_scale=0.5, max_num_epochs=100, random_state=0)
    raw.fit(problem.x_train[:, None], y)
    assert raw.history_[-1]["loss"] < 0.55 < 0.8 < np.var(y)


def test_classifier_separates_the_blobs(blobs):
    X_train, y_train, X_test, y_test = blobs
    classifier = MulticlassClassifier(max_num_epochs=20, random_state=0).fit(X_train, y_train)
    assert classifier.score(X_test, y_test) == 1.0
    assert classifier.log_loss(X_train, y_train) < 0.05
    assert classifier.history_[-1]["accuracy"] == 1.0


# Reproducibility.

@pytest.mark.parametrize("batch_size", [1, 8])
def test_same_random_state_same_result_bit_for_bit(features, batch_size):
    X, y = features
    runs = [MLPRegression(max_num_epochs=3, batch_size=batch_size, random_state=seed).fit(X, y) for seed in (7, 7, 8)]
    for name in runs[0].params_:
        assert np.array_equal(runs[0].params_[name], runs[1].params_[name])
        assert not np.array_equal(runs[0].params_[name], runs[2].params_[name])
    assert runs[0].history_ == runs[1].history_


# Per-example and minibatch SGD from one declaration.

def _numpy_ridge_sgd(X, y, l2_reg, step_size, epochs, batch_size, seed):
    """The reference: the homework's SGD written out in numpy, visiting rows as fit does."""
    rng = np.random.default_rng(seed)
    w, b = np.zeros(X.shape[1]), 0.0
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for low in range(0, len(X), batch_size):
            rows = order[low:low + batch_size]
            residual = X[rows] @ w + b - y[rows]
            grad_w = 2 * residual @ X[rows] / len(rows) + 2 * l2_reg * w
            grad_b = 2 * residual.mean()
            w, b = w - step_size * grad_w, b - step_size * grad_b
    return w, b


@pytest.mark.parametrize("batch_size", [1, 7])
def test_sgd_steps_are_the_homeworks(batch_size, rng):
    X, y = _small_regression(rng, rows=30, columns=4)
    ridge = RidgeRegression(l2_reg=0.1, step_size=0.01, max_num_epochs=3, batch_size=batch_size, random_state=3).fit(X, y)
    w, b = _numpy_ridge_sgd(X, y, 0.1, 0.01, 3, batch_size, seed=3)
    np.testing.assert_allclose(ridge.params_["w"], w, rtol=1e-12)
    np.testing.assert_allclose(ridge.params_["b"], b, rtol=1e-12)


def test_one_declaration_trains_per_example_and_by_minibatch(features):
    X, y = features
    ridge = RidgeRegression(l2_reg=1, step_size=5e-5, max_num_epochs=30, random_state=0)
    per_example = ridge.fit(X, y).history_[-1]["loss"]
    assert _sgd_batch_sizes(ridge) == {1}
    # 100 rows in batches of 16: six of 16 and a last one of 4, same program
    minibatch = ridge.set_params(batch_size=16, step_size=5e-4).fit(X, y).history_[-1]["loss"]
    assert _sgd_batch_sizes(ridge) == {16, 4}
    assert per_example < 0.35 and minibatch < 0.35
    # a batch larger than the data is the whole data set: full-batch gradient descent
    full = RidgeRegression(l2_reg=1, step_size=5e-3, max_num_epochs=5, batch_size=1000, random_state=0).fit(X, y)
    assert _sgd_batch_sizes(full) == {100}


def _sgd_batch_sizes(estimator):
    return {entry.sizes["batch"] for entry in estimator.program_.specializations() if "sgd" in entry.kind}


def test_program_is_kept_for_inspection(features):
    X, y = features
    ridge = RidgeRegression(max_num_epochs=1, random_state=0).fit(X, y)
    assert isinstance(ridge.program_, tg.Program)
    dump = ridge.program_.dump(sizes={"batch": 1})
    assert "s0:f64[1,400] <- input x" in dump and "penalty" in dump


# The training log.

def test_log_is_the_homeworks_every_50_epochs(features, capsys):
    X, y = features
    LinearRegression(step_size=1e-3, max_num_epochs=52, random_state=0, verbose=True).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    pattern = r"Epoch (\d+): Ave objective=\S+ Ave training loss: \S+  \[\d+/52 epochs, .*s left\]"
    assert [int(re.fullmatch(pattern, line).group(1)) for line in lines] == [0, 50, 51]


def test_classifier_log_has_nll_and_accuracy(blobs, capsys):
    X_train, y_train, _, _ = blobs
    MulticlassClassifier(max_num_epochs=1, random_state=0, verbose=1).fit(X_train, y_train)
    assert re.match(r"Epoch 0: Ave objective=\S+ Ave training loss: \S+ Training accuracy: [01]\.\d{3}  \[",
                    capsys.readouterr().out)


def test_silent_without_verbose(features, capsys):
    LinearRegression(max_num_epochs=2, random_state=0).fit(*features)
    assert capsys.readouterr().out == ""


def test_divergence_names_the_epoch_and_keeps_finite_parameters(features):
    X, y = features
    linear = LinearRegression(step_size=1.0, max_num_epochs=50, random_state=0)
    with pytest.raises(DivergenceError, match=r"diverged in epoch \d+ .*objective became (inf|nan).*smaller step_size") as info:
        linear.fit(X, y)
    assert info.value.epoch == linear.n_iter_ < 50
    assert all(np.isfinite(value).all() for value in linear.params_.values())
    assert linear.predict(X[:2]).shape == (2,)


# with the conftest's rng, these fail at step 8 (1), step 0 after a 3-step epoch (7),
# step 1 (10) and step 0 after a 1-step epoch (20): each way of finding the parameters
@pytest.mark.parametrize("batch_size", [1, 7, 10, 20])
def test_after_divergence_params_are_those_before_the_last_finite_step(batch_size, rng):
    # fit runs whole epochs and replays up to the failing step: the same
    # parameters as a loop that stops at once
    X, y = _small_regression(rng, rows=20, columns=3)
    X = 10.0 * X
    linear = LinearRegression(step_size=0.5, max_num_epochs=200, batch_size=batch_size, random_state=5)
    with pytest.raises(DivergenceError) as info:
        linear.fit(X, y)
    step = tg.sgd(linear.program_, 0.5)
    order_rng = np.random.default_rng(5)
    params = previous = {"w": np.zeros(3), "b": np.array(0.0)}
    with np.errstate(all="ignore"):
        for epoch in range(200):
            order = order_rng.permutation(20)
            for low in range(0, 20, batch_size):
                rows = order[low:low + batch_size]
                new_params, value = step(params, {"x": X[rows], "y": y[rows]})
                if not np.isfinite(value):
                    break
                previous, params = params, new_params
            else:
                continue
            break
    assert info.value.epoch == epoch
    for name in ("w", "b"):
        assert np.array_equal(linear.params_[name], previous[name])


def _ridge_solution(X, y, l2_reg):
    # minimises mean((X w + b - y)^2) + l2_reg ||w||^2, b unpenalised
    n, d = X.shape
    A = np.hstack([X, np.ones((n, 1))])
    penalty = np.diag([l2_reg] * d + [0.0]) * n
    solution = np.linalg.solve(A.T @ A + penalty, A.T @ y)
    return solution[:d], solution[d]


def test_adam_fits_ridge(rng):
    X, y = _small_regression(rng, rows=30, columns=4)
    ridge = RidgeRegression(l2_reg=0.1, optimizer="adam", step_size=0.01, max_num_epochs=3000, batch_size=30,
                            random_state=0).fit(X, y)
    assert any(entry.kind.startswith("adam") for entry in ridge.program_.specializations())
    w, b = _ridge_solution(X, y, 0.1)
    np.testing.assert_allclose(ridge.params_["w"], w, atol=1e-4)
    np.testing.assert_allclose(ridge.params_["b"], b, atol=1e-4)


@pytest.mark.parametrize("name", ["adamw", "rmsprop"])
def test_each_named_optimizer_trains(name, rng):
    X, y = _small_regression(rng, rows=30, columns=4)
    before = LinearRegression(max_num_epochs=1, step_size=1e-9, random_state=0).fit(X, y).score(X, y)
    model = LinearRegression(optimizer=name, step_size=0.01, max_num_epochs=200, batch_size=5, random_state=0).fit(X, y)
    assert any(entry.kind.startswith(name) for entry in model.program_.specializations())
    assert model.score(X, y) > 0.99 > before


def test_a_callable_optimizer_is_run_epoch_by_epoch(rng):
    X, y = _small_regression(rng, rows=30, columns=4)
    momentum = RidgeRegression(l2_reg=0.1, optimizer=lambda program: tg.sgd(program, 0.01, momentum=0.9),
                               max_num_epochs=5, batch_size=4, random_state=2).fit(X, y)
    optimizer = tg.sgd(momentum.program_, 0.01, momentum=0.9)
    state = optimizer.init({"w": np.zeros(4), "b": np.array(0.0)})
    order_rng = np.random.default_rng(2)
    for _ in range(5):
        state, _ = optimizer.epoch(state, {"x": X, "y": y}, order=order_rng.permutation(30), batch_size=4)
    for name in ("w", "b"):
        assert np.array_equal(momentum.params_[name], state.params[name])


def test_a_bad_optimizer_is_refused(features):
    X, y = features
    with pytest.raises(ValueError, match=r"optimizer must be one of \['adam', 'adamw', 'rmsprop', 'sgd'\] or a callable"):
        RidgeRegression(optimizer="adagrad").fit(X, y)
    with pytest.raises(TypeError, match=r"optimizer\(program\) must return a tapegraph optimizer.*got int"):
        RidgeRegression(optimizer=lambda program: 3, max_num_epochs=1).fit(X, y)


def test_a_named_optimizer_is_saved_and_a_callable_is_not(tmp_path, rng):
    X, y = _small_regression(rng)
    adam = RidgeRegression(optimizer="adam", step_size=0.01, max_num_epochs=3, random_state=0).fit(X, y)
    adam.save(tmp_path / "adam.npz")
    loaded = RidgeRegression.load(tmp_path / "adam.npz")
    assert loaded.optimizer == "adam" and np.array_equal(loaded.predict(X), adam.predict(X))
    custom = RidgeRegression(optimizer=lambda program: tg.adam(program), max_num_epochs=1, random_state=0).fit(X, y)
    with pytest.raises(tg.PersistError, match="cannot save hyper-parameter optimizer="):
        custom.save(tmp_path / "custom.npz")


# Pickling: a fitted estimator travels without its compiled program and compiles it again.

@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_fitted_estimator_pickles_and_predicts_bit_for_bit(name, rng):
    X, y = _small_regression(rng)
    if name == "multiclass":
        y = np.array(["low", "high"])[(y > np.median(y)).astype(int)]
    fitted = ESTIMATORS[name]().fit(X, y)
    fitted.predict(X)  # a used program has specialisations and buffers: none of them travels
    data = pickle.dumps(fitted)
    assert b"tapegraph.program" not in data
    loaded = pickle.loads(data)
    assert isinstance(loaded.program_, tg.Program) and loaded.program_ is not fitted.program_
    assert loaded.history_ == fitted.history_ and loaded.step_size_ == fitted.step_size_
    assert np.array_equal(loaded.predict(X), fitted.predict(X))
    assert not hasattr(pickle.loads(pickle.dumps(ESTIMATORS[name]())), "program_")  # unfitted stays unfitted


@pytest.mark.parametrize("labels", [["low", "high"], [-3, 40], [False, True]], ids=["strings", "integers", "booleans"])
def test_a_classifier_saves_and_loads_its_classes(labels, tmp_path, rng):
    X, y = _small_regression(rng)
    y = np.array(labels)[(y > np.median(y)).astype(int)]
    fitted = MulticlassClassifier(num_hidden_units=4, max_num_epochs=2, random_state=0).fit(X, y)
    fitted.save(tmp_path / "classifier.npz")
    loaded = MulticlassClassifier.load(tmp_path / "classifier.npz")
    assert np.array_equal(loaded.classes_, fitted.classes_) and loaded.classes_.dtype == fitted.classes_.dtype
    assert np.array_equal(loaded.predict(X), fitted.predict(X)) and loaded.step_size_ == fitted.step_size_


def test_the_classifier_maps_labels_through_classes(rng):
    X, y = _small_regression(rng, rows=30)
    indices = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    names = np.array(["cat", "dog", "eel"])[indices]
    by_name = MulticlassClassifier(num_hidden_units=4, max_num_epochs=3, random_state=0).fit(X, names)
    by_index = MulticlassClassifier(num_hidden_units=4, max_num_epochs=3, random_state=0).fit(X, indices)
    assert by_name.classes_.tolist() == ["cat", "dog", "eel"] and by_index.classes_.tolist() == [0, 1, 2]
    assert np.array_equal(by_name.predict(X), by_name.classes_[by_index.predict(X)])
    assert by_name.score(X, names) == by_index.score(X, indices)
    with pytest.raises(ValueError, match=r"Unknown label type: continuous"):
        MulticlassClassifier(max_num_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match=r"y has only one class \('cat'\)"):
        MulticlassClassifier(max_num_epochs=1).fit(X, np.full(30, "cat"))


# scikit-learn's conventions, without scikit-learn.

def test_estimator_conventions(features, blobs):
    X, y = features
    ridge = RidgeRegression(l2_reg=0.5, max_num_epochs=2)
    assert ridge.get_params() == {"l2_reg": 0.5, "step_size": "auto", "max_num_epochs": 2, "batch_size": 1,
                                  "random_state": None, "verbose": False, "optimizer": "sgd"}
    assert repr(ridge) == "RidgeRegression(l2_reg=0.5, max_num_epochs=2)"
    assert ridge.set_params(random_state=1) is ridge and ridge.random_state == 1
    assert not [name for name in vars(ridge) if name.endswith("_")]
    assert ridge.fit(X, y) is ridge
    assert {"program_", "params_", "history_", "n_features_in_", "n_iter_", "fit_time_"} <= set(vars(ridge))
    assert ridge.n_features_in_ == 400 and ridge.n_iter_ == 2
    assert ridge.predict(X).shape == (100,) and isinstance(ridge.score(X, y), float)

    X_train, y_train, X_test, _ = blobs
    classifier = MulticlassClassifier(max_num_epochs=2, random_state=0).fit(X_train, y_train)
    labels, probabilities = classifier.predict(X_test), classifier.predict_proba(X_test)
    assert labels.dtype.kind == "i" and set(labels) <= {0, 1, 2}
    assert probabilities.shape == (200, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert np.array_equal(labels, probabilities.argmax(axis=1))
    assert np.array_equal(classifier.classes_, [0, 1, 2])


def test_constructor_stores_arguments_and_fit_checks_them(features):
    X, y = features
    for estimator, message in [
        (LinearRegression(step_size=0), "step_size must be a positive finite number or 'auto'"),
        (LinearRegression(step_size="fast"), "step_size must be a positive finite number or 'auto', got 'fast'"),
        (MLPRegression(step_size="auto"), r"MLPRegression: step_size must be a positive finite number, got 'auto'"),
        (LinearRegression(max_num_epochs=0), "max_num_epochs must be an int >= 1"),
        (LinearRegression(batch_size=2.5), "batch_size must be an int >= 1"),
        (RidgeRegression(l2_reg=-1), "l2_reg must be a non-negative"),
        (MLPRegression(num_hidden_units=0), "num_hidden_units must be an int >= 1"),
        (MulticlassClassifier(num_class=1), "num_class must be an int >= 2"),
        (LinearRegression(random_state="seed"), "random_state must be None"),
    ]:
        with pytest.raises(ValueError, match=message):
            estimator.fit(X, y)
    with pytest.raises(ValueError, match="has no parameter 'l2reg'"):
        RidgeRegression().set_params(l2reg=1)


# Bad input: each a clear error.

def test_predict_before_fit():
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        MLPRegression().predict(np.zeros((2, 1)))


def test_bad_input_errors(features, blobs):
    X, y = features
    ridge = RidgeRegression(max_num_epochs=1, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 399 features, but RidgeRegression is expecting 400 features as input"):
        ridge.predict(X[:, :-1])
    with pytest.raises(ValueError, match="X has 100 rows but y has 99 entries"):
        RidgeRegression(max_num_epochs=1).fit(X, y[:-1])
    bad = X.copy()
    bad[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(1 entries; first at index \(3, 7\)\)"):
        RidgeRegression(max_num_epochs=1).fit(bad, y)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        ridge.predict(bad)
    with pytest.raises(ValueError, match=r"y contains NaN"):
        RidgeRegression(max_num_epochs=1).fit(X, np.where(y > 2, np.inf, y))
    with pytest.raises(ValueError, match=r"X must be a 2-D array, got shape \(100,\)\. Reshape your data: X.reshape\(-1, 1\) if it has a single feature"):
        MLPRegression(max_num_epochs=1).fit(X[:, 0], y)
    with pytest.raises(ValueError, match="X must be numeric"):
        LinearRegression(max_num_epochs=1).fit([["a", "b"]], [1.0])

    X_train, y_train, _, _ = blobs
    classifier = MulticlassClassifier(max_num_epochs=1, num_class=3)  # the homework's labels 0 .. 2
    for labels, message in [(y_train + 1, r"labels must be in 0 \.\. 2 \(num_class=3\), got \[3\]"),
                            (y_train - 1, r"labels must be in 0 \.\. 2 \(num_class=3\), got \[-1\]"),
                            (y_train + 0.5, "labels must be integers 0 .. 2"),
                            (y_train.astype(str), "labels must be integers 0 .. 2")]:
        with pytest.raises(ValueError, match=message):
            classifier.fit(X_train, labels)
    # labels as integral floats are fine
    assert classifier.fit(X_train, y_train.astype(float)).score(X_train, y_train) > 0.3


# Test-only: the estimators work inside scikit-learn.

def test_scikit_learn_clone_and_grid_search(features, blobs):
    pytest.importorskip("sklearn")
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.model_selection import GridSearchCV

    X, y = features
    ridge = RidgeRegression(l2_reg=0.5, max_num_epochs=3, random_state=0)
    copy = clone(ridge)
    assert copy is not ridge and copy.get_params() == ridge.get_params()
    assert is_regressor(ridge) and is_classifier(MulticlassClassifier())

    search = GridSearchCV(RidgeRegression(step_size=5e-4, max_num_epochs=20, random_state=0),
                          {"l2_reg": [0.0, 10.0]}, cv=3).fit(X, y)
    assert search.best_params_ == {"l2_reg": 0.0}  # a heavy penalty cannot fit the steps
    assert search.best_estimator_.n_features_in_ == 400

    X_train, y_train, X_test, y_test = blobs
    search = GridSearchCV(MulticlassClassifier(max_num_epochs=5, random_state=0),
                          {"step_size": [1e-6, 5e-3], "batch_size": [1, 10]}, cv=3).fit(X_train, y_train)
    assert search.best_params_ == {"step_size": 5e-3, "batch_size": 1}  # the most steps of the useful size
    assert search.best_score_ > 0.9 and search.score(X_test, y_test) > 0.9
