"""Saving and loading parameters and fitted models: no pickles, atomic writes, clear errors."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pytest

import tapegraph as tg
from models import LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression, load
from models.data import make_blobs

import homework_graphs as hw


def _params():
    return {"w": np.arange(4.0), "b": np.array(0.25), "W": np.ones((2, 3), dtype=np.float32), "k": np.array([3, 1])}


def test_parameters_and_metadata_round_trip_with_their_shapes_and_dtypes(tmp_path):
    path = tmp_path / "params.npz"
    tg.save_params(path, _params(), meta={"l2_reg": 0.5, "name": "ridge", "layers": [10, 3], "seed": None})
    params, meta = tg.load_params(path)
    assert meta == {"l2_reg": 0.5, "name": "ridge", "layers": [10, 3], "seed": None}
    for name, array in _params().items():
        assert params[name].dtype == array.dtype and params[name].shape == array.shape
        np.testing.assert_array_equal(params[name], array)
    with np.load(path, allow_pickle=False) as archive:  # a plain .npz any numpy reads
        assert sorted(archive.files) == sorted([*_params(), "__tapegraph__"])


def test_loading_against_a_program_checks_every_name_and_shape(tmp_path):
    program = hw.ridge(num_features=3)
    path = tmp_path / "ridge.npz"
    tg.save_params(path, {"w": np.zeros(4), "bias": np.array(0.0)})
    with pytest.raises(tg.PersistError) as caught:
        tg.load_params(path, expected=program)
    assert str(caught.value) == (f"parameter file {str(path)!r} does not match the model's parameters: missing ['b']; "
                                 "unexpected ['bias']; 'w' is f64[4], expected f64[3]")
    tg.save_params(path, {"w": np.zeros(3), "b": np.array(0.0)})
    params, _ = tg.load_params(path, expected=program)
    assert program.value_and_grad(params, {"x": np.ones(3), "y": np.array(1.0)})[0] == 1.0


def test_a_failure_mid_write_leaves_the_old_file_intact_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "params.npz"
    tg.save_params(path, {"w": np.arange(3.0)})
    before = path.read_bytes()

    def write_half_then_fail(file, *args, **kwargs):
        file.write(before[: len(before) // 2])  # a partial archive reaches the disk...
        raise OSError("disk full")               # ...then the write fails

    monkeypatch.setattr(np, "savez", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        tg.save_params(path, {"w": np.arange(100.0)})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["params.npz"]
    monkeypatch.undo()
    np.testing.assert_array_equal(tg.load_params(path)[0]["w"], np.arange(3.0))


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failure_after_the_write_also_leaves_the_old_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "params.npz"
    tg.save_params(path, {"w": np.arange(3.0)})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(f"{failing} failed")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match=f"{failing} failed"):
        tg.save_params(path, {"w": np.arange(100.0)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["params.npz"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_saved_file_gets_ordinary_permissions_and_keeps_an_existing_files(tmp_path):
    umask = os.umask(0o022)  # a known umask for this test; restored below
    try:
        path = tmp_path / "params.npz"
        tg.save_params(path, {"w": np.arange(3.0)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # as open(path, "w") would make it, not 0o600
        path.chmod(0o600)
        tg.save_params(path, {"w": np.arange(4.0)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(umask)


def test_an_interrupted_save_also_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "params.npz"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tg.save_params(path, {"w": np.arange(3.0)})
    assert os.listdir(tmp_path) == []


def _damaged(tmp_path, kind: str):
    good = tmp_path / "good.npz"
    tg.save_params(good, {"w": np.arange(1000.0)})
    path = tmp_path / f"{kind}.npz"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("w = [1, 2, 3]\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        with open(path, "wb") as handle:
            np.save(handle, np.arange(3.0))
    elif kind == "pickled":
        np.savez(path, w=np.array([{"a": 1}], dtype=object))
    elif kind == "foreign":
        np.savez(path, w=np.arange(3.0))
    elif kind == "corrupt":
        corrupt = bytearray(data)
        middle = len(corrupt) // 2
        corrupt[middle:middle + 64] = b"\xff" * 64
        path.write_bytes(bytes(corrupt))
    return path


@pytest.mark.parametrize("kind, message", [
    ("truncated", r" is not a readable \.npz archive: it is truncated, damaged or another kind of file "
                  r"\(BadZipFile: File is not a zip file\)$"),
    ("text", r" is not a readable \.npz archive \(it does not start as a zip archive does\)$"),
    ("empty", r" is not a readable \.npz archive \(it is empty\)$"),
    ("npy", r" holds a single array, not an \.npz archive \(it is an \.npy file\)$"),
    ("pickled", r": cannot read 'w', which holds pickled objects \(never loaded: loading a pickle can run any code\)$"),
    ("foreign", r" was not written by tapegraph\.save_params: it has no '__tapegraph__' entry \(it holds \['w'\]\)$"),
    ("corrupt", r": cannot read 'w', which is damaged \(BadZipFile: Bad CRC-32 for file 'w\.npy'\)$"),
])
def test_a_file_that_is_not_a_whole_parameter_file_gets_a_clear_error(tmp_path, kind, message):
    path = _damaged(tmp_path, kind)
    with pytest.raises(tg.PersistError, match="^" + re.escape(f"parameter file {str(path)!r}") + message):
        tg.load_params(path)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(tg.PersistError, match=r"^parameter file '.*nothing\.npz' does not exist$") as caught:
        tg.load_params(tmp_path / "nothing.npz")
    assert isinstance(caught.value, FileNotFoundError) and type(caught.value).__name__ == "MissingFileError"
    with pytest.raises(tg.PersistError, match=r"is a folder, not an \.npz file$"):
        tg.load_params(tmp_path)
    with pytest.raises(tg.PersistError, match=r"the folder '.*no-such-folder' does not exist$"):
        tg.save_params(tmp_path / "no-such-folder" / "params.npz", {"w": np.ones(2)})
    with pytest.raises(tg.PersistError, match=r"cannot save to '.*': it is a folder$"):
        tg.save_params(tmp_path, {"w": np.ones(2)})


def test_what_to_expect_is_a_dict_of_shapes_and_dtypes_or_a_program(tmp_path):
    path = tmp_path / "params.npz"
    tg.save_params(path, {"w": np.zeros(3, dtype=np.float32), "b": np.array(0.0)})
    params, _ = tg.load_params(path, expected={"w": ([3], np.float32), "b": ((), float)})
    assert params["w"].dtype == np.float32 and params["b"].shape == ()
    with pytest.raises(tg.PersistError, match=r"'w' is f32\[3\], expected f64\[3\]$"):
        tg.load_params(path, expected=hw.ridge(num_features=3))
    with pytest.raises(TypeError, match=r"^expected must be a dict of name -> \(shape, dtype\) or a program made by "
                                        r"tg.compile, got list$"):
        tg.load_params(path, expected=["w", "b"])
    with pytest.raises(TypeError, match=r"^expected\['w'\] must be a \(shape, dtype\) pair such as "
                                        r"\(\(3,\), 'float64'\), got \(3,\)$"):
        tg.load_params(path, expected={"w": (3,)})


def test_what_cannot_be_saved_is_refused_before_writing(tmp_path):
    path = tmp_path / "params.npz"
    with pytest.raises(tg.PersistError, match=r"parameter 'f' of dtype object: only numeric arrays are saved"):
        tg.save_params(path, {"f": np.array([print], dtype=object)})
    with pytest.raises(tg.PersistError, match=r"metadata .* must be JSON-able"):
        tg.save_params(path, {"w": np.ones(2)}, meta={"when": object()})
    with pytest.raises(tg.PersistError, match=r"cannot save parameter name '__tapegraph__'"):
        tg.save_params(path, {"__tapegraph__": np.ones(2)})
    with pytest.raises(tg.PersistError, match=r"^save_params needs a dict of name -> array, got list$"):
        tg.save_params(path, [np.ones(2)])
    with pytest.raises(tg.PersistError, match=r"metadata .* must be a dict of JSON-able values, got str$"):
        tg.save_params(path, {"w": np.ones(2)}, meta="ridge")
    assert not path.exists()


# ---------------------------------------------------------------- estimators


def _fitted(model_class, rng):
    if model_class is MulticlassClassifier:
        X, y = make_blobs(n_samples=30, seed=0)
        return model_class(max_num_epochs=2, random_state=0).fit(X, y), X
    X = rng.normal(size=(30, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1
    kwargs = {"num_hidden_units": 5} if model_class is MLPRegression else {}
    return model_class(max_num_epochs=2, step_size=1e-3, random_state=0, **kwargs).fit(X, y), X


@pytest.mark.parametrize("model_class", [LinearRegression, RidgeRegression, MLPRegression, MulticlassClassifier])
def test_a_saved_estimator_loads_back_and_predicts_exactly_the_same(model_class, tmp_path, rng):
    estimator, X = _fitted(model_class, rng)
    path = tmp_path / "model.npz"
    estimator.save(path)
    loaded = load(path)
    assert type(loaded) is model_class
    assert loaded.get_params() == estimator.get_params()
    assert loaded.n_iter_ == estimator.n_iter_ and loaded.history_ == estimator.history_
    np.testing.assert_array_equal(loaded.predict(X), estimator.predict(X))
    if model_class is MulticlassClassifier:
        np.testing.assert_array_equal(loaded.predict_proba(X), estimator.predict_proba(X))


def test_loading_a_model_checks_its_kind_and_its_parameters(tmp_path, rng):
    ridge, _ = _fitted(RidgeRegression, rng)
    path = tmp_path / "ridge.npz"
    ridge.save(path)
    with pytest.raises(tg.PersistError, match=r"holds a model of class RidgeRegression, not MLPRegression$"):
        load(path, model=MLPRegression)
    assert type(load(path, model=RidgeRegression)) is RidgeRegression
    params, meta = tg.load_params(path)
    meta["n_features_in"] = 5  # the file's w has 4 entries
    tg.save_params(path, params, meta)
    with pytest.raises(tg.PersistError, match=r"does not match the model's parameters: 'w' is f64\[4\], "
                                               r"expected f64\[5\]$"):
        load(path)
    tg.save_params(path, params, {**meta, "class": "Perceptron"})
    with pytest.raises(tg.PersistError, match=r"holds no estimator this package knows \(class 'Perceptron'\)"):
        load(path)


def test_saving_an_unfitted_estimator_says_so(tmp_path):
    from models import NotFittedError
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        RidgeRegression().save(tmp_path / "ridge.npz")
    assert not (tmp_path / "ridge.npz").exists()


def test_a_class_loads_only_its_own_kind_of_model(tmp_path, rng):
    from models import Estimator
    linear, X = _fitted(LinearRegression, rng)
    path = tmp_path / "linear.npz"
    linear.save(path)
    np.testing.assert_array_equal(LinearRegression.load(path).predict(X), linear.predict(X))
    assert type(Estimator.load(path)) is LinearRegression
    with pytest.raises(tg.PersistError, match=r"holds a model of class LinearRegression, not RidgeRegression$"):
        RidgeRegression.load(path)


def test_saving_a_problem_file_is_atomic_too(tmp_path, monkeypatch):
    from models import generate_problem, load_problem, save_problem
    path = tmp_path / "problem.npz"
    save_problem(path, generate_problem(seed=0))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        save_problem(path, generate_problem(seed=1))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["problem.npz"]
    monkeypatch.undo()
    save_problem(tmp_path / "named", generate_problem(seed=1))  # ".npz" is added, as np.savez does
    assert load_problem(tmp_path / "named.npz").x_train.shape == generate_problem(seed=1).x_train.shape
