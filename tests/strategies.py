"""Hypothesis strategies: random well-typed expression DAGs over the op registry.

``graphs(focus)`` draws a graph that is sure to use the op (or composite)
``focus`` on its way to the objective, among a few other random ops, so a
test parametrised over ``FOCUS_OPS`` covers every op on every run. A drawn
graph has

- leaves of random shapes: parameters, inputs (with a symbolic ``"batch"``
  leading dimension in about half of the graphs), constants and Python
  numbers, and integer labels for the ops that pick by label; about a
  third of the leaves are named from ``TRICKY_NAMES`` (every builtin, the
  generated code's own names and its kernel functions' names), which
  must change nothing;
- shared subexpressions and fan-out: operands are taken from the values
  built so far more often than made fresh, and equal subtrees merge;
- unused branches: values left out of the objective, some of them named
  outputs, some not used at all, and parameters the objective never reads;
- a scalar objective: a weighted sum of sums or means of some values;
- a precision: most graphs are float64, some float32 throughout, some
  mixed (each leaf float64 or float32, so ops promote with ``cast``
  nodes, whose VJPs bring each gradient back to its parameter's dtype).

Values stay in safe domains by interval arithmetic on the way: each value
carries a bound on its magnitude and, when it is known to be positive, a
lower bound. ``log`` and ``div`` get operands made positive first (``exp
(tanh x)`` or ``x^2 + 0.5``), ``exp`` gets operands squashed by ``tanh``,
and anything that grows past ``LIMIT`` is squashed before it is used
again, so central differences stay accurate in float64.

The arrays fed to a graph come from ``DrawnGraph.data(batch_size)``,
seeded by the drawn graph, so a failing example replays exactly.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from hypothesis import strategies as st

import tapegraph as tg
from tapegraph.inspect.dump import format_expression
from tapegraph.expr import Node
from tapegraph.ops import (
    COMPOSITES, REGISTRY, broadcast_to, concat, contract, expand, gather, outer, pick, prod_others, scatter_add,
    softmax_jvp, softmax_minus_onehot, sum_to, tie_share, unindex, unpick,
)
from tapegraph.ops.shaping import canonical_index, indexed_shape, selects_everything
from tapegraph.shapes import broadcast

#: Values whose magnitude may exceed this are squashed by tanh before use.
LIMIT = 1e3
#: The largest size a symbolic dimension takes in the tests (for bounds).
MAX_BATCH = 4
#: How many random ops a graph has besides its focus op.
MAX_EXTRA_OPS = 6


@dataclasses.dataclass
class Value:
    """A float node with what is known of its values (for safe domains)."""

    node: Node
    #: Every entry satisfies |value| <= bound.
    bound: float
    #: When > 0, every entry is >= low (a positive value).
    low: float = 0.0
    #: Set for a Python number operand (``x * 0.7``), passed as it is.
    number: float | None = None

    @property
    def arg(self) -> Node | float:
        """What to pass to an op function: the node, or the Python number."""
        return self.number if self.number is not None else self.node

    @property
    def shape(self) -> tuple:
        return self.node.shape

    @property
    def ndim(self) -> int:
        return self.node.ndim


@dataclasses.dataclass
class Label:
    """An integer label node whose entries lie in 0..classes-1."""

    node: Node
    classes: int


@dataclasses.dataclass
class LeafSpec:
    """How to draw the array of a parameter or input leaf."""

    kind: str
    shape: tuple
    dtype: str
    low: float
    high: float


@dataclasses.dataclass(repr=False)
class DrawnGraph:
    """One random graph: what to compile, and how to feed it."""

    #: The op or composite this graph is sure to use.
    focus: str
    objective: Node
    #: Named intermediate values (some not used by the objective).
    outputs: dict[str, Node]
    #: Every parameter declared, used or not: all are differentiated.
    wrt: list[Node]
    #: How to draw each parameter's and input's array, by name.
    leaves: dict[str, LeafSpec]
    #: Sizes to call the program with: two sizes of "batch" when batched,
    #: else one entry None.
    batch_sizes: tuple[int | None, ...]
    seed: int
    #: ``"float64"``, ``"float32"`` or ``"mixed"`` (see the module docstring).
    precision: str = "float64"

    @property
    def single_precision(self) -> bool:
        """True when some value is float32, so comparisons need float32 tolerances."""
        return self.precision != "float64" or any(node.dtype == "float32" for node in reachable([self.objective]))

    @property
    def batched(self) -> bool:
        return self.batch_sizes[0] is not None

    def data(self, batch_size: int | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Params and inputs for one call; params do not depend on the batch size."""
        param_rng = np.random.default_rng([self.seed, 0])
        input_rng = np.random.default_rng([self.seed, 1, batch_size or 0])
        params, inputs = {}, {}
        for name, spec in sorted(self.leaves.items()):
            shape = tuple(batch_size if isinstance(dim, str) else dim for dim in spec.shape)
            rng = param_rng if spec.kind == "param" else input_rng
            if spec.dtype == "int64":
                array = rng.integers(int(spec.low), int(spec.high), size=shape).astype("int64")
            else:
                array = rng.uniform(spec.low, spec.high, size=shape).astype(spec.dtype)
            (params if spec.kind == "param" else inputs)[name] = array
        return params, inputs

    def forward_ops(self) -> collections.Counter:
        """How many nodes of each op the objective and outputs hold."""
        return count_ops([self.objective, *self.outputs.values()])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints a failing example through this: the expression listing, not attrs' nesting
        printer.text(repr(self))

    def __repr__(self) -> str:
        lines = [f"DrawnGraph(focus={self.focus!r}, batch_sizes={self.batch_sizes}, seed={self.seed}, "
                 f"precision={self.precision!r})",
                 "objective:", format_expression(self.objective)]
        for name, node in self.outputs.items():
            lines += [f"output {name}:", format_expression(node)]
        lines.append("wrt: " + ", ".join(f"{node.name}{list(node.shape)}" for node in self.wrt))
        return "\n".join(lines)


def count_ops(roots: Iterable[Node]) -> collections.Counter:
    """Count the distinct nodes of each op reachable from ``roots``."""
    return collections.Counter(node.op.name for node in reachable(roots))


