"""Primitive ops declared in users' code: registered, checked, compiled, printed, pickled.

The op here is a softsign with a scale, ``x / (scale + |x|)``, declared the
way docs/custom_ops.md tells users to. It lives in ``USER_OPS``, never in
the built-in ``REGISTRY`` that the registry-driven tests walk.
"""

from __future__ import annotations

import inspect
import json
import pickle
import textwrap

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.inspect.export import dumps, tape_to_dict
from tapegraph.ops import FUNCTIONS, REGISTRY, USER_OPS, register_op

from conftest import draw


def _softsign_rule(x, scale):
    if not x.dtype.startswith("float"):
        raise ValueError(f"needs floating-point data, got {x.dtype}")
    return x.shape, x.dtype


def softsign_for_tests_kernel(x, out, scale):
    # out may not be x (the op is not declared elementwise), so x survives
    np.abs(x, out=out)
    np.add(out, scale, out=out)
    np.divide(x, out, out=out)


def _softsign_vjp(g, ans, x, scale):
    # d/dx x / (s + |x|) = s / (s + |x|)^2, with |x| = x * sign(x)
    return (tg.div(tg.mul(g, scale), tg.square(tg.add(scale, tg.mul(x, tg.ops.sign(x))))),)


def _declaration() -> tg.Op:
    return tg.Op(
        name="softsign_for_tests", operands=("x",), attributes={"scale": 1.0},
        normalize=lambda x, scale: {"scale": float(scale)},
        shape_rule=_softsign_rule, kernel=softsign_for_tests_kernel, vjp=_softsign_vjp,
        samples=[tg.Sample([tg.Arg((5,))]), tg.Sample([tg.Arg((4, 3), batch=True)], {"scale": 2.0})],
        doc="``x / (scale + |x|)``, elementwise.",
    )


SOFTSIGN = tg.register_op(_declaration())


def _expected(x, scale=1.0):
    return x / (scale + np.abs(x))


def test_a_user_op_is_registered_apart_from_the_built_in_ops():
    assert USER_OPS["softsign_for_tests"] is SOFTSIGN
    assert "softsign_for_tests" not in REGISTRY and "softsign_for_tests" not in FUNCTIONS
    assert not hasattr(tg, "softsign_for_tests")
    assert tg.ops.lookup_op("softsign_for_tests") is SOFTSIGN


def test_its_function_has_a_real_signature_and_the_records_docstring():
    assert str(inspect.signature(SOFTSIGN.function)) == "(x, scale=1.0, *, name=None)"
    assert SOFTSIGN.function.__doc__ == "``x / (scale + |x|)``, elementwise."
    x = tg.input("x", shape=(3,))
    assert SOFTSIGN(x, 2) == SOFTSIGN.function(x, scale=2.0)  # normalised: the same node
    assert SOFTSIGN(x).attr("scale") == 1.0
    with pytest.raises(TypeError, match="unexpected keyword argument 'scal'"):
        SOFTSIGN(x, scal=2.0)


@pytest.mark.parametrize("index", range(2))
def test_it_passes_check_op_on_its_samples(index, rng):
    sample = SOFTSIGN.samples[index]
    arrays = [draw(arg, rng) for arg in sample.args]
    errors = tg.testing.check_op(SOFTSIGN, arrays, sample.static)
    assert max(errors.values()) < 1e-6


