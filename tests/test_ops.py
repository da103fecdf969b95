"""Registry-driven checks: every registered op and composite, on its samples.

An op cannot be registered without samples (``Op`` refuses), and every
sample of every op is collected here, so a new op is gradient-checked
without anyone having to remember to add a test.
"""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.ops import COMPOSITES, REGISTRY, REQUIRED, Arg, Op, Sample
from tapegraph.testing import build_node, check_op
from tapegraph.compile.graph import post_order
from tapegraph.expr import PARAM

from conftest import draw

CASES = [(name, op, index, sample) for name, op in {**REGISTRY, **COMPOSITES}.items()
         for index, sample in enumerate(op.samples)]
BATCHED = [case for case in CASES if any(arg.batch for arg in case[3].args)]


def _ids(cases):
    return [f"{name}-{index}" for name, _, index, _ in cases]


def test_registry_holds_the_ops_the_design_names():
    primitives = {"add", "sub", "mul", "div", "neg", "exp", "log", "tanh", "square", "relu", "sum", "mean",
                  "matmul", "reshape", "transpose", "softmax", "log_softmax", "cross_entropy", "sum_squares",
                  "sigmoid"}
    composites = {"vector_scalar_affine", "squared_l2_distance", "l2_norm_penalty", "affine", "nll", "dot"}
    assert primitives <= set(REGISTRY)
    assert composites <= set(COMPOSITES)
    for name in primitives | composites:
        assert callable(getattr(tg, name))


def test_every_op_declares_samples_maths_and_a_batched_case_where_it_can():
    for name, op in REGISTRY.items():
        assert op.samples, name
        assert op.doc, f"op {name} has no doc string of its maths"
        assert op.arity == len(op.samples[0].args), name


#: The op functions users had at top level before they were generated: each must stay.
TOP_LEVEL = {"add", "sub", "mul", "div", "neg", "exp", "log", "tanh", "square", "sigmoid", "relu", "sum", "mean",
             "sum_squares", "matmul", "dot", "reshape", "transpose", "softmax", "log_softmax", "nll", "cross_entropy",
             "vector_scalar_affine", "squared_l2_distance", "l2_norm_penalty", "affine"}
#: And those reachable in tapegraph.ops only.
INTERNAL = {"expand", "sum_to", "pick", "unpick", "softmax_minus_onehot", "index", "unindex", "gather",
            "scatter_add", "concat", "contract", "softmax_jvp", "tie_share", "prod_others"}


def test_the_op_functions_are_exported_where_users_had_them():
    public = {name for name in tg.__all__ if name in REGISTRY or name in COMPOSITES}
    assert TOP_LEVEL <= public
    for name in TOP_LEVEL | INTERNAL:
        assert callable(getattr(tg.ops, name)), name
    for name in INTERNAL:
        assert not hasattr(tg, name), f"internal op {name} leaked to top level"
    for name, op in REGISTRY.items():
        assert getattr(tg.ops, name) is op.function
        assert (getattr(tg, name, None) is op.function) == op.public


def test_each_generated_function_has_the_records_signature_and_docstring():
    assert str(inspect.signature(tg.sum)) == "(x, axis=None, keepdims=False, *, name=None)"
    assert str(inspect.signature(tg.matmul)) == "(a, b, transpose_a=False, transpose_b=False, *, name=None)"
    assert str(inspect.signature(tg.ops.unpick)) == "(g, index, depth, *, name=None)"
    for name, op in REGISTRY.items():
        parameters = inspect.signature(op.function).parameters
        assert list(parameters) == [*op.operands, *op.attributes, "name"], name
        for key, default in op.attributes.items():
            expected = inspect.Parameter.empty if default is REQUIRED else default
            assert parameters[key].default == expected, (name, key)
        assert parameters["name"].kind is inspect.Parameter.KEYWORD_ONLY
        assert op.function.__name__ == name and op.function.__doc__ == op.doc


