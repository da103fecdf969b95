"""Forward-only programs, gradients as outputs, and ``prog.map`` over a data set."""

import numpy as np
import pytest

import tapegraph as tg


def _per_example():
    x = tg.input("x", shape=(3,))
    y = tg.input("y")
    w = tg.param("w", shape=(3,))
    b = tg.param("b")
    prediction = tg.vector_scalar_affine(x, w, b)
    loss = tg.squared_l2_distance(prediction, y)
    return tg.compile(loss, wrt=[w, b], outputs={"prediction": prediction, "grad_w": tg.grad(loss, w),
                                                 "outer": tg.reshape(x, (3, 1)) * w})


def _batched():
    x = tg.input("x", shape=("batch", 3))
    y = tg.input("y", shape=("batch",))
    w = tg.param("w", shape=(3,))
    b = tg.param("b")
    prediction = x @ w + b
    loss = tg.mean(tg.square(prediction - y))
    return tg.compile(loss, wrt=[w, b], outputs={"prediction": prediction, "residual": prediction - y,
                                                 "grad_w": tg.grad(loss, w)})


def _data(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return ({"x": rng.normal(size=(n, 3)), "y": rng.normal(size=n)},
            {"w": rng.normal(size=3), "b": np.array(0.1)})


# Forward-only programs and gradient outputs.

def test_a_predictor_compiles_without_an_objective_and_runs_its_outputs():
    x = tg.input("x", shape=(3,))
    w = tg.param("w", shape=(3,))
    predictor = tg.compile(outputs={"prediction": tg.tanh(x @ w), "scaled": 2.0 * x})
    params, inputs = {"w": np.array([1.0, 2.0, 3.0])}, {"x": np.array([0.5, -1.0, 0.25])}
    results = predictor.run(params, inputs)
    assert sorted(results) == ["prediction", "scaled"]
    assert results["prediction"] == np.tanh(0.5 - 2.0 + 0.75)
    assert np.array_equal(results["scaled"], 2.0 * inputs["x"])
    assert predictor.objective is None and predictor.wrt == () and predictor.gradients == ()
    assert repr(predictor) == "<Program outputs=['prediction', 'scaled'] (no objective)>"
    dump = predictor.dump()
    assert dump.startswith("program: outputs = [prediction, scaled] (no objective); run")
    assert "reverse" not in dump
    namespace = {}
    exec(predictor.source(name="predict"), namespace)
    generated = namespace["predict"](inputs["x"], params["w"])
    assert generated["prediction"] == results["prediction"]


def test_a_gradient_is_an_expression_usable_as_an_output():
    w = tg.param("w", shape=(3,))
    x = tg.input("x", shape=(3,))
    loss = tg.sum(tg.square(w * x))
    gradient = tg.grad(loss, w)
    assert isinstance(gradient, tg.Node) and gradient.shape == (3,)
    assert tg.grad(loss, [w]) == [gradient]
    program = tg.compile(outputs={"g": gradient})
    values = {"w": np.array([1.0, -2.0, 0.5])}
    data = {"x": np.array([3.0, 1.0, 2.0])}
    assert np.array_equal(program.run(values, data)["g"], 2.0 * values["w"] * data["x"] ** 2)
    _, grads = tg.compile(loss, wrt=[w]).value_and_grad(values, data)
    assert np.array_equal(program.run(values, data)["g"], grads["w"])


def test_a_hessian_vector_product_as_an_output():
    w = tg.param("w", shape=(2,))
    v = tg.input("v", shape=(2,))
    gradient = tg.grad(tg.sum(tg.exp(w)), w)
    hvp = tg.grad(tg.dot(gradient, v), w)
    result = tg.compile(outputs={"hvp": hvp}).run({"w": np.array([0.0, 1.0])}, {"v": np.array([2.0, 3.0])})
    np.testing.assert_allclose(result["hvp"], np.exp([0.0, 1.0]) * [2.0, 3.0], rtol=1e-15)


def test_calls_that_need_an_objective_say_so():
    w = tg.param("w", shape=(2,))
    predictor = tg.compile(outputs={"double": 2.0 * w})
    params = {"w": np.ones(2)}
    with pytest.raises(tg.CallError, match=r"value_and_grad needs an objective.*outputs only \(\['double'\]\)"):
        predictor.value_and_grad(params)
    with pytest.raises(tg.CallError, match=r"outputs=\['objective'\] needs an objective"):
        predictor.run(params, outputs=["objective"])
    for make in (lambda: tg.sgd(predictor, 0.1), lambda: tg.sgd(predictor, 0.1, momentum=0.9),
                 lambda: tg.adam(predictor), lambda: tg.rmsprop(predictor)):
        with pytest.raises(tg.CallError, match="needs a program with an objective to minimise"):
            make()
    with pytest.raises(tg.CallError, match="value_and_grad needs an objective"):
        tg.testing.check_grads(predictor, params)


def test_a_program_needs_an_objective_or_an_output_and_wrt_needs_an_objective():
    w = tg.param("w", shape=(2,))
    with pytest.raises(tg.GraphError, match="needs an objective or at least one output"):
        tg.compile()
    with pytest.raises(tg.GraphError, match=r"wrt=\[...\] needs an objective.*tg.grad\(loss, w\)"):
        tg.compile(outputs={"double": 2.0 * w}, wrt=[w])
    with pytest.raises(tg.GraphError, match="objective must be a scalar"):
        tg.grad(2.0 * w, w)


def test_a_predictor_can_be_drawn():
    pytest.importorskip("matplotlib")
    w = tg.param("w", shape=(2,))
    predictor = tg.compile(outputs={"double": 2.0 * w})
    assert tg.draw_graph(predictor) is not None
    assert tg.draw_tape(predictor) is not None
    assert "double" in predictor._repr_html_()


# map.

def test_map_of_a_per_example_program_equals_a_loop_bit_for_bit():
    program = _per_example()
    data, params = _data()
    results = program.map(params, data)
    assert sorted(results) == ["grad_w", "objective", "outer", "prediction"]
    loop = [program.run(params, {"x": data["x"][row], "y": data["y"][row]}) for row in range(7)]
    assert results["objective"].shape == (7,) and results["objective"].dtype == np.float64
    assert results["objective"].tolist() == [entry["objective"] for entry in loop]
    for name, shape in (("prediction", (7,)), ("grad_w", (7, 3)), ("outer", (7, 3, 3))):
        assert results[name].shape == shape
        assert np.array_equal(results[name], np.stack([entry[name] for entry in loop]))


def test_map_computes_only_the_named_outputs_from_the_inputs_they_need():
    program = _per_example()
    data, params = _data()
    results = program.map(params, {"x": data["x"]}, outputs=["prediction"])
    assert list(results) == ["prediction"]
    np.testing.assert_allclose(results["prediction"], data["x"] @ params["w"] + params["b"], rtol=1e-13)
    assert list(program.map(params, data, outputs="prediction")) == ["prediction"]


@pytest.mark.parametrize("batch_size", [None, 1, 3, 7, 100])
def test_map_of_a_batched_program_equals_a_loop_over_its_batches(batch_size):
    program = _batched()
    data, params = _data()
    results = program.map(params, data, outputs=["prediction", "residual"], batch_size=batch_size)
    size = 7 if batch_size is None else batch_size
    loop = [program.run(params, {name: array[start:start + size] for name, array in data.items()},
                        outputs=["prediction", "residual"]) for start in range(0, 7, size)]
    for name in ("prediction", "residual"):
        assert results[name].shape == (7,)
        assert np.array_equal(results[name], np.concatenate([entry[name] for entry in loop]))


def test_map_of_a_batched_program_leaves_out_what_does_not_run_over_the_batch_by_default():
    program = _batched()
    data, params = _data()
    assert sorted(program.map(params, data)) == ["prediction", "residual"]
    with pytest.raises(tg.CallError, match=r"output 'objective' \(f64\[\]\) does not run over the batch"):
        program.map(params, data, outputs=["prediction", "objective"])
    with pytest.raises(tg.CallError, match=r"output 'grad_w' \(f64\[3\]\) does not run over the batch"):
        program.map(params, data, outputs=["grad_w"], batch_size=2)


def test_map_gives_arrays_the_caller_owns_and_changes_nothing_given():
    program = _batched()
    data, params = _data()
    copies = {name: array.copy() for name, array in {**data, **params}.items()}
    first = program.map(params, data, outputs=["prediction"], batch_size=3)["prediction"]
    kept = first.copy()
    whole = program.map(params, data, outputs=["prediction"])["prediction"]
    program.map({**params, "b": np.array(5.0)}, data, outputs=["prediction"])
    assert np.array_equal(first, kept) and np.array_equal(whole, kept)
    for name, array in {**data, **params}.items():
        assert np.array_equal(array, copies[name])


def test_map_over_no_rows_gives_empty_stacks():
    program = _per_example()
    data, params = _data(n=0)
    results = program.map(params, data)
    assert {name: array.shape for name, array in results.items()} == {
        "objective": (0,), "prediction": (0,), "grad_w": (0, 3), "outer": (0, 3, 3)}
    batched = _batched().map(params, data, batch_size=4)
    assert batched["prediction"].shape == (0,)


def test_map_compiles_one_specialisation_per_batch_size():
    program = _batched()
    data, params = _data(n=8)
    program.map(params, data, outputs=["prediction"], batch_size=4)
    with tg.no_new_specializations():
        program.map(params, data, outputs=["prediction"], batch_size=4)
    assert [spec.sizes for spec in program.specializations()] == [{"batch": 4}]


def test_map_refuses_bad_data_before_anything_runs():
    program = _per_example()
    batched = _batched()
    data, params = _data()
    cases = [
        (lambda: program.map(params, {"x": data["x"], "y": data["y"][:5]}),
         r"map: the data arrays' leading axes differ: \{'x': 7, 'y': 5\}"),
        (lambda: program.map(params, data, batch_size=2),
         r"map: batch_size=2 given, but the program has no batch dimension"),
        (lambda: batched.map(params, data, outputs=["prediction"], batch_size=0),
         r"map: batch_size must be a positive integer, got 0"),
        (lambda: program.map(params, {"x": data["x"]}),
         r"map: data lacks input\(s\) \['y'\]"),
        (lambda: program.map(params, {**data, "z": data["y"]}),
         r"map: data has unknown input\(s\) \['z'\]"),
        (lambda: program.map(params, {"x": data["x"][:, :2]}, outputs=["prediction"]),
         r"map: data\['x'\] has shape \(7, 2\), so each example has shape \(2,\), but input 'x' is declared f64\[3\]"),
        (lambda: program.map(params, {"x": data["x"][0]}, outputs=["prediction"]),
         r"each example has shape \(\), but input 'x' is declared f64\[3\]"),
        (lambda: program.map(params, [data["x"]]), r"map: data must be a dict"),
        (lambda: program.map(params, data, outputs=["predictoin"]), r"unknown output\(s\) \['predictoin'\]"),
        (lambda: tg.compile(outputs={"double": 2.0 * tg.param("w", shape=(3,))}).map(params, {}),
         r"map: the outputs \['double'\] read no input"),
    ]
    for call, message in cases:
        with pytest.raises(tg.CallError, match=message):
            call()
    assert program.specializations() == [] and batched.specializations() == []


def test_map_of_a_predictor():
    x = tg.input("x", shape=(2,))
    w = tg.param("w", shape=(2,))
    predictor = tg.compile(outputs={"probability": tg.sigmoid(x @ w)})
    X = np.array([[0.0, 0.0], [1.0, 2.0], [-3.0, 1.0]])
    results = predictor.map({"w": np.array([0.5, -0.25])}, {"x": X})
    np.testing.assert_allclose(results["probability"], 1 / (1 + np.exp(-(X @ [0.5, -0.25]))), rtol=1e-15)
