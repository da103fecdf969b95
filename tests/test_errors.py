"""Bad input gets one clear paragraph naming what was expected and what was given."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tapegraph as tg

import homework_graphs as hw


def _one_paragraph(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_shape_mismatch_at_declaration_names_op_shapes_and_line():
    W = tg.param("W", shape=(10, 400))
    x = tg.input("x", shape=(3,))
    b = tg.param("b", shape=(10,))
    with pytest.raises(tg.ShapeError) as error:
        tg.affine(W, x, b)
    text = _one_paragraph(error)
    assert "matmul(x: f64[3], W: f64[10,400])" in text
    assert "test_errors.py:" in text and "inner dimensions differ" in text


def test_broadcast_mismatch_names_both_shapes():
    with pytest.raises(tg.ShapeError, match=r"add\(a: f64\[batch,4\], b: f64\[3\]\) at test_errors.py:\d+: shapes \[batch,4\], \[3\] do not broadcast"):
        tg.input("a", shape=("batch", 4)) + tg.param("b", shape=(3,))


def test_integer_data_in_a_float_op_is_rejected_at_declaration():
    label = tg.input("label", shape=(), dtype="int64")
    with pytest.raises(tg.ShapeError, match="'label' has integer dtype int64; this op needs floating-point data"):
        tg.tanh(label)


def test_unknown_parameter_name_at_call(rng):
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0, "W": np.zeros(3)}, {"x": np.zeros(3), "y": 0.0})
    assert _one_paragraph(error) == "unknown name 'W' in params; this program's params are ['b', 'w']"


def test_missing_input_name_at_call():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.zeros(3)})
    assert _one_paragraph(error) == ("input(s) ['y'] missing from inputs (given: ['x']). "
                                     "This call needs params ['b', 'w'] and inputs ['x', 'y'].")


def test_name_passed_in_the_wrong_dict():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError, match="'y' is declared as an input; pass it in inputs, not params"):
        program.value_and_grad({"w": np.zeros(3), "b": 0.0, "y": 1.0}, {"x": np.zeros(3)})


def test_wrong_shape_at_call():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.zeros(4), "y": 0.0})
    assert _one_paragraph(error) == "input 'x' expects f64[3], got an array of f64[4] (axis 0 differs)"
    with pytest.raises(tg.CallError, match=r"parameter 'w' expects f64\[3\] \(1 dimension\(s\)\), got an array of f64\[3,1\]"):
        program.value_and_grad({"w": np.zeros((3, 1)), "b": 0.0}, {"x": np.zeros(3), "y": 0.0})


def test_wrong_dtype_at_call():
    program = hw.ridge(num_features=3)
    with pytest.raises(tg.CallError) as error:
        program.value_and_grad({"w": np.zeros(3), "b": 0.0}, {"x": np.arange(3), "y": 0.0})
    assert _one_paragraph(error) == ("input 'x' expects floating-point data (f64[3]), got an array of dtype int64; "
                                     "convert integer data with .astype(float)")
    classifier = hw.multiclass()
    params = hw.random_params(classifier, np.random.default_rng(0))
    with pytest.raises(tg.CallError, match=r"input 'y' expects integer data \(i64\[\]\), such as class labels, got dtype float64"):
        classifier.value_and_grad(params, {"x": np.zeros(2), "y": np.array(1.0)})


def test_wrt_that_is_not_a_parameter():
    x = tg.input("x", shape=(3,))
    w = tg.param("w", shape=(3,))
    with pytest.raises(tg.GraphError) as error:
        tg.compile(tg.sum(x * w), wrt=[w, x])
    assert _one_paragraph(error) == "wrt must list parameters made with tg.param, but got input 'x' (f64[3])"


def test_two_different_nodes_under_one_name():
    first = tg.param("w", shape=(3,))
    second = tg.param("w", shape=(4,))
    with pytest.raises(tg.GraphError, match=r"param .w. \(f64\[3\] and f64\[4\]\) is declared at test_errors.py:\d+ and again at test_errors.py:\d+: .*give each its own name"):
        tg.compile(tg.sum(first) + tg.sum(second), wrt=[first, second])


def test_non_scalar_objective():
    w = tg.param("w", shape=(3,))
    with pytest.raises(tg.GraphError, match=r"the objective must be a scalar, but .* has shape f64\[3\]"):
        tg.compile(w * 2.0, wrt=[w])


@pytest.mark.parametrize("step_size", [0, -0.1, float("nan"), "0.1", True])
def test_step_size_must_be_a_positive_number(step_size):
    program = hw.ridge(num_features=3)
    with pytest.raises(ValueError, match="step_size must be a positive finite number"):
        tg.sgd(program, step_size)


def test_errors_do_not_change_the_callers_arrays():
    program = hw.ridge(num_features=3)
    params = {"w": np.arange(3.0), "b": np.array(1.0)}
    with pytest.raises(tg.CallError):
        program.value_and_grad(params, {"x": np.zeros(5), "y": 0.0})
    np.testing.assert_array_equal(params["w"], np.arange(3.0))


def test_an_empty_batch_is_refused_by_name():
    x = tg.input("x", shape=("batch", 3))
    program = tg.compile(tg.mean(tg.square(x)))
    with pytest.raises(tg.CallError, match=r"^input 'x' has batch=0 \(an array of f64\[0,3\]\): there is nothing "
                                           r"to compute on an empty batch; give at least one row$"):
        program.run({}, {"x": np.ones((0, 3))})


# Issue 10: silent traps, each now an error or the right answer.

def _two_param_program():
    u = tg.param("u", shape=(2,))
    v = tg.param("v", shape=(2,))
    x = tg.input("x", shape=(2,))
    return tg.compile(tg.sum(tg.square(u * x)) + tg.sum(tg.square(v)), wrt=[u, v])


def test_donated_arrays_that_alias_are_refused_by_name():
    """``{"u": a, "v": a}`` donated came back as zeros for both, one object."""
    program = _two_param_program()
    step = tg.sgd(program, 0.25, donate=True)
    a = np.ones(2)
    with pytest.raises(tg.CallError, match=r"^donate=True updates parameters in place, so they must not share memory: "
                                           r"'u' and 'v' are the same array"):
        step({"u": a, "v": a}, {"x": np.ones(2)})
    np.testing.assert_array_equal(a, np.ones(2))
    block = np.ones(4)
    with pytest.raises(tg.CallError, match=r"'u' and 'v' share memory \(views of one array\)"):
        step({"u": block[:2], "v": block[1:3]}, {"x": np.ones(2)})
    with pytest.raises(tg.CallError, match=r"parameter 'u' and input 'x' share memory"):
        step({"u": block[:2], "v": np.ones(2)}, {"x": block[:2]})
    owner = np.ones(2)
    with pytest.raises(tg.CallError, match=r"parameter 'u' and input 'x' share memory"):
        step({"u": owner, "v": np.ones(2)}, {"x": owner[::-1]})
    with pytest.raises(tg.CallError, match=r"parameter 'v' and input 'x' are the same array"):
        step({"u": np.ones(2), "v": owner}, {"x": owner})
    # views that do not overlap are fine
    new, _ = step({"u": block[:2], "v": block[2:]}, {"x": np.ones(2)})
    np.testing.assert_allclose(new["u"], [0.5, 0.5])


def test_donated_arrays_that_alias_are_refused_by_the_generated_entry_too():
    """Once specialised, a call runs the generated entry, whose identity test
    sends every possible overlap to the same check."""
    program = _two_param_program()
    step = tg.sgd(program, 0.25, donate=True)
    step({"u": np.ones(2), "v": np.ones(2)}, {"x": np.ones(2)})  # specialised: later calls take the entry
    a, block, owner = np.ones(2), np.ones(4), np.ones(2)
    cases = [
        ({"u": a, "v": a}, {"x": np.ones(2)}, r"'u' and 'v' are the same array"),
        ({"u": block[:2], "v": block[1:3]}, {"x": np.ones(2)}, r"'u' and 'v' share memory \(views of one array\)"),
        ({"u": owner, "v": np.ones(2)}, {"x": owner[::-1]}, r"parameter 'u' and input 'x' share memory"),
        ({"u": np.ones(2), "v": owner}, {"x": owner}, r"parameter 'v' and input 'x' are the same array"),
    ]
    for params, inputs, message in cases:
        with pytest.raises(tg.CallError, match=message):
            step(params, inputs)
    np.testing.assert_array_equal(a, np.ones(2))
    new, _ = step({"u": block[:2], "v": block[2:]}, {"x": np.ones(2)})
    np.testing.assert_allclose(new["u"], [0.5, 0.5])
    assert new["u"] is not None and np.shares_memory(new["u"], block)
    np.testing.assert_allclose(new["v"], [0.5, 0.5])


def test_a_step_returns_every_parameter_it_was_given():
    """With ``b`` not in ``wrt`` the README's loop lost ``b`` after one step."""
    w = tg.param("w", shape=(2,))
    b = tg.param("b")
    program = tg.compile(tg.sum(tg.square(w)) + b, wrt=[w])
    for donate in (False, True):
        step = tg.sgd(program, 0.25, donate=donate)
        bias = np.array(1.5)
        params = {"w": np.ones(2), "b": bias}
        for _ in range(3):
            params, value = step(params, {})
        assert list(params) == ["w", "b"]
        assert params["b"] is bias
        np.testing.assert_allclose(params["w"], 0.5 ** 3 * np.ones(2))
        assert value == pytest.approx(2 * 0.25 ** 2 + 1.5)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_masked_arrays_and_other_array_subclasses_are_refused_with_how_to_convert():
    """A masked array lost its mask, and the masked values were used."""
    x = tg.input("x", shape=(3,))
    program = tg.compile(tg.sum(x))
    masked = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    with pytest.raises(tg.CallError, match=r"^input 'x' got a masked array \(1 of 3 entries masked\); tapegraph "
                                           r"would use the masked values: pass .filled\(value\) with the value masked entries should take"):
        program.run({}, {"x": masked})
    with pytest.raises(tg.CallError, match=r"^input 'x' got a numpy.matrix, an array subclass whose meaning "
                                           r"tapegraph would not keep; pass np.asarray\(...\) of it if plain numbers are meant$"):
        program.run({}, {"x": np.matrix([1.0, 2.0, 3.0])})
    # a memory-mapped array is plain data
    assert program.run({}, {"x": np.asarray([1.0, 2.0, 3.0]).view(np.memmap)})["objective"] == 6.0


