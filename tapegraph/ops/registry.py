"""The op record, the registries, and ``apply``, which builds a node of an op.

An op is one frozen record: its operands and static attributes, its shape
rule, a forward kernel that writes into a preallocated ``out`` array, a
VJP rule that builds expression nodes, and sample arguments that the test
suite gradient-checks. Nodes and tape instructions hold the record itself,
so the compiler and backends never look an op up by name. Declaring a
built-in op is one ``register(Op(...))`` statement in a module of this
package; its public function (``tg.tanh``), with a real signature and the
record's docstring, is generated from the record (``Op.function``), and
calling the record does the same (``TANH(x)``).

Users declare their own ops with ``register_op`` (``tg.register_op``):
they live in ``USER_OPS``, apart from the built-in ``REGISTRY`` that the
registry-driven tests walk, and share one namespace of names with it.

``Op.native`` is the op's form in the native (numba) backend's code: an
entry expression such as ``"{0} + {1}"`` for an op computed entry by
entry, or a function of a ``tapegraph.ops.native.NativeContext`` giving
the statements (see that module). An op without one runs on the numpy
backend only; compiling it natively raises ``OpError`` naming the op.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import keyword
import linecache
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from tapegraph.errors import AllocationError, OpError, ShapeError
from tapegraph.expr import CONST, ConstValue, Node, caller_origin, const, origin_location, refuse_name_comparison
from tapegraph.shapes import Shape, format_type, is_concrete

#: ``shape_rule(*input_nodes, **static) -> (shape, dtype)``; raises ValueError.
ShapeRule = Callable[..., tuple[Shape, str]]
#: ``vjp(g, ans, *input_nodes, **static) -> one Node or None per input``.
VjpRule = Callable[..., tuple[Node | None, ...]]
#: ``normalize(*input_nodes, **static) -> static``: the attributes as the
#: node stores them (``axis=None`` becomes every axis as a sorted tuple);
#: raises ValueError or TypeError for a bad attribute.
Normalizer = Callable[..., dict[str, Any]]
#: ``rewrite(node) -> node``: a simpler node of the same value and type, or
#: the node itself.
Rewrite = Callable[[Node], Node]


class _Required:
    """The default of a static attribute that every call must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: In ``Op.attributes``: the attribute has no default.
REQUIRED: Any = _Required()


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


