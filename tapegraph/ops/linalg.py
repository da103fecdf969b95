"""Matrix products: ``matmul`` (with transpose flags) and ``outer``.

The transpose flags let VJP rules use ``W.T`` without materialising it.
Operands are vectors or matrices, as in the homework's models; a batch of
examples is a matrix whose rows are the examples.
"""

from __future__ import annotations

import numpy as np

from tapegraph.expr import Node
from tapegraph.ops.elementwise import MUL
from tapegraph.ops.native import NativeContext, count
from tapegraph.ops.registry import Arg, Op, Sample, register, result_dtype
from tapegraph.shapes import Shape, format_shape


def _effective(shape: Shape, transpose: bool) -> Shape:
    return tuple(reversed(shape)) if transpose else tuple(shape)


def _matmul_rule(a: Node, b: Node, transpose_a: bool, transpose_b: bool) -> tuple[Shape, str]:
    dtype = result_dtype(a, b)
    for node in (a, b):
        if node.ndim not in (1, 2):
            raise ValueError(f"matmul takes vectors and matrices, got {node.ndim} dimension(s)")
    left = _effective(a.shape, transpose_a)
    right = _effective(b.shape, transpose_b)
    inner_left = left[-1]
    inner_right = right[0] if len(right) == 1 else right[-2]
    if inner_left != inner_right:
        raise ValueError(f"inner dimensions differ: {format_shape(left)} @ {format_shape(right)}")
    return left[:-1] + right[1:], dtype


def _matmul_kernel(a: np.ndarray, b: np.ndarray, out: np.ndarray, transpose_a: bool, transpose_b: bool,
                   swap: bool = False) -> None:
    np.matmul(a.T if transpose_a else a, b.T if transpose_b else b, out=out)


def _matmul_specialize(in_shapes, out_shape, transpose_a: bool, transpose_b: bool) -> dict[str, bool]:
    """``swap``: a vector times a transposed matrix, ``x @ W.T``, is ``W @ x``
    (and ``A.T @ v`` is ``v @ A``): the same products, without making a
    transposed view at every call."""
    vector_then_matrix = len(in_shapes[0]) == 1 and len(in_shapes[1]) == 2 and transpose_b
    matrix_then_vector = len(in_shapes[0]) == 2 and len(in_shapes[1]) == 1 and transpose_a
    return {"swap": vector_then_matrix or matrix_then_vector}


def _matmul_source(transpose_a: bool, transpose_b: bool, swap: bool = False) -> str:
    # np.dot equals np.matmul for vectors and matrices, and measured about
    # 40% cheaper per call on the small arrays of per-example steps
    if swap:
        return "np.dot({1}, {0}, out={out})"
    return "np.dot({0}%s, {1}%s, out={out})" % (".T" if transpose_a else "", ".T" if transpose_b else "")


def _matmul_vjp(g: Node, ans: Node, a: Node, b: Node, transpose_a: bool, transpose_b: bool):
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
    # dA = g B^T, dB = A^T g
    if transpose_a:
        grad_a = MATMUL(b, g, transpose_a=transpose_b, transpose_b=True)
    else:
        grad_a = MATMUL(g, b, transpose_b=not transpose_b)
    if transpose_b:
        grad_b = MATMUL(g, a, transpose_a=True, transpose_b=transpose_a)
    else:
        grad_b = MATMUL(a, g, transpose_a=not transpose_a)
    return grad_a, grad_b


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
#: 1x400 matrix-vector product through numba, against 0.4 us for ddot).
NATIVE_BLAS_DIMENSION = 8
NATIVE_BLAS_WORK = 4096
NATIVE_BLAS_DOT = 64


