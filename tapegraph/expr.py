"""Expression nodes: the immutable trees a model is declared as.

A ``Node`` is a frozen attrs record: the op that computes it, its input
nodes, its static attributes, and its type (shape and dtype), which is worked
out when the node is built. Equal subtrees are equal values, so a dict keyed
by nodes merges common subexpressions for free.

How equality stays structural without recursing: each node's *structure*
is hash-consed. When a node is built, its op, its inputs' structures, its
static attributes, type, name and constant value are looked up in a table
of live structures; equal structure finds the same ``Structure`` token,
so "the same expression" is ``a.structure is b.structure`` and ``hash``
is that token's, both O(1) however deep the trees, and two large equal
trees built separately merge in one graph without ever being walked. The
token, not the node, is interned because ``origin`` is not part of
equality but is each node's own: interning whole nodes would give a node
built later the origin of an equal node that some other model built
first, so a dump would depend on what else the process had made. A dict
keyed by nodes keeps the first node it sees, as it always has. The table
holds tokens weakly: a structure no node uses any more is dropped.

Leaves are ``input`` (data given at each call), ``param`` (what gradients
are taken with respect to) and ``const`` (a value fixed at declaration).
Inputs and parameters have identity: each ``tg.input`` / ``tg.param`` call
makes a leaf of its own (its ``identity``, a creation serial, is part of
the structure), so two declarations under one name are two leaves, which
compiling refuses, rather than one value merged without a word. Sharing is
explicit: reuse the node object. Constants stay structural: equal values
are one constant.

``==`` and ``!=`` are elementwise, as z3's are: ``a == b``, ``x == 0.5``
and ``0.5 == x`` build ``tg.equal`` (``tg.not_equal``) nodes. Between two
nodes the result also carries the answer to "are these the same
expression?" (``structural_truth``, outside the structure), which is its
``bool()``: so ``if a == b``, ``a in nodes``, ``list.index`` and every
dict and set keyed by nodes (Python calls ``==`` when hashes match, then
``bool`` of the result) keep meaning "the same structure". Two nodes that
``tg.equal`` refuses (shapes that do not broadcast, dtypes it cannot
compare) are never the same expression unless their structures are one,
so there ``==`` gives the plain ``bool`` of that, and never raises in a
lookup. Any other boolean node (``x == 0.5``, ``tg.equal(a, b)``,
``x < y``) has no truth before the program runs: ``bool()`` raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from tapegraph.errors import ShapeError
from tapegraph.shapes import Dim, Shape, as_shape, format_type, is_concrete

if TYPE_CHECKING:  # ops import this module, so only for the annotation
    from tapegraph.ops.registry import Op


@attrs.frozen(eq=False, repr=False)
class Leaf:
    """The kind of a leaf node, in ``Node.op`` where other nodes hold their ``Op``.

    There are four, module constants compared by identity:
    ``node.op is PARAM``. ``str()`` gives the name dumps print.
    """

    #: ``input``, ``param``, ``hyper`` or ``const``.
    name: str

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<leaf {self.name}>"

    def __eq__(self, other: object) -> bool:
        return refuse_name_comparison(self, other)

    __hash__ = object.__hash__

    def __reduce__(self) -> tuple:
        # the leaf kinds are singletons: unpickle to the same object
        return (_leaf_named, (self.name,))


#: Data given at each call.
INPUT = Leaf("input")
#: What gradients are taken with respect to.
PARAM = Leaf("param")
#: A value fixed at declaration.
CONST = Leaf("const")
#: An optimizer's hyperparameter (a step size, a momentum): a float64
#: scalar fed at each call, so changing it compiles nothing.
HYPER = Leaf("hyper")
LEAVES = {leaf.name: leaf for leaf in (INPUT, PARAM, CONST, HYPER)}


def _leaf_named(name: str) -> Leaf:
    return LEAVES[name]


def refuse_name_comparison(kind: Any, other: object) -> bool:
    """Identity equality for op and leaf records, refusing a comparison with a name.

    ``node.op`` was once a string; ``node.op == "param"`` would now be
    False without a word, so it raises instead.
    """
    if isinstance(other, str):
        raise TypeError(f"{kind!r} compared with the string {other!r}: node.op holds a record, so compare "
                        f"node.op is PARAM (the record) or node.op.name == {other!r}")
    return kind is other


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: The homework's models, installed inside the package as tapegraph.models,
#: use tapegraph as any user does: their lines are origins.
_MODELS_DIR = _PACKAGE_DIR + "models" + os.sep
_origin_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("origin", default=None)


def caller_origin() -> str:
    """``file.py:LINE`` of the first stack frame outside tapegraph.

    That is the user's line that declared a node, which errors and dumps
    name. Inside ``origin_scope`` (used by the differentiation pass), the
    scope's text is returned instead, so gradient nodes name their primal.
    """
    override = _origin_override.get()
    if override is not None:
        return override
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        if frame.f_code.co_filename.startswith(_MODELS_DIR):
            break
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    filename = frame.f_code.co_filename
    name = os.path.basename(filename)
    known = _ORIGIN_FILES.setdefault(name, filename)
    if known is not None and known != filename:
        _ORIGIN_FILES[name] = None  # two files of one name: an origin cannot tell which
    return f"{name}:{frame.f_lineno}"


#: The file behind each name that origins print (``model.py`` of
#: ``model.py:12``): the path Python ran it under, or None once two files
#: of that name have declared nodes in this process.
_ORIGIN_FILES: dict[str, str | None] = {}


def origin_file(name: str) -> str | None:
    """The file an origin's ``name`` (``model.py``) stands for, as Python ran it.

    Origins print a file's name alone, for short dumps; numpy's warnings
    from generated code need the whole path, so that they show the user's
    line. None when no node was declared in a file of that name, or when
    two files of that name declared nodes (then the name is ambiguous).
    """
    return _ORIGIN_FILES.get(name)


def origin_location(text: str) -> tuple[str, int] | None:
    """The user's file and line that ``text`` ends with, as Python ran the file.

    ``text`` is an origin (``model.py:12``, ``grad of log at model.py:12``)
    or an instruction's label (``log at model.py:12``), which name the file
    alone; the file is the one ``origin_file`` knows by that name. None for
    a text without a line (a named value, ``add at grad of w``) or whose
    file is not known in this process (two files of that name declared
    nodes, or a tape loaded from JSON).
    """
    at = len(text)
    while at >= 0:
        start = 0 if at == len(text) else at + 4
        match = re.fullmatch(r"(.+):(\d+)", text[start:])
        if match is not None:
            filename = origin_file(match.group(1))
            if filename is not None:
                return filename, int(match.group(2))
        at = text.rfind(" at ", 0, at)  # a file name with " at " in it
    return None


@contextlib.contextmanager
def origin_scope(text: str) -> Iterator[None]:
    """Label every node built inside the block with ``text`` as its origin."""
    token = _origin_override.set(text)
    try:
        yield
    finally:
        _origin_override.reset(token)


@attrs.frozen(eq=False, repr=False)
class ConstValue:
    """A read-only array held by a ``const`` node, compared by content.

    A constant whose entries are all one number (the ones and zeros that
    gradients are made of) is a *fill*: it holds that number and a
    read-only ``np.broadcast_to`` view of it, so a fill of any shape costs
    one number, and folding keeps it a fill (``fold`` in the op
    registry): ``tg.sum`` of a parameter of shape (10**6, 10**6) compiles
    without materialising its 10**12-entry gradient. The key that equality
    and hashing use never copies the data: a fill's is its number, an
    array's a digest of its bytes (which equal keys then compare, byte for
    byte, in place).
    """

    #: The value: a private read-only copy of what the user gave, or for a
    #: fill a read-only broadcast view of ``fill``.
    array: np.ndarray = attrs.field()
    #: For a fill, the one number every entry holds (a 0-d array); else None.
    fill: np.ndarray | None = attrs.field(default=None)
    _key: tuple = attrs.field(init=False)

    @_key.default
    def _make_key(self) -> tuple:
        if self.fill is not None:
            return (self.array.dtype.str, self.array.shape, "fill", self.fill.tobytes())
        digest = hashlib.blake2b(_bytes_of(self.array), digest_size=16).digest()
        return (self.array.dtype.str, self.array.shape, "data", digest)

    @classmethod
    def of(cls, array: np.ndarray) -> "ConstValue":
        """The constant holding ``array`` (copied), a fill when every entry is one number."""
        if array.ndim == 0:  # the common case (a Python number operand): one number already
            number = np.array(array)
            number.setflags(write=False)
            return cls(number, number)
        first = _single_number(array)
        if first is not None:
            return cls.full(array.shape, first, array.dtype)
        array = np.array(array, order="C")
        array.setflags(write=False)
        return cls(array)

    @classmethod
    def full(cls, shape: Sequence[int], fill: Any, dtype: Any) -> "ConstValue":
        """A fill: ``shape`` entries all equal to ``fill``, stored as one number."""
        number = np.array(fill, dtype=dtype)
        number.setflags(write=False)
        shape = tuple(shape)
        return cls(number if not shape else np.broadcast_to(number, shape), number)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConstValue) or self._key != other._key:
            return False
        # equal digests: compare the bytes themselves, in place
        return self.fill is not None or _bytes_of(self.array) == _bytes_of(other.array)

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self) -> tuple:
        # a fill pickles as its number, not as the array its view stands for
        if self.fill is not None:
            return (ConstValue.full, (self.array.shape, self.fill, self.array.dtype))
        return (ConstValue.of, (self.array,))

    def __repr__(self) -> str:
        if self.array.size <= 4:
            return np.array2string(self.array, separator=",", precision=6)
        if self.fill is not None:
            return f"<{format_type(self.array.shape, self.array.dtype)} filled with {self.fill.item()!r}>"
        return f"<{format_type(self.array.shape, self.array.dtype)}>"


def _single_number(array: np.ndarray) -> np.ndarray | None:
    """The one number every entry of ``array`` holds (a 0-d copy), or None.

    Equal as bits: 0.0 and -0.0 differ (a sign a division can see), and an
    array holding NaN is never a fill (NaN equals nothing).
    """
    if not array.size:
        return None
    first = np.array(array.reshape(-1)[0])
    if not np.all(array == first):
        return None
    if array.dtype.kind == "f" and np.any(np.signbit(array) != np.signbit(first)):
        return None
    return first


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, as a view (no copy)."""
    return memoryview(array.reshape(-1).view(np.uint8))