def _factorizations(size: int, rank: int) -> list[tuple[int, ...]]:
    """Every shape of ``rank`` dimensions holding ``size`` entries."""
    if rank == 0:
        return [()] if size == 1 else []
    return [(first,) + rest for first in range(1, size + 1) if size % first == 0
            for rest in _factorizations(size // first, rank - 1)]


def _size(dim: Any) -> int:
    """A dimension's largest size in the tests (a symbol counts as MAX_BATCH)."""
    return MAX_BATCH if isinstance(dim, str) else dim


def _count(shape: Iterable[Any]) -> int:
    return math.prod(_size(dim) for dim in shape)


def _symbolic(shape: tuple) -> bool:
    return any(isinstance(dim, str) for dim in shape)


def _only_leading_symbol(shape: tuple) -> bool:
    return not _symbolic(shape[1:])


class _Builder:
    """Draws one graph: leaves, ops on earlier values, then an objective."""

    def __init__(self, draw: Callable, batched: bool, seed: int) -> None:
        self.draw = draw
        self.rng = np.random.default_rng([seed, 2])  # constants' values
        self.batch: Any = "batch" if batched else draw(st.integers(1, MAX_BATCH), label="batch size")
        self.dims = draw(st.lists(st.integers(1, 4), min_size=2, max_size=3), label="feature sizes")
        self.pool: list[Value] = []
        self.labels: list[Label] = []
        self.leaves: dict[str, LeafSpec] = {}
        self.params: list[Node] = []
        self._names = itertools.count()
        self.precision = draw(st.sampled_from(PRECISIONS), label="precision")

    # Small drawing helpers.

    def flip(self, percent: int) -> bool:
        return self.draw(st.integers(0, 99)) < percent

    def choice(self, options: list) -> Any:
        return self.draw(st.sampled_from(options))

    def dim(self) -> int:
        return self.choice(self.dims)

    def fresh_shape(self, max_rank: int = 2) -> tuple:
        rank = self.draw(st.integers(0, max_rank))
        shape = tuple(self.dim() for _ in range(rank))
        if rank and self.flip(50):
            shape = (self.batch,) + shape[1:]
        return shape

    def float_dtype(self) -> str:
        """The dtype of a new float leaf: the graph's, or either for a mixed graph."""
        if self.precision == "mixed":
            return self.choice(["float64", "float32"])
        return self.precision

    def push(self, node: Node, bound: float, low: float = 0.0) -> Value:
        value = Value(node, bound, low)
        self.pool.append(value)
        return value

    # Leaves.

    def name(self, prefix: str) -> str:
        """A new leaf name: ``p3``, or one the generated code could trip on (``float``, ``s2``, a kernel's)."""
        index = next(self._names)
        if self.flip(30):
            name = self.choice(TRICKY_NAMES)
            return name if name not in self.leaves else f"{name}_{index}"
        return f"{prefix}{index}"

    def leaf(self, shape: tuple, positive: bool = False, allow_const: bool = True) -> Value:
        """A new parameter, input or constant of ``shape``."""
        low, high = (0.5, 2.0) if positive else (-1.0, 1.0)
        if _symbolic(shape):
            kind = "input"
        else:
            kind = self.choice(["param", "param", "input"] + (["const"] if allow_const else []))
        dtype = self.float_dtype()
        if kind == "const":
            node = tg.const(self.rng.uniform(low, high, size=shape), dtype=dtype)
        else:
            name = self.name("p" if kind == "param" else "x")
            declare = tg.param if kind == "param" else tg.input
            node = declare(name, shape=shape, dtype=dtype)
            self.leaves[name] = LeafSpec(kind, shape, dtype, low, high)
            if kind == "param":
                self.params.append(node)
        return self.push(node, max(abs(low), abs(high)), low if positive else 0.0)

    def label(self, shape: tuple, limit: int) -> Node:
        """An integer label node of ``shape`` with entries below ``limit``, reused when one fits."""
        fits = [label for label in self.labels if label.node.shape == shape and label.classes <= limit]
        if fits and self.flip(60):
            return self.choice(fits).node
        classes = self.draw(st.integers(1, limit)) if self.flip(30) else limit
        if _symbolic(shape) or self.flip(60):
            name = self.name("label")
            node = tg.input(name, shape=shape, dtype="int64")
            self.leaves[name] = LeafSpec("input", shape, "int64", 0, classes)
        else:
            node = tg.const(self.rng.integers(0, classes, size=shape).astype("int64"))
        self.labels.append(Label(node, classes))
        return node

    def operand(self, fits: Callable[[Value], bool], make: Callable[[], Value], nonconst: bool = False) -> Value:
        """An earlier value that ``fits`` (shared subexpressions, fan-out), or a new one."""
        candidates = [value for value in self.pool
                      if fits(value) and not (nonconst and value.node.op.name == "const")]
        if candidates and self.flip(75):
            return self.choice(candidates)
        return make()

    def any_value(self, fits: Callable[[Value], bool] = lambda value: True, max_rank: int = 2,
                  shape: tuple | None = None) -> Value:
        """A non-constant float operand (so the op applied to it is not folded away)."""
        def make() -> Value:
            target = shape if shape is not None else self.fresh_shape(max_rank)
            return self.leaf(target, allow_const=False)
        return self.operand(lambda value: fits(value) and value.ndim <= max_rank, make, nonconst=True)

    # Keeping values in safe domains.

    def tame(self, value: Value, limit: float = LIMIT) -> Value:
        """``value`` if its magnitude stays below ``limit``, else ``tanh(value)``."""
        if value.bound <= limit:
            return value
        return self.push(tg.tanh(value.node), 1.0)

    def positive(self, value: Value) -> Value:
        """``value`` if known positive (away from 0), else a positive function of it."""
        if value.low >= 0.05 and value.bound <= LIMIT:
            return value
        if self.flip(50):
            return self.push(tg.exp(tg.tanh(value.node)), math.e, 1.0 / math.e)
        small = self.tame(value, 3.0)
        return self.push(tg.square(small.node) + 0.5, small.bound ** 2 + 0.5, 0.5)

    def broadcast_partner(self, a: Value, positive: bool = False) -> Value:
        """A second operand whose shape broadcasts with ``a``'s (sometimes a Python number)."""
        def fits(value: Value) -> bool:
            return _broadcast_rank(a.shape, value.shape) <= 3 and (not positive or value.low >= 0.05)

        def make() -> Value:
            mode = self.choice(["same", "suffix", "ones", "scalar", "fresh"])
            if mode == "same":
                shape = a.shape
            elif mode == "suffix":
                shape = a.shape[self.draw(st.integers(0, a.ndim)):]
            elif mode == "ones":
                shape = tuple(1 if self.flip(50) else dim for dim in a.shape)
            elif mode == "scalar":
                shape = ()
            else:
                shape = self.fresh_shape()
                if _broadcast_rank(a.shape, shape) > 3:
                    shape = a.shape
            return self.leaf(shape, positive=positive)

        if self.flip(10):
            number = float(self.rng.uniform(0.5, 2.0)) * (1 if positive or self.flip(50) else -1)
            return Value(tg.const(number), abs(number), max(number, 0.0), number=number)
        return self.operand(fits, make)

    # The ops. Each applies its op once (the focus node) and returns it.

    def binary(self, name: str) -> Value:
        a = self.tame(self.any_value(max_rank=3), 30.0)
        b = self.broadcast_partner(a, positive=(name == "div"))
        b = self.positive(b) if name == "div" else self.tame(b, 30.0)
        swap = name != "div" and self.flip(30)
        left, right = (b.arg, a.node) if swap else (a.node, b.arg)
        node = {"add": tg.add, "sub": tg.sub, "mul": tg.mul, "div": tg.div}[name](left, right)
        bound = {"add": a.bound + b.bound, "sub": a.bound + b.bound, "mul": a.bound * b.bound,
                 "div": a.bound / max(b.low, 1e-300)}[name]
        low = 0.0
        if a.low > 0 and b.low > 0:
            low = {"add": a.low + b.low, "mul": a.low * b.low, "div": a.low / b.bound}.get(name, 0.0)
        return self.push(node, bound, low)

    def unary(self, name: str) -> Value:
        x = self.any_value(max_rank=3)
        if name == "exp":
            x = self.tame(x, 3.0)
            return self.push(tg.exp(x.node), math.exp(x.bound), math.exp(-x.bound))
        if name == "log":
            x = self.positive(x)
            return self.push(tg.log(x.node), max(abs(math.log(x.low)), abs(math.log(x.bound))))
        if name == "sqrt":
            x = self.positive(x)
            return self.push(tg.sqrt(x.node), math.sqrt(x.bound), math.sqrt(x.low))
        if name == "square":
            x = self.tame(x, 30.0)
            return self.push(tg.square(x.node), x.bound ** 2, x.low ** 2)
        if name == "expm1":
            x = self.tame(x, 3.0)
            return self.push(tg.expm1(x.node), math.expm1(x.bound))
        if name == "log1p":
            x = self.positive(x)
            return self.push(tg.log1p(x.node), math.log1p(x.bound), math.log1p(x.low))
        if name == "tan":  # inside (-pi/2, pi/2), away from the poles
            x = self.tame(x, 1.2)
            return self.push(tg.tan(x.node), math.tan(min(x.bound, 1.2)))
        if name in ("softplus", "log_sigmoid", "sigmoid"):
            x = self.tame(x, 30.0)
        if name == "abs":
            return self.push(abs(x.node) if self.flip(50) else tg.abs(x.node), x.bound, x.low)
        if name == "stop_gradient":
            # of a value no parameter reaches: central differences see through it, the gradient does not
            x = self.operand(lambda value: not _depends_on_params(value.node) and value.ndim <= 3
                             and value.node.op.name != "const", lambda: self.input_leaf(self.fresh_shape()))
            return self.push(tg.stop_gradient(x.node), x.bound, x.low)
        function = {"neg": tg.neg, "tanh": tg.tanh, "relu": tg.relu, "sign": tg.sign, "sigmoid": tg.sigmoid,
                    "sin": tg.sin, "cos": tg.cos, "arctan": tg.arctan, "softplus": tg.softplus,
                    "log_sigmoid": tg.log_sigmoid}[name]
        bound = {"tanh": 1.0, "sign": 1.0, "sigmoid": 1.0, "sin": 1.0, "cos": 1.0, "arctan": math.pi / 2,
                 "softplus": x.bound + 1.0, "log_sigmoid": x.bound + 1.0}.get(name, x.bound)
        return self.push(function(x.node), bound)

    def input_leaf(self, shape: tuple) -> Value:
        """A new input leaf of ``shape`` (no parameter reaches it)."""
        name = self.name("x")
        dtype = self.float_dtype()
        self.leaves[name] = LeafSpec("input", shape, dtype, -1.0, 1.0)
        return self.push(tg.input(name, shape=shape, dtype=dtype), 1.0)

    def extremum(self, name: str) -> Value:
        a = self.tame(self.any_value(max_rank=3), 30.0)
        b = self.tame(self.broadcast_partner(a), 30.0)
        left, right = (b.arg, a.node) if self.flip(30) else (a.node, b.arg)
        function = tg.maximum if name == "maximum" else tg.minimum
        return self.push(function(left, right), max(a.bound, b.bound))

    def clip(self) -> Value:
        x = self.tame(self.any_value(max_rank=3), 30.0)
        low = float(self.rng.uniform(-1.0, 0.5)) if self.flip(80) else None
        high = (low if low is not None else -1.0) + float(self.rng.uniform(0.1, 1.5)) if low is None or self.flip(75) else None
        bound = max(abs(item) for item in (low, high) if item is not None) if low is not None and high is not None \
            else x.bound + abs(low if low is not None else high)
        return self.push(tg.clip(x.node, low, high), bound)

    def pow(self) -> Value:
        base = self.positive(self.tame(self.any_value(max_rank=3), 3.0))
        worst = max(base.bound, 1.0 / base.low)
        if self.flip(40):  # a Python number: not 1 or 2, which are x itself and square(x)
            exponent = self.choice([0.5, 1.5, 3.0, -1.0, -0.5])
            node = base.node ** exponent if self.flip(50) else tg.pow(base.node, exponent)
            return self.push(node, worst ** abs(exponent))
        exponent = self.tame(self.broadcast_partner(base), 2.0)
        if exponent.number is not None and exponent.number in (1.0, 2.0):
            exponent = Value(tg.const(0.75), 0.75, 0.75, number=0.75)
        return self.push(tg.pow(base.node, exponent.arg), worst ** exponent.bound)

    def condition(self, name: str) -> tuple[Node, Value, Value]:
        """A comparison ``name`` of two values (or a value and a number), and those values."""
        a = self.tame(self.any_value(max_rank=3), 30.0)
        b = self.tame(self.broadcast_partner(a), 30.0)
        if _leaves(a.node) & _leaves(b.node):
            # values made from one leaf can be equal at the point and not
            # around it (x and a float32 rounding of x), where central
            # differences would step across the switch: a threshold instead
            number = float(self.rng.uniform(-1.0, 1.0))
            b = Value(tg.const(number), abs(number), number=number)
        left, right = (b.arg, a.node) if self.flip(30) else (a.node, b.arg)
        if name in ("less", "less_equal", "greater", "greater_equal") and self.flip(50):
            symbols = {"less": lambda p, q: p < q, "less_equal": lambda p, q: p <= q,
                       "greater": lambda p, q: p > q, "greater_equal": lambda p, q: p >= q}
            if not isinstance(left, Node):
                # 0.5 < x is x > 0.5 (Python reflects it): write the mirrored operator
                name = {"less": "greater", "greater": "less", "less_equal": "greater_equal",
                        "greater_equal": "less_equal"}[name]
            return symbols[name](left, right), a, b
        return getattr(tg, name)(left, right), a, b

    def where(self, name: str) -> Value:
        comparison = name if name != "where" else self.choice(
            ["less", "less_equal", "greater", "greater_equal", "equal", "not_equal"])
        cond, a, b = self.condition(comparison)
        # (a partner of the condition's shape broadcasts with a too)
        picked = self.tame(self.broadcast_partner(Value(cond, 1.0)), 30.0) if self.flip(50) else b
        if picked.node == a.node:  # where(c, a, a) is a itself, and the where would vanish
            picked = self.push(tg.tanh(a.node), 1.0)
        first, second = (a, picked) if self.flip(50) else (picked, a)
        return self.push(tg.where(cond, first.arg, second.arg), max(a.bound, picked.bound))

    def binary_cross_entropy(self) -> Value:
        logits = self.tame(self.any_value(max_rank=3), 30.0)
        if self.flip(30):
            targets: Any = float(self.rng.uniform(0.0, 1.0))
        else:
            partner = self.tame(self.broadcast_partner(logits), 30.0)
            targets = self.push(tg.sigmoid(partner.node), 1.0).node
        return self.push(tg.binary_cross_entropy(logits.node, targets), logits.bound + math.log(2.0))

    def reduction(self, name: str) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        if name == "sum_squares":
            x = self.tame(x, 30.0)
            return self.push(tg.sum_squares(x.node), x.bound ** 2 * _count(x.shape))
        axis, axes = self.reduction_axes(x)
        keepdims = self.flip(40)
        function = tg.sum if name == "sum" else tg.mean
        node = function(x.node, axis=axis, keepdims=keepdims)
        if name == "mean":
            return self.push(node, x.bound, x.low)
        return self.push(node, x.bound * _count(x.shape[index] for index in axes), x.low)

    def reduction_axes(self, x: Value, allow_int: bool = True) -> tuple[Any, tuple[int, ...]]:
        """An ``axis`` argument for a reduction of ``x`` (None, a tuple, negative, or one int) and its axes."""
        mode = self.choice(["all", "subset", "negative", "int"] if allow_int else ["all", "subset", "negative"])
        if mode == "all":
            return None, tuple(range(x.ndim))
        if mode == "int":
            index = self.draw(st.integers(-x.ndim, x.ndim - 1))
            return index, (index % x.ndim,)
        axes = tuple(sorted(self.draw(st.sets(st.integers(0, x.ndim - 1), min_size=1))))
        return (tuple(index - x.ndim for index in axes) if mode == "negative" else axes), axes

    def tie_free(self, x: Value) -> Value:
        """``x`` plus distinct small constants along its fixed axes, so no two entries of a row are equal.

        max, min and std have kinks where entries tie (relu's zeros, a
        constant row); central differences across a kink disagree with
        any one-sided convention, so the graphs keep away from them.
        """
        symbolic = [index for index, dim in enumerate(x.shape) if isinstance(dim, str)]
        fixed = x.shape[symbolic[-1] + 1:] if symbolic else x.shape  # the axes a constant can span
        if not fixed:
            return x
        offsets = tg.const(self.rng.permutation(math.prod(fixed)).reshape(fixed) * 0.37 / math.prod(fixed),
                           dtype=x.node.dtype)
        return self.push(x.node + offsets, x.bound + 0.37, 0.0)

    def chooser(self, name: str) -> Value:
        """max, min, logsumexp, var or std over drawn axes."""
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        x = self.tame(x, 30.0)
        if name in ("max", "min", "std"):
            x = self.tie_free(x)
        axis, axes = self.reduction_axes(x)
        keepdims = self.flip(40)
        node = {"max": tg.max, "min": tg.min, "logsumexp": tg.logsumexp, "var": tg.var, "std": tg.std}[name](
            x.node, axis=axis, keepdims=keepdims)
        count = _count(x.shape[index] for index in axes)
        bound = {"max": x.bound, "min": x.bound, "logsumexp": x.bound + math.log(max(count, 1)),
                 "var": x.bound ** 2, "std": x.bound}[name]
        return self.push(node, bound, x.low if name in ("max", "min") else 0.0)

    def prod(self) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        x = self.tame(x, 1.0)  # entries of magnitude up to 1: the product stays bounded by 1
        axis, _ = self.reduction_axes(x)
        return self.push(tg.prod(x.node, axis=axis, keepdims=self.flip(40)), 1.0)

    def prod_others(self) -> Value:
        x = self.tame(self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim())), 1.0)
        _, axes = self.reduction_axes(x, allow_int=False)
        return self.push(prod_others(x.node, axes), 1.0)

    def tie_share(self) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        _, axes = self.reduction_axes(x, allow_int=False)
        return self.push(tie_share(x.node, axes, smallest=self.flip(50)), 1.0)

    def cumsum(self) -> Value:
        x = self.tame(self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim())), 30.0)
        axis = self.draw(st.integers(-x.ndim, x.ndim - 1))
        node = tg.cumsum(x.node, axis=axis, reverse=self.flip(30))
        return self.push(node, x.bound * _size(x.shape[axis]))

    def expand(self) -> Value:
        g = self.any_value(max_rank=2)
        ones = [index for index, dim in enumerate(g.shape) if dim == 1]
        mean = self.flip(50)
        if ones and self.flip(50):  # keepdims: stretch size-1 axes
            axis = tuple(sorted(self.draw(st.sets(st.sampled_from(ones), min_size=1))))
            shape = tuple(self.dim() if index in axis else dim for index, dim in enumerate(g.shape))
            node = expand(g.node, shape, axis, keepdims=True, mean=mean)
        else:  # insert new axes
            added = self.draw(st.integers(1, 3 - g.ndim)) if g.ndim < 3 else 1
            rank = g.ndim + added
            axis = tuple(sorted(self.draw(st.sets(st.integers(0, rank - 1), min_size=added, max_size=added))))
            kept = iter(g.shape)
            leading_batch = 0 in axis and not _symbolic(g.shape) and self.flip(50)
            shape = tuple((self.batch if index == 0 and leading_batch else self.dim()) if index in axis
                          else next(kept) for index in range(rank))
            node = expand(g.node, shape, axis, keepdims=False, mean=mean)
        return self.push(node, g.bound, 0.0 if mean else g.low)

    def cast(self) -> Value:
        # to the other precision, so the cast is a node and not the value itself
        x = self.any_value(max_rank=3)
        dtype = "float32" if x.node.dtype == "float64" else "float64"
        return self.push(tg.cast(x.node, dtype), x.bound, x.low)

    def sum_to(self) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        dropped = self.draw(st.integers(0, x.ndim))
        shape = tuple(1 if self.flip(40) else dim for dim in x.shape[dropped:])
        if shape == x.shape:
            shape = x.shape[1:]
        summed = _count(x.shape) // max(_count(shape), 1)
        return self.push(sum_to(x.node, shape), x.bound * summed, x.low)

    def broadcast_to(self) -> Value:
        x = self.any_value(max_rank=2)
        shape = tuple(self.dim() if dim == 1 and self.flip(60) else dim for dim in x.shape)
        if shape == x.shape or self.flip(40):
            lead = self.batch if not _symbolic(x.shape) and self.flip(50) else self.dim()
            shape = (lead,) + shape
        return self.push(broadcast_to(x.node, shape), x.bound, x.low)

    def matmul(self, flags: bool = True) -> Value:
        a = self.any_value(lambda value: value.ndim >= 1, shape=self.choice([(self.dim(),), (self.batch, self.dim())]))
        a = self.tame(a, 10.0)
        transpose_a = flags and a.ndim == 2 and self.flip(30)
        left = tuple(reversed(a.shape)) if transpose_a else a.shape
        inner = left[-1]
        b_rank = self.choice([1, 2]) if len(left) == 1 or not flags else self.choice([1, 2, 2])
        transpose_b = flags and b_rank == 2 and self.flip(40)
        if b_rank == 1:
            wanted = lambda shape: shape == (inner,)
            fresh = (inner,)
        elif transpose_b:
            wanted = lambda shape: len(shape) == 2 and shape[1] == inner
            fresh = (self.dim(), inner)
        else:
            wanted = lambda shape: len(shape) == 2 and shape[0] == inner
            fresh = (inner, self.dim())
        b = self.tame(self.operand(lambda value: wanted(value.shape), lambda: self.leaf(fresh)), 10.0)
        if flags:
            node = tg.matmul(a.node, b.node, transpose_a=transpose_a, transpose_b=transpose_b)
        else:
            node = tg.dot(a.node, b.node)
        return self.push(node, a.bound * b.bound * _size(inner))

    def outer(self) -> Value:
        vector = lambda value: value.ndim == 1
        a = self.tame(self.any_value(vector, shape=(self.choice(self.dims + [self.batch]),)), 30.0)
        b = self.tame(self.operand(vector, lambda: self.leaf((self.dim(),))), 30.0)
        return self.push(outer(a.node, b.node), a.bound * b.bound, a.low * b.low)

    def reshape(self) -> Value:
        x = self.any_value(lambda value: _only_leading_symbol(value.shape), max_rank=3)
        if _symbolic(x.shape):
            lead, rest = x.shape[:1], x.shape[1:]
        else:
            lead, rest = (), x.shape
        size = math.prod(rest)
        options = [shape for rank in range(0, 4 - len(lead)) for shape in _factorizations(size, rank)
                   if shape != rest]
        shape = lead + self.choice(options)
        return self.push(tg.reshape(x.node, shape), x.bound, x.low)

    def transpose(self) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        axes = tuple(self.draw(st.permutations(range(x.ndim))))
        return self.push(tg.transpose(x.node, axes), x.bound, x.low)

    def classes_operand(self, limit: float) -> Value:
        """Scores with a fixed number of classes on the last axis."""
        classes_fixed = lambda value: value.ndim >= 1 and not isinstance(value.shape[-1], str)
        scores = self.any_value(classes_fixed, shape=self.choice([(self.dim(),), (self.batch, self.dim())]))
        return self.tame(scores, limit)

    def softmax(self, name: str) -> Value:
        z = self.tame(self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim())), 30.0)
        if self.flip(50):
            axis, axes = -1, (z.ndim - 1,)  # the classes on the last axis, as usual
        else:
            axis, axes = self.reduction_axes(z)
        classes = _count(z.shape[index] for index in axes)
        if name == "softmax":
            return self.push(tg.softmax(z.node, axis=axis), 1.0, math.exp(-2 * z.bound) / classes)
        if name == "softmax_jvp":
            v = self.tame(self.operand(lambda value: value.shape == z.shape, lambda: self.leaf(z.shape)), 30.0)
            return self.push(softmax_jvp(z.node, v.node, axes), 2 * v.bound)
        return self.push(tg.log_softmax(z.node, axis=axis), 2 * z.bound + math.log(classes))

    def pick(self, name: str) -> Value:
        z = self.classes_operand(30.0)
        classes = z.shape[-1]
        label = self.label(z.shape[:-1], classes)
        if name == "pick":
            return self.push(pick(z.node, label), z.bound, z.low)
        if name == "cross_entropy":
            if z.ndim == 2 and not _symbolic(z.shape[:1]) and self.flip(40):  # classes on the first axis
                label = self.label(z.shape[1:], z.shape[0])
                return self.push(tg.cross_entropy(z.node, label, axis=0), 2 * z.bound + math.log(z.shape[0]))
            return self.push(tg.cross_entropy(z.node, label), 2 * z.bound + math.log(classes))
        # nll: of a softmax (becomes cross-entropy) or of any positive values
        probs = self.push(tg.softmax(z.node), 1.0) if self.flip(50) else self.positive(z)
        low = probs.low if probs.node.op.name != "softmax" else math.exp(-2 * z.bound) / classes
        return self.push(tg.nll(probs.node, label), max(abs(math.log(low)), abs(math.log(probs.bound))))

    def unpick(self) -> Value:
        g = self.any_value(max_rank=2)
        depth = self.draw(st.integers(1, 4))
        label = self.label(g.shape, depth)
        return self.push(unpick(g.node, label, depth), g.bound)

    def softmax_minus_onehot(self) -> Value:
        z = self.classes_operand(3.0)
        label = self.label(z.shape[:-1], z.shape[-1])
        scale = float(self.rng.uniform(-2.0, 2.0)) if self.flip(30) else 1.0
        return self.push(softmax_minus_onehot(z.node, label, scale=scale), abs(scale) * 2.0)

    def affine(self, name: str) -> Value:
        x = self.classes_operand(10.0)
        features = x.shape[-1]
        if name == "vector_scalar_affine":
            w = self.tame(self.operand(lambda value: value.shape == (features,), lambda: self.leaf((features,))), 10.0)
            b = self.tame(self.operand(lambda value: value.shape == (), lambda: self.leaf(())), 10.0)
            node = tg.vector_scalar_affine(x.node, w.node, b.node)
            return self.push(node, x.bound * w.bound * features + b.bound)
        outputs = self.dim()
        W = self.tame(self.operand(lambda value: value.shape[1:] == (features,) and value.ndim == 2,
                                   lambda: self.leaf((outputs, features))), 10.0)
        b = self.tame(self.operand(lambda value: value.shape == W.shape[:1], lambda: self.leaf(W.shape[:1])), 10.0)
        return self.push(tg.affine(W.node, x.node, b.node), x.bound * W.bound * features + b.bound)

    def squared_l2_distance(self) -> Value:
        a = self.tame(self.any_value(max_rank=2), 10.0)
        b = self.tame(self.broadcast_partner(a), 10.0)
        total = tg.squared_l2_distance(a.node, b.arg)
        return self.push(total, (a.bound + b.bound) ** 2 * _count(a.shape) * _count(b.shape))

    def l2_norm_penalty(self) -> Value:
        w = self.tame(self.any_value(max_rank=2), 10.0)
        l2_reg = float(self.rng.uniform(0.1, 2.0))
        return self.push(tg.l2_norm_penalty(w.node, l2_reg=l2_reg), l2_reg * w.bound ** 2 * _count(w.shape))

    # Shape, indexing and contraction ops (issue 13, items 3 and 4).

    def index_key(self, shape: tuple) -> tuple:
        """A random basic index into ``shape``: ints, slices with steps, None, sometimes an ellipsis."""
        key: list = []
        for dim in shape:
            if self.flip(15):
                key.append(None)
            if isinstance(dim, str):
                key.append(slice(None, None, self.choice([None, -1])))
                continue
            kind = self.choice(["full", "int", "slice", "slice"])
            if kind == "full":
                key.append(slice(None))
            elif kind == "int":
                key.append(self.draw(st.integers(-dim, dim - 1)))
            else:
                step = self.choice([1, 2, -1, -2])
                start = self.draw(st.integers(0, dim - 1))
                if step > 0:
                    stop = self.draw(st.integers(start + 1, dim))
                else:
                    stop = self.choice([None] + list(range(0, start)))
                key.append(slice(start, stop, step))
        if key and self.flip(20):  # the leading entries as an ellipsis
            cut = self.draw(st.integers(0, len(shape)))
            consumed = [item for item in key[:cut] if item is not None]
            if all(isinstance(item, slice) and item == slice(None) for item in consumed):
                key = [Ellipsis] + key[cut:]
        return tuple(key)

    def index(self) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        node = x.node[self.index_key(x.shape)]
        if node is x.node:  # a key that selects everything is the value itself
            node = x.node[(None,)]
        return self.push(node, x.bound, x.low)

    def unindex(self) -> Value:
        shape = tuple(self.dim() for _ in range(self.draw(st.integers(0, 2)))) + (self.choice([2, 3]),)
        if self.flip(50) and len(shape) > 1:
            shape = (self.batch,) + shape[1:]
        text = canonical_index(shape, self.index_key(shape))
        if selects_everything(shape, text):  # then it would be an index (its rewrite), not an unindex
            text = canonical_index(shape, (Ellipsis, slice(1, None)))
        wanted = indexed_shape(shape, text)
        g = self.any_value(lambda value: value.shape == wanted, max_rank=len(wanted), shape=wanted)
        return self.push(unindex(g.node, text, shape), g.bound)

    def take_operands(self) -> tuple[tuple, int, Node]:
        """A shape, an axis of it with a concrete size, and integer indices into that axis."""
        shape = self.choice([(self.dim(),), (self.dim(), self.dim()), (self.batch, self.dim()),
                             (self.dim(), self.dim(), self.dim())])
        axes = [axis for axis, dim in enumerate(shape) if not isinstance(dim, str)]
        axis = self.choice(axes)
        index_shape = self.choice([(), (self.dim(),), (self.batch,)] if not _symbolic(shape) and axis == 0
                                  else [(), (self.dim(),)])
        return shape, axis, self.label(index_shape, shape[axis])

    def take(self, name: str) -> Value:
        shape, axis, indices = self.take_operands()
        x = self.any_value(lambda value: value.shape == shape, shape=shape)
        axis = axis - len(shape) if self.flip(30) else axis
        function = tg.take if name == "take" else gather
        return self.push(function(x.node, indices, axis), x.bound, x.low)

    def scatter_add(self) -> Value:
        shape, axis, indices = self.take_operands()
        wanted = shape[:axis] + indices.shape + shape[axis + 1:]
        g = self.any_value(lambda value: value.shape == wanted, max_rank=len(wanted), shape=wanted)
        # an index drawn several times adds that many entries of g
        return self.push(scatter_add(g.node, indices, axis, shape), g.bound * _count(indices.shape))

    def joined_operands(self, count: int, same_shape: bool) -> tuple[list[Value], int]:
        first = self.any_value(lambda value: value.ndim >= 1 and not _symbolic(value.shape[-1:]), max_rank=3,
                               shape=self.choice([(self.dim(),), (self.batch, self.dim())]))
        axes = [axis for axis, dim in enumerate(first.shape) if not isinstance(dim, str)]
        axis = self.choice(axes)
        values = [first]
        for _ in range(count - 1):
            shape = first.shape if same_shape else first.shape[:axis] + (self.dim(),) + first.shape[axis + 1:]
            values.append(self.operand(lambda value: value.shape == shape, lambda: self.leaf(shape)))
        return values, axis

    def concat(self) -> Value:
        (a, b), axis = self.joined_operands(2, same_shape=False)
        return self.push(concat(a.node, b.node, axis), max(a.bound, b.bound), min(a.low, b.low))

    def concatenate(self) -> Value:
        values, axis = self.joined_operands(self.draw(st.integers(1, 3)), same_shape=False)
        node = tg.concatenate([value.node for value in values], axis=axis - values[0].ndim if self.flip(30) else axis)
        return self.push(node, max(value.bound for value in values), min(value.low for value in values))

    def stack(self) -> Value:
        values, _ = self.joined_operands(self.draw(st.integers(1, 3)), same_shape=True)
        axis = self.draw(st.integers(0, values[0].ndim))
        node = tg.stack([value.node for value in values], axis=axis)
        return self.push(node, max(value.bound for value in values), min(value.low for value in values))

    def split(self) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1 and not _symbolic(value.shape[-1:]), max_rank=3,
                           shape=(self.batch, self.choice([2, 3, 4])))
        axes = [axis for axis, dim in enumerate(x.shape) if not isinstance(dim, str)]
        axis = self.choice(axes)
        size = x.shape[axis]
        if self.flip(50):
            sections = self.choice([count for count in range(1, size + 1) if size % count == 0])
        else:
            sections = sorted(self.draw(st.sets(st.integers(1, max(size - 1, 1)), max_size=size - 1))) if size > 1 else 1
        pieces = [self.push(piece, x.bound, x.low) for piece in tg.split(x.node, sections, axis)]
        return self.choice(pieces)

    def squeeze(self) -> Value:
        has_one = lambda value: 1 in value.shape
        x = self.any_value(has_one, max_rank=3, shape=self.choice([(1,), (self.batch, 1), (1, self.dim(), 1)]))
        ones = [axis for axis, dim in enumerate(x.shape) if dim == 1]
        axis = None if self.flip(40) else tuple(self.draw(st.sets(st.sampled_from(ones), min_size=1)))
        return self.push(tg.squeeze(x.node, axis), x.bound, x.low)

    def expand_dims(self) -> Value:
        x = self.any_value(max_rank=2)
        axis = self.draw(st.integers(-(x.ndim + 1), x.ndim))
        return self.push(tg.expand_dims(x.node, axis), x.bound, x.low)

    def flip_axes(self) -> Value:
        x = self.any_value(lambda value: value.ndim >= 1, max_rank=3, shape=(self.batch, self.dim()))
        axis = None if self.flip(30) else tuple(self.draw(st.sets(st.integers(0, x.ndim - 1), min_size=1)))
        return self.push(tg.flip(x.node, axis), x.bound, x.low)

    def lettered(self, letters: dict, count: int) -> tuple[list[Value], list[str]]:
        """``count`` operands with letters for their axes; ``letters`` maps each letter to its size."""
        values, terms = [], []
        for position in range(count):
            if position == 0 or not letters or self.flip(20):
                new = "".join(self.draw(st.sampled_from("pqrstuvw")) for _ in range(self.draw(st.integers(0, 2))))
                shared = list(letters)
            else:
                new, shared = "", list(letters)
            chosen = list(dict.fromkeys(self.draw(st.lists(st.sampled_from(shared), max_size=2)) if shared else []))
            for letter in new:
                if letter not in letters:
                    letters[letter] = self.dim()
                    chosen.append(letter)
            if not chosen:
                letter = next(letter for letter in "xyz" if letter not in letters)
                letters[letter] = self.dim()
                chosen = [letter]
            # a symbolic size only on a leading axis
            chosen.sort(key=lambda letter: not isinstance(letters[letter], str))
            shape = tuple(letters[letter] for letter in chosen)
            if position == 0:  # not a constant, or the op would fold away
                value = self.any_value(lambda value: value.shape == shape, max_rank=len(shape), shape=shape)
            else:
                value = self.operand(lambda value: value.shape == shape, lambda: self.leaf(shape))
            values.append(self.tame(value, 3.0))
            terms.append("".join(chosen))
        return values, terms

    def einsum(self, binary: bool = False) -> Value:
        letters = {"b": self.batch} if self.flip(40) else {}
        values, terms = self.lettered(letters, 2 if binary else self.draw(st.integers(1, 3)))
        every = "".join(terms)
        if binary:  # contract: each index in the other operand or the result
            must = [letter for letter in dict.fromkeys(every) if every.count(letter) == 1]
        else:
            must = []
        optional = [letter for letter in dict.fromkeys(every) if letter not in must]
        output = must + [letter for letter in optional if self.flip(40)]
        output = list(self.draw(st.permutations(output)))
        summed = [letter for letter in dict.fromkeys(every) if letter not in output]
        if any(isinstance(letters[letter], str) for letter in summed):
            output.append("b")  # a symbolic size stays in the result: its sum would be unbounded here
            summed.remove("b")
        subscripts = ",".join(terms) + "->" + "".join(output)
        if binary:
            node = contract(values[0].node, values[1].node, subscripts)
        else:
            node = tg.einsum(subscripts, *(value.node for value in values))
        bound = math.prod(value.bound for value in values) * _count(letters[letter] for letter in summed)
        return self.push(node, bound)

    def tensordot(self) -> Value:
        a = self.tame(self.any_value(lambda value: not _symbolic(value.shape), max_rank=3,
                                     shape=(self.dim(), self.dim())), 3.0)
        count = self.draw(st.integers(0, a.ndim))
        shape = a.shape[a.ndim - count:] + tuple(self.dim() for _ in range(self.draw(st.integers(0, 1))))
        b = self.tame(self.operand(lambda value: value.shape == shape, lambda: self.leaf(shape)), 3.0)
        node = tg.tensordot(a.node, b.node, axes=count)
        return self.push(node, a.bound * b.bound * _count(a.shape[a.ndim - count:]))

    def batched_matmul(self, dot: bool) -> Value:
        """matmul (or dot) with a stack of matrices, or dot with a scalar."""
        if dot and self.flip(40):
            a = self.tame(self.any_value(max_rank=2), 10.0)
            b = self.tame(self.operand(lambda value: value.ndim == 0, lambda: self.leaf(())), 10.0)
            left, right = (a, b) if self.flip(50) else (b, a)
            return self.push(tg.dot(left.node, right.node), a.bound * b.bound)
        n, k, m = self.dim(), self.dim(), self.dim()
        lead = self.choice([self.batch, self.dim()])
        a_shape = self.choice([(lead, n, k), (k,), (n, k), (lead, 1, n, k)])
        if dot:
            b_shape = self.choice([(k,), (k, m), (lead, k, m)]) if len(a_shape) > 2 else (lead, k, m)
        else:
            b_shape = self.choice([(k,), (k, m), (lead, k, m), (1, lead, k, m)]) if len(a_shape) > 2 else (lead, k, m)
        if not dot and len(a_shape) == 4 and len(b_shape) == 4:
            b_shape = (k, m)
        transpose_a = not dot and len(a_shape) >= 2 and self.flip(30)
        transpose_b = not dot and len(b_shape) >= 2 and self.flip(30)
        if transpose_a:
            a_shape = a_shape[:-2] + (a_shape[-1], a_shape[-2])
        if transpose_b:
            b_shape = b_shape[:-2] + (b_shape[-1], b_shape[-2])
        a = self.tame(self.any_value(lambda value: value.shape == a_shape, max_rank=len(a_shape), shape=a_shape), 10.0)
        b = self.tame(self.operand(lambda value: value.shape == b_shape, lambda: self.leaf(b_shape)), 10.0)
        if dot:
            node = tg.dot(a.node, b.node)
        else:
            node = tg.matmul(a.node, b.node, transpose_a=transpose_a, transpose_b=transpose_b)
        return self.push(node, a.bound * b.bound * k)

    # The graph.

    def apply(self, name: str) -> Value:
        """Apply the op or composite ``name`` once, to drawn operands."""
        if name in ("add", "sub", "mul", "div"):
            return self.binary(name)
        if name in ("neg", "exp", "log", "sqrt", "tanh", "square", "relu", "sign", "sigmoid", "abs", "sin", "cos",
                    "tan", "arctan", "log1p", "expm1", "softplus", "log_sigmoid", "stop_gradient"):
            return self.unary(name)
        if name in ("maximum", "minimum"):
            return self.extremum(name)
        if name in ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal", "where"):
            return self.where(name)
        if name in ("sum", "mean", "sum_squares"):
            return self.reduction(name)
        if name in ("softmax", "log_softmax", "softmax_jvp"):
            return self.softmax(name)
        if name in ("max", "min", "logsumexp", "var", "std"):
            return self.chooser(name)
        if name in ("pick", "cross_entropy", "nll"):
            return self.pick(name)
        if name in ("affine", "vector_scalar_affine"):
            return self.affine(name)
        if name == "dot":
            return self.batched_matmul(dot=True) if self.flip(40) else self.matmul(flags=False)
        if name == "matmul" and self.flip(30):
            return self.batched_matmul(dot=False)
        if name == "contract":
            return self.einsum(binary=True)
        if name == "flip":
            return self.flip_axes()
        if name in ("take", "gather"):
            return self.take(name)
        return getattr(self, name)()

    def objective(self, required: list[Value]) -> Node:
        """A weighted sum of sums or means of ``required`` and a few other values."""
        floats = [value for value in self.pool if value.node.op.name != "const"]
        extra = self.draw(st.lists(st.sampled_from(floats), max_size=2)) if floats else []
        total: Node | None = None
        for value in required + extra:
            value = self.tame(value)
            term = value.node
            if term.ndim:
                reduce = self.choice([tg.sum, tg.mean, "weighted"])
                if reduce == "weighted":  # a random linear functional: no symmetry can hide a wrong entry
                    weights = self.rng.uniform(-1.0, 1.0, size=[dim for dim in term.shape if not isinstance(dim, str)])
                    if weights.ndim == term.ndim:
                        term = tg.sum(term * tg.const(weights, dtype=term.dtype))
                    else:
                        term = tg.mean(term)
                else:
                    term = reduce(term)
            if self.flip(40):
                term = term * float(self.rng.uniform(0.5, 1.5))
            if self.flip(20):
                term = self.second_order(term)
            total = term if total is None else total + term
        return total

    def second_order(self, term: Node) -> Node:
        """``term`` plus a weighted sum of ``tanh`` of its gradient in one parameter.

        The objective's gradient then differentiates the VJP rules' own
        nodes (``expand``, ``sum_to``, ``unpick``, ``softmax_minus_onehot``)
        as a Hessian-vector product does.
        """
        params = [node for node in reachable([term]) if node.op.name == "param"]
        if not params:
            return term
        parameter = self.choice(sorted(params, key=lambda node: node.name))
        (gradient,) = tg.grad(term, [parameter])
        weights = tg.const(self.rng.uniform(-1.0, 1.0, size=parameter.shape), dtype=gradient.dtype)
        # tanh keeps the term bounded, whatever the size of the gradient
        return term + tg.sum(tg.tanh(gradient) * weights)