def _matmul_native(ctx: NativeContext) -> str:
    """``a @ b`` in native code.

    Loops are ordered so that the innermost one runs along contiguous
    entries and each result entry is its own sum, taken in the order of
    the inner index (no reassociation): ``A.T @ v`` and ``v @ B`` then
    vectorise; ``A @ v`` runs one accumulator per row side by side.
    """
    a, b = ctx.operands
    a_shape, b_shape = ctx.in_shapes
    transpose_a, transpose_b = ctx["transpose_a"], ctx["transpose_b"]
    inner = a_shape[0] if transpose_a else a_shape[-1]
    zero = ctx.literal(0.0)
    if not ctx.out_shape:  # a dot product of two vectors
        if inner >= NATIVE_BLAS_DOT:
            return f"{ctx.out} = np.dot({a}, {b})"
        total, k = ctx.temp("total"), ctx.temp("k")
        return "\n".join([f"{total} = {zero}", f"for {k} in range({inner}):",
                          f"    {total} += {a}[{k}] * {b}[{k}]", f"{ctx.out} = {total}"])
    out = ctx.out
    if len(a_shape) == 2 and len(b_shape) == 2:
        if min(*ctx.out_shape, inner) >= NATIVE_BLAS_DIMENSION and count(ctx.out_shape) * inner >= NATIVE_BLAS_WORK:
            left = f"{a}.T" if transpose_a else a
            right = f"{b}.T" if transpose_b else b
            return f"np.dot({left}, {right}, {out})"
        i, k, j = ctx.temp("i"), ctx.temp("k"), ctx.temp("j")
        rows, columns = ctx.out_shape
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
    if inner >= NATIVE_BLAS_DOT and size < 4:
        return "\n".join([f"for {i} in range({size}):", f"    {out}[{i}] = np.dot({matrix}[{i}], {vector})"])
    return "\n".join([
        f"for {i} in range({size}):", f"    {out}[{i}] = {zero}",
        f"for {k} in range({inner}):", f"    {factor} = {vector}[{k}]",
        f"    for {i} in range({size}):", f"        {out}[{i}] += {matrix}[{i}, {k}] * {factor}"])


def _outer_native(ctx: NativeContext) -> str:
    a, b = ctx.operands
    i, j = names = ctx.indices(2)
    return ctx.loops(ctx.out_shape, [f"{ctx.out}[{i}, {j}] = {a}[{i}] * {b}[{j}]"], names)


def _flag_attributes(a: Node, b: Node, transpose_a: bool, transpose_b: bool) -> dict[str, bool]:
    return {"transpose_a": bool(transpose_a), "transpose_b": bool(transpose_b)}


def _flags(transpose_a: bool, transpose_b: bool) -> dict[str, bool]:
    return {"transpose_a": transpose_a, "transpose_b": transpose_b}


def _matmul_fill(a, b, in_shapes, out_shape, transpose_a, transpose_b):
    # every entry is a sum of `inner` products a * b (Op.fill)
    return a * b * in_shapes[0][0 if transpose_a else -1]


def _outer_fill(a, b, in_shapes, out_shape):
    return a * b


MATMUL = register(Op(
    name="matmul", operands=("a", "b"), attributes={"transpose_a": False, "transpose_b": False},
    normalize=_flag_attributes, shape_rule=_matmul_rule, kernel=_matmul_kernel, vjp=_matmul_vjp, fill=_matmul_fill,
    specialize=_matmul_specialize, source=_matmul_source, scalar="np.dot({0}, {1})", native=_matmul_native,
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
    ),
    doc="""Matrix product ``a @ b`` of vectors and matrices.

    ``transpose_a``/``transpose_b`` use ``a.T``/``b.T`` without copying:
    A @ B with A = a or a.T and B = b or b.T.

    >>> import tapegraph as tg
    >>> x = tg.input("x", shape=("batch", 400))
    >>> W = tg.param("W", shape=(10, 400))
    >>> tg.matmul(x, W, transpose_b=True)
    <matmul f64[batch,10] at ...>
    """,
))

OUTER = register(Op(
    name="outer", operands=("a", "b"), public=False, shape_rule=_outer_rule, kernel=_outer_kernel, fill=_outer_fill,
    native=_outer_native,
    # a column times a row through BLAS: np.multiply.outer allocates a
    # temporary of the output's size at every call, this does not
    source="np.dot({0}[:, None], {1}[None, :], out={out})",
    vjp=lambda g, ans, a, b: (MATMUL(g, b), MATMUL(g, a, transpose_a=True)),
    samples=(Sample([Arg((3,)), Arg((4,))]),),
    doc="Outer product of two vectors: ``out[i, j] = a[i] * b[j]``, that is a b^T.",
))
