"""Matrix products: ``matmul`` (with transpose flags, on batches), ``outer``, and ``contract`` (einsum's primitive).

The transpose flags let VJP rules use ``W.T`` without materialising it.
Operands of ``matmul`` are vectors, matrices or stacks of matrices: as
``np.matmul``, the last two axes of an operand of three or more
dimensions hold its matrices and the leading axes broadcast (a batch of
examples is a matrix whose rows are the examples, or such a stack).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tapegraph.expr import Node
from tapegraph.ops.elementwise import MUL
from tapegraph.ops.native import SUM_LANES, NativeContext, count, entry, lane_sum
from tapegraph.ops.reductions import SUM
from tapegraph.ops.registry import REQUIRED, Arg, Op, Sample, register, result_dtype
from tapegraph.ops.shaping import INDEX
from tapegraph.shapes import Shape, broadcast, format_shape


def _effective(shape: Shape, transpose: bool) -> Shape:
    # the flag transposes the matrices: the last two axes (a vector has one)
    if transpose and len(shape) >= 2:
        return tuple(shape[:-2]) + (shape[-1], shape[-2])
    return tuple(shape)


def _matmul_rule(a: Node, b: Node, transpose_a: bool, transpose_b: bool) -> tuple[Shape, str]:
    dtype = result_dtype(a, b)
    for node in (a, b):
        if node.ndim == 0:
            raise ValueError("matmul takes vectors, matrices and stacks of matrices, not scalars "
                             "(multiply by a scalar with *, or use tg.dot)")
    left = _effective(a.shape, transpose_a)
    right = _effective(b.shape, transpose_b)
    inner_left = left[-1]
    inner_right = right[0] if len(right) == 1 else right[-2]
    if inner_left != inner_right:
        raise ValueError(f"inner dimensions differ: {format_shape(left)} @ {format_shape(right)}")
    if len(left) <= 2 and len(right) <= 2:
        return left[:-1] + right[1:], dtype
    try:
        batch = broadcast(left[:-2], right[:-2])
    except ValueError:
        raise ValueError(f"the batch axes do not broadcast: {format_shape(left)} @ {format_shape(right)} "
                         f"(batches {format_shape(left[:-2])} and {format_shape(right[:-2])})") from None
    rows = left[-2:-1]
    columns = right[-1:] if len(right) >= 2 else ()
    return batch + rows + columns, dtype


def _swap_last(array: np.ndarray) -> np.ndarray:
    return array.swapaxes(-1, -2) if array.ndim >= 2 else array


def _matmul_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray, transpose_a: bool, transpose_b: bool,
                   swap: bool = False, batched: bool = False) -> None:
    np.matmul(_swap_last(a) if transpose_a else a, _swap_last(b) if transpose_b else b, out=out)


def _matmul_specialize(in_shapes, out_shape, transpose_a: bool, transpose_b: bool) -> dict[str, bool]:
    """``swap``: a vector times a transposed matrix, ``x @ W.T``, is ``W @ x``
    (and ``A.T @ v`` is ``v @ A``): the same products, without making a
    transposed view at every call. ``batched``: an operand has more than
    two axes, where np.dot is not a matrix product."""
    vector_then_matrix = len(in_shapes[0]) == 1 and len(in_shapes[1]) == 2 and transpose_b
    matrix_then_vector = len(in_shapes[0]) == 2 and len(in_shapes[1]) == 1 and transpose_a
    derived = {"swap": vector_then_matrix or matrix_then_vector}
    if len(in_shapes[0]) > 2 or len(in_shapes[1]) > 2:
        derived["batched"] = True  # (absent otherwise: tapes of matrices stay as they were)
    return derived


def _matmul_source(transpose_a: bool, transpose_b: bool, swap: bool = False, batched: bool = False) -> str:
    if batched:
        return "np.matmul({0}%s, {1}%s, out={out})" % (".swapaxes(-1, -2)" if transpose_a else "",
                                                      ".swapaxes(-1, -2)" if transpose_b else "")
    # ndarray.dot equals np.matmul for vectors and matrices; on the small
    # arrays of per-example steps it measured about 40% cheaper per call,
    # and the method a further 0.12 us cheaper than np.dot, which first
    # looks for __array_function__ overrides (the operands are arrays)
    if swap:
        return "{1}.dot({0}, out={out})"
    return "{0}%s.dot({1}%s, out={out})" % (".T" if transpose_a else "", ".T" if transpose_b else "")


def _matmul_vjp(g: Node, ans: Node, a: Node, b: Node, transpose_a: bool, transpose_b: bool):
    if a.ndim > 2 or b.ndim > 2:
        return _batched_matmul_vjp(g, a, b, transpose_a, transpose_b)
    # Work with A = op(a), B = op(b), C = A @ B; then express the cotangent
    # of a (not of A) directly through the flags, never forming a transpose.
    if a.ndim == 1 and b.ndim == 1:
        return MUL(g, b), MUL(g, a)
    if a.ndim == 1:  # (k,) @ B(k, m) -> (m,)
        grad_a = MATMUL(b, g, transpose_a=transpose_b)
        grad_b = OUTER(g, a) if transpose_b else OUTER(a, g)
        return grad_a, grad_b
    if b.ndim == 1:  # A(n, k) @ (k,) -> (n,)
        grad_a = OUTER(b, g) if transpose_a else OUTER(g, b)
        grad_b = MATMUL(a, g, transpose_a=not transpose_a)
        return grad_a, grad_b
    return _matrix_cotangents(g, a, b, transpose_a, transpose_b)


def _matrix_cotangents(g: Node, a: Node, b: Node, transpose_a: bool, transpose_b: bool) -> tuple[Node, Node]:
    """dA = g B^T and dB = A^T g for A = op(a), B = op(b), expressed through the transpose flags."""
    if transpose_a:
        grad_a = MATMUL(b, g, transpose_a=transpose_b, transpose_b=True)
    else:
        grad_a = MATMUL(g, b, transpose_b=not transpose_b)
    if transpose_b:
        grad_b = MATMUL(g, a, transpose_a=True, transpose_b=transpose_a)
    else:
        grad_b = MATMUL(a, g, transpose_a=not transpose_a)
    return grad_a, grad_b


def _batched_matmul_vjp(g: Node, a: Node, b: Node, transpose_a: bool, transpose_b: bool):
    """The cotangents when an operand is a stack of matrices.

    A vector operand is a matrix for the product (a row before, a column
    after), its axis dropped again in g; the products below broadcast over
    the batch axes, and the differentiation pass sums each cotangent down
    to its operand's shape, which undoes that broadcasting.
    """
    row, column = a.ndim == 1, b.ndim == 1
    if row:  # (k,) @ B(..., k, m) -> (..., m): a is the row (1, k), g gets its row axis back
        a = INDEX(a, (None,))
        g = INDEX(g, (Ellipsis, None, slice(None)))
    if column:  # A(..., n, k) @ (k,) -> (..., n): b is the column (k, 1)
        b = INDEX(b, (slice(None), None))
        g = INDEX(g, (Ellipsis, None))
    grad_a, grad_b = _matrix_cotangents(g, a, b, transpose_a, transpose_b)
    if row:
        grad_a = _drop_batch(grad_a, (Ellipsis, 0, slice(None)))
    if column:
        grad_b = _drop_batch(grad_b, (Ellipsis, 0))
    return grad_a, grad_b


def _drop_batch(gradient: Node, key: tuple) -> Node:
    # a vector made a row or column: its cotangent, summed over the batch
    # axes, loses the size-1 axis again
    summed = SUM(gradient, tuple(range(gradient.ndim - 2))) if gradient.ndim > 2 else gradient
    return INDEX(summed, key)


def _outer_rule(a: Node, b: Node) -> tuple[Shape, str]:
    dtype = result_dtype(a, b)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("outer takes two vectors")
    return (a.shape[0], b.shape[0]), dtype


def _outer_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.dot(a[:, np.newaxis], b[np.newaxis, :], out=out)


#: Native code calls BLAS (``np.dot``) for a product of matrices whose
#: every dimension is at least this and whose multiply-adds number at
#: least ``NATIVE_BLAS_WORK`` (a minibatch), and for a dot product
#: of vectors at least ``NATIVE_BLAS_DOT`` long; other products are loops:
#: BLAS's call costs more than a small product (measured: 1.5 us for a
#: 1x400 matrix-vector product through numba, against 0.4 us for ddot, and
#: 0.6 us for 10x400 by the loops' lane-accumulated sums, ``lane_sum``).
NATIVE_BLAS_DIMENSION = 8
NATIVE_BLAS_WORK = 4096
NATIVE_BLAS_DOT = 64


def _matmul_native(ctx: NativeContext) -> str:
    """``a @ b`` in native code.

    Loops are ordered so that the innermost one runs along contiguous
    entries and each result entry is its own sum, taken in the order of
    the inner index (no reassociation): ``A.T @ v`` and ``v @ B`` then
    vectorise. Where the inner index runs along both operands' rows
    (``A @ v``, ``a @ b.T``) and is long, each entry is a sum in
    ``SUM_LANES`` independent lanes (``lane_sum``: a fixed blocked order,
    as BLAS sums, that vectorises); shorter ones run one accumulator per
    row side by side. An inner size of 1 (an outer product) writes each
    entry's one product.
    """
    a, b = ctx.operands
    a_shape, b_shape = ctx.in_shapes
    transpose_a, transpose_b = ctx["transpose_a"], ctx["transpose_b"]
    inner = a_shape[0] if transpose_a else a_shape[-1]
    zero = ctx.literal(0.0)
    if not ctx.out_shape:  # a dot product of two vectors
        if inner >= NATIVE_BLAS_DOT:
            return f"{ctx.out} = np.dot({a}, {b})"
        total = ctx.temp("total")
        return "\n".join([lane_sum(ctx, total, inner, lambda index: f"{a}[{index}] * {b}[{index}]"),
                          f"{ctx.out} = {total}"])
    out = ctx.out
    if len(a_shape) > 2 or len(b_shape) > 2:
        return _batched_matmul_native(ctx)
    if len(a_shape) == 2 and len(b_shape) == 2:
        if min(*ctx.out_shape, inner) >= NATIVE_BLAS_DIMENSION and count(ctx.out_shape) * inner >= NATIVE_BLAS_WORK:
            left = f"{a}.T" if transpose_a else a
            right = f"{b}.T" if transpose_b else b
            return f"np.dot({left}, {right}, {out})"
        i, k, j = ctx.temp("i"), ctx.temp("k"), ctx.temp("j")
        rows, columns = ctx.out_shape
        if inner == 1:  # an outer product: each entry is one product, written at once
            a_first = f"{a}[0, {i}]" if transpose_a else f"{a}[{i}, 0]"
            b_first = f"{b}[{j}, 0]" if transpose_b else f"{b}[0, {j}]"
            factor = ctx.temp("factor")
            return "\n".join([f"for {i} in range({rows}):", f"    {factor} = {a_first}",
                              f"    for {j} in range({columns}):", f"        {out}[{i}, {j}] = {factor} * {b_first}"])
        if not transpose_a and transpose_b and inner >= 2 * SUM_LANES:
            # a row of a with a row of b, both contiguous: each entry a lane-accumulated sum
            total = ctx.temp("total")
            body = lane_sum(ctx, total, inner, lambda index: f"{a}[{i}, {index}] * {b}[{j}, {index}]")
            return "\n".join([f"for {i} in range({rows}):", f"    for {j} in range({columns}):",
                              *["        " + line for line in body.split("\n")],
                              f"        {out}[{i}, {j}] = {total}"])
        a_entry = f"{a}[{k}, {i}]" if transpose_a else f"{a}[{i}, {k}]"
        b_entry = f"{b}[{j}, {k}]" if transpose_b else f"{b}[{k}, {j}]"
        factor = ctx.temp("factor")
        return "\n".join([
            f"for {i} in range({rows}):",
            f"    for {j} in range({columns}):", f"        {out}[{i}, {j}] = {zero}",
            f"    for {k} in range({inner}):", f"        {factor} = {a_entry}",
            f"        for {j} in range({columns}):", f"            {out}[{i}, {j}] += {factor} * {b_entry}"])
    (size,) = ctx.out_shape
    if len(a_shape) == 1:  # v @ B: B's rows, or B.T's columns
        vector, matrix, along_rows = a, b, not transpose_b
    else:  # A @ v
        vector, matrix, along_rows = b, a, transpose_a
    i, k, factor = ctx.temp("i"), ctx.temp("k"), ctx.temp("factor")
    if along_rows:
        # out[i] = sum_k v[k] M[k, i]: the inner loop runs along row k of M
        return "\n".join([
            f"for {i} in range({size}):", f"    {out}[{i}] = {zero}",
            f"for {k} in range({inner}):", f"    {factor} = {vector}[{k}]",
            f"    for {i} in range({size}):", f"        {out}[{i}] += {factor} * {matrix}[{k}, {i}]"])
    # out[i] = sum_k M[i, k] v[k]: a dot product with each row of M
    if inner >= 2 * SUM_LANES:
        total = ctx.temp("total")
        body = lane_sum(ctx, total, inner, lambda index: f"{matrix}[{i}, {index}] * {vector}[{index}]")
        return "\n".join([f"for {i} in range({size}):", *["    " + line for line in body.split("\n")],
                          f"    {out}[{i}] = {total}"])
    return "\n".join([
        f"for {i} in range({size}):", f"    {out}[{i}] = {zero}",
        f"for {k} in range({inner}):", f"    {factor} = {vector}[{k}]",
        f"    for {i} in range({size}):", f"        {out}[{i}] += {matrix}[{i}, {k}] * {factor}"])


def _matmul_entry(ctx: NativeContext):
    """The entry form of ``a @ b`` with an inner size of 1 between two matrices (an outer product), else None.

    Entry ``[i, j]`` is ``a[i, 0] * b[0, j]``, the one product the loops
    above store, so an elementwise consumer can compute it where it
    reads it (``tapegraph.ops.native.entry_form``).
    """
    a, b = ctx.operands
    a_shape, b_shape = ctx.in_shapes
    transpose_a, transpose_b = ctx["transpose_a"], ctx["transpose_b"]
    if len(a_shape) != 2 or len(b_shape) != 2 or (a_shape[0] if transpose_a else a_shape[1]) != 1:
        return None

    def product(names):
        i, j = names
        a_first = f"{a}[0, {i}]" if transpose_a else f"{a}[{i}, 0]"
        b_first = f"{b}[{j}, 0]" if transpose_b else f"{b}[0, {j}]"
        return f"({a_first} * {b_first})"
    return product


_matmul_native.entry = _matmul_entry


def _batched_matmul_native(ctx: NativeContext) -> str:
    """``a @ b`` when an operand is a stack of matrices: one sum over the inner index per result entry.

    The result's leading axes are the batch; each operand's batch axes
    align with its right end, a size-1 one read at 0 (broadcasting). A
    vector operand is a row (``a``) or a column (``b``) with no axis of
    its own in the result.
    """
    a, b = ctx.operands
    a_shape, b_shape = ctx.in_shapes
    transpose_a, transpose_b = ctx["transpose_a"], ctx["transpose_b"]
    inner = a_shape[-2] if transpose_a and len(a_shape) >= 2 else a_shape[-1]
    rows = len(a_shape) >= 2
    columns = len(b_shape) >= 2
    batch = len(ctx.out_shape) - rows - columns
    names = ctx.indices(len(ctx.out_shape))
    batch_names = names[:batch]
    i = names[batch] if rows else None
    j = names[-1] if columns else None
    k = ctx.temp("k")

    def operand(name: str, shape: tuple[int, ...], matrix: list[str]) -> str:
        if len(shape) == 1:
            return f"{name}[{k}]"
        return entry(name, shape, [*batch_names, *matrix])

    if rows and columns and min(*ctx.out_shape[-2:], inner) >= NATIVE_BLAS_DIMENSION \
            and count(ctx.out_shape[-2:]) * inner >= NATIVE_BLAS_WORK:
        # matrices of BLAS's sizes: one BLAS product per matrix of the batch, as np.matmul does
        def matrix(name: str, shape: tuple[int, ...], transpose: bool) -> str:
            own = batch_names[len(batch_names) - (len(shape) - 2):]  # its batch axes, right-aligned
            picked = ["0" if dim == 1 else index for dim, index in zip(shape[:-2], own)]
            view = f"{name}[{', '.join(picked)}]" if picked else name
            return f"{view}.T" if transpose else view
        product = (f"np.dot({matrix(a, a_shape, transpose_a)}, {matrix(b, b_shape, transpose_b)}, "
                   f"{ctx.out}[{', '.join(batch_names)}])")
        return ctx.loops(ctx.out_shape[:batch], [product], batch_names)
    a_entry = operand(a, a_shape, [k, i] if transpose_a else [i, k])
    b_entry = operand(b, b_shape, [j, k] if transpose_b else [k, j])
    total = ctx.temp("total")
    body = [f"{total} = {ctx.literal(0.0)}", f"for {k} in range({inner}):", f"    {total} += {a_entry} * {b_entry}",
            f"{ctx.store(names)} = {total}"]
    return ctx.loops(ctx.out_shape, body, names)


def _outer_native(ctx: NativeContext) -> str:
    i, j = names = ctx.indices(2)
    return ctx.loops(ctx.out_shape, [f"{ctx.out}[{i}, {j}] = {_outer_entry(ctx)(names)}"], names)


def _outer_entry(ctx: NativeContext):
    """The entry form of ``outer(a, b)``: entry ``[i, j]`` is ``a[i] * b[j]``."""
    a, b = ctx.operands
    return lambda names: f"({a}[{names[0]}] * {b}[{names[1]}])"


_outer_native.entry = _outer_entry


def _flag_attributes(a: Node, b: Node, transpose_a: bool, transpose_b: bool) -> dict[str, bool]:
    return {"transpose_a": bool(transpose_a), "transpose_b": bool(transpose_b)}


def _flags(transpose_a: bool, transpose_b: bool) -> dict[str, bool]:
    return {"transpose_a": transpose_a, "transpose_b": transpose_b}


def _matmul_fill(a, b, in_shapes, out_shape, transpose_a, transpose_b):
    # every entry is a sum of `inner` products a * b (Op.fill)
    return a * b * _effective(in_shapes[0], transpose_a)[-1]


def _outer_fill(a, b, in_shapes, out_shape):
    return a * b


MATMUL = register(Op(
    name="matmul", operands=("a", "b"), attributes={"transpose_a": False, "transpose_b": False},
    normalize=_flag_attributes, shape_rule=_matmul_rule, kernel=_matmul_kernel, vjp=_matmul_vjp, fill=_matmul_fill,
    specialize=_matmul_specialize, source=_matmul_source, scalar="{0}.dot({1})", native=_matmul_native,
    samples=(
        Sample([Arg((4,)), Arg((4,))], _flags(False, False)),
        Sample([Arg((3, 4)), Arg((4,))], _flags(False, False)),
        Sample([Arg((5, 4), batch=True), Arg((4,))], _flags(False, False)),
        Sample([Arg((4,)), Arg((4, 2))], _flags(False, False)),
        Sample([Arg((4,)), Arg((2, 4))], _flags(False, True)),
        Sample([Arg((3, 4)), Arg((4, 2))], _flags(False, False)),
        Sample([Arg((5, 4), batch=True), Arg((3, 4))], _flags(False, True)),
        Sample([Arg((4, 3)), Arg((4, 2))], _flags(True, False)),
        Sample([Arg((4, 3)), Arg((2, 4))], _flags(True, True)),
        Sample([Arg((4, 3)), Arg((4,))], _flags(True, False)),
        # an inner size of 1 (long inner sums: tests/test_native.py, too long for float32 finite differences)
        Sample([Arg((3, 1)), Arg((1, 2))], _flags(False, False)),
        Sample([Arg((1, 3)), Arg((2, 1))], _flags(True, True)),
        # stacks of matrices, broadcasting their batch axes
        Sample([Arg((2, 3, 4)), Arg((2, 4, 2))], _flags(False, False)),
        Sample([Arg((5, 3, 4), batch=True), Arg((4, 2))], _flags(False, False)),
        Sample([Arg((2, 1, 4, 3)), Arg((3, 2, 4))], _flags(True, True)),
        Sample([Arg((3, 4)), Arg((2, 5, 4))], _flags(False, True)),
        Sample([Arg((4,)), Arg((5, 4, 3), batch=True)], _flags(False, False)),
        Sample([Arg((2, 3, 4)), Arg((4,))], _flags(False, False)),
        Sample([Arg((2, 4, 3)), Arg((4,))], _flags(True, False)),
        Sample([Arg((3,)), Arg((2, 4, 3))], _flags(False, True)),
    ),
    doc="""Matrix product ``a @ b`` of vectors, matrices and stacks of matrices, as ``np.matmul``.

    ``transpose_a``/``transpose_b`` use ``a.T``/``b.T`` without copying:
    A @ B with A = a or a.T and B = b or b.T, where a flag transposes the
    last two axes. An operand of three or more axes is a stack of
    matrices: the leading (batch) axes broadcast, and each cotangent is
    summed back over the batch axes its operand lacked.

    >>> import tapegraph as tg
    >>> x = tg.input("x", shape=("batch", 400))
    >>> W = tg.param("W", shape=(10, 400))
    >>> tg.matmul(x, W, transpose_b=True)
    <matmul f64[batch,10] at ...>
    """,
))

OUTER = register(Op(
    name="outer", operands=("a", "b"), shape_rule=_outer_rule, kernel=_outer_kernel, fill=_outer_fill,
    native=_outer_native,
    # a column times a row through BLAS: np.multiply.outer allocates a
    # temporary of the output's size at every call, this does not
    source="{0}[:, None].dot({1}[None, :], out={out})",
    vjp=lambda g, ans, a, b: (MATMUL(g, b), MATMUL(g, a, transpose_a=True)),
    samples=(Sample([Arg((3,)), Arg((4,))]),),
    doc="Outer product of two vectors: ``out[i, j] = a[i] * b[j]``, that is a b^T; d/da = g b, d/db = g^T a.",
))


# contract: the product of two operands named by einsum subscripts, each
# index of an operand appearing in the other operand or in the result (an
# index of one operand alone is summed out first, by tg.einsum), so that
# each VJP is a contraction of the same kind.

def parse_subscripts(subscripts: Any, count: int) -> tuple[list[str], str]:
    """The operands' index letters and the result's, from ``"ij,jk->ik"``.

    Without ``->`` the result holds, in alphabetical order, the letters
    that appear once (numpy's rule). Raises ValueError for anything but
    letters, for a number of terms other than ``count``, a letter repeated
    within one term, or a result letter no operand has.
    """
    if not isinstance(subscripts, str):
        raise ValueError(f"subscripts must be a string such as 'ij,jk->ik', got {type(subscripts).__name__} {subscripts!r}")
    text = subscripts.replace(" ", "")
    if "." in text:
        raise ValueError(f"subscripts {subscripts!r}: ellipses (...) are not supported; name every axis")
    inputs_text, arrow, output = text.partition("->")
    terms = inputs_text.split(",")
    for term in [*terms, output]:
        for letter in term:
            if not letter.isalpha() or not letter.isascii():
                raise ValueError(f"subscripts {subscripts!r}: {letter!r} is not a letter; index axes with letters a-z, A-Z")
    if len(terms) != count:
        raise ValueError(f"subscripts {subscripts!r} name {len(terms)} operand(s), but {count} were given")
    for position, term in enumerate(terms):
        repeated = sorted({letter for letter in term if term.count(letter) > 1})
        if repeated:
            raise ValueError(f"subscripts {subscripts!r}: index {repeated[0]!r} is repeated within operand {position} "
                             f"({term!r}); traces and diagonals are not supported")
    letters = "".join(terms)
    if not arrow:
        output = "".join(sorted(letter for letter in set(letters) if letters.count(letter) == 1))
    repeated = sorted({letter for letter in output if output.count(letter) > 1})
    if repeated:
        raise ValueError(f"subscripts {subscripts!r}: index {repeated[0]!r} is repeated in the result")
    missing = sorted(set(output) - set(letters))
    if missing:
        raise ValueError(f"subscripts {subscripts!r}: the result's index {missing[0]!r} belongs to no operand")
    return terms, output


def letter_sizes(terms: list[str], shapes: list[Shape]) -> dict[str, Any]:
    """The size of each index letter; ValueError when a term's length or two sizes of one letter disagree."""
    sizes: dict[str, Any] = {}
    for position, (term, shape) in enumerate(zip(terms, shapes)):
        if len(term) != len(shape):
            raise ValueError(f"operand {position} has {len(shape)} dimension(s) {format_shape(shape)}, but its "
                             f"subscripts {term!r} name {len(term)}")
        for letter, dim in zip(term, shape):
            known = sizes.setdefault(letter, dim)
            if known != dim:
                raise ValueError(f"index {letter!r} has size {known} in one operand and {dim} in operand {position}")
    return sizes


def _contract_attributes(a: Node, b: Node, subscripts: Any) -> dict[str, str]:
    terms, output = parse_subscripts(subscripts, 2)
    left, right = terms
    for term, other, position in ((left, right, 0), (right, left, 1)):
        alone = sorted(set(term) - set(other) - set(output))
        if alone:
            raise ValueError(f"subscripts {subscripts!r}: index {alone[0]!r} of operand {position} is in neither the "
                             "other operand nor the result; sum it out first (tg.einsum does)")
    return {"subscripts": f"{left},{right}->{output}"}


def _contract_rule(a: Node, b: Node, subscripts: str) -> tuple[Shape, str]:
    dtype = result_dtype(a, b)
    terms, output = parse_subscripts(subscripts, 2)
    sizes = letter_sizes(terms, [a.shape, b.shape])
    return tuple(sizes[letter] for letter in output), dtype


#: Above this many multiply-adds, einsum's optimize path (a BLAS call
#: through tensordot) beats its own loops; below it, that path's planning
#: costs about 10 us a call. For n x n matrix products on one core
#: (``bench/einsum_blas.py``, one run) the crossover lay between n = 32
#: (loops 9.5 us, BLAS 13.3 us) and n = 40 (16.0 against 15.2); at n = 256,
#: 14.8 ms against 0.63 ms.
BLAS_WORK = 40_000


def _contract_specialize(in_shapes, out_shape, subscripts: str) -> dict[str, bool]:
    terms, _ = parse_subscripts(subscripts, 2)
    sizes = letter_sizes(terms, [tuple(shape) for shape in in_shapes])
    return {"optimize": int(np.prod(list(sizes.values()), dtype=np.int64)) > BLAS_WORK}


def _contract_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray, subscripts: str, optimize: bool = False) -> None:
    np.einsum(subscripts, a, b, out=out, optimize=optimize)


