"""Elementwise ops, with numpy broadcasting.

Each kernel is a numpy ufunc (or a one-line wrapper) writing into ``out``;
each VJP reuses the forward result ``ans`` where that is cheaper. Only the
ops whose float64 arithmetic Python does exactly as numpy does get a
``scalar`` form: Python raises on division by zero and ``math.log(-1.0)``,
where numpy gives inf and nan (which the check mode must see).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tapegraph.expr import Node, is_const
from tapegraph.ops.registry import Arg, Op, Sample, register, require_float, result_dtype
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


def _same_type(node: Node, like: Node) -> bool:
    return node.shape == like.shape and node.dtype == like.dtype


def _drop_identity(identity: float) -> Callable[[Node], Node]:
    """A rewrite that drops an operand equal to the op's identity element
    (``x + 0`` is ``x``, ``x * 1`` is ``x``) when the other has the result's type."""
    def rewrite(node: Node) -> Node:
        a, b = node.inputs
        if is_const(b, identity) and _same_type(a, node):
            return a
        if is_const(a, identity) and _same_type(b, node):
            return b
        return node
    return rewrite


# x + 0 keeps gradient expressions free of no-op instructions; the
# cotangent of the objective starts as the constant 1 (x * 1)
_drop_added_zero = _drop_identity(0.0)
_drop_unit_factor = _drop_identity(1.0)


ADD = register(Op(
    name="add", operands=("a", "b"), shape_rule=_broadcast_rule, kernel=np.add, elementwise=True,
    scalar="{0} + {1}", native="{0} + {1}", rewrite=_drop_added_zero,
    vjp=lambda g, ans, a, b: (g, g),
    samples=_BINARY_SAMPLES, doc="Elementwise ``a + b`` with broadcasting (also ``a + b`` on nodes).",
))

SUB = register(Op(
    name="sub", operands=("a", "b"), shape_rule=_broadcast_rule, kernel=np.subtract, elementwise=True,
    scalar="{0} - {1}", native="{0} - {1}",
    vjp=lambda g, ans, a, b: (g, NEG(g)),
    samples=_BINARY_SAMPLES, doc="Elementwise ``a - b`` with broadcasting.",
))

MUL = register(Op(
    name="mul", operands=("a", "b"), shape_rule=_broadcast_rule, kernel=np.multiply, elementwise=True,
    scalar="{0} * {1}", native="{0} * {1}", rewrite=_drop_unit_factor,
    vjp=lambda g, ans, a, b: (MUL(g, b), MUL(g, a)),
    samples=_BINARY_SAMPLES, doc="Elementwise ``a * b`` with broadcasting (not a matrix product).",
))

DIV = register(Op(
    name="div", operands=("a", "b"), shape_rule=_broadcast_rule, kernel=np.divide, elementwise=True,
    native="{0} / {1}",  # numpy's inf and nan: native code is compiled with numpy's error model
    # d(a/b)/db = -a/b^2 = -ans/b
    vjp=lambda g, ans, a, b: (DIV(g, b), NEG(DIV(MUL(g, ans), b))),
    samples=(
        Sample([Arg((3,)), Arg((3,), low=0.5, high=2.0)]),
        Sample([Arg((4, 3), batch=True), Arg((3,), low=0.5, high=2.0)]),
        Sample([Arg((2, 3)), Arg((), low=-2.0, high=-0.5)]),
    ),
    doc="Elementwise ``a / b`` with broadcasting.",
))

NEG = register(Op(
    name="neg", operands=("x",), shape_rule=_unary_rule, kernel=np.negative, elementwise=True, scalar="-{0}", native="-{0}",
    vjp=lambda g, ans, x: (NEG(g),),
    samples=_UNARY_SAMPLES, doc="``-x``.",
))

EXP = register(Op(
    name="exp", operands=("x",), shape_rule=_unary_rule, kernel=np.exp, elementwise=True, native="np.exp({0})",
    vjp=lambda g, ans, x: (MUL(g, ans),),
    samples=_UNARY_SAMPLES, doc="Elementwise ``e**x``; d/dx = e^x, reused from the forward result.",
))

LOG = register(Op(
    name="log", operands=("x",), shape_rule=_unary_rule, kernel=np.log, elementwise=True, native="np.log({0})",
    vjp=lambda g, ans, x: (DIV(g, x),),
    samples=_POSITIVE_SAMPLES, doc="Elementwise natural logarithm; d/dx = 1/x.",
))