def test_it_runs_in_a_compiled_program_with_its_gradient():
    x = tg.input("x", shape=("batch", 3))
    w = tg.param("w", shape=(3,))
    prediction = SOFTSIGN(x * w, scale=0.5, name="squashed")
    prog = tg.compile(tg.sum(prediction), wrt=[w], outputs={"prediction": prediction})
    data = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    params = {"w": np.array([0.3, -0.7, 1.1])}
    value, grads = prog.value_and_grad(params, {"x": data})
    assert value == pytest.approx(_expected(data * params["w"], 0.5).sum(), rel=1e-12)
    slope = 0.5 / (0.5 + np.abs(data * params["w"])) ** 2
    np.testing.assert_allclose(grads["w"], (slope * data).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(prog.run(params, {"x": data})["prediction"], _expected(data * params["w"], 0.5))
    tg.testing.check_grads(prog, params, {"x": data})


def test_its_gradient_can_be_differentiated_again():
    # the VJP is built from ops, so the gradient's gradient exists: a Hessian-vector product
    x = tg.param("x", shape=(4,))
    (gradient,) = tg.grad(tg.sum(SOFTSIGN(x)), [x])
    direction = tg.const(np.array([1.0, -0.5, 0.25, 2.0]))
    prog = tg.compile(tg.sum(gradient * direction), wrt=[x])
    point = np.array([0.7, -1.3, 0.2, 2.5])
    _, grads = prog.value_and_grad({"x": point})
    # d^2/dx^2 x / (1 + |x|) = -2 sign(x) / (1 + |x|)^3
    np.testing.assert_allclose(grads["x"], -2 * np.sign(point) / (1 + np.abs(point)) ** 3 * direction.value.array,
                               rtol=1e-12)
    tg.testing.check_grads(prog, {"x": point})


def test_dump_export_draw_and_source_show_it(tmp_path):
    x = tg.param("x", shape=(3,))
    prog = tg.compile(tg.sum(SOFTSIGN(x, scale=2.0)), wrt=[x])
    assert "= softsign_for_tests s0 {scale=2.0}" in prog.dump()
    exported = json.loads(dumps(tape_to_dict(prog.tape())))
    assert "softsign_for_tests" in [item["op"] for item in exported["instructions"]]
    tg.draw_graph(prog, tmp_path / "graph.png")
    tg.draw_tape(prog, tmp_path / "tape.png")
    assert (tmp_path / "graph.png").stat().st_size > 0 and (tmp_path / "tape.png").stat().st_size > 0

    # the printed module carries the user's kernel and runs on its own
    source = prog.source(name="step")
    assert "def softsign_for_tests_kernel(x, out, scale):" in source
    namespace: dict = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    point = np.array([0.5, -1.0, 3.0])
    result = namespace["step"](point)
    value, grads = prog.value_and_grad({"x": point})
    assert result["objective"] == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(result["grad x"], grads["x"], rtol=1e-12)


def test_nodes_and_tapes_holding_ops_pickle_by_registered_name():
    x = tg.param("x", shape=(3,))
    node = tg.sum(tg.tanh(SOFTSIGN(x, scale=2.0)))
    copy = pickle.loads(pickle.dumps(node))
    assert copy == node and hash(copy) == hash(node)
    squashed = copy.inputs[0].inputs[0]
    assert copy.op is REGISTRY["sum"] and squashed.op is SOFTSIGN and squashed.inputs[0].op is tg.expr.PARAM
    tape = tg.compile(node, wrt=[x]).tape()
    assert [instruction.op for instruction in pickle.loads(pickle.dumps(tape)).instructions] == \
        [instruction.op for instruction in tape.instructions]


def test_an_unregistered_op_cannot_be_pickled_nor_unpickled_without_its_declaration(monkeypatch):
    loose = _declaration()  # an equal declaration, but never registered: not the registered record
    with pytest.raises(tg.OpError, match="cannot pickle op 'softsign_for_tests': it is not registered"):
        pickle.dumps(loose(tg.param("x", shape=(2,))))
    data = pickle.dumps(SOFTSIGN(tg.param("x", shape=(2,))))
    monkeypatch.delitem(USER_OPS, "softsign_for_tests")  # as in a process that never declared it
    with pytest.raises(tg.OpError, match="no op named 'softsign_for_tests' is registered"):
        pickle.loads(data)


_CELL = textwrap.dedent("""
    import numpy as np
    import tapegraph as tg

    def cell_op_kernel(x, out):
        np.multiply(x, {factor}, out=out)

    CELL_OP = tg.register_op(tg.Op(
        name="cell_op", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype), kernel=cell_op_kernel,
        vjp=lambda g, ans, x: (g * {factor},), samples=[tg.Sample([tg.Arg((3,))])], doc="x times {factor}"),
        replace={replace})
""")


def _run_cell(factor: float, replace: bool = False) -> tg.Op:
    namespace: dict = {}
    exec(compile(_CELL.format(factor=factor, replace=replace), "<notebook cell>", "exec"), namespace)
    return namespace["CELL_OP"]


def test_running_the_same_declaration_twice_gives_the_registered_op_and_a_changed_one_is_refused():
    try:
        first = _run_cell(3.0)
        assert _run_cell(3.0) is first  # a notebook cell run again: one op, so nodes from both runs merge
        with pytest.raises(tg.OpError, match="'cell_op' is already registered with a different declaration"):
            _run_cell(4.0)
        replaced = _run_cell(4.0, replace=True)
        assert replaced is not first and USER_OPS["cell_op"] is replaced
        x = tg.param("x", shape=(3,))
        assert tg.compile(tg.sum(replaced(x)), wrt=[x]).value_and_grad({"x": np.ones(3)})[0] == 12.0
        # a node built before the replacement keeps the op it was built with
        assert tg.compile(tg.sum(first(x)), wrt=[x]).value_and_grad({"x": np.ones(3)})[0] == 9.0
    finally:
        USER_OPS.pop("cell_op", None)


def test_a_built_in_name_cannot_be_taken():
    with pytest.raises(tg.OpError, match="'tanh' is taken by a built-in op"):
        register_op(tg.Op(name="tanh", operands=("x",), shape_rule=_softsign_rule, kernel=np.tanh,
                          vjp=lambda g, ans, x: (g,), samples=[tg.Sample([tg.Arg((2,))])]))


def test_malformed_declarations_are_refused_naming_the_problem():
    base = dict(name="bad_op", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype), kernel=np.negative,
                vjp=lambda g, ans, x: (tg.neg(g),), samples=[tg.Sample([tg.Arg((2,))])])
    cases = [
        ({"name": "bad op"}, "op name 'bad op' must be a Python identifier"),
        ({"operands": ("x", "name")}, "parameter name 'name' must be a Python identifier other than 'name'"),
        ({"operands": ("x", "x")}, r"parameter names \['x'\] are given more than once"),
        ({"kernel": lambda x, out: None}, "the kernel must be a numpy ufunc or a function defined with def"),
        ({"attributes": {"a": 1.0, "b": tg.REQUIRED}}, "required attribute 'b' comes after 'a'"),
        ({"samples": [tg.Sample([tg.Arg((2,)), tg.Arg((2,))])]}, r"sample 0 has 2 argument\(s\), but the op takes 1"),
        ({"samples": [tg.Sample([tg.Arg((2,))], {"axis": 0})]}, r"sample 0 gives attributes \['axis'\] that the op does not declare"),
        ({"numbers": ("scale",)}, r"numbers \['scale'\] are not among its operands \('x',\)"),
    ]
    for change, message in cases:
        with pytest.raises(tg.OpError, match=message):
            tg.Op(**{**base, **change})


