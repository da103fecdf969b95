"""The algebraic simplification stage (compile/simplify.py)."""

import numpy as np

import tapegraph as tg
from tapegraph.compile.lower import lower
from tapegraph.compile.simplify import simplify
from tapegraph.ops.elementwise import ADD, MUL, SUB


def _ridge(d=5, l2_reg=0.5):
    x = tg.input("x", shape=(d,))
    y = tg.input("y")
    w = tg.param("w", shape=(d,))
    b = tg.param("b")
    loss = tg.squared_l2_distance(tg.vector_scalar_affine(x, w, b), y) + tg.l2_norm_penalty(w, l2_reg=l2_reg)
    return tg.compile(loss, wrt=[w, b]), w


def test_a_decayed_update_takes_two_array_operations_and_gives_the_same_step():
    program, _ = _ridge()
    step = tg.sgd(program, 0.1)
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=5), "b": np.array(0.3)}
    inputs = {"x": rng.normal(size=5), "y": np.float64(1.5)}
    new, value = step(params, inputs)
    expected_value, grads = program.value_and_grad(params, inputs)
    assert value == expected_value
    np.testing.assert_allclose(new["w"], params["w"] - 0.1 * grads["w"], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(new["b"], params["b"] - 0.1 * grads["b"], rtol=1e-14, atol=1e-15)
    vector_ops = [instruction.op.name for instruction in step.tape().instructions
                  if instruction.shape == (5,)]
    # (1 - 2 eta l2) w, (2 eta r) x, their difference: no add of the two gradient terms
    assert vector_ops == ["mul", "mul", "sub"]


def test_a_sum_used_elsewhere_is_left_alone():
    program, w = _ridge(l2_reg=0.25)  # the penalty's gradient is 0.5 w (1.0 w would be w itself)
    gradient = tg.grad(program.objective, [w])[0]
    assert gradient.op is ADD
    update = SUB(w, gradient)
    roots = [("new w", update, "update"), ("grad w", gradient, "reverse")]
    assert simplify(roots) == roots  # the sum is a result: rewriting would compute it and more
    rewritten = simplify([("new w", update, "update"), (None, gradient, "reverse")])
    assert len(rewritten) == 1  # the anchoring root of the sum is dropped with it
    (_, node, _), = rewritten
    assert node.op is SUB and node.inputs[0].op is MUL
    tape = lower(rewritten, {})
    assert [instruction.op.name for instruction in tape.instructions].count("add") < \
        [instruction.op.name for instruction in lower(roots, {}).instructions].count("add")