class Structure:
    """The identity of one expression structure, shared by every node equal to it.

    It holds nothing: the table ``_structures`` maps a node's fields (its
    inputs as their tokens) to the token, and equal nodes are those holding
    the same one. Its hash is the built-in identity hash, so sets and dicts
    of tokens (``post_order``'s visited set) never call back into Python.
    """

    __slots__ = ("__weakref__",)


#: The token of every structure in use, by its fields (see the module docstring).
_structures: weakref.WeakValueDictionary[tuple, Structure] = weakref.WeakValueDictionary()
# two threads building equal nodes must find one token, or they would differ
_structures_lock = threading.Lock()


def _structure_of(node: "Node") -> Structure:
    key = (node.op, tuple(operand.structure for operand in node.inputs), node.static, node.shape, node.dtype,
           node.name, node.value, node.identity)
    with _structures_lock:
        token = _structures.get(key)
        if token is None:
            token = _structures[key] = Structure()
    return token


@attrs.frozen(eq=False, repr=False)
class Node:
    """One value in an expression: an op applied to input nodes.

    Build nodes with ``tg.input``, ``tg.param``, ``tg.const`` and the op
    functions (``tg.tanh(x)``, ``x @ w + b``); do not call this class
    directly. Nodes are immutable; ``named`` returns a renamed copy.
    ``==`` and ``!=`` build elementwise comparisons whose truth, between
    two nodes, is whether they are the same structure, found in O(1) (see
    the module docstring).
    """

    #: The op record (``tapegraph.ops.Op``), or ``INPUT`` / ``PARAM`` /
    #: ``CONST`` for leaves; ``str(node.op)`` is its name.
    op: "Op | Leaf"
    #: The operands, in the order the op declares them.
    inputs: tuple["Node", ...] = attrs.field(converter=tuple)
    #: Static attributes of the op (axis, transpose flags, ...), sorted by name.
    static: tuple[tuple[str, Any], ...] = attrs.field(converter=tuple)
    #: Shape; a ``str`` dimension is symbolic, filled in when called.
    shape: Shape = attrs.field(converter=tuple)
    #: numpy dtype name, such as ``"float64"``.
    dtype: str
    #: The user's name for the value: required for leaves, optional otherwise.
    name: str | None = None
    #: The array of a ``const`` leaf.
    value: ConstValue | None = None
    #: Where the node was declared (``file.py:LINE``); not part of equality.
    origin: str = attrs.field(default="")
    #: What makes an input or parameter leaf its own: ``(process token,
    #: serial)``, given once by ``tg.input`` / ``tg.param`` (``new_identity``);
    #: None for every other node, which is equal to any node of its structure.
    identity: tuple[str, int] | None = None
    #: For a node made by ``a == b`` (``a != b``) between two nodes: whether
    #: they are (are not) the same expression, which ``bool()`` gives; None
    #: for every other node. Not part of the structure, as ``origin``.
    structural_truth: bool | None = None
    #: The token shared by every node of equal structure (all fields but
    #: ``origin``); found once, when the node is built.
    structure: Structure = attrs.field(init=False)
    _hash: int = attrs.field(init=False)

    @structure.default
    def _find_structure(self) -> Structure:
        return _structure_of(self)

    @_hash.default
    def _hash_of_structure(self) -> int:
        return id(self.structure)

    # numpy must not treat a node as an array: ``2.0 * node`` calls __rmul__.
    __array_ufunc__ = None

    def __eq__(self, other: object) -> "Node | bool":  # type: ignore[override]
        # elementwise tg.equal; between nodes its truth is structural
        # equality (see the module docstring)
        return (_compare_expression or _load_compare_expression())(self, other, False)

    def __ne__(self, other: object) -> "Node | bool":  # type: ignore[override]
        return (_compare_expression or _load_compare_expression())(self, other, True)

    def __bool__(self) -> bool:
        # a == b between nodes is true when they are the same expression;
        # every other node is true (as any object), except a comparison's:
        # its truth is only known when the program runs
        if self.structural_truth is not None:
            return self.structural_truth
        if self.dtype == "bool":
            raise TypeError(f"the truth of {self.label} ({self.type_str}) is known only when the program runs; "
                            "to choose between values use tg.where(cond, a, b); to ask whether two nodes are the "
                            "same expression, compare the two nodes (bool(a == b), a in nodes)")
        return True

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        # rebuilt through the constructor: the copy finds its structure's
        # token, where a copied token would make it unequal to the original;
        # a leaf keeps its identity, so a copy of a model (pickle, deepcopy)
        # holds the same parameters as the original, each still distinct.
        # The whole graph goes as one flat list (inputs by position): pickled
        # node by node, nested, a chain of a few hundred ops would pass the
        # recursion limit of pickle and deepcopy.
        return (_rebuilt, (_flattened(self),))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_leaf(self) -> bool:
        return isinstance(self.op, Leaf)

    def attr(self, key: str, default: Any = None) -> Any:
        """The static attribute ``key`` of this node's op."""
        for name, value in self.static:
            if name == key:
                return value
        return default

    @property
    def type_str(self) -> str:
        """``f64[batch,400]``."""
        return format_type(self.shape, self.dtype)

    @property
    def label(self) -> str:
        """The user's name if given, else the op and origin."""
        if self.name is not None:
            return self.name
        return f"{self.op} at {self.origin}" if self.origin else str(self.op)

    def named(self, name: str) -> "Node":
        """A copy of this node carrying ``name`` (shown in dumps and errors).

        >>> import tapegraph as tg
        >>> h = tg.tanh(tg.input("x", shape=(3,))).named("hidden")
        >>> h.name
        'hidden'
        """
        if self.is_leaf:
            raise ValueError(f"{self.op} {self.name!r} already has its name; leaves cannot be renamed")
        _check_name(name)
        return attrs.evolve(self, name=name)

    def __repr__(self) -> str:
        text = f"<{self.op} {self.type_str}"
        if self.name is not None:
            text += f" {self.name!r}"
        if self.origin:
            text += f" at {self.origin}"
        return text + ">"

    def _repr_html_(self) -> str:
        """Type, name, origin and a picture (or listing) of the expression, for Jupyter (never raises)."""
        from tapegraph.inspect.display import node_html
        return node_html(self)

    # Python operators build nodes through the op functions. The import is
    # local because ops import this module.
    def __add__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.add(self, other)

    def __radd__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.add(other, self)

    def __sub__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.sub(self, other)

    def __rsub__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.sub(other, self)

    def __mul__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.mul(self, other)

    def __rmul__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.mul(other, self)

    def __truediv__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.div(self, other)

    def __rtruediv__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.div(other, self)

    def __matmul__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.matmul(other, self)

    def __neg__(self) -> "Node":
        from tapegraph import ops
        return ops.neg(self)

    def __pow__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.pow(self, other)

    def __rpow__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.pow(other, self)

    def __abs__(self) -> "Node":
        from tapegraph import ops
        return ops.abs(self)

    # <, <=, >, >= build boolean nodes (for tg.where), as == and != do
    def __lt__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.less(self, other)

    def __le__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.less_equal(self, other)

    def __gt__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.greater(self, other)

    def __ge__(self, other: Any) -> "Node":
        from tapegraph import ops
        return ops.greater_equal(self, other)

    def __pos__(self) -> "Node":
        return self

    # Indexing, the transpose, and dtype conversion, grouped here: each
    # builds its node through an op function, as the operators above do.
    def __getitem__(self, key: Any) -> "Node":
        """Basic indexing, as numpy's: ``x[0]``, ``x[:, 1:3]``, ``x[::-1]``, ``x[None]``, ``x[..., 0]``."""
        from tapegraph import ops
        return ops.index(self, key)

    def __iter__(self) -> Iterator["Node"]:
        # without this, Python would iterate by calling x[0], x[1], ...
        raise TypeError(f"a node ({self.type_str}) is not iterable; index it (x[0]) or split it "
                        "(tg.split(x, sections, axis))")

    @property
    def T(self) -> "Node":
        """The axes reversed, as numpy's ``.T`` (a matrix's transpose)."""
        from tapegraph import ops
        return ops.transpose(self)

    def astype(self, dtype: Any) -> "Node":
        """The value converted to the float ``dtype`` (``tg.cast``)."""
        from tapegraph import ops
        return ops.cast(self, dtype)