def _contract_source(subscripts: str, optimize: bool = False) -> str:
    return "np.einsum(%r, {0}, {1}, out={out}%s)" % (subscripts, ", optimize=True" if optimize else "")


def _contract_vjp(g: Node, ans: Node, a: Node, b: Node, subscripts: str):
    # out = sum over the rest of a * b: each operand's cotangent contracts
    # g with the other operand
    (left, right), output = parse_subscripts(subscripts, 2)
    return CONTRACT(g, b, f"{output},{right}->{left}"), CONTRACT(a, g, f"{left},{output}->{right}")


def _contract_native(ctx: NativeContext) -> str:
    """Loops over the result's indices, each entry a sum over the shared indices not in the result.

    Each entry's sum runs over the summed indices in C order. With a
    result of at least one axis, the result's last index is the innermost
    loop (contiguous in the result, and where it is an operand's last
    axis, in that operand too, so the loop vectorises) and each entry
    accumulates in place, in that same order.
    """
    (left, right), output = parse_subscripts(ctx["subscripts"], 2)
    sizes = letter_sizes([left, right], [ctx.in_shapes[0], ctx.in_shapes[1]])
    summed = [letter for letter in left if letter in right and letter not in output]
    name = {letter: ctx.temp(f"i{letter}") for letter in sorted(sizes)}

    def operand(index: int, term: str) -> str:
        return ctx.at(index, [name[letter] for letter in term])
    product = f"{operand(0, left)} * {operand(1, right)}"
    result = [name[letter] for letter in output]
    if not summed:
        return ctx.loops([sizes[letter] for letter in output], [f"{ctx.store(result)} = {product}"], result)
    if not output:
        total = ctx.temp("total")
        sums = ctx.loops([sizes[letter] for letter in summed], [f"{total} += {product}"],
                         [name[letter] for letter in summed])
        return "\n".join([f"{total} = {ctx.literal(0.0)}", sums, f"{ctx.out} = {total}"])
    zeros = ctx.loops([sizes[letter] for letter in output], [f"{ctx.store(result)} = {ctx.literal(0.0)}"], result)
    order = [*output[:-1], *summed, output[-1]]
    sums = ctx.loops([sizes[letter] for letter in order], [f"{ctx.store(result)} += {product}"],
                     [name[letter] for letter in order])
    return "\n".join([zeros, sums])


