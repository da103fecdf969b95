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

from tapegraph.expr import CONST, Node, is_const
from tapegraph.ops.comparison import EQUAL, GREATER, LESS, WHERE
from tapegraph.ops.native import NativeContext, elementwise_source
from tapegraph.ops.registry import Arg, Op, Sample, Scratch, as_node, register, require_float, result_dtype
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

def _log_of_sigmoid(node: Node) -> Node:
    # log(sigmoid(x)) is log_sigmoid(x): finite where sigmoid underflows to 0
    (x,) = node.inputs
    if x.op is SIGMOID and x.name is None:
        return LOG_SIGMOID(x.inputs[0])
    return node


LOG = register(Op(
    name="log", operands=("x",), shape_rule=_unary_rule, kernel=np.log, elementwise=True, native="np.log({0})",
    rewrite=_log_of_sigmoid,
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
    name="sign", operands=("x",), shape_rule=_unary_rule, kernel=np.sign, elementwise=True, native="np.sign({0})",
    vjp=lambda g, ans, x: (None,),
    samples=(Sample([Arg((5,))]), Sample([Arg((4, 3), batch=True)]), Sample([Arg(())])),
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


# Further elementwise maths. Conventions at kinks: abs has derivative 0 at
# 0 (sign(0) is 0); maximum and minimum give each operand half of the
# gradient where they tie, so maximum(x, x) has derivative 1 and
# maximum(a, b) is differentiated as maximum(b, a) is; clip passes the
# gradient on the closed interval [low, high].

def _number(value: float, like: Node) -> Node:
    """A constant number in the floating dtype of ``like`` (a float32 gradient stays float32)."""
    return as_node(value, like.dtype)


_TRIG_SAMPLES = (Sample([Arg((5,))]), Sample([Arg((4, 3), batch=True)]), Sample([Arg(())]))
_ABOVE_MINUS_ONE = (
    Sample([Arg((5,), low=-0.7, high=3.0)]),
    Sample([Arg((4, 3), low=-0.7, high=3.0, batch=True)]),
    Sample([Arg((), low=-0.7, high=3.0)]),
)


def _tie_weight(winner: Node, a: Node, b: Node, like: Node) -> Node:
    """1 where ``winner`` (a comparison of a with b) holds, 1/2 where a == b, else 0."""
    half = WHERE(EQUAL(a, b), _number(0.5, like), _number(0.0, like))
    return WHERE(winner, _number(1.0, like), half)


def _maximum_vjp(g: Node, ans: Node, a: Node, b: Node) -> tuple[Node, Node]:
    weight = _tie_weight(GREATER(a, b), a, b, g)
    return (MUL(g, weight), MUL(g, SUB(_number(1.0, g), weight)))


def _minimum_vjp(g: Node, ans: Node, a: Node, b: Node) -> tuple[Node, Node]:
    weight = _tie_weight(LESS(a, b), a, b, g)
    return (MUL(g, weight), MUL(g, SUB(_number(1.0, g), weight)))


def _maximum_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    # numpy 2.4 deprecates np.maximum's out given by position
    np.maximum(a, b, out=out)


def _minimum_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.minimum(a, b, out=out)


ABS = register(Op(
    name="abs", operands=("x",), shape_rule=_unary_rule, kernel=np.absolute, elementwise=True, scalar="abs({0})",
    native="np.abs({0})",
    vjp=lambda g, ans, x: (MUL(g, SIGN(x)),),
    samples=_UNARY_SAMPLES,
    doc="Elementwise ``|x|`` (also ``abs(x)`` on nodes); d/dx = sign(x), taken as 0 at x = 0.",
))

MAXIMUM = register(Op(
    name="maximum", operands=("a", "b"), shape_rule=_broadcast_rule, kernel=_maximum_kernel, elementwise=True,
    source="np.maximum({0}, {1}, out={out})", native="np.maximum({0}, {1})", vjp=_maximum_vjp,
    samples=_BINARY_SAMPLES,
    doc="""Elementwise ``max(a, b)`` with broadcasting (NaN if either is NaN).

    The gradient goes to the larger operand; where they are equal, each
    gets half of it, so ``maximum(x, x)`` has derivative 1 and the rule
    does not depend on the order of the operands.
    """,
))

MINIMUM = register(Op(
    name="minimum", operands=("a", "b"), shape_rule=_broadcast_rule, kernel=_minimum_kernel, elementwise=True,
    source="np.minimum({0}, {1}, out={out})", native="np.minimum({0}, {1})", vjp=_minimum_vjp,
    samples=_BINARY_SAMPLES,
    doc="""Elementwise ``min(a, b)`` with broadcasting (NaN if either is NaN).

    The gradient goes to the smaller operand; where they are equal, each
    gets half of it (as for ``maximum``).
    """,
))


def _bound(value: object, which: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, Node):
        raise TypeError(f"clip's {which} must be a number (a static bound), got the node {value.label}; "
                        "use tg.maximum / tg.minimum for bounds computed in the graph")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"clip's {which} must be a number or None, got {type(value).__name__} {value!r}")
    number = float(value)
    if np.isnan(number):
        raise ValueError(f"clip's {which} is NaN")
    if np.isinf(number):
        if (number < 0) == (which == "low"):
            return None  # an infinite bound on its own side bounds nothing
        raise ValueError(f"clip's {which} bound is {number!r}: every value would be {number!r}")
    return number


def _clip_normalize(x: Node, low: object, high: object) -> dict[str, float | None]:
    low, high = _bound(low, "low"), _bound(high, "high")
    if low is None and high is None:
        raise ValueError("clip needs a low or a high bound (or both); both are None")
    if low is not None and high is not None and low > high:
        raise ValueError(f"clip's low bound {low!r} is above its high bound {high!r}")
    return {"low": low, "high": high}


def _clip_kernel(x: np.ndarray, out: np.ndarray, low: float | None, high: float | None) -> None:
    np.clip(x, low, high, out=out)


def _clip_vjp(g: Node, ans: Node, x: Node, low: float | None, high: float | None) -> tuple[Node]:
    zero = _number(0.0, g)
    inside = g
    if high is not None:
        inside = WHERE(GREATER(x, high), zero, inside)
    if low is not None:
        inside = WHERE(LESS(x, low), zero, inside)
    return (inside,)


def _clip_native(ctx: NativeContext) -> str:
    # np.clip is max(x, low), then min(., high): NaN stays NaN
    expression = "{0}"
    if ctx["low"] is not None:
        expression = f"np.maximum({expression}, {ctx.literal(ctx['low'])})"
    if ctx["high"] is not None:
        expression = f"np.minimum({expression}, {ctx.literal(ctx['high'])})"
    return elementwise_source(expression, ctx)


CLIP = register(Op(
    name="clip", operands=("x",), attributes={"low": None, "high": None}, normalize=_clip_normalize,
    shape_rule=lambda x, low, high: _unary_rule(x), kernel=_clip_kernel, elementwise=True,
    source="np.clip({0}, {low}, {high}, out={out})", native=_clip_native,
    vjp=_clip_vjp,
    samples=(
        Sample([Arg((7,))], {"low": -0.5, "high": 0.8}),
        Sample([Arg((4, 3), batch=True)], {"low": -1.0, "high": 1.0}),
        Sample([Arg(())], {"low": 0.3}),
        Sample([Arg((6,))], {"high": 0.0}),
    ),
    doc="""``x`` limited to ``[low, high]`` elementwise (either bound may be None: no bound).

    The bounds are numbers (static; ``low <= high``); d/dx is 1 on the
    closed interval ``low <= x <= high`` and 0 outside it. For bounds
    computed in the graph, use ``tg.maximum`` and ``tg.minimum``.

    >>> import tapegraph as tg
    >>> tg.clip(tg.param("w", shape=(3,)), -1.0, 1.0)
    <clip f64[3] at ...>
    """,
))


def _non_integer(value: np.ndarray) -> np.ndarray:
    return np.isfinite(value) & (value != np.round(value))


def _pow_rule(x: Node, y: Node) -> tuple[tuple, str]:
    shape, dtype = _broadcast_rule(x, y)
    if x.op is CONST and y.op is CONST:
        base, exponent = np.broadcast_arrays(x.value.array, y.value.array)
        bad = (base < 0) & _non_integer(exponent)
        if np.any(bad):
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"a negative base to a non-integer power has no real value (at index {index}: "
                             f"{float(base[index])!r} ** {float(exponent[index])!r}); take the power of "
                             "abs(x), or use an integer exponent")
    return shape, dtype