def test_a_string_given_as_a_shape_is_refused_with_a_hint():
    """``shape=("batch")`` (no comma) was five symbolic dimensions [b,a,t,c,h]."""
    with pytest.raises(tg.ShapeError, match=r"^input 'x': shape 'batch' is a string, not a tuple of dimensions; "
                                            r"for one symbolic dimension write shape=\('batch',\) \(with the comma\)$"):
        tg.input("x", shape=("batch"))
    with pytest.raises(tg.ShapeError, match=r"^param 'w': shape '3' is a string"):
        tg.param("w", shape="3")


def test_a_string_given_as_a_target_shape_is_refused_too():
    """``tg.reshape(x, "batch")`` was a reshape to [b,a,t,c,h]; ``broadcast_to(w, "ab")`` to [a,b]."""
    x = tg.input("x", shape=("batch", 3))
    with pytest.raises(tg.ShapeError, match=r"^reshape\(x: f64\[batch,3\]\) at test_errors.py:\d+: shape 'batch' is a "
                                            r"string, not a tuple of dimensions; for one symbolic dimension write"):
        tg.reshape(x, "batch")
    with pytest.raises(tg.ShapeError, match=r"^broadcast_to\(w: f64\[3\]\) at test_errors.py:\d+: shape 'ab' is a string"):
        tg.ops.broadcast_to(tg.param("w", shape=(3,)), "ab")
    assert tg.reshape(tg.param("v", shape=(6,)), 6).shape == (6,)  # a single size is still one dimension