SQRT = register(Op(
    name="sqrt", operands=("x",), shape_rule=_unary_rule, kernel=np.sqrt, elementwise=True, native="np.sqrt({0})",
    # 1 / (2 sqrt x), from the forward result
    vjp=lambda g, ans, x: (DIV(g, MUL(ans, 2.0)),),
    samples=_POSITIVE_SAMPLES, doc="Elementwise square root (Adam's and RMSProp's denominators); d/dx = 1/(2 sqrt x).",
))

TANH = register(Op(
    name="tanh", operands=("x",), shape_rule=_unary_rule, kernel=np.tanh, elementwise=True, native="np.tanh({0})",
    # 1 - tanh^2 from the forward result, as the homework's TanhNode does
    vjp=lambda g, ans, x: (MUL(g, SUB(1.0, SQUARE(ans))),),
    samples=_UNARY_SAMPLES, doc="Elementwise hyperbolic tangent; d/dx = 1 - tanh^2 x.",
))

SQUARE = register(Op(
    name="square", operands=("x",), shape_rule=_unary_rule, kernel=np.square, elementwise=True,
    scalar="{0} * {0}", native="{0} * {0}",
    # (g * 2) first: when g is a constant it folds, leaving one multiply
    vjp=lambda g, ans, x: (MUL(MUL(g, 2.0), x),),
    samples=_UNARY_SAMPLES, doc="Elementwise ``x**2``; d/dx = 2x.",
))

RELU = register(Op(
    name="relu", operands=("x",), shape_rule=_unary_rule, kernel=_relu_kernel, elementwise=True,
    source="np.maximum({0}, 0.0, out={out})", native="np.maximum({0}, 0.0)",
    # sign(relu(x)) is the 0/1 mask of x > 0
    vjp=lambda g, ans, x: (MUL(g, SIGN(ans)),),
    samples=(Sample([Arg((7,))]), Sample([Arg((4, 3), batch=True)])),
    doc="Elementwise ``max(x, 0)``; d/dx = 1 where x > 0, else 0.",
))

SIGN = register(Op(
    name="sign", operands=("x",), shape_rule=_unary_rule, kernel=np.sign, elementwise=True, public=False, native="np.sign({0})",
    vjp=lambda g, ans, x: (None,),
    samples=(Sample([Arg((5,))]),),
    doc="Elementwise sign: -1, 0 or 1; piecewise constant, so no gradient flows.",
))


def _float_dtype_name(dtype: object) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise ValueError(f"dtype {dtype!r} is not a numpy dtype") from None
    if np.dtype(name).kind != "f":
        raise ValueError(f"dtype {name} is not floating point; cast converts between float dtypes")
    return name


def _cast_normalize(x: Node, dtype: object) -> dict[str, str]:
    return {"dtype": _float_dtype_name(dtype)}


def _cast_rule(x: Node, dtype: str) -> tuple[tuple, str]:
    require_float(x)
    return x.shape, dtype


def _cast_kernel(x: np.ndarray, out: np.ndarray, dtype: str) -> None:
    np.copyto(out, x, casting="same_kind")


def _drop_same_dtype_cast(node: Node) -> Node:
    # a cast to the dtype the value already has is the value
    (x,) = node.inputs
    return x if x.dtype == node.dtype else node


CAST = register(Op(
    name="cast", operands=("x",), attributes={"dtype": "float64"}, normalize=_cast_normalize,
    shape_rule=_cast_rule, kernel=_cast_kernel, rewrite=_drop_same_dtype_cast,
    fill=lambda x, in_shapes, out_shape, dtype: x,
    source="np.copyto({out}, {0}, casting='same_kind')",
    native="{0}",  # stored into the result's dtype, which rounds to nearest
    # the cotangent goes back in the operand's own dtype: the gradient of a
    # float32 parameter used in float64 arithmetic is float32
    vjp=lambda g, ans, x, dtype: (CAST(g, dtype=x.dtype),),
    samples=(
        Sample([Arg((3,), dtype="float32")], {"dtype": "float64"}),
        Sample([Arg((4, 3), dtype="float32", batch=True)], {"dtype": "float64"}),
        Sample([Arg((2, 3))], {"dtype": "float32"}),
    ),
    doc="""``x`` converted to the float ``dtype``, rounding to nearest; d/dx is 1, cast back to x's dtype.

    Operands of one op whose float dtypes differ are cast to their common
    dtype (numpy's promotion) where the op is applied, so each promotion
    shows in the dump as a ``cast`` instruction, and the gradient that
    reaches a float32 parameter is float32.

    >>> import tapegraph as tg
    >>> tg.cast(tg.param("w", shape=(3,), dtype="float32"), "float64")
    <cast f64[3] at ...>
    """,
))