def _pow_vjp(g: Node, ans: Node, x: Node, y: Node) -> tuple[Node, Node | None]:
    # d/dx = y x^(y-1); where y is 0 the power is constant and its
    # derivative 0, which y * x^-1 would make 0 * inf = NaN at x = 0: the
    # exponent there is taken as 1 (x^0), times y = 0
    exponent = y
    if not (y.op is CONST and np.all(y.value.array != 0)):
        exponent = WHERE(EQUAL(y, 0.0), _number(1.0, y), y)
    gx = MUL(g, MUL(y, POW(x, SUB(exponent, _number(1.0, y)))))
    if y.op is CONST:
        return (gx, None)
    # d/dy = log(x) x^y, taken as 0 at x = 0 (its limit for y > 0); NaN for x < 0
    safe_base = WHERE(EQUAL(x, 0.0), _number(1.0, x), x)
    return (gx, MUL(g, MUL(ans, LOG(safe_base))))


def _pow_rewrite(node: Node) -> Node:
    # x ** 1 is x and x ** 2 is square(x): one multiply, not a call of pow
    x, y = node.inputs
    if not _same_type(x, node):
        return node
    if is_const(y, 1.0):
        return x
    if is_const(y, 2.0):
        return SQUARE(x)
    return node


POW = register(Op(
    name="pow", operands=("x", "y"), shape_rule=_pow_rule, kernel=np.power, elementwise=True,
    rewrite=_pow_rewrite, vjp=_pow_vjp, native="np.power({0}, {1})",
    samples=(
        Sample([Arg((5,), low=0.5, high=2.0), Arg((5,), low=-2.0, high=2.0)]),
        Sample([Arg((4, 3), low=0.5, high=2.0, batch=True), Arg((3,), low=-2.0, high=2.0)]),
        Sample([Arg((2, 3), low=0.5, high=2.0), Arg(())]),
        Sample([Arg((), low=0.5, high=2.0), Arg((), low=-3.0, high=3.0)]),
    ),
    doc="""``x ** y`` elementwise with broadcasting (also ``x ** y`` on nodes).

    d/dx = y x^(y-1) (0 where y = 0); d/dy = log(x) x^y, for x > 0 (taken
    as 0 at x = 0). A negative base to a non-integer power has no real
    value: when both operands are constants that is an error where the
    node is built; otherwise the value is NaN, as in numpy
    (``tg.check_finite()`` stops at the instruction that makes it).
    ``x ** 2`` is ``square(x)`` and ``x ** 1`` is ``x``.
    """,
))