@attrs.frozen(eq=False, repr=False)
class Op:
    """A primitive operator: everything the engine knows about it.

    The forward ``kernel(*inputs, out, **static)`` computes into ``out``
    (positional, last, so numpy ufuncs such as ``np.add`` serve as kernels
    as they are). ``vjp(g, ans, *inputs, **static)`` returns, for each
    input, the expression of that input's cotangent, or None where no
    gradient flows (integer labels, piecewise-constant functions). Shapes
    need not match: the differentiation pass sums each cotangent down to
    its input's shape, so broadcasting is undone in one place.

    The op's function takes the ``operands``, then the ``attributes`` (with
    their defaults), then a keyword-only ``name``; it is generated once,
    as ``Op.function``, and calling the record calls it. Records compare
    by identity and pickle by their registered name.
    """

    #: Name used in dumps, errors, the registry and the generated function
    #: (a Python identifier).
    name: str
    #: The operands' parameter names, in order: ``("x",)``, ``("a", "b")``.
    operands: tuple[str, ...] = attrs.field(converter=tuple)
    #: Computes the output type from the input nodes.
    shape_rule: ShapeRule
    #: Writes the output into ``out``; never allocates its result.
    kernel: Callable[..., Any]
    #: Builds the cotangent expressions of the inputs.
    vjp: VjpRule
    #: Arguments the test suite checks the op on (at least one).
    samples: tuple[Sample, ...] = attrs.field(converter=tuple)
    #: The function's docstring: what it computes, the maths, an example.
    doc: str = ""
    #: The static attributes in signature order, each with its default
    #: (``REQUIRED`` for none): ``{"axis": None, "keepdims": False}``.
    attributes: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    #: Puts the attributes in the form the node stores, from the operand
    #: nodes; it must give its own output back unchanged.
    normalize: Normalizer | None = None
    #: Applied to a node the function built when the caller named none:
    #: returns a simpler equal node (``x + 0`` is ``x``) or the node itself.
    rewrite: Rewrite | None = None
    #: Exported at top level as ``tg.<name>``; internal ops (``sum_to``,
    #: ``pick``) are reachable in ``tapegraph.ops`` only.
    public: bool = True
    #: True when ``out`` may be the same array as an input (ufunc-like
    #: ops); the buffer planner then lets the output reuse a dying input.
    elementwise: bool = False
    #: Operands the kernel takes as a Python number where generated code has
    #: one (a single float64 value, such as an SGD step's step size), each
    #: 0-d: the kernel does scalar arithmetic with it and must accept a
    #: number or a 0-d array there (folding and tests pass arrays). A float
    #: given as a number saves the kernel ``float()`` of a 0-d array and
    #: generated code storing the number into one.
    numbers: tuple[str, ...] = attrs.field(default=(), converter=tuple)
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
    #: ``fill(*fills, in_shapes, out_shape, **static) -> number``: the one
    #: number every entry of the result holds when each operand is a
    #: constant fill (all entries one number, given as 0-d arrays), so
    #: folding keeps a fill a fill however large (``fold``). Elementwise
    #: ops need none: their kernel applied to the 0-d fills gives it.
    fill: Callable[..., Any] | None = None
    #: The op in the native backend's numba code (``tapegraph.ops.native``):
    #: an entry expression over ``{0}``, ``{1}``, ... and the attributes
    #: (``"np.log({0})"``; the backend writes the loops and broadcasts), or
    #: ``native(ctx) -> str`` giving the statements that compute the
    #: result. It must compute what ``kernel`` computes, numpy's nan and
    #: inf included; a registry-driven test holds them to it. None: the op
    #: cannot run natively.
    native: "str | Callable[..., str] | None" = None
    #: The generated function (see ``function``).
    _function: Callable[..., Node] = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        _check_declaration(self)
        object.__setattr__(self, "_function", _make_function(self))

    @property
    def arity(self) -> int:
        """Number of operands."""
        return len(self.operands)

    @property
    def number_positions(self) -> frozenset[int]:
        """Positions of the operands in ``numbers``."""
        return frozenset(self.operands.index(name) for name in self.numbers)

    @property
    def function(self) -> Callable[..., Node]:
        """The op's public function, ``tg.sum(x, axis=None, keepdims=False, *, name=None)``."""
        return self._function

    def __call__(self, *args: Any, **kwargs: Any) -> Node:
        """Build a node of this op, as its function does."""
        return self._function(*args, **kwargs)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<op {self.name}>"

    def __eq__(self, other: object) -> bool:
        return refuse_name_comparison(self, other)

    __hash__ = object.__hash__

    def __reduce__(self) -> tuple:
        # pickled by name, so that an unpickled node holds this process's record
        if _registered(self.name) is not self:
            raise OpError(f"cannot pickle op {self.name!r}: it is not registered (or another op took its name); "
                          "ops pickle by registered name, so declare it with tg.register_op first")
        return (lookup_op, (self.name,))

    def cotangents(self, g: Node, node: Node) -> tuple[Node | None, ...]:
        """The VJP rule applied to ``node`` (of this op) and its cotangent ``g``, checked.

        Raises ``OpError`` unless the rule gives one node (or None) per
        operand, so a user's rule that returns a bare node is caught here.
        """
        result = self.vjp(g, node, *node.inputs, **dict(node.static))
        if not isinstance(result, (tuple, list)) or len(result) != self.arity \
                or not all(item is None or isinstance(item, Node) for item in result):
            raise OpError(f"the VJP rule of op {self.name!r} must return a tuple of {self.arity} node(s) or None, "
                          f"one per operand {self.operands}, got {result!r} (differentiating {node.label})")
        return tuple(result)

    def evaluate(self, operands: Sequence[np.ndarray], shape: tuple[int, ...], dtype: str,
                 static: Mapping[str, Any]) -> np.ndarray:
        """Run the op once on given arrays into a new read-only array.

        Used for constant folding and as the reference for the op's
        ``source`` and ``scalar`` forms, which tests compare with it.
        """
        in_shapes = [operand.shape for operand in operands]
        derived = self.specialize(in_shapes, shape, **static) if self.specialize else {}
        scratch = allocate_workspace(self.workspace(in_shapes, shape, dtype, **static)) if self.workspace else {}
        out = allocate(shape, dtype, f"the result of {self.name}")
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


