"""Second-order checks of every registered op: the gradient of its gradient.

For each sample of each op, with ``J = sum(op(*x) * U)`` for a random
upstream ``U``, the gradient ``dJ/dx`` is itself an expression (the op's
VJP rule, built from ops); ``K = sum(tanh(dJ/dx) * W)`` for a random ``W``
is then differentiated again, and ``dK/dx`` (the VJP rules of the VJP
rules' ops: a Hessian-vector product) is checked against central
differences of ``K``. An op whose VJP gives no gradient (piecewise
constant ops, such as ``sign``) or a gradient that does not depend on its
inputs (linear ops) is still checked: the second derivative is then 0.
"""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.expr import PARAM
from tapegraph.compile.graph import post_order
from tapegraph.ops import REGISTRY
from tapegraph.testing import build_node, check_grads

from conftest import draw

CASES = [(name, op, index, sample) for name, op in REGISTRY.items() for index, sample in enumerate(op.samples)]


def _second_order_program(op, sample, arrays, rng):
    nodes, params, inputs = [], {}, {}
    for position, array in enumerate(arrays):
        name = f"a{position}"
        if array.dtype.kind == "f":
            nodes.append(tg.param(name, shape=array.shape, dtype=array.dtype))
            params[name] = array
        else:
            nodes.append(tg.input(name, shape=array.shape, dtype=array.dtype))
            inputs[name] = array
    out = build_node(op, nodes, sample.static)
    first = tg.sum(out * tg.const(rng.standard_normal(out.shape)))
    wrt = [node for node in nodes if node.op is PARAM]
    if not wrt:
        return None
    gradients = tg.grad(first, wrt)
    second = None
    for node, gradient in zip(wrt, gradients):
        # tanh makes the objective non-linear in the gradient, so that a
        # wrong constant factor in a second derivative cannot cancel out
        term = tg.sum(tg.tanh(gradient) * tg.const(rng.uniform(-1.0, 1.0, size=node.shape)))
        second = term if second is None else second + term
    used = [node for node in post_order([second]) if node.op is PARAM]
    program = tg.compile(second, wrt=wrt if used else [])
    # a label the second derivative no longer reads is not fed
    return program, params, {name: array for name, array in inputs.items() if name in program.inputs}


@pytest.mark.parametrize("name, op, index, sample", CASES, ids=[f"{name}-{index}" for name, _, index, _ in CASES])
def test_gradient_of_gradient_matches_central_differences(name, op, index, sample, rng):
    arrays = [draw(arg, rng) for arg in sample.args]
    if any(array.dtype == np.float32 for array in arrays) or sample.static.get("dtype") == "float32":
        pytest.skip("float32 rounding is too coarse for central differences of a gradient")
    built = _second_order_program(op, sample, arrays, rng)
    if built is None:
        pytest.skip("no floating-point operand to differentiate")
    program, params, inputs = built
    if not program.wrt:
        return  # the gradient is constant: nothing of second order to check
    errors = check_grads(program, params, inputs, rtol=1e-5)
    assert all(error <= 1e-5 for error in errors.values()), errors