SIN = register(Op(
    name="sin", operands=("x",), shape_rule=_unary_rule, kernel=np.sin, elementwise=True, native="np.sin({0})",
    vjp=lambda g, ans, x: (MUL(g, COS(x)),),
    samples=_TRIG_SAMPLES, doc="Elementwise sine (radians); d/dx = cos x.",
))

COS = register(Op(
    name="cos", operands=("x",), shape_rule=_unary_rule, kernel=np.cos, elementwise=True, native="np.cos({0})",
    vjp=lambda g, ans, x: (NEG(MUL(g, SIN(x))),),
    samples=_TRIG_SAMPLES, doc="Elementwise cosine (radians); d/dx = -sin x.",
))

TAN = register(Op(
    name="tan", operands=("x",), shape_rule=_unary_rule, kernel=np.tan, elementwise=True, native="np.tan({0})",
    # 1 + tan^2 from the forward result
    vjp=lambda g, ans, x: (MUL(g, ADD(_number(1.0, ans), SQUARE(ans))),),
    samples=(Sample([Arg((5,), low=-1.2, high=1.2)]), Sample([Arg((4, 3), low=-1.2, high=1.2, batch=True)]),
             Sample([Arg((), low=-1.2, high=1.2)])),
    doc="Elementwise tangent (radians); d/dx = 1 + tan^2 x.",
))

ARCTAN = register(Op(
    name="arctan", operands=("x",), shape_rule=_unary_rule, kernel=np.arctan, elementwise=True,
    native="np.arctan({0})",
    vjp=lambda g, ans, x: (DIV(g, ADD(_number(1.0, x), SQUARE(x))),),
    samples=_TRIG_SAMPLES, doc="Elementwise inverse tangent, in (-pi/2, pi/2); d/dx = 1 / (1 + x^2).",
))

LOG1P = register(Op(
    name="log1p", operands=("x",), shape_rule=_unary_rule, kernel=np.log1p, elementwise=True,
    native="np.log1p({0})",
    vjp=lambda g, ans, x: (DIV(g, ADD(_number(1.0, x), x)),),
    samples=_ABOVE_MINUS_ONE,
    doc="Elementwise ``log(1 + x)``, accurate for tiny x (log1p(1e-20) is 1e-20); d/dx = 1 / (1 + x).",
))

EXPM1 = register(Op(
    name="expm1", operands=("x",), shape_rule=_unary_rule, kernel=np.expm1, elementwise=True,
    native="np.expm1({0})",
    # e^x itself rather than ans + 1, which is 0 for x below -37
    vjp=lambda g, ans, x: (MUL(g, EXP(x)),),
    samples=_TRIG_SAMPLES,
    doc="Elementwise ``e**x - 1``, accurate for tiny x (expm1(1e-20) is 1e-20); d/dx = e^x.",
))