CONTRACT = register(Op(
    name="contract", operands=("a", "b"), attributes={"subscripts": REQUIRED}, public=False,
    normalize=_contract_attributes, shape_rule=_contract_rule, kernel=_contract_kernel, vjp=_contract_vjp,
    specialize=_contract_specialize, source=_contract_source, native=_contract_native,
    samples=(
        Sample([Arg((3, 4)), Arg((4, 2))], {"subscripts": "ij,jk->ik"}),
        Sample([Arg((5, 3), batch=True), Arg((5, 3), batch=True)], {"subscripts": "bi,bi->b"}),
        Sample([Arg((2, 3)), Arg((4,))], {"subscripts": "ij,k->kji"}),
        Sample([Arg((2, 3, 4)), Arg((2, 4, 3))], {"subscripts": "bij,bjk->bik"}),
        Sample([Arg(()), Arg((3,))], {"subscripts": ",i->i"}),
        # large enough for the BLAS path
        Sample([Arg((2, 30, 20)), Arg((20, 35))], {"subscripts": "bij,jk->bik"}),
    ),
    doc="""``np.einsum(subscripts, a, b)`` of two operands, each index of one in the other or the result.

    out = sum over the shared indices not in the result of a * b; the VJP
    of each operand contracts g with the other (``tg.einsum`` is built
    from it).
    """,
))