def test_a_vjp_rule_that_returns_a_bare_node_is_reported_with_the_op():
    op = tg.register_op(tg.Op(
        name="bare_vjp_op", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype), kernel=np.negative,
        vjp=lambda g, ans, x: tg.neg(g), samples=[tg.Sample([tg.Arg((2,))])]))
    x = tg.param("x", shape=(2,))
    with pytest.raises(tg.OpError, match=r"the VJP rule of op 'bare_vjp_op' must return a tuple of 1 node\(s\) or None"):
        tg.grad(tg.sum(op(x)), [x])


def test_a_kernel_named_like_another_ops_kernel_is_refused():
    def softsign_for_tests_kernel(x, out, scale):  # same name, another function
        np.copyto(out, x)

    with pytest.raises(tg.OpError, match="its kernel is named 'softsign_for_tests_kernel' like the kernel of op"):
        register_op(tg.Op(name="another_softsign", operands=("x",), attributes={"scale": 1.0},
                          shape_rule=_softsign_rule, kernel=softsign_for_tests_kernel, vjp=_softsign_vjp,
                          samples=[tg.Sample([tg.Arg((2,))])]))


def test_a_kernel_named_like_a_feed_does_not_shadow_it():
    def w(x, out):  # the kernel's name is also the parameter's
        np.negative(x, out=out)

    op = tg.register_op(tg.Op(name="shadowed_kernel_op", operands=("x",), shape_rule=lambda x: (x.shape, x.dtype),
                              kernel=w, vjp=lambda g, ans, x: (tg.neg(g),), samples=[tg.Sample([tg.Arg((2,))])]))
    param = tg.param("w", shape=(2,))
    prog = tg.compile(tg.sum(op(param)), wrt=[param])
    # the feed's identifier in generated code steps aside for the kernel's name
    value, grads = prog.value_and_grad({"w": np.array([1.0, 2.0])})
    assert value == -3.0
    np.testing.assert_array_equal(grads["w"], [-1.0, -1.0])
    namespace: dict = {}
    exec(prog.source(name="f"), namespace)
    assert namespace["f"](np.array([1.0, 2.0]))["objective"] == -3.0