def _flattened(root: Node) -> tuple[tuple, ...]:
    """Every node ``root`` depends on, each object once and after its operands,
    as the fields of its constructor with its inputs given by position (``_rebuilt``)."""
    position: dict[int, int] = {}
    records: list[tuple] = []
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in position:
            continue
        if expanded:
            position[id(node)] = len(records)
            records.append((node.op, tuple(position[id(operand)] for operand in node.inputs), node.static,
                            node.shape, node.dtype, node.name, node.value, node.origin, node.identity,
                            node.structural_truth))
            continue
        stack.append((node, True))
        stack.extend((operand, False) for operand in reversed(node.inputs) if id(operand) not in position)
    return tuple(records)


def _rebuilt(records: tuple[tuple, ...]) -> Node:
    """The last node of ``_flattened``'s records, each built again from its fields."""
    nodes: list[Node] = []
    for op, inputs, *fields in records:
        nodes.append(Node(op, tuple(nodes[index] for index in inputs), *fields))
    return nodes[-1]


#: ``tapegraph.ops.comparison.compare_expression``, which ``==`` and ``!=``
#: call: found at the first comparison (ops import this module), and kept,
#: since an import statement in ``__eq__`` would cost about a microsecond
#: at every collision in a dict keyed by nodes.
_compare_expression: Any = None