def test_labels_that_the_declared_integer_dtype_cannot_hold_are_refused_by_value():
    """2**64 - 1 for an int64 label became -1 (``astype`` wraps), and 300 for
    an int8 label became 44, a valid label: a silently wrong loss."""
    scores = tg.input("scores", shape=(3,))
    for dtype, value in (("int64", np.uint64(2**64 - 1)), ("int64", 2**64 - 1), ("int8", 300), ("uint8", -1)):
        label = tg.input("label", dtype=dtype)
        program = tg.compile(tg.cross_entropy(scores, label))
        with pytest.raises(tg.CallError, match=rf"^input 'label' expects integer data \({tg.shapes.short_dtype(dtype)}\[\]\): "
                                               rf"{value} does not fit in {dtype}"):
            program.run({}, {"scores": np.zeros(3), "label": np.array(value) if dtype == "int64" and value != 2**64 - 1
                             else value})


def test_unsigned_labels_work_and_out_of_range_ones_are_reported_as_given():
    scores = tg.input("scores", shape=("batch", 3))
    for dtype in ("uint8", "uint32", "uint64"):
        labels = tg.input("labels", shape=("batch",), dtype=dtype)
        program = tg.compile(tg.sum(tg.cross_entropy(scores, labels)))
        value = program.run({}, {"scores": np.zeros((2, 3)), "labels": np.array([1, 2], dtype=dtype)})["objective"]
        assert value == pytest.approx(2 * np.log(3))
        top = np.iinfo(dtype).max
        with pytest.raises(tg.TapeError, match=rf"label {top} at index \(1,\) is outside 0\.\.2"):
            program.run({}, {"scores": np.zeros((2, 3)), "labels": np.array([1, top], dtype=dtype)})


