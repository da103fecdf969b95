"""The op record, the registry, and ``apply``, which builds a node of an op.

An op is one frozen record: its shape rule, a forward kernel that writes
into a preallocated ``out`` array, a VJP rule that builds expression nodes,
and sample arguments that the test suite gradient-checks. Declaring an op
is one ``register(Op(...))`` statement in a module of this package; the
compiler only ever looks ops up here, so a new op never touches it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from tapegraph.errors import ShapeError
from tapegraph.expr import ConstValue, Node, caller_origin, const
from tapegraph.shapes import Shape, format_type, is_concrete

#: ``shape_rule(*input_nodes, **static) -> (shape, dtype)``; raises ValueError.
ShapeRule = Callable[..., tuple[Shape, str]]
#: ``vjp(g, ans, *input_nodes, **static) -> one Node or None per input``.
VjpRule = Callable[..., tuple[Node | None, ...]]


@attrs.frozen
class Arg:
    """How the test suite draws one argument of a sample."""

    #: Concrete shape of the array.
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    #: dtype; integer arguments (labels) get no gradient.
    dtype: str = "float64"
    #: Values are drawn uniformly from [low, high) (integers: low..high-1).
    low: float = -2.0
    high: float = 2.0
    #: Declare the leading dimension as the symbolic ``"batch"`` in the
    #: batched variant of the test.
    batch: bool = False


@attrs.frozen
class Sample:
    """One set of arguments on which the tests check an op."""

    args: tuple[Arg, ...] = attrs.field(converter=tuple)
    static: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Scratch:
    """A workspace array the kernel writes before it reads: allocated, never filled.

    An op's ``workspace`` rule returns one for each scratch array, and a
    numpy array for fixed data the kernel reads (row offsets), so a tape
    can say which is which: scratch is allocated uninitialised, fixed
    contents are carried in the tape and written out by generated source.
    """

    shape: tuple[int, ...] = attrs.field(converter=tuple)
    dtype: str = "float64"


@attrs.frozen
class Op:
    """A primitive operator: everything the engine knows about it.

    The forward ``kernel(*inputs, out, **static)`` computes into ``out``
    (positional, last, so numpy ufuncs such as ``np.add`` serve as kernels
    as they are). ``vjp(g, ans, *inputs, **static)`` returns, for each
    input, the expression of that input's cotangent, or None where no
    gradient flows (integer labels, piecewise-constant functions). Shapes
    need not match: the differentiation pass sums each cotangent down to
    its input's shape, so broadcasting is undone in one place.
    """

    #: Name used in dumps, errors and the registry.
    name: str
    #: Number of inputs.
    arity: int
    #: Computes the output type from the input nodes.
    shape_rule: ShapeRule
    #: Writes the output into ``out``; never allocates its result.
    kernel: Callable[..., Any]
    #: Builds the cotangent expressions of the inputs.
    vjp: VjpRule
    #: Arguments the test suite checks the op on (at least one).
    samples: tuple[Sample, ...] = attrs.field(converter=tuple)
    #: The maths, for dumps and docs.
    doc: str = ""
    #: True when ``out`` may be the same array as an input (ufunc-like
    #: ops); the buffer planner then lets the output reuse a dying input.
    elementwise: bool = False
    #: ``specialize(in_shapes, out_shape, **static) -> dict`` of further
    #: static keyword arguments for the kernel, computed once per concrete
    #: shape (reduction axes, scale factors).
    specialize: Callable[..., dict[str, Any]] | None = None
    #: ``workspace(in_shapes, out_shape, dtype, **static) -> dict`` of the
    #: arrays the kernel gets as keyword arguments, allocated once per
    #: instruction so the kernel need not allocate while running: a
    #: ``Scratch`` for each array the kernel only writes before reading,
    #: a numpy array for fixed data it reads (row offsets), which the tape
    #: carries and generated source reproduces.
    workspace: Callable[..., dict[str, "np.ndarray | Scratch"]] | None = None
    #: How generated code runs the op, when a direct numpy call beats
    #: calling ``kernel``: a format string (or ``source(**static) -> str``
    #: giving one) over the operands ``{0}``, ``{1}``, ..., the output
    #: ``{out}``, the static and specialised attributes and the workspace
    #: names, e.g. ``"np.dot({0}, {1}, out={out})"``. A 0-d float64 operand
    #: may arrive as a Python float. It must compute what ``kernel``
    #: computes; a registry-driven test holds them to it.
    source: str | Callable[..., str] | None = None
    #: An expression giving a 0-d float64 result as a Python number, e.g.
    #: ``"{0} + {1}"``: generated code keeps scalars out of 0-d arrays,
    #: whose every operation costs a numpy dispatch. Operands as for
    #: ``source``; only for ops whose float64 arithmetic is the same in
    #: Python as in numpy.
    scalar: str | Callable[..., str] | None = None

    def __attrs_post_init__(self) -> None:
        if not self.samples:
            raise ValueError(f"op {self.name!r} declares no samples; the test suite needs at least one")

    def evaluate(self, operands: Sequence[np.ndarray], shape: tuple[int, ...], dtype: str,
                 static: Mapping[str, Any]) -> np.ndarray:
        """Run the op once on given arrays into a new read-only array.

        Used for constant folding and as the reference for the op's
        ``source`` and ``scalar`` forms, which tests compare with it.
        """
        in_shapes = [operand.shape for operand in operands]
        derived = self.specialize(in_shapes, shape, **static) if self.specialize else {}
        scratch = allocate_workspace(self.workspace(in_shapes, shape, dtype, **static)) if self.workspace else {}
        out = np.empty(shape, dtype=dtype)
        self.bind(list(operands), out, {**static, **derived}, scratch)()
        out.setflags(write=False)
        return out

    def bind(self, inputs: Sequence[np.ndarray], out: np.ndarray, static: Mapping[str, Any],
             workspace: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """A no-argument callable that runs the kernel on fixed arrays."""
        return functools.partial(self.kernel, *inputs, out, **static, **workspace)

    def source_template(self, static: Mapping[str, Any]) -> str | None:
        """The ``source`` format string for these attributes, if any."""
        return self.source(**static) if callable(self.source) else self.source

    def scalar_template(self, static: Mapping[str, Any]) -> str | None:
        """The ``scalar`` format string for these attributes, if any."""
        return self.scalar(**static) if callable(self.scalar) else self.scalar


def allocate_workspace(arrays: Mapping[str, "np.ndarray | Scratch"]) -> dict[str, np.ndarray]:
    """Arrays for a ``workspace`` rule's result: scratch allocated, fixed data copied."""
    return {name: np.empty(item.shape, dtype=item.dtype) if isinstance(item, Scratch) else np.array(item)
            for name, item in arrays.items()}


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add ``op`` to the registry (names are unique) and return it."""
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    REGISTRY[op.name] = op
    return op


def _operand_dtype(operands: Sequence[Any]) -> str | None:
    for operand in operands:
        if isinstance(operand, Node) and operand.dtype.startswith("float"):
            return operand.dtype
    return None


def as_node(value: Any, like_dtype: str | None = None) -> Node:
    """A node for ``value``: nodes pass through, numbers become constants.

    A Python number takes the floating dtype of the other operands, so
    ``x * 2`` stays float32 when ``x`` is.
    """
    if isinstance(value, Node):
        return value
    if isinstance(value, (bool, int, float, np.number, np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return const(array, dtype=like_dtype or ("float64" if array.dtype.kind != "f" else None))
    raise TypeError(f"cannot use {type(value).__name__} {value!r} as an operand; expected a tapegraph node or a number")


def apply(op: Op, *operands: Any, name: str | None = None, **static: Any) -> Node:
    """Build the node ``op(*operands)``, checking its type now.

    A bad shape or dtype raises ``ShapeError`` naming the op, the operand
    types and the user's line, so the mistake is reported where it was made.
    """
    origin = caller_origin()
    if len(operands) != op.arity:
        raise TypeError(f"{op.name} takes {op.arity} operand(s), got {len(operands)} at {origin}")
    like = _operand_dtype(operands)
    nodes = tuple(as_node(operand, like) for operand in operands)
    try:
        shape, dtype = op.shape_rule(*nodes, **static)
    except ValueError as error:
        operand_text = ", ".join(_describe(node) for node in nodes)
        raise ShapeError(f"{op.name}({operand_text}) at {origin}: {error}") from None
    if all(node.op == "const" for node in nodes) and is_concrete(shape):
        # fold now, so that rules building on this node see a constant
        # (x * 1 and x + 0 simplify; gradients of constants vanish)
        value = op.evaluate([node.value.array for node in nodes], tuple(shape), dtype, static)
        return Node("const", (), (), value.shape, value.dtype.name, name=name, value=ConstValue(value), origin=origin)
    static_items = tuple(sorted(static.items()))
    return Node(op.name, nodes, static_items, shape, dtype, name=name, origin=origin)


def _describe(node: Node) -> str:
    if node.name is not None:
        return f"{node.name}: {node.type_str}"
    return node.type_str


# Shape-rule building blocks shared by several ops.

def require_float(*nodes: Node) -> None:
    """Raise unless every node holds floating-point values."""
    for node in nodes:
        if np.dtype(node.dtype).kind != "f":
            what = f"{node.name!r} " if node.name else ""
            raise ValueError(f"operand {what}has integer dtype {node.dtype}; this op needs floating-point data")


def result_dtype(*nodes: Node) -> str:
    """The common floating dtype of float operands."""
    require_float(*nodes)
    return np.result_type(*(np.dtype(node.dtype) for node in nodes)).name


def normalize_axis(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints (None: every axis)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    result = set()
    for item in axis:
        if not -ndim <= item < ndim:
            raise ValueError(f"axis {item} is out of range for {ndim} dimension(s)")
        result.add(item % ndim)
    return tuple(sorted(result))


def type_of(node: Node) -> str:
    """``f64[3]``, for messages."""
    return format_type(node.shape, node.dtype)