def _load_compare_expression() -> Any:
    global _compare_expression
    from tapegraph.ops.comparison import compare_expression
    _compare_expression = compare_expression
    return compare_expression


# The process token tells leaves made in different processes apart: a
# model unpickled here keeps its leaves' identities, which no leaf
# declared in this process can then take by chance.
_PROCESS_TOKEN = os.urandom(8).hex()
_leaf_serials = itertools.count()


def new_identity() -> tuple[str, int]:
    """A leaf identity no other leaf has (see ``Node.identity``)."""
    return (_PROCESS_TOKEN, next(_leaf_serials))


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a name must be a non-empty string, got {name!r}")


def _check_dtype(dtype: Any, what: str) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise ShapeError(f"{what}: dtype {dtype!r} is not a numpy dtype; use a numpy dtype such as 'float64', "
                         "'float32' or, for labels, 'int64'") from None


def input(name: str, shape: Sequence[Dim] | int = (), dtype: Any = "float64") -> Node:
    """Declare data given at each call, such as ``x`` or a label ``y``.

    The leading dimension may be symbolic (``shape=("batch", 400)``); it is
    filled in from the array given at call time.

    >>> import tapegraph as tg
    >>> tg.input("x", shape=("batch", 400))
    <input f64[batch,400] 'x' at ...>
    """
    _check_name(name)
    try:
        shape = as_shape(shape)
    except ValueError as error:
        raise ShapeError(f"input {name!r}: {error}") from None
    return Node(INPUT, (), (), shape, _check_dtype(dtype, f"input {name!r}"), name=name, origin=caller_origin(),
                identity=new_identity())