def _sigmoid_kernel(x: np.ndarray, out: np.ndarray, denominator: np.ndarray) -> None:
    # e^min(x, 0) / (1 + e^-|x|): 1 / (1 + e^-x) for x >= 0 and
    # e^x / (1 + e^x) for x < 0, so neither tail rounds to 0 or 1 early
    # and nothing overflows (each step rounds once: a few ulps in all)
    np.absolute(x, out=denominator)
    np.negative(denominator, out=denominator)
    np.exp(denominator, out=denominator)
    np.add(denominator, 1.0, out=denominator)
    np.minimum(x, 0.0, out=out)
    np.exp(out, out=out)
    np.divide(out, denominator, out=out)


def _same_shape_scratch(in_shapes: list, out_shape: tuple, dtype: str) -> dict:
    return {"denominator": Scratch(out_shape, dtype)}


def _sigmoid_native(ctx: NativeContext) -> str:
    # the kernel's e^min(x, 0) / (e^-|x| + 1), in the result's dtype
    zero, one = ctx.literal(0.0), ctx.literal(1.0)
    return elementwise_source(f"np.exp(np.minimum({{0}}, {zero})) / (np.exp(-np.abs({{0}})) + {one})", ctx)


def _softplus_native(ctx: NativeContext) -> str:
    return elementwise_source(f"np.logaddexp({ctx.literal(0.0)}, {{0}})", ctx)


def _log_sigmoid_native(ctx: NativeContext) -> str:
    return elementwise_source(f"-np.logaddexp({ctx.literal(0.0)}, -{{0}})", ctx)


SIGMOID = register(Op(
    name="sigmoid", operands=("x",), shape_rule=_unary_rule, kernel=_sigmoid_kernel, elementwise=True,
    workspace=_same_shape_scratch, native=_sigmoid_native,
    # sigmoid'(x) = sigmoid(x) sigmoid(-x): exact in both tails, where
    # 1 - sigmoid(x) would round to 0 for x above 37
    vjp=lambda g, ans, x: (MUL(g, MUL(ans, SIGMOID(NEG(x)))),),
    samples=(Sample([Arg((5,), low=-6.0, high=6.0)]), Sample([Arg((4, 3), low=-6.0, high=6.0, batch=True)]),
             Sample([Arg((), low=-6.0, high=6.0)])),
    doc="""Logistic function ``1 / (1 + e^-x)``, elementwise; d/dx = sigmoid(x) sigmoid(-x).

    Exact to a few ulps in both tails (``sigmoid(-40)`` is 4.248e-18, not
    0), and never overflows. ``tg.log(tg.sigmoid(x))`` is built as
    ``tg.log_sigmoid(x)``, which stays finite where sigmoid underflows.
    """,
))


def _softplus_kernel(x: np.ndarray, out: np.ndarray) -> None:
    np.logaddexp(0.0, x, out=out)


SOFTPLUS = register(Op(
    name="softplus", operands=("x",), shape_rule=_unary_rule, kernel=_softplus_kernel, elementwise=True,
    source="np.logaddexp(0.0, {0}, out={out})", native=_softplus_native,
    vjp=lambda g, ans, x: (MUL(g, SIGMOID(x)),),
    samples=(Sample([Arg((5,), low=-6.0, high=6.0)]), Sample([Arg((4, 3), low=-6.0, high=6.0, batch=True)]),
             Sample([Arg(())])),
    doc="""``log(1 + e^x)`` elementwise, exact for any x (``softplus(-40)`` is 4.248e-18,
    ``softplus(1000)`` is 1000); d/dx = sigmoid(x).""",
))


def _log_sigmoid_kernel(x: np.ndarray, out: np.ndarray) -> None:
    np.negative(x, out=out)
    np.logaddexp(0.0, out, out=out)
    np.negative(out, out=out)


LOG_SIGMOID = register(Op(
    name="log_sigmoid", operands=("x",), shape_rule=_unary_rule, kernel=_log_sigmoid_kernel, elementwise=True,
    native=_log_sigmoid_native,
    vjp=lambda g, ans, x: (MUL(g, SIGMOID(NEG(x))),),
    samples=(Sample([Arg((5,), low=-6.0, high=6.0)]), Sample([Arg((4, 3), low=-6.0, high=6.0, batch=True)]),
             Sample([Arg(())])),
    doc="""``log(sigmoid(x)) = -softplus(-x)`` elementwise, exact for any x
    (``log_sigmoid(-1000)`` is -1000); d/dx = sigmoid(-x).""",
))