def test_the_generated_functions_keep_the_wrappers_behaviour():
    x = tg.input("x", shape=("batch", 3))
    assert tg.sum(x, 1) == tg.sum(x, axis=[-1]) == tg.sum(x, axis=(1,), keepdims=0)  # attributes normalised
    total = tg.sum(x)
    assert tg.sum(total, axis=()) is total and tg.mean(total, axis=None) is total  # no axis to reduce
    assert x + 0 is x and 1 * x is x and tg.reshape(x, ("batch", 3)) is x
    assert tg.transpose(tg.input("m", shape=(2, 3))).shape == (3, 2)
    assert tg.reshape(tg.input("v", shape=(6,)), (3, -1)).shape == (3, 2)
    assert tg.sum_squares(tg.param("s")).op is REGISTRY["square"]
    assert tg.ops.sum_to(x, ("batch", 3)) is x and tg.ops.broadcast_to(x, ("batch", 3)) is x
    assert tg.tanh(x, name="h").name == "h"
    with pytest.raises(tg.ShapeError, match=r"sum\(x: f64\[batch,3\]\) at test_ops.py:\d+: axis 2 is out of range"):
        tg.sum(x, axis=2)
    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        tg.tanh(x, x)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'depth'"):
        tg.ops.unpick(x, tg.input("y", shape=("batch",), dtype="int64"))


def test_nodes_hold_their_op_record_and_print_its_name():
    w = tg.param("w", shape=(3,))
    node = tg.tanh(w)
    assert node.op is REGISTRY["tanh"] and str(node.op) == "tanh" and node.inputs[0].op is tg.expr.PARAM
    assert repr(node).startswith("<tanh f64[3] at test_ops.py:")
    tape = tg.compile(tg.sum(node), wrt=[w]).tape()
    assert {instruction.op for instruction in tape.instructions} <= set(REGISTRY.values())
    assert pickle.loads(pickle.dumps(node)) == node


def test_an_op_without_samples_cannot_be_declared():
    with pytest.raises(ValueError, match="declares no samples"):
        Op(name="nothing", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype), kernel=np.negative,
           vjp=lambda g, ans, x: (g,), samples=())


#: Ops whose VJP is deliberately not their derivative: no gradient flows
#: through them although their value changes with their operand.
NOT_DIFFERENTIATED = {"stop_gradient"}


def _gives_no_gradient(name: str, node: tg.Node) -> bool:
    """True for an op that passes no gradient: a comparison (boolean result) or stop_gradient."""
    return node.dtype == "bool" or name in NOT_DIFFERENTIATED


def _float_tolerances(sample: Sample) -> tuple[float, float]:
    # float32 (cast's samples) rounds each difference to 1e-7: wider steps, looser bound
    single = any(np.dtype(arg.dtype) == np.float32 for arg in sample.args) or sample.static.get("dtype") == "float32"
    return (1e-2, 1e-3) if single else (1e-5, 1e-6)


@pytest.mark.parametrize("name, op, index, sample", CASES, ids=_ids(CASES))
def test_vjp_matches_central_differences(name, op, index, sample, rng):
    arrays = [draw(arg, rng) for arg in sample.args]
    leaves = [tg.param(f"a{position}", shape=array.shape) if array.dtype.kind == "f"
              else tg.input(f"a{position}", shape=array.shape, dtype=array.dtype) for position, array in enumerate(arrays)]
    node = build_node(op, leaves, sample.static)
    if _gives_no_gradient(name, node):
        # its VJP gives no cotangent at all, and gradients through it are zero
        assert op.cotangents(tg.const(np.ones(node.shape)), node) == (None,) * op.arity
        floats = [leaf for leaf in leaves if leaf.op is PARAM]
        if floats and node.dtype != "bool":
            program = tg.compile(tg.sum(node * 1.0), wrt=floats)
            inputs = {f"a{position}": array for position, array in enumerate(arrays) if array.dtype.kind != "f"}
            params = {f"a{position}": array for position, array in enumerate(arrays) if array.dtype.kind == "f"}
            _, grads = program.value_and_grad(params, inputs)
            assert all(not np.any(gradient) for gradient in grads.values())
        return
    eps, rtol = _float_tolerances(sample)
    errors = check_op(op, arrays, sample.static, eps=eps, rtol=rtol)
    assert all(error < rtol for error in errors.values()), errors


