"""Regression tests for bugs the differential tests (tests/test_differential.py) found.

Each test is the smallest graph that showed one bug, with what went wrong
in its docstring; it fails if the bug comes back.
"""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.ops import broadcast_to


def test_a_symbolic_size_that_no_input_gives_is_a_clear_error():
    """A "batch" dimension made by a static shape alone has no size when called.

    ``broadcast_to(w, ("batch",))`` with no input of shape ``("batch",
    ...)`` used to fail inside the lowering with a bare ``KeyError:
    'batch'``; it now names the node and says where a size must come from.
    """
    w = tg.param("w")
    program = tg.compile(tg.sum(broadcast_to(w, ("batch",))), wrt=[w])
    with pytest.raises(tg.GraphError, match=r"broadcast_to at .* has shape f64\[batch\], but no parameter or input"):
        program.value_and_grad({"w": np.array(1.0)})


def test_standalone_source_defines_a_gradient_that_is_a_constant():
    """``prog.source()`` of an objective affine in a parameter.

    The gradient is a constant folded at compile time; the generated
    module returned ``s1.copy()`` without ever assigning ``s1``, so calling
    it raised ``NameError``. ``prog.value_and_grad`` itself was right.
    Fixed in ``tapegraph/backends/source.py``: the buffers to define are
    looked for in the return line too.
    """
    p = tg.param("p")
    program = tg.compile(3.0 * p + 1.0, wrt=[p])
    namespace: dict = {}
    exec(program.source(name="step"), namespace)
    result = namespace["step"](p=np.array(2.0))
    assert result["objective"] == 7.0
    np.testing.assert_array_equal(result["grad p"], np.array(3.0))


# Issue 10, item 3: a user's name must never shadow what the generated code calls.

def _generated_names() -> list[str]:
    """Every name the generated code uses for itself, besides the builtins."""
    from tapegraph.backends.codegen import kernel_functions
    from tapegraph.ops import REGISTRY
    kernels = [op.kernel.__name__ for op in REGISTRY.values() if not isinstance(op.kernel, np.ufunc)]
    assert kernel_functions(" ".join(f"{name}(" for name in kernels), REGISTRY.values()), "kernel names should be found"
    return ["np", "math", "nan", "inf", "make", "run", "_nonfinite", "s0", "s1", "v2", "r3", "w4_row", *kernels]


def _names_to_try() -> list[str]:
    import builtins
    return sorted(set(dir(builtins)) | set(_generated_names()))


def _every_way_to_run(name: str) -> None:
    """compile, value_and_grad, run, sgd (pure, donated), check mode and source with a feed named ``name``."""
    import tapegraph.backends
    w = tg.param(name, shape=(2,))
    x = tg.input("x" if name != "x" else "x_input", shape=(2,))
    label = tg.input("label" if name != "label" else "label_input", dtype="int64")
    objective = tg.sum(tg.square(w * x)) + tg.cross_entropy(tg.relu(w), label) + tg.mean(tg.softmax(w))
    program = tg.compile(objective, wrt=[w], outputs={"scaled": tg.tanh(w) * 2.0})
    params = {name: np.array([0.5, -1.5])}
    inputs = {x.name: np.array([2.0, 3.0]), label.name: np.array(1)}
    expected_value = float(np.sum((params[name] * inputs[x.name]) ** 2)
                           + np.log(np.sum(np.exp(np.maximum(params[name], 0)))) - max(params[name][1], 0)
                           + np.mean(np.exp(params[name]) / np.sum(np.exp(params[name]))))
    value, grads = program.value_and_grad(params, inputs)
    assert value == pytest.approx(expected_value)
    outputs = program.run(params, inputs)
    np.testing.assert_allclose(outputs["scaled"], np.tanh(params[name]) * 2.0)
    with tapegraph.backends.check_finite():
        checked_value, checked_grads = program.value_and_grad(params, inputs)
    assert checked_value == value
    np.testing.assert_array_equal(checked_grads[name], grads[name])
    new_params, step_value = tg.sgd(program, 0.25)(params, inputs)
    np.testing.assert_allclose(new_params[name], params[name] - 0.25 * grads[name])
    donated = {name: params[name].copy()}
    donated_params, _ = tg.sgd(program, 0.25, donate=True)(donated, inputs)
    np.testing.assert_allclose(donated_params[name], new_params[name])
    namespace: dict = {}
    exec(program.source(name="step"), namespace)
    arguments = [params[name] if feed == name else inputs[feed] for feed in (name, x.name, label.name)]
    result = namespace["step"](*sorted_feeds(program, arguments, name, x.name, label.name))
    assert result["objective"] == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(result[f"grad {name}"], grads[name], rtol=1e-12)