def _leaves(node: Node) -> set[Node]:
    """The parameters and inputs ``node`` is computed from."""
    return {item for item in reachable([node]) if item.op.name in ("param", "input")}


def _depends_on_params(node: Node) -> bool:
    return any(item.op.name == "param" for item in reachable([node]))


def reachable(roots: Iterable[Node]) -> set[Node]:
    """``roots`` and every node they depend on."""
    nodes: set[Node] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node not in nodes:
            nodes.add(node)
            stack.extend(node.inputs)
    return nodes


def size_unknown(roots: list[Node]) -> bool:
    """True when some node's shape holds a symbol that no leaf's shape does."""
    nodes = reachable(roots)
    in_leaves = {dim for node in nodes if node.is_leaf for dim in node.shape if isinstance(dim, str)}
    return any(isinstance(dim, str) and dim not in in_leaves for node in nodes for dim in node.shape)


def _broadcast_rank(a: tuple, b: tuple) -> int:
    """The rank of the shapes broadcast together (a large number if they do not broadcast)."""
    try:
        return len(broadcast(a, b))
    except ValueError:
        return 1_000


#: Leaf names that a code generator could confuse with its own: every
#: builtin, the generated code's names, and the kernel functions it calls.
TRICKY_NAMES: tuple[str, ...] = tuple(sorted(
    set(dir(builtins))
    | {"np", "math", "nan", "inf", "make", "run", "_nonfinite", "s0", "s1", "s12", "v0", "v3", "r2", "w1_row", "x", "w"}
    | {op.kernel.__name__ for op in REGISTRY.values() if not isinstance(op.kernel, np.ufunc)}))