@pytest.mark.parametrize("name, op, index, sample", CASES, ids=_ids(CASES))
def test_gradient_of_the_gradient_matches_central_differences(name, op, index, sample, rng):
    """Second order: the VJP's own expression differentiated again, checked like the first.

    For ``J = sum(op(*a) * U)`` the objective is ``sum_i <dJ/da_i, V_i>``
    (a Hessian-vector product functional) for random ``U`` and ``V``; its
    gradient comes from the VJP rules of the nodes the VJP built.
    """
    arrays = [draw(arg, rng) for arg in sample.args]
    params, leaves = {}, []
    for position, array in enumerate(arrays):
        if array.dtype.kind == "f":
            leaves.append(tg.param(f"a{position}", shape=array.shape, dtype=array.dtype))
            params[f"a{position}"] = array
        else:
            leaves.append(tg.input(f"a{position}", shape=array.shape, dtype=array.dtype))
    node = build_node(op, leaves, sample.static)
    floats = [leaf for leaf in leaves if leaf.op is PARAM]
    if _gives_no_gradient(name, node) or not floats:
        return
    upstream = tg.const(rng.standard_normal(node.shape).astype(node.dtype))
    first = tg.grad(tg.sum(node * upstream), floats)
    directions = [tg.const(rng.standard_normal(leaf.shape).astype(leaf.dtype)) for leaf in floats]
    objective = tg.sum(first[0] * directions[0])
    for gradient, direction in zip(first[1:], directions[1:]):
        objective = objective + tg.sum(gradient * direction)
    program = tg.compile(objective, wrt=floats)
    # a label that the second derivative no longer reads is not fed
    inputs = {f"a{position}": array for position, array in enumerate(arrays)
              if array.dtype.kind != "f" and f"a{position}" in program.inputs}
    eps, rtol = _float_tolerances(sample)
    errors = tg.testing.check_grads(program, params, inputs, eps=eps, rtol=rtol)
    assert all(error < rtol for error in errors.values()), errors


@pytest.mark.parametrize("name, op, index, sample", CASES, ids=_ids(CASES))
def test_forward_values_are_finite_and_shaped_by_the_rule(name, op, index, sample, rng):
    arrays = [draw(arg, rng) for arg in sample.args]
    leaves = [tg.const(array) for array in arrays]
    node = build_node(op, leaves, sample.static)
    # a comparison's booleans count through where
    number = tg.where(node, 1.0, 0.0) if node.dtype == "bool" else node * 1.0
    program = tg.compile(tg.sum(number), outputs={"out": node})
    out = program.run({}, {}, outputs=["out"])["out"]
    assert out.shape == node.shape
    assert np.all(np.isfinite(out))


def _declare_batched(sample: Sample, arrays: list[np.ndarray], symbolic: bool):
    """Arguments with a batch dimension become inputs plus a per-row parameter offset.

    The offset makes the gradient flow through the op's VJP for that
    argument under a (possibly symbolic) batch dimension.
    """
    nodes, params, inputs = [], {}, {}
    for position, (arg, array) in enumerate(zip(sample.args, arrays)):
        name = f"a{position}"
        if arg.batch:
            shape = (("batch",) if symbolic else (array.shape[0],)) + array.shape[1:]
            data = tg.input(name, shape=shape, dtype=array.dtype)
            inputs[name] = array
            if array.dtype.kind == "f":
                offset = tg.param(f"p{position}", shape=array.shape[1:])
                params[f"p{position}"] = np.linspace(-0.3, 0.3, int(np.prod(array.shape[1:]))).reshape(array.shape[1:])
                data = data + offset
            nodes.append(data)
        elif array.dtype.kind == "f":
            nodes.append(tg.param(name, shape=array.shape))
            params[name] = array
        else:
            nodes.append(tg.input(name, shape=array.shape, dtype=array.dtype))
            inputs[name] = array
    return nodes, params, inputs