def _is_plain_name(text: Any) -> bool:
    return isinstance(text, str) and text.isidentifier() and not keyword.iskeyword(text) and not text.startswith("_")


def _check_declaration(op: Op) -> None:
    """Refuse a malformed record when it is declared, naming what is wrong."""
    if not _is_plain_name(op.name):
        raise OpError(f"op name {op.name!r} must be a Python identifier (not a keyword, no leading underscore): "
                      "it names the op's function")
    where = f"op {op.name!r}"
    names = [*op.operands, *op.attributes]
    for item in names:
        if not _is_plain_name(item) or item == "name":
            raise OpError(f"{where}: parameter name {item!r} must be a Python identifier other than 'name' "
                          "(not a keyword, no leading underscore)")
    duplicates = sorted({item for item in names if names.count(item) > 1})
    if duplicates:
        raise OpError(f"{where}: parameter names {duplicates} are given more than once")
    if not op.operands:
        raise OpError(f"{where} declares no operands; an op takes at least one input")
    unknown_numbers = [item for item in op.numbers if item not in op.operands]
    if unknown_numbers:
        raise OpError(f"{where}: numbers {unknown_numbers} are not among its operands {op.operands}")
    seen_default = None
    for key, default in op.attributes.items():
        if default is REQUIRED and seen_default is not None:
            raise OpError(f"{where}: required attribute {key!r} comes after {seen_default!r}, which has a default; "
                          "put required attributes first")
        if default is not REQUIRED:
            seen_default = key
    for role in ("shape_rule", "kernel", "vjp"):
        if not callable(getattr(op, role)):
            raise OpError(f"{where}: {role} must be callable, got {getattr(op, role)!r}")
    if _kernel_name(op) == "":
        raise OpError(f"{where}: the kernel must be a numpy ufunc or a function defined with def, got {op.kernel!r}: "
                      "generated code calls it by its name")
    if not op.samples:
        raise OpError(f"op {op.name!r} declares no samples; the test suite needs at least one")
    for index, sample in enumerate(op.samples):
        if not isinstance(sample, Sample):
            raise OpError(f"{where}: sample {index} is a {type(sample).__name__}, not a tapegraph Sample")
        if len(sample.args) != op.arity:
            raise OpError(f"{where}: sample {index} has {len(sample.args)} argument(s), but the op takes "
                          f"{op.arity} operand(s) {op.operands}")
        unknown = sorted(set(sample.static) - set(op.attributes))
        if unknown:
            raise OpError(f"{where}: sample {index} gives attributes {unknown} that the op does not declare "
                          f"(declared: {sorted(op.attributes)})")


def _kernel_name(op: Op) -> str | None:
    """The name generated code calls the kernel by; None for a ufunc, "" if it has none."""
    if isinstance(op.kernel, np.ufunc):
        return None
    name = getattr(op.kernel, "__name__", "")
    return name if isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name) else ""


_GENERATED_DIR = os.path.dirname(os.path.abspath(__file__))