def test_zero_classes_are_refused_at_declaration():
    """A cross-entropy over zero classes was accepted, then failed "outside 0..-1"."""
    label = tg.input("label", dtype="int64")
    with pytest.raises(tg.ShapeError, match=r"^cross_entropy\(scores: f64\[0\], label: i64\[\]\) at test_errors.py:\d+: "
                                            r"axis 0 holds the classes, and it has none"):
        tg.cross_entropy(tg.input("scores", shape=(0,)), label)
    labels = tg.input("labels", shape=("batch",), dtype="int64")
    scores = tg.input("scores", shape=("batch", "classes"))
    program = tg.compile(tg.sum(tg.cross_entropy(scores, labels)))
    # a symbolic class count is checked when called, as every symbolic size is
    with pytest.raises(tg.CallError, match=r"input 'scores' has classes=0 \(an array of f64\[2,0\]\)"):
        program.run({}, {"scores": np.zeros((2, 0)), "labels": np.array([0, 0])})


def _assert_persist_error(action, path, *fragments):
    with pytest.raises(tg.PersistError) as error:
        action()
    text = _one_paragraph(error)
    assert repr(str(path)) in text, text
    for fragment in fragments:
        assert fragment in text, text
    return text


def test_persistence_failures_are_persist_errors_naming_the_path(tmp_path, monkeypatch):
    """Each of these gave a bare RecursionError, NotADirectoryError or
    PermissionError naming the temporary file, a wrong reason, or raw bytes."""
    import zipfile
    params = {"w": np.zeros(2)}
    deep = tmp_path / "deep.npz"
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    _assert_persist_error(lambda: tg.save_params(deep, params, meta={"nested": nested}), deep,
                          "cannot save the metadata", "nested too deeply")
    text = "[" * 100_000 + "]" * 100_000
    with zipfile.ZipFile(deep, "w") as archive:
        with archive.open("w.npy", "w") as handle:
            np.save(handle, np.zeros(2))
        with archive.open(tg.persist.META_KEY + ".npy", "w") as handle:
            np.save(handle, np.array('{"format": "tapegraph-params", "version": 1, "meta": ' + text + "}"))
    _assert_persist_error(lambda: tg.load_params(deep), deep, "is not valid JSON", "nested too deeply")

    slashed = str(tmp_path / "out.npz") + "/"
    _assert_persist_error(lambda: tg.save_params(slashed, params), slashed, "ends with a '/'", "drop the trailing")
    assert list(tmp_path.iterdir()) == [deep]  # no temporary file left behind
    _assert_persist_error(lambda: tg.load_params(slashed), slashed, "ends with a '/'")

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    below = a_file / "out.npz"
    _assert_persist_error(lambda: tg.save_params(below, params), below, f"{str(a_file)!r} is a file, not a folder")

    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    target = tmp_path / "locked.npz"
    monkeypatch.setattr(tg.persist.os, "open", refusing_open)
    message = _assert_persist_error(lambda: tg.save_params(target, params), target,
                                    "cannot save to", "PermissionError", "Permission denied")
    assert ".tmp" not in message
    monkeypatch.setattr(tg.persist.os, "open", real_open)

    mixed = tmp_path / "mixed.npz"
    tg.save_params(mixed, params)
    with zipfile.ZipFile(mixed, "a") as archive:
        archive.writestr("readme.txt", "hello")
    _assert_persist_error(lambda: tg.load_params(mixed), mixed, "'readme.txt'", "is not a .npy array")