def sorted_feeds(program, arguments, *names):
    """The arguments in the order the source's function takes them (the tape's feed order)."""
    order = [feed.name for feed in program.tape().feeds]
    by_name = dict(zip(names, arguments))
    return [by_name[feed] for feed in order]


@pytest.mark.parametrize("name", _names_to_try())
def test_any_name_works_as_a_parameter_name(name):
    """A parameter named ``float`` made the tape call an array: ``TypeError:
    'numpy.ndarray' object is not callable``. Every builtin and every name
    the generated code uses must work everywhere a program runs."""
    _every_way_to_run(name)


def test_generated_code_names_nothing_a_feed_could_take():
    """The mechanism behind the test above: a feed's identifier never
    equals any other name the generated function reads or defines."""
    import builtins
    from tapegraph.backends.codegen import identifiers
    names = sorted(set(_names_to_try()) | {"x", "label", "a b", "1st", "é", "ﬂoat", "𝐟𝐥𝐨𝐚𝐭", "_s3", "s3_", "_float"})
    w = [tg.param(name, shape=(2,)) for name in names]
    program = tg.compile(sum((tg.sum(tg.softmax(p)) for p in w), tg.const(0.0)), wrt=w)
    executable_text = program.source()
    code = compile(executable_text, "<test>", "exec")
    function = next(const for const in code.co_consts if getattr(const, "co_name", None) == "value_and_grad")
    arguments = set(function.co_varnames[:function.co_argcount])
    assert len(arguments) == len(names)
    used = set(function.co_names) | set(function.co_varnames[function.co_argcount:]) | set(function.co_freevars)
    assert not arguments & used
    assert not arguments & set(dir(builtins))
    import unicodedata
    for identifier in identifiers(names):
        assert identifier.isidentifier() and unicodedata.normalize("NFKC", identifier) == identifier


# Issue 10, item 1: two tg.param calls under one name are two parameters.

def test_a_parameter_declared_in_a_loop_is_not_silently_shared():
    """``W = tg.param("W", ...)`` in a loop compiled with one parameter W:
    three layers shared one weight. Each call now makes a parameter of its
    own, and compiling names the line that declared them (twice, in a loop)."""
    h = tg.input("x", shape=(4,))
    for _ in range(3):
        W = tg.param("W", shape=(4, 4))
        h = tg.tanh(tg.matmul(W, h))
    with pytest.raises(tg.GraphError, match=r"^param 'W' \(f64\[4,4\]\) is declared twice at test_regressions.py:\d+ "
                                            r"\(in a loop\?\): .*two parameters under one name.*reuse that node$"):
        tg.compile(tg.sum(h), wrt=[W])
    first = tg.param("v", shape=(2,))
    second = tg.param("v", shape=(2,))
    assert first != second and len({first, second}) == 2
    with pytest.raises(tg.GraphError, match=r"param 'v' \(f64\[2\]\) is declared at test_regressions.py:\d+ and "
                                            r"again at test_regressions.py:\d+: "):
        tg.compile(tg.sum(first * second), wrt=[first, second])


def test_a_parameter_shared_by_reusing_its_node_is_one_parameter():
    """The documented way to share: declare once, reuse the node."""
    shared = tg.param("W", shape=(2, 2))
    x = tg.input("x", shape=(2,))
    h = tg.tanh(shared @ tg.tanh(shared @ x))
    program = tg.compile(tg.sum(h), wrt=[shared])
    assert list(program.params) == ["W"]
    tg.testing.check_grads(program, {"W": np.array([[0.5, -0.2], [0.1, 0.3]])}, {"x": np.array([1.0, -2.0])})


def test_copies_of_a_model_keep_which_leaves_are_one_and_which_are_two():
    """Pickle and deepcopy rebuild nodes: a leaf used twice stays one leaf,
    two leaves stay two (both named "w" here, so compiling the copy still
    refuses them), and constants and other nodes stay structural."""
    import copy
    import pickle
    first, second = tg.param("w", shape=(2,)), tg.param("w", shape=(2,))
    model = {"twice": tg.sum(first * first), "pair": (first, second), "scaled": tg.tanh(first) * 2.0}
    for duplicate in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        twice = duplicate["twice"]
        assert twice.inputs[0].inputs[0] == twice.inputs[0].inputs[1] == duplicate["pair"][0] == first
        assert duplicate["pair"][1] == second != first
        assert duplicate["scaled"] == model["scaled"]
        tg.compile(twice, wrt=[duplicate["pair"][0]])
        with pytest.raises(tg.GraphError, match="declared twice"):
            tg.compile(tg.sum(duplicate["pair"][0] + duplicate["pair"][1]))
    assert tg.const(2.0) == tg.const(2.0)


# Issue 10, item 4: every gradient and new parameter keeps its parameter's dtype.