def _make_function(op: Op) -> Callable[..., Node]:
    """The op's function, compiled from a two-line source.

    A real ``def`` gives a real signature, Python's own messages for wrong
    arguments, and a call as cheap as a hand-written wrapper. Its file name
    lies inside the package, so ``caller_origin`` skips its frame and a
    node's origin stays the user's line.
    """
    parameters = list(op.operands)
    for key, default in op.attributes.items():
        parameters.append(key if default is REQUIRED else f"{key}=_defaults[{key!r}]")
    static = "".join(f", {key}={key}" for key in op.attributes)
    source = (f"def {op.name}({', '.join(parameters)}, *, name=None):\n"
              f"    return _apply(_op, {''.join(f'{operand}, ' for operand in op.operands)}name=name{static})\n")
    filename = os.path.join(_GENERATED_DIR, f"<op {op.name}>")
    namespace = {"_apply": apply, "_op": op, "_defaults": dict(op.attributes)}
    exec(compile(source, filename, "exec"), namespace)
    # tracebacks through the function show its line
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    function = namespace[op.name]
    function.__doc__ = op.doc or None
    function.__module__ = "tapegraph.ops"
    function.op = op
    return function


def allocate_workspace(arrays: Mapping[str, "np.ndarray | Scratch"]) -> dict[str, np.ndarray]:
    """Arrays for a ``workspace`` rule's result: scratch allocated, fixed data copied."""
    return {name: allocate(item.shape, item.dtype, f"workspace {name!r}") if isinstance(item, Scratch)
            else np.array(item) for name, item in arrays.items()}


def allocate(shape: Sequence[int], dtype: Any, what: str | Callable[[], str]) -> np.ndarray:
    """``np.empty(shape, dtype)``, or ``AllocationError`` naming ``what`` and its size.

    numpy raises a bare ``MemoryError`` (or, past the largest possible
    size, a ``ValueError``) that says neither which value nor why.
    ``what`` may be a function giving the text, called only on failure.
    """
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError) as error:
        if callable(what):
            what = what()
        # numpy's own text repeats the size, rounded otherwise ("728. TiB"):
        # say why in a few words of ours instead
        if isinstance(error, MemoryError):
            why = "not enough memory"
        elif "too big" in str(error):
            why = "larger than the largest array numpy can make"
        else:
            why = f"numpy: {error}"
        raise AllocationError(f"{what}, {format_type(tuple(shape), np.dtype(dtype).name)}, needs "
                              f"{format_bytes(np.prod(shape, dtype=float) * np.dtype(dtype).itemsize)}, "
                              f"which cannot be allocated ({why})") from None


def format_bytes(count: float) -> str:
    """``7.3 TiB``: a byte count for messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} bytes" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def fold(op: Op, constants: Sequence[ConstValue], shape: tuple[int, ...], dtype: str,
         static: Mapping[str, Any]) -> ConstValue:
    """The constant ``op(*constants)``, computed now (constant folding).

    When every operand is a fill (``ConstValue.fill``) and the op is
    elementwise or has a ``fill`` rule, the result is a fill computed from
    the operands' numbers alone: nothing of the result's size is
    allocated, so the gradient of ``tg.sum`` of a (10**6, 10**6) parameter
    stays one number. Otherwise the op runs (``AllocationError`` if its
    result is too large to hold).
    """
    if all(constant.fill is not None for constant in constants):
        fills = [constant.fill for constant in constants]
        if op.elementwise:
            return ConstValue.full(shape, op.evaluate(fills, (), dtype, static), dtype)
        if op.fill is not None:
            in_shapes = [constant.array.shape for constant in constants]
            return ConstValue.full(shape, op.fill(*fills, in_shapes=in_shapes, out_shape=shape, **static), dtype)
    return ConstValue.of(op.evaluate([constant.array for constant in constants], shape, dtype, static))


#: The built-in primitives, by name (what the registry-driven tests walk).
REGISTRY: dict[str, Op] = {}
#: Primitives declared in users' code with ``register_op``, by name.
USER_OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add a built-in ``op`` to ``REGISTRY`` (names are unique) and return it."""
    if op.name in REGISTRY:
        raise OpError(f"op {op.name!r} is registered twice")
    REGISTRY[op.name] = op
    return op