def _program(op, sample, arrays, symbolic):
    nodes, params, inputs = _declare_batched(sample, arrays, symbolic)
    out = build_node(op, nodes, sample.static)
    if out.dtype == "bool":  # a comparison: as numbers, through where
        out = tg.where(out, 1.0, -1.0)
    weights = tg.const(np.linspace(0.5, 1.5, int(np.prod(out.shape[1:], dtype=int)) or 1).reshape(out.shape[1:]))
    objective = tg.sum(tg.square(out) * weights)
    # the parameter nodes themselves: a re-declared tg.param would be another parameter
    wrt = [node for node in post_order([objective]) if node.op is PARAM]
    return tg.compile(objective, wrt=wrt), params, inputs


@pytest.mark.parametrize("name, op, index, sample", BATCHED, ids=_ids(BATCHED))
def test_symbolic_batch_agrees_with_fixed_shapes(name, op, index, sample, rng):
    arrays = [draw(arg, rng) for arg in sample.args]
    symbolic, params, inputs = _program(op, sample, arrays, symbolic=True)
    fixed, _, _ = _program(op, sample, arrays, symbolic=False)
    value, grads = symbolic.value_and_grad(params, inputs)
    fixed_value, fixed_grads = fixed.value_and_grad(params, inputs)
    assert value == pytest.approx(fixed_value, rel=1e-12, abs=1e-12)
    for key in grads:
        np.testing.assert_allclose(grads[key], fixed_grads[key], rtol=1e-12, atol=1e-12)
    if name not in NOT_DIFFERENTIATED:
        tg.testing.check_grads(symbolic, params, inputs)

    # a second batch size is a second specialisation of the same program
    half = {key: value[:2] for key, value in inputs.items()}
    symbolic.value_and_grad(params, half)
    sizes = sorted(entry[1]["batch"] for entry in symbolic.specializations() if entry[0] == "value_and_grad")
    assert sizes == [2, arrays[next(i for i, a in enumerate(sample.args) if a.batch)].shape[0]]


def test_large_logits_give_finite_values_and_gradients():
    logits = tg.param("z", shape=(3,))
    label = tg.input("y", shape=(), dtype="int64")
    for objective in (tg.cross_entropy(logits, label), tg.sum(tg.log_softmax(logits)), tg.nll(tg.softmax(logits), label)):
        program = tg.compile(objective, wrt=[logits])
        inputs = {"y": np.array(2)} if program.inputs else {}
        value, grads = program.value_and_grad({"z": np.array([1000.0, -1000.0, 999.0])}, inputs)
        assert np.isfinite(value) and np.all(np.isfinite(grads["z"]))
    value, grads = tg.compile(tg.cross_entropy(logits, label), wrt=[logits]).value_and_grad(
        {"z": np.array([1000.0, -1000.0, 999.0])}, {"y": np.array(2)})
    assert value == pytest.approx(np.log1p(np.exp(-1.0)) + 1.0, rel=1e-12)


def test_sample_arguments_are_declared_consistently():
    for name, op, index, sample in CASES:
        for arg in sample.args:
            assert isinstance(arg, Arg)
            assert not (arg.batch and len(arg.shape) == 0), f"{name}-{index}: a scalar cannot carry a batch dimension"


def test_comparing_an_op_record_with_a_name_is_an_error_not_false():
    # node.op used to be a string: an old comparison must not silently give False
    node = tg.tanh(tg.param("w", shape=(2,)))
    with pytest.raises(TypeError, match=r"compared with the string 'tanh': node.op holds a record"):
        node.op == "tanh"  # noqa: B015
    with pytest.raises(TypeError, match="node.op is PARAM"):
        node.inputs[0].op == "param"  # noqa: B015
    assert node.op == REGISTRY["tanh"] and node.op != REGISTRY["exp"] and node.op.name == "tanh"


def _by_arrays(op, operands, axis, shape):
    """``op``'s kernel on ``operands``, a batch of two rows: the array path."""
    from tapegraph.ops.registry import allocate_workspace
    shapes = [np.shape(operand) for operand in operands]
    derived = op.specialize(shapes, shape, axis=axis)
    assert derived == {"floats": False}
    out = np.empty(shape)
    op.kernel(*operands, out, axis=axis, **derived, **allocate_workspace(op.workspace(shapes, shape, "float64", axis=axis)))
    return out