def _mixed_program():
    w = tg.param("w", shape=(3,), dtype="float32")
    b = tg.param("b", dtype="float32")
    x = tg.input("x", shape=(3,))
    return tg.compile(tg.square(tg.sum(w * x) + b - 1.0), wrt=[w, b])


def test_a_float32_parameter_times_a_float64_input_keeps_float32():
    """A float32 ``w`` times a float64 ``x`` gave a float64 gradient, pure
    ``sgd`` returned float64 parameters and a 0-d float32 one as an
    ``np.float32`` scalar, so saving them and loading with
    ``expected=prog`` failed. The promotion is now a ``cast`` in the dump,
    and its VJP casts the gradient back."""
    program = _mixed_program()
    params = {"w": np.array([0.5, -1.0, 2.0], dtype="float32"), "b": np.array(0.25, dtype="float32")}
    inputs = {"x": np.array([1.0, 2.0, 3.0])}
    value, grads = program.value_and_grad(params, inputs)
    residual = float(np.sum(params["w"].astype(float) * inputs["x"]) + 0.25 - 1.0)
    assert value == pytest.approx(residual ** 2, rel=1e-6)
    for name in ("w", "b"):
        assert type(grads[name]) is np.ndarray and grads[name].dtype == np.float32
    np.testing.assert_allclose(grads["w"], 2 * residual * inputs["x"], rtol=1e-6)
    dump = program.dump()
    assert "= cast s" in dump and "{dtype=float64}" in dump and "{dtype=float32}" in dump
    step = tg.sgd(program, 0.01)
    new, _ = step(params, inputs)
    for name in ("w", "b"):
        assert type(new[name]) is np.ndarray and new[name].dtype == np.float32 and new[name].shape == params[name].shape
    donated = {name: array.copy() for name, array in new.items()}
    for _ in range(3):  # a 0-d np.float32 used to be refused by the next donated step
        donated, _ = tg.sgd(program, 0.01, donate=True)(donated, inputs)
    assert donated["b"].dtype == np.float32 and donated["b"].shape == ()


def test_saved_float32_parameters_load_against_their_program(tmp_path):
    program = _mixed_program()
    params = {"w": np.ones(3, dtype="float32"), "b": np.array(0.0, dtype="float32")}
    new, _ = tg.sgd(program, 0.01)(params, {"x": np.ones(3)})
    path = tmp_path / "params.npz"
    tg.save_params(path, new)
    loaded, _ = tg.load_params(path, expected=program)
    assert {name: array.dtype for name, array in loaded.items()} == {"w": np.float32, "b": np.float32}


def test_float16_stays_float16():
    """float16 drifted to float32: ``tg.const`` (the gradient's seed among
    others) turned float16 into float32."""
    h = tg.param("h", shape=(2,), dtype="float16")
    program = tg.compile(tg.sum(h * h) * 0.5, wrt=[h])
    value, grads = program.value_and_grad({"h": np.array([1.0, -2.0], dtype="float16")})
    assert value == 2.5 and grads["h"].dtype == np.float16
    np.testing.assert_array_equal(grads["h"], np.array([1.0, -2.0], dtype="float16"))
    assert tg.const(np.float16(1.5)).dtype == "float16"
    new, _ = tg.sgd(program, 0.5)({"h": np.array([1.0, -2.0], dtype="float16")}, {})
    assert new["h"].dtype == np.float16


def test_a_vjp_rule_that_computes_in_another_dtype_gives_the_operand_its_own():
    """The differentiation pass casts a cotangent to its operand's dtype
    (a user's rule may build float64 constants for a float32 operand)."""
    from tapegraph.ops import Arg, Op, Sample, register_op
    from tapegraph.expr import const

    def _double_kernel(x, out):
        np.multiply(x, 2.0, out=out)

    double = register_op(Op(
        name="double_in_float64_for_tests", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype),
        kernel=_double_kernel, vjp=lambda g, ans, x: (tg.cast(g, "float64") * const(np.full(x.shape, 2.0)),),
        samples=[Sample([Arg((2,))])], doc="2 x, with a VJP computed in float64."))
    w = tg.param("w", shape=(2,), dtype="float32")
    program = tg.compile(tg.sum(double(w)), wrt=[w])
    _, grads = program.value_and_grad({"w": np.ones(2, dtype="float32")})
    assert grads["w"].dtype == np.float32
    np.testing.assert_array_equal(grads["w"], [2.0, 2.0])


def test_cast_refuses_what_is_not_a_float_dtype():
    w = tg.param("w", shape=(2,), dtype="float32")
    with pytest.raises(tg.ShapeError, match=r"cast\(w: f32\[2\]\) at test_regressions.py:\d+: dtype int64 is not floating"):
        tg.cast(w, "int64")
    with pytest.raises(tg.ShapeError, match=r"dtype 'float63' is not a numpy dtype"):
        tg.cast(w, "float63")
    labels = tg.input("labels", shape=(2,), dtype="int64")
    with pytest.raises(tg.ShapeError, match=r"integer dtype int64"):
        tg.cast(labels, "float32")
    assert tg.cast(w, "float32") is w  # a cast to its own dtype is the value