def register_op(op: Op, *, replace: bool = False) -> Op:
    """Register an op declared in your own code, and return the op to use.

    The op then works everywhere a built-in one does: call it (``op(x)``,
    or ``op.function`` with its real signature) to build nodes, compile,
    differentiate, dump, export, draw, print source, pickle, and check it
    with ``tg.testing.check_op``.

    A name is taken once. Registering again an op declared the same way
    (same fields, functions with the same code: a notebook cell run twice)
    returns the op already registered, so nodes built before and after are
    one op. A different op under a taken name raises ``OpError``, unless
    ``replace=True`` (a user op only, never a built-in one); nodes built
    before then keep the op they were built with.
    """
    if not isinstance(op, Op):
        raise OpError(f"register_op takes a tapegraph Op record, got {type(op).__name__} {op!r}")
    if op.name in REGISTRY:
        raise OpError(f"op name {op.name!r} is taken by a built-in op; give your op another name")
    previous = USER_OPS.get(op.name)
    if previous is not None and not replace:
        if previous is op or _same_declaration(previous, op):
            return previous
        raise OpError(f"op {op.name!r} is already registered with a different declaration "
                      f"({_first_difference(previous, op)} differs); give it another name, or pass replace=True")
    for other in [*REGISTRY.values(), *USER_OPS.values()]:
        kernel_name = _kernel_name(op)
        if kernel_name is not None and other.name != op.name and _kernel_name(other) == kernel_name \
                and other.kernel is not op.kernel:
            raise OpError(f"op {op.name!r}: its kernel is named {kernel_name!r} like the kernel of op "
                          f"{other.name!r}; generated code calls kernels by name, so rename one")
    USER_OPS[op.name] = op
    return op


def lookup_op(name: str) -> Op:
    """The registered op called ``name`` (built-in or user-declared); ``OpError`` if none is."""
    op = _registered(name)
    if op is None:
        raise OpError(f"no op named {name!r} is registered; a user op must be declared (tg.register_op) in this "
                      "process before nodes holding it are unpickled")
    return op


def _registered(name: str) -> Op | None:
    return REGISTRY.get(name) or USER_OPS.get(name)


def _comparable(value: Any) -> Any:
    # functions compare by their code, so a declaration run twice matches itself
    if inspect.isfunction(value):
        return ("function", value.__code__, value.__defaults__, value.__kwdefaults__)
    return value


def _first_difference(a: Op, b: Op) -> str | None:
    for field in attrs.fields(Op):
        if not field.init:
            continue
        left, right = _comparable(getattr(a, field.name)), _comparable(getattr(b, field.name))
        try:
            same = left is right or bool(left == right)
        except (TypeError, ValueError):  # arrays in samples: compare by identity
            same = False
        if not same:
            return field.name
    return None