def param(name: str, shape: Sequence[int] | int = (), dtype: Any = "float64") -> Node:
    """Declare a trainable parameter; its shape must be fully known.

    >>> import tapegraph as tg
    >>> tg.param("w", shape=(400,))
    <param f64[400] 'w' at ...>
    """
    _check_name(name)
    try:
        shape = as_shape(shape)
    except ValueError as error:
        raise ShapeError(f"param {name!r}: {error}") from None
    if not is_concrete(shape):
        raise ValueError(f"param {name!r}: shape {shape!r} has a symbolic dimension; parameters need fixed sizes")
    dtype = _check_dtype(dtype, f"param {name!r}")
    if np.dtype(dtype).kind != "f":
        raise ShapeError(f"param {name!r}: dtype {dtype} is not floating point; gradients need floats")
    return Node(PARAM, (), (), shape, dtype, name=name, origin=caller_origin(), identity=new_identity())


def const(value: Any, dtype: Any = None, name: str | None = None) -> Node:
    """A fixed value in the graph (the array is copied and frozen).

    >>> import tapegraph as tg
    >>> tg.const(2.0)
    <const f64[] at ...>
    """
    array = np.asarray(value, dtype=None if dtype is None else _check_dtype(dtype, "const"))
    if array.dtype.kind not in "fiub":
        raise ValueError(f"const: cannot hold a value of dtype {array.dtype}")
    if name is not None:
        _check_name(name)
    stored = ConstValue.of(array)
    return Node(CONST, (), (), array.shape, array.dtype.name, name=name, value=stored, origin=caller_origin())


def const_fill(shape: Sequence[int], fill: float, dtype: Any = "float64", name: str | None = None) -> Node:
    """A constant of ``shape`` whose entries all equal ``fill``, stored as one number.

    However large the shape, nothing of that size is allocated until a
    tape that needs the whole array runs (see ``ConstValue``).

    >>> import tapegraph as tg
    >>> tg.expr.const_fill((10**6, 10**6), 0.0)
    <const f64[1000000,1000000] at ...>
    """
    dtype = _check_dtype(dtype, "const")
    if name is not None:
        _check_name(name)
    shape = as_shape(shape)
    if not is_concrete(shape):
        raise ValueError(f"const_fill: shape {shape!r} has a symbolic dimension; a constant needs fixed sizes")
    value = ConstValue.full(shape, fill, dtype)
    return Node(CONST, (), (), shape, dtype, name=name, value=value, origin=caller_origin())


def is_const(node: Node, fill: float | None = None) -> bool:
    """True for a ``const`` leaf; with ``fill``, only if every entry equals it."""
    if node.op is not CONST:
        return False
    if fill is None:
        return True
    if node.value.fill is not None:
        return bool(node.value.fill == fill)
    return bool(np.all(node.value.array == fill))