def test_a_model_file_with_hostile_metadata_is_a_persist_error(tmp_path):
    from models import RidgeRegression, load
    X, y = np.ones((4, 2)), np.arange(4.0)
    ridge = RidgeRegression(max_num_epochs=1).fit(X, y)
    path = tmp_path / "ridge.npz"
    ridge.save(path)
    params, meta = tg.load_params(path)
    for change in ({"class": ["RidgeRegression"]}, {"n_features_in": -3}, {"n_features_in": 2.5},
                   {"n_iter": "many"}, {"history": 5}, {"hyperparameters": ["l2_reg"]}):
        edited = tmp_path / "edited.npz"
        tg.save_params(edited, params, meta={**meta, **change})
        _assert_persist_error(lambda: load(edited), edited, "model file")


def test_the_homework_nodes_check_their_arguments_and_name_the_node():
    """``l2_reg="1.0"`` gave a bare TypeError from deep inside, without a line."""
    w = tg.param("w", shape=(3,))
    x = tg.input("x", shape=(3,))
    with pytest.raises(tg.ShapeError, match=r"^l2_norm_penalty at test_errors.py:\d+: l2_reg must be a number >= 0 "
                                            r"or a scalar node, got str '1.0'$"):
        tg.l2_norm_penalty(w, l2_reg="1.0")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(tg.ShapeError, match=r"l2_reg must be a number >= 0 or a scalar node, got"):
            tg.l2_norm_penalty(w, l2_reg=bad)
    with pytest.raises(tg.ShapeError, match=r"l2_reg must be a number >= 0 or a scalar node, got f64\[3\]"):
        tg.l2_norm_penalty(w, l2_reg=x)
    with pytest.raises(tg.ShapeError, match=r"^vector_scalar_affine at test_errors.py:\d+: b must be a tapegraph node "
                                            r"or a number, got str 'bias'$"):
        tg.vector_scalar_affine(x, w, "bias")
    with pytest.raises(tg.ShapeError, match=r"^affine at test_errors.py:\d+: W must be a tapegraph node or a number, "
                                            r"got NoneType None$"):
        tg.affine(None, x, w)
    with pytest.raises(tg.ShapeError, match=r"^squared_l2_distance at test_errors.py:\d+: b must be"):
        tg.squared_l2_distance(x, {"y": 1})
    # a node or a plain number still works
    hyper = tg.input("l2", shape=())
    assert tg.l2_norm_penalty(w, l2_reg=hyper).shape == ()
    assert tg.l2_norm_penalty(w, l2_reg=np.float32(0.5)).shape == ()


