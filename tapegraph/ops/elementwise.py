"""Elementwise ops, with numpy broadcasting.

Each kernel is a numpy ufunc (or a one-line wrapper) writing into ``out``;
each VJP reuses the forward result ``ans`` where that is cheaper. Only the
ops whose float64 arithmetic Python does exactly as numpy does get a
``scalar`` form: Python raises on division by zero and ``math.log(-1.0)``,
where numpy gives inf and nan (which the check mode must see).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tapegraph.expr import Node, is_const
from tapegraph.ops.registry import Arg, Op, Sample, apply, as_node, register, result_dtype
from tapegraph.shapes import broadcast


def _broadcast_rule(*nodes: Node) -> tuple[tuple, str]:
    dtype = result_dtype(*nodes)
    return broadcast(*(node.shape for node in nodes)), dtype


def _unary_rule(x: Node) -> tuple[tuple, str]:
    return x.shape, result_dtype(x)


_BINARY_SAMPLES = (
    Sample([Arg((3,)), Arg((3,))]),
    Sample([Arg((4, 3), batch=True), Arg((3,))]),
    Sample([Arg(()), Arg((2, 3))]),
)
_UNARY_SAMPLES = (Sample([Arg((5,))]), Sample([Arg((4, 3), batch=True)]), Sample([Arg(())]))
_POSITIVE_SAMPLES = (
    Sample([Arg((5,), low=0.5, high=3.0)]),
    Sample([Arg((4, 3), low=0.5, high=3.0, batch=True)]),
)


def _relu_kernel(x: np.ndarray, out: np.ndarray) -> None:
    np.maximum(x, 0.0, out=out)


ADD = register(Op(
    name="add", arity=2, shape_rule=_broadcast_rule, kernel=np.add, elementwise=True, scalar="{0} + {1}",
    vjp=lambda g, ans, a, b: (g, g),
    samples=_BINARY_SAMPLES, doc="a + b",
))

SUB = register(Op(
    name="sub", arity=2, shape_rule=_broadcast_rule, kernel=np.subtract, elementwise=True, scalar="{0} - {1}",
    vjp=lambda g, ans, a, b: (g, neg(g)),
    samples=_BINARY_SAMPLES, doc="a - b",
))

MUL = register(Op(
    name="mul", arity=2, shape_rule=_broadcast_rule, kernel=np.multiply, elementwise=True, scalar="{0} * {1}",
    vjp=lambda g, ans, a, b: (mul(g, b), mul(g, a)),
    samples=_BINARY_SAMPLES, doc="a * b (elementwise)",
))

DIV = register(Op(
    name="div", arity=2, shape_rule=_broadcast_rule, kernel=np.divide, elementwise=True,
    # d(a/b)/db = -a/b^2 = -ans/b
    vjp=lambda g, ans, a, b: (div(g, b), neg(div(mul(g, ans), b))),
    samples=(
        Sample([Arg((3,)), Arg((3,), low=0.5, high=2.0)]),
        Sample([Arg((4, 3), batch=True), Arg((3,), low=0.5, high=2.0)]),
        Sample([Arg((2, 3)), Arg((), low=-2.0, high=-0.5)]),
    ),
    doc="a / b",
))

NEG = register(Op(
    name="neg", arity=1, shape_rule=_unary_rule, kernel=np.negative, elementwise=True, scalar="-{0}",
    vjp=lambda g, ans, x: (neg(g),),
    samples=_UNARY_SAMPLES, doc="-x",
))

EXP = register(Op(
    name="exp", arity=1, shape_rule=_unary_rule, kernel=np.exp, elementwise=True,
    vjp=lambda g, ans, x: (mul(g, ans),),
    samples=_UNARY_SAMPLES, doc="e^x; d/dx = e^x, reused from the forward result",
))

LOG = register(Op(
    name="log", arity=1, shape_rule=_unary_rule, kernel=np.log, elementwise=True,
    vjp=lambda g, ans, x: (div(g, x),),
    samples=_POSITIVE_SAMPLES, doc="natural logarithm; d/dx = 1/x",
))

TANH = register(Op(
    name="tanh", arity=1, shape_rule=_unary_rule, kernel=np.tanh, elementwise=True,
    # 1 - tanh^2 from the forward result, as the homework's TanhNode does
    vjp=lambda g, ans, x: (mul(g, sub(1.0, square(ans))),),
    samples=_UNARY_SAMPLES, doc="tanh x; d/dx = 1 - tanh^2 x",
))

SQUARE = register(Op(
    name="square", arity=1, shape_rule=_unary_rule, kernel=np.square, elementwise=True, scalar="{0} * {0}",
    # (g * 2) first: when g is a constant it folds, leaving one multiply
    vjp=lambda g, ans, x: (mul(mul(g, 2.0), x),),
    samples=_UNARY_SAMPLES, doc="x^2; d/dx = 2x",
))

RELU = register(Op(
    name="relu", arity=1, shape_rule=_unary_rule, kernel=_relu_kernel, elementwise=True,
    source="np.maximum({0}, 0.0, out={out})",
    # sign(relu(x)) is the 0/1 mask of x > 0
    vjp=lambda g, ans, x: (mul(g, sign(ans)),),
    samples=(Sample([Arg((7,))]), Sample([Arg((4, 3), batch=True)])),
    doc="max(x, 0); d/dx = 1 where x > 0, else 0",
))

SIGN = register(Op(
    name="sign", arity=1, shape_rule=_unary_rule, kernel=np.sign, elementwise=True,
    vjp=lambda g, ans, x: (None,),
    samples=(Sample([Arg((5,))]),),
    doc="-1, 0 or 1; piecewise constant, so no gradient flows",
))


def _same_type(node: Node, like: Node) -> bool:
    return node.shape == like.shape and node.dtype == like.dtype


def add(a: Any, b: Any, name: str | None = None) -> Node:
    """Elementwise ``a + b`` with broadcasting (also ``a + b`` on nodes)."""
    node = apply(ADD, a, b, name=name)
    if node.is_leaf:  # folded
        return node
    # x + 0 is x: keeps gradient expressions free of no-op instructions
    a, b = node.inputs
    if name is None and is_const(b, 0) and _same_type(a, node):
        return a
    if name is None and is_const(a, 0) and _same_type(b, node):
        return b
    return node


def sub(a: Any, b: Any, name: str | None = None) -> Node:
    """Elementwise ``a - b`` with broadcasting."""
    return apply(SUB, a, b, name=name)


def mul(a: Any, b: Any, name: str | None = None) -> Node:
    """Elementwise ``a * b`` with broadcasting (not a matrix product)."""
    node = apply(MUL, a, b, name=name)
    if node.is_leaf:  # folded
        return node
    # x * 1 is x; the cotangent of the objective starts as the constant 1
    a, b = node.inputs
    if name is None and is_const(b, 1) and _same_type(a, node):
        return a
    if name is None and is_const(a, 1) and _same_type(b, node):
        return b
    return node


def div(a: Any, b: Any, name: str | None = None) -> Node:
    """Elementwise ``a / b`` with broadcasting."""
    return apply(DIV, a, b, name=name)


def neg(x: Any, name: str | None = None) -> Node:
    """``-x``."""
    return apply(NEG, x, name=name)


def exp(x: Any, name: str | None = None) -> Node:
    """Elementwise ``e**x``."""
    return apply(EXP, x, name=name)


def log(x: Any, name: str | None = None) -> Node:
    """Elementwise natural logarithm."""
    return apply(LOG, x, name=name)


def tanh(x: Any, name: str | None = None) -> Node:
    """Elementwise hyperbolic tangent."""
    return apply(TANH, x, name=name)


def square(x: Any, name: str | None = None) -> Node:
    """Elementwise ``x**2``."""
    return apply(SQUARE, x, name=name)


def relu(x: Any, name: str | None = None) -> Node:
    """Elementwise ``max(x, 0)``."""
    return apply(RELU, x, name=name)


def sign(x: Any, name: str | None = None) -> Node:
    """Elementwise sign; its gradient is zero."""
    return apply(SIGN, x, name=name)


def sigmoid(x: Any, name: str | None = None) -> Node:
    """Logistic function ``1 / (1 + e^-x)``.

    Built as ``0.5 * tanh(x / 2) + 0.5``, which is the same function but
    never overflows, so it needs no VJP of its own.
    """
    x = as_node(x)
    node = add(mul(tanh(mul(x, 0.5)), 0.5), 0.5)
    return node.named(name) if name else node