def _by_floats(op, operands, axis, shape):
    """``op``'s kernel on ``operands``, one row: the Python-float path."""
    shapes = [np.shape(operand) for operand in operands]
    assert op.specialize(shapes, shape, axis=axis) == {"floats": True}
    assert op.workspace(shapes, shape, "float64", axis=axis) == {}
    out = np.empty(shape)
    op.kernel(*operands, out, axis=axis, floats=True)
    return out


@pytest.mark.parametrize("classes", [1, 3, 16])
def test_one_row_label_kernels_in_floats_match_their_array_form(classes):
    """The Python-float path of cross_entropy and softmax_minus_onehot (one
    row of few classes: one example, or a batch of one) computes what the
    array path computes on a batch of two rows, the scale given as a number
    to one and as a 0-d array to the other."""
    from tapegraph.ops.softmax import CROSS_ENTROPY, FEW_CLASSES, SOFTMAX_MINUS_ONEHOT, _label_specialize
    assert _label_specialize([(FEW_CLASSES + 1,), ()], ()) == {"floats": False}
    assert _label_specialize([(1, 3), (1,)], (1,), axis=1) == {"floats": True}
    assert _label_specialize([(2, 3), (2,)], (2,), axis=1) == {"floats": False}
    assert _label_specialize([(3, 1), (1,)], (1,), axis=0) == {"floats": True}  # the classes down a column
    rng = np.random.default_rng(classes)
    z = rng.normal(size=classes) * 30.0
    for label in range(classes):
        label = np.array(label)
        two = np.stack([z, rng.normal(size=classes)]), np.array([label, 0])
        expected = _by_arrays(CROSS_ENTROPY, two, 1, (2,))[0]
        np.testing.assert_allclose(_by_floats(CROSS_ENTROPY, (z, label), 0, ()), expected, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(_by_floats(CROSS_ENTROPY, (z[None], label[None]), 1, (1,))[0], expected,
                                   rtol=1e-14, atol=1e-14)
        expected = _by_arrays(SOFTMAX_MINUS_ONEHOT, (*two, np.array(0.5)), 1, (2, classes))[0]
        np.testing.assert_allclose(_by_floats(SOFTMAX_MINUS_ONEHOT, (z, label, 0.5), 0, (classes,)), expected,
                                   rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(_by_floats(SOFTMAX_MINUS_ONEHOT, (z[None], label[None], 0.5), 1, (1, classes))[0],
                                   expected, rtol=1e-14, atol=1e-15)
    for bad in (-1, classes):
        with pytest.raises(IndexError, match=rf"label {bad} is outside 0\.\.{classes - 1}"):
            _by_floats(CROSS_ENTROPY, (z, np.array(bad)), 0, ())
        with pytest.raises(IndexError, match=rf"label {bad} is outside 0\.\.{classes - 1}"):
            _by_floats(SOFTMAX_MINUS_ONEHOT, (z[None], np.array([bad]), 1.0), 1, (1, classes))


@pytest.mark.parametrize("op_name", ["softmax", "log_softmax", "softmax_jvp"])
@pytest.mark.parametrize("classes", [1, 3, 16])
def test_one_row_softmax_kernels_in_floats_match_their_array_form(op_name, classes):
    """softmax, log_softmax and softmax_jvp on one row of few entries (a
    vector, or a batch of one) run in Python floats (no np.errstate per
    call); they compute what the array path computes on a batch of two
    rows, ties and a near one-hot row included."""
    from tapegraph.ops import REGISTRY
    op = REGISTRY[op_name]
    rng = np.random.default_rng(classes)
    for z in [rng.normal(size=classes) * 30.0, np.full(classes, 2.0), np.arange(classes) * 40.0]:
        operands = [z, rng.normal(size=classes)] if op_name == "softmax_jvp" else [z]
        two = [np.stack([operand, rng.normal(size=classes)]) for operand in operands]
        expected = _by_arrays(op, two, (1,), (2, classes))[0]
        np.testing.assert_allclose(_by_floats(op, operands, (0,), (classes,)), expected, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(_by_floats(op, [operand[None] for operand in operands], (1,), (1, classes))[0],
                                   expected, rtol=1e-14, atol=1e-15)