def test_a_typo_in_a_name_gets_a_did_you_mean():
    x = tg.input("features", shape=(3,))
    w = tg.param("weights", shape=(3,))
    program = tg.compile(tg.sum(x * w), wrt=[w], outputs={"prediction": x * w})
    with pytest.raises(tg.CallError, match=r"^unknown name 'weight' in params \(did you mean 'weights'\?\); "
                                           r"this program's params are \['weights'\]$"):
        program.run({"weight": np.ones(3)}, {"features": np.ones(3)})
    with pytest.raises(tg.CallError, match=r"^unknown name 'featuers' in inputs \(did you mean 'features'\?\)"):
        program.value_and_grad({"weights": np.ones(3)}, {"featuers": np.ones(3)})
    with pytest.raises(tg.CallError, match=r"^unknown name 'zzz' in inputs; this program"):
        program.run({"weights": np.ones(3)}, {"features": np.ones(3), "zzz": 1})
    with pytest.raises(tg.CallError, match=r"unknown output\(s\) \['predictions'\] \(did you mean 'prediction'\?\); "
                                           r"this program has \['objective', 'prediction'\]"):
        program.run({"weights": np.ones(3)}, {"features": np.ones(3)}, outputs=["predictions"])


def test_numpy_warnings_from_a_tape_name_the_users_declaring_line():
    """They are issued at the line that declared the node (the step's code object
    carries the user's lines): the same on the first call (the general path) as on
    later ones (the generated entry). tests/test_warnings.py has the rest."""
    import linecache
    import warnings
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(tg.log(w)), wrt=[w])
    declared = sys._getframe().f_lineno - 1
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            program.value_and_grad({"w": np.array([-1.0, 1.0])})
        messages = [warning for warning in caught if issubclass(warning.category, RuntimeWarning)]
        assert messages, "numpy should have warned about log(-1)"
        assert "invalid value encountered in log" in str(messages[0].message)
        assert (messages[0].filename, messages[0].lineno) == (__file__, declared)
        shown = linecache.getline(messages[0].filename, messages[0].lineno)
        assert "program = tg.compile(tg.sum(tg.log(w)), wrt=[w])" in shown, shown
    # the user's own settings still decide: ignored, or raised as a TapeError naming the instruction
    with warnings.catch_warnings(record=True) as caught, np.errstate(invalid="ignore"):
        warnings.simplefilter("always")
        program.value_and_grad({"w": np.array([-1.0, 1.0])})
    assert not [warning for warning in caught if issubclass(warning.category, RuntimeWarning)]
    with np.errstate(invalid="raise"), pytest.raises(tg.TapeError, match=r"forward instruction 0 failed \(FloatingPointError"):
        program.value_and_grad({"w": np.array([-1.0, 1.0])})
    with warnings.catch_warnings(), pytest.raises(tg.TapeError, match=r"failed \(RuntimeWarning: invalid value"):
        warnings.simplefilter("error")
        program.value_and_grad({"w": np.array([-1.0, 1.0])})


def test_an_estimator_refuses_a_masked_array_too():
    from models import RidgeRegression
    X = np.ma.masked_array(np.ones((3, 2)), mask=[[0, 1], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"^RidgeRegression: X is a masked array \(1 of 6 entries masked\); "
                                         r"the masked values would be used: pass X.filled\(value\)"):
        RidgeRegression().fit(X, np.ones(3))