def _same_declaration(a: Op, b: Op) -> bool:
    return _first_difference(a, b) is None


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

    The attributes are normalised by the op's ``normalize``; a bad shape,
    dtype or attribute raises ``ShapeError`` naming the op, the operand
    types and the user's line, so the mistake is reported where it was
    made. Constant operands are folded; without a ``name``, the op's
    ``rewrite`` may return a simpler equal node.
    """
    origin = caller_origin()
    if len(operands) != op.arity:
        raise TypeError(f"{op.name} takes {op.arity} operand(s), got {len(operands)} at {origin}")
    if static.keys() != op.attributes.keys():
        static = _with_defaults(op, static, origin)
    like = _operand_dtype(operands)
    nodes = _promote(tuple(as_node(operand, like) for operand in operands))
    try:
        if op.normalize is not None:
            static = op.normalize(*nodes, **static)
        shape, dtype = op.shape_rule(*nodes, **static)
    except (ValueError, TypeError) as error:
        if isinstance(error, TypeError) and op.normalize is None:
            raise  # a bug in the shape rule, not a bad attribute
        operand_text = ", ".join(_describe(node) for node in nodes)
        raise ShapeError(f"{op.name}({operand_text}) at {origin}: {error}") from None
    if all(node.op is CONST for node in nodes) and is_concrete(shape):
        # fold now, so that rules building on this node see a constant
        # (x * 1 and x + 0 simplify; gradients of constants vanish)
        try:
            # in numpy's words: a ufunc kernel's name (divide, not div)
            with _warnings_at(origin, op.kernel.__name__ if isinstance(op.kernel, np.ufunc) else op.name):
                value = fold(op, [node.value for node in nodes], tuple(shape), dtype, static)
        except AllocationError as error:
            operand_text = ", ".join(_describe(node) for node in nodes)
            raise AllocationError(f"{op.name}({operand_text}) at {origin}, folding constants: {error}") from None
        return Node(CONST, (), (), tuple(shape), dtype, name=name, value=value, origin=origin)
    static_items = tuple(sorted(static.items()))
    node = Node(op, nodes, static_items, shape, dtype, name=name, origin=origin)
    if op.rewrite is not None and name is None:
        return op.rewrite(node)
    return node


#: What ``warnings`` keeps to show each folding warning once per line, as
#: a module's ``__warningregistry__`` does.
_FOLDING_WARNINGS: dict = {}


@contextlib.contextmanager
def _warnings_at(origin: str, op_name: str) -> Iterator[None]:
    """numpy's floating-point warnings inside the block, said at ``origin``, the user's line.

    Constant folding runs the op's kernel inside tapegraph, so numpy's own
    warning would name a line of tapegraph's; numpy's error state instead
    calls back for each kind it would warn of (kinds set to ignore or
    raise keep their setting), and the warning is issued after the block,
    in numpy's words, at the line that declared the node.
    """
    location = origin_location(origin)
    settings = np.geterr()
    if location is None or "call" in settings.values():  # a callback of the user's keeps its calls
        yield
        return
    kinds: list[str] = []
    modes = {kind: "call" if mode == "warn" else mode for kind, mode in settings.items()}
    with np.errstate(**modes, call=lambda kind, flag: kinds.append(kind)):
        yield
    for kind in dict.fromkeys(kinds):
        warnings.warn_explicit(f"{kind} encountered in {op_name}", RuntimeWarning, *location,
                               registry=_FOLDING_WARNINGS)


def _promote(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """Float operands of differing dtypes, each cast to their common dtype.

    numpy would promote inside the kernel without a trace, and the
    gradient would come back in the wider dtype; an explicit ``cast`` node
    shows in the dump, and its VJP casts the cotangent back, so every
    gradient keeps its operand's dtype. Integer operands (labels) are left
    as they are.
    """
    floats = {node.dtype for node in nodes if np.dtype(node.dtype).kind == "f"}
    if len(floats) < 2:
        return nodes
    common = np.result_type(*sorted(floats)).name
    cast = REGISTRY["cast"]
    return tuple(cast(node, dtype=common) if node.dtype in floats and node.dtype != common else node
                 for node in nodes)


def _with_defaults(op: Op, static: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """``static`` with the op's defaults filled in; unknown or missing attributes raise TypeError."""
    unknown = sorted(set(static) - set(op.attributes))
    if unknown:
        raise TypeError(f"{op.name} has no attribute(s) {unknown} (it takes {list(op.attributes) or 'none'}) at {origin}")
    result = {key: static.get(key, default) for key, default in op.attributes.items()}
    missing = [key for key, value in result.items() if value is REQUIRED]
    if missing:
        raise TypeError(f"{op.name} needs attribute(s) {missing} at {origin}")
    return result


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
        if not isinstance(item, (int, np.integer)) or isinstance(item, bool):
            raise TypeError(f"an axis must be an int, got {type(item).__name__} {item!r}")
        if not -ndim <= item < ndim:
            raise ValueError(f"axis {item} is out of range for {ndim} dimension(s)")
        if int(item) % ndim in result:
            raise ValueError(f"axis {tuple(axis)} names axis {int(item) % ndim} twice")
        result.add(int(item) % ndim)
    return tuple(sorted(result))


def type_of(node: Node) -> str:
    """``f64[3]``, for messages."""
    return format_type(node.shape, node.dtype)