# Issue 10, item 7: constants that a fill can express are never materialised at compile time.

HUGE = (10**7, 10**7)  # 800 TB of float64: more than any address space holds


def test_the_gradient_of_a_huge_parameter_compiles_and_says_what_cannot_be_allocated():
    """``tg.compile(tg.sum(H), wrt=[H])`` raised numpy's MemoryError from
    constant folding: the gradient, all ones, was materialised. It is now
    a fill (one number); the call that would need the whole array raises
    ``AllocationError`` naming the buffer, what it holds and its size."""
    H = tg.param("H", shape=HUGE)
    unused = tg.param("unused", shape=HUGE)
    program = tg.compile(tg.sum(H), wrt=[H, unused])
    ones, zeros = program.gradients
    assert ones.value.fill == 1.0 and zeros.value.fill == 0.0
    assert not any(ones.value.array.strides) and ones.value.array.base.nbytes == 8
    assert "f64[10000000,10000000] (min 1, max 1)" in program.dump()
    with pytest.raises(tg.AllocationError, match=r"^buffer s\d+ \(for %\d+ param H\), f64\[10000000,10000000\], "
                                                 r"needs 727\.6 TiB, which cannot be allocated \(not enough memory\)$") as caught:
        program.value_and_grad({"H": np.broadcast_to(1.0, HUGE), "unused": np.broadcast_to(1.0, HUGE)})
    assert isinstance(caught.value, MemoryError)


def test_folding_keeps_fills_as_fills_and_computes_them_right():
    fill = tg.const(np.full((3, 4), 2.0))
    vector = tg.const(np.full(4, 0.5, dtype="float32"))
    cases = {
        "sum": (tg.sum(fill, axis=0), np.full(4, 6.0)),
        "mean": (tg.mean(fill), np.array(2.0)),
        "sum_squares": (tg.sum_squares(fill), np.array(48.0)),
        "matmul": (tg.matmul(fill, tg.cast(vector, "float64")), np.full(3, 4.0)),
        "transpose": (tg.transpose(fill) * 3.0, np.full((4, 3), 6.0)),
        "expand": (tg.ops.expand(tg.const(1.0), (2, 5), (0, 1), keepdims=False, mean=True), np.full((2, 5), 0.1)),
        "sum_to": (tg.ops.sum_to(fill, (4,)), np.full(4, 6.0)),
        "cast": (tg.cast(vector, "float64") + 1.0, np.full(4, 1.5)),
    }
    for what, (node, expected) in cases.items():
        assert node.op is tg.expr.CONST and node.value.fill is not None, what
        np.testing.assert_allclose(node.value.array, expected, rtol=1e-15, err_msg=what)
        assert node.dtype == expected.dtype.name, what
    mixed = tg.const(np.arange(4.0)) * fill  # not a fill: computed as before
    assert mixed.value.fill is None
    np.testing.assert_array_equal(mixed.value.array, np.tile(np.arange(4.0) * 2.0, (3, 1)))
    assert tg.const(np.array([0.0, -0.0])).value.fill is None  # a sign is data
    assert tg.const(np.full(3, np.nan)).value.fill is None


def test_a_constant_is_stored_once_and_its_key_copies_nothing():
    """A 4000x4000 constant was kept twice: the array, and its bytes in
    the key it is compared by. The key is now a digest."""
    import tracemalloc
    data = np.random.default_rng(0).standard_normal((500, 500))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        node = tg.const(data)
        hash(node)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 1.5 * data.nbytes
    assert max(len(item) for item in node.value._key if isinstance(item, bytes)) <= 16
    changed = data.copy()
    changed[123, 45] += 1e-12
    assert tg.const(data) == node and tg.const(changed) != node


def test_a_folded_constant_too_large_to_hold_names_the_node():
    """Folding a constant that is not a fill into a huge result raised a
    bare MemoryError (or numpy's "array is too big" ValueError)."""
    from tapegraph.ops import broadcast_to
    with pytest.raises(tg.AllocationError, match=r"^broadcast_to\(f64\[3\]\) at test_regressions.py:\d+, folding "
                                                 r"constants: the result of broadcast_to, f64\[10000000,10000000,3\]"):
        broadcast_to(tg.const(np.arange(3.0)), HUGE + (3,))
    with pytest.raises(tg.AllocationError, match=r"f64\[10000000000,10000000000,3\], needs .* cannot be allocated "
                                                 r"\(larger than the largest array numpy can make\)$"):
        broadcast_to(tg.const(np.arange(3.0)), (10**10, 10**10, 3))