#: A graph's precision, drawn once per graph: mostly float64.
PRECISIONS: tuple[str, ...] = ("float64", "float64", "float32", "mixed")

#: The ops the strategy can draw: every registered primitive and composite.
FOCUS_OPS: tuple[str, ...] = tuple(sorted(set(REGISTRY) | set(COMPOSITES)))


@st.composite
def graphs(draw: Callable, focus: str, max_extra_ops: int = MAX_EXTRA_OPS) -> DrawnGraph:
    """A random graph that uses ``focus`` (an op or composite name) on its way to the objective."""
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    batched = draw(st.booleans(), label="batched")
    builder = _Builder(draw, batched, seed)
    before = draw(st.integers(0, max_extra_ops), label="ops before the focus op")
    after = draw(st.integers(0, max_extra_ops - before), label="ops after it")
    for _ in range(before):
        builder.apply(draw(st.sampled_from(FOCUS_OPS)))
    focused = builder.apply(focus)
    for _ in range(after):
        builder.apply(draw(st.sampled_from(FOCUS_OPS)))
    objective = builder.objective([focused, builder.pool[-1]])
    # outputs: some values (leaves and labels too), used by the objective or not
    candidates = [value.node for value in builder.pool] + [label.node for label in builder.labels]
    chosen = draw(st.lists(st.sampled_from(candidates), max_size=3, unique_by=id))
    outputs = {f"out{index}": node for index, node in enumerate(chosen) if node.op.name != "const"}
    if size_unknown([objective]) or size_unknown([objective, *outputs.values()]):
        # "batch" came in through a static shape alone (broadcast_to, expand):
        # a call must still be given its size, by an input that has it
        objective = objective + tg.mean(builder.leaf((builder.batch,)).node)
    if batched:
        first = draw(st.integers(1, MAX_BATCH), label="batch size")
        second = draw(st.integers(1, MAX_BATCH).filter(lambda size: size != first), label="second batch size")
        batch_sizes: tuple = (first, second)
    else:
        batch_sizes = (None,)
    return DrawnGraph(focus, objective, outputs, list(builder.params), dict(builder.leaves), batch_sizes, seed,
                      builder.precision)
