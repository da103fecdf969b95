"""models.data: the generated problems, and reading problems from .npz files."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from models.data import (
    PROBLEM_KEYS, Problem, classification_problem, generate_problem, load_problem, make_blobs, save_problem,
    step_features,
)

#: The homework's own data set, beside the repository; tests that use it skip without it.
HOMEWORK_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "hw_lasso_data.npz"


def test_generated_problem_is_the_homeworks():
    x_train, y_train, x_val, y_val, target_fn, coefs_true, featurize = generate_problem(seed=0)
    assert (x_train.shape, y_train.shape, x_val.shape, y_val.shape, coefs_true.shape) == ((100,), (100,), (900,), (900,), (400,))
    assert np.count_nonzero(coefs_true) == 10
    x = np.concatenate([x_train, x_val])
    assert len(np.unique(x)) == 1000 and 0.0 <= x.min() and x.max() < 1.0
    np.testing.assert_array_equal(target_fn(x_val), featurize(x_val) @ coefs_true)
    # t noise with 6 degrees of freedom, scaled by .25: standard deviation .25 * sqrt(6 / 4)
    noise = np.concatenate([y_train - target_fn(x_train), y_val - target_fn(x_val)])
    assert abs(noise.std() / (0.25 * np.sqrt(1.5)) - 1.0) < 0.15


def test_generation_is_deterministic_per_seed():
    first, again, other = generate_problem(seed=5), generate_problem(seed=5), generate_problem(seed=6)
    for key in ("x_train", "y_train", "x_val", "y_val", "coefs_true"):
        assert np.array_equal(getattr(first, key), getattr(again, key))
        assert not np.array_equal(getattr(first, key), getattr(other, key))


def test_featurize_is_steps_at_multiples_of_one_over_400():
    featurize = step_features(400)
    X = featurize(np.array([0.0, 1 / 400, 0.5, 0.999]))
    assert X.shape == (4, 400) and X.dtype == np.float64
    # feature j is 1 where x >= j / 400: the threshold itself counts
    assert X[0].sum() == 1 and X[1].sum() == 2 and X[2].sum() == 201 and X[3].sum() == 400
    with pytest.raises(ValueError, match="1-D array"):
        featurize(np.zeros((3, 1)))


def test_save_and_load_round_trip(tmp_path):
    problem = generate_problem(seed=1, num_points=50, num_train=10, num_basis_fns=20, num_nonzero=3)
    save_problem(tmp_path / "p.npz", problem)
    loaded = load_problem(tmp_path / "p.npz")
    assert isinstance(loaded, Problem)
    for key in ("x_train", "y_train", "x_val", "y_val", "coefs_true"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(problem, key))
    np.testing.assert_array_equal(loaded.target_fn(problem.x_val), problem.target_fn(problem.x_val))


def _arrays(**changes):
    arrays = {"x_train": np.linspace(0, 0.9, 5), "y_train": np.ones(5), "x_test": np.linspace(0, 0.9, 7),
              "y_test": np.ones(7), "coefs_true": np.zeros(4)}
    arrays.update(changes)
    return {key: value for key, value in arrays.items() if value is not None}


@pytest.mark.parametrize("arrays, message", [
    (_arrays(coefs_true=None), r"lacks \['coefs_true'\]"),
    (_arrays(x_train=np.zeros((5, 1))), r"'x_train' must be a 1-D array of finite numbers, got shape \(5, 1\)"),
    (_arrays(y_test=np.ones(6)), r"'x_test' and 'y_test' must be non-empty and of equal length, got 7 and 6"),
    (_arrays(y_train=np.array([1.0, np.nan, 1, 1, 1])), r"'y_train' must be a 1-D array of finite numbers"),
    (_arrays(x_train=np.array(["a"] * 5)), r"'x_train' must be a 1-D array of finite numbers.*dtype <U1"),
    (_arrays(x_train=np.array([object()] * 5, dtype=object)), r"cannot read 'x_train'.*pickle"),
])
def test_malformed_problem_files(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_problem(path)


def test_missing_or_unreadable_problem_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz' does not exist"):
        load_problem(tmp_path / "nowhere.npz")
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="is not a readable .npz archive"):
        load_problem(text)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a readable .npz archive"):
        load_problem(empty)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="holds a single array, not an .npz archive"):
        load_problem(single)
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, **_arrays())
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_problem(truncated)


@pytest.mark.skipif(not HOMEWORK_DATA.is_file(), reason="the homework's data set is not beside the repository")
def test_homework_data_set_loads():
    x_train, y_train, x_val, y_val, target_fn, coefs_true, featurize = load_problem(HOMEWORK_DATA)
    assert (len(x_train), len(x_val), len(coefs_true)) == (100, 900, 400)
    assert np.count_nonzero(coefs_true) == 10
    assert set(PROBLEM_KEYS) == set(np.load(HOMEWORK_DATA).files)
    # its targets are the same kind of problem: step target plus t(6) noise scaled by .25
    assert abs((y_val - target_fn(x_val)).std() / (0.25 * np.sqrt(1.5)) - 1.0) < 0.15


def test_blobs_are_the_homeworks():
    X, y = make_blobs()
    assert X.shape == (500, 2) and np.array_equal(np.bincount(y), [167, 167, 166])
    for label, center in enumerate([(-3, 1), (0, 2), (3, 1)]):
        np.testing.assert_allclose(X[y == label].mean(axis=0), center, atol=0.06)
        np.testing.assert_allclose(X[y == label].std(axis=0), 0.25, rtol=0.2)
    assert np.array_equal(make_blobs()[0], X) and not np.array_equal(make_blobs(seed=3)[0], X)
    X_train, y_train, X_test, y_test = classification_problem()
    assert (len(X_train), len(X_test)) == (300, 200)
    np.testing.assert_array_equal(np.concatenate([y_train, y_test]), y)
