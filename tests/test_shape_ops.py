"""Shape, indexing and linear-algebra ops (issue 13, items 3 and 4).

The registry-driven suites check each op's first-order VJP, forward and
generated code on its samples; this file adds, for these ops, a
gradient-of-gradient check on every sample, their values against numpy's
own functions on many keys and shapes, and their errors for bad input.
"""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.compile.graph import post_order
from tapegraph.expr import PARAM
from tapegraph.ops import COMPOSITES, REGISTRY
from tapegraph.testing import build_node

from conftest import draw

#: The primitives and composites this file covers.
OPS = ["index", "unindex", "gather", "scatter_add", "concat", "contract", "matmul", "outer"]
FUNCTIONS = ["take", "concatenate", "stack", "split", "squeeze", "expand_dims", "flip", "einsum", "tensordot", "dot"]
CASES = [(name, op, index, sample)
         for name, op in [*((name, REGISTRY[name]) for name in OPS), *((name, COMPOSITES[name]) for name in FUNCTIONS)]
         for index, sample in enumerate(op.samples)]


def _run(node, params=None, inputs=None):
    program = tg.compile(tg.sum(node), outputs={"out": node})
    return program.run(params or {}, inputs or {}, outputs=["out"])["out"]


# Second order: the VJP rules' own VJPs.

@pytest.mark.parametrize("name, op, index, sample", CASES, ids=[f"{case[0]}-{case[2]}" for case in CASES])
def test_gradient_of_gradient_matches_central_differences(name, op, index, sample, rng):
    """h(x) = <grad f(x), V> for f = sum(op(x)^2 * U): its gradient is a Hessian-vector product,
    made by differentiating the VJP rules' nodes (a linear op's VJP of its VJP included)."""
    arrays = [draw(arg, rng) for arg in sample.args]
    nodes, params, inputs = [], {}, {}
    for position, array in enumerate(arrays):
        if array.dtype.kind == "f":
            nodes.append(tg.param(f"a{position}", shape=array.shape))
            params[f"a{position}"] = array
        else:
            nodes.append(tg.input(f"a{position}", shape=array.shape, dtype=array.dtype))
            inputs[f"a{position}"] = array
    out = build_node(op, nodes, sample.static)
    weights = tg.const(rng.uniform(0.5, 1.5, size=out.shape))
    objective = tg.sum(tg.square(out) * weights)
    wrt = [node for node in nodes if node.op is PARAM]
    gradients = tg.grad(objective, wrt)
    directional = None
    for gradient in gradients:
        term = tg.sum(gradient * tg.const(rng.uniform(-1.0, 1.0, size=gradient.shape)))
        directional = term if directional is None else directional + term
    # the parameters the Hessian-vector product reads (some may drop out)
    used = [node for node in post_order([directional]) if node.op is PARAM]
    program = tg.compile(directional, wrt=used)
    errors = tg.testing.check_grads(program, {node.name: params[node.name] for node in used}, inputs)
    assert all(error < 1e-6 for error in errors.values()), errors


# Values against numpy.

KEYS = [
    0, -1, slice(None), slice(1, 3), slice(None, None, -1), slice(3, 0, -2), slice(-2, None), slice(0, 100),
    (slice(None), 1), (Ellipsis, 2), (None, 0), (0, None, slice(None, None, 2)), (Ellipsis, None),
    (1, Ellipsis, slice(1, 3)), (slice(None), None, -1), (np.int64(2), slice(None, 1, -1)), (slice(-10, 2),),
]


@pytest.mark.parametrize("key", KEYS, ids=[repr(key) for key in KEYS])
def test_indexing_gives_what_numpy_gives_and_the_gradient_scatters_back(key, rng):
    array = rng.normal(size=(4, 3, 5))
    x = tg.param("x", shape=array.shape)
    node = x[key]
    expected = array[key]
    assert node.shape == expected.shape
    np.testing.assert_array_equal(_run(node, {"x": array}), expected)
    weights = rng.normal(size=expected.shape)
    program = tg.compile(tg.sum(node * tg.const(weights)), wrt=[x])
    _, grads = program.value_and_grad({"x": array})
    scattered = np.zeros_like(array)
    scattered[key] = weights
    np.testing.assert_array_equal(grads["x"], scattered)


def test_equal_selections_are_equal_nodes_and_a_full_selection_is_the_value():
    x = tg.param("x", shape=(4, 3))
    assert x[1:10] == x[1:4] == x[-3:] and x[0] == x[-4] == x[0, :]
    assert x[:] is x and x[...] is x and x[:, :] is x
    assert x[1:3].attr("index") == "[1:3]" and x[::-1, 0].attr("index") == "[::-1, 0]"
    assert x[..., None].attr("index") == "[:, :, None]" and tg.ops.index(x, "[...]", name="all").attr("index") == "[...]"


def test_symbolic_dimensions_take_full_slices_and_reversals():
    x = tg.input("x", shape=("batch", 3))
    data = np.arange(12.0).reshape(4, 3)
    node = x[::-1, None, 1:]
    assert node.shape == ("batch", 1, 2)
    np.testing.assert_array_equal(_run(node, inputs={"x": data}), data[::-1, None, 1:])


def test_transpose_shape_and_astype_on_nodes():
    w = tg.param("w", shape=(2, 3, 4))
    assert w.T.shape == (4, 3, 2) and w.T.op is REGISTRY["transpose"]
    assert w.shape == (2, 3, 4)
    single = w.astype("float32")
    assert single.dtype == "float32" and single.op is REGISTRY["cast"]
    assert w.astype(np.float64) is w
    with pytest.raises(tg.ShapeError, match="not floating point"):
        w.astype("int64")


def test_a_node_is_not_iterable():
    with pytest.raises(TypeError, match=r"a node \(f64\[3\]\) is not iterable; index it"):
        list(tg.param("w", shape=(3,)))


def test_take_with_repeated_and_negative_indices(rng):
    table = rng.normal(size=(5, 2))
    E = tg.param("E", shape=(5, 2))
    tokens = tg.input("tokens", shape=("batch",), dtype="int64")
    rows = tg.take(E, tokens)
    ids = np.array([1, 4, 1, -1, 0])
    np.testing.assert_array_equal(_run(rows, {"E": table}, {"tokens": ids}), table[ids])
    program = tg.compile(tg.sum(rows), wrt=[E])
    _, grads = program.value_and_grad({"E": table}, {"tokens": ids})
    # row 1 taken twice, row 4 twice (as 4 and -1), rows 2 and 3 never
    np.testing.assert_array_equal(grads["E"][:, 0], [1.0, 2.0, 0.0, 0.0, 2.0])


def test_join_stack_split_squeeze_expand_and_flip_agree_with_numpy(rng):
    arrays = [rng.normal(size=(2, size)) for size in (1, 3, 2, 4, 1)]
    params = [tg.param(f"p{index}", shape=array.shape) for index, array in enumerate(arrays)]
    feeds = {f"p{index}": array for index, array in enumerate(arrays)}
    joined = tg.concatenate(params, axis=1)
    np.testing.assert_array_equal(_run(joined, feeds), np.concatenate(arrays, axis=1))
    # five operands: a balanced tree of four two-way joins
    assert sum(node.op is REGISTRY["concat"] for node in post_order([joined])) == 4
    assert tg.concatenate([params[0]]) is params[0]
    same = [tg.param(f"s{index}", shape=(2, 3)) for index in range(3)]
    same_arrays = {f"s{index}": rng.normal(size=(2, 3)) for index in range(3)}
    for axis in (0, 1, 2, -1):
        np.testing.assert_array_equal(_run(tg.stack(same, axis=axis), same_arrays),
                                      np.stack(list(same_arrays.values()), axis=axis))
    x = tg.param("x", shape=(6, 4))
    data = rng.normal(size=(6, 4))
    for sections, axis in ((3, 0), ([1, 3], 1), (1, 0)):
        pieces = tg.split(x, sections, axis)
        for piece, expected in zip(pieces, np.split(data, sections, axis)):
            np.testing.assert_array_equal(_run(piece, {"x": data}), expected)
    column = tg.param("c", shape=(3, 1, 1))
    assert tg.squeeze(column).shape == (3,) and tg.squeeze(column, axis=-1).shape == (3, 1)
    assert tg.expand_dims(x, (0, 3)).shape == (1, 6, 4, 1)
    assert tg.squeeze(x) is x and tg.squeeze(x, name="same").name == "same"  # nothing to squeeze
    np.testing.assert_array_equal(_run(tg.flip(x), {"x": data}), np.flip(data))
    np.testing.assert_array_equal(_run(tg.flip(x, 1), {"x": data}), np.flip(data, 1))


def test_the_transpose_of_an_index_that_keeps_every_entry_is_an_index():
    # no zeros to write for a reversal or a new axis: the gradient is an index too
    x = tg.param("x", shape=(3, 4))
    (gradient,) = tg.grad(tg.sum(tg.square(tg.flip(tg.expand_dims(x, 0)))), [x])
    assert "unindex" not in {node.op.name for node in post_order([gradient]) if not node.is_leaf}


SUBSCRIPTS = [
    ("ij,jk->ik", [(3, 4), (4, 2)]), ("ij,jk", [(3, 4), (4, 2)]), ("i,i->", [(3,), (3,)]), ("i,j->ij", [(2,), (3,)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ij->ji", [(2, 3)]), ("ijk->", [(2, 3, 4)]), ("ij->i", [(2, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]), ("ab,cd->", [(2, 3), (4, 5)]), ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ijk,kj->i", [(2, 3, 4), (4, 3)]), ("i,ij,j", [(2,), (2, 3), (3,)]),
]


@pytest.mark.parametrize("subscripts, shapes", SUBSCRIPTS, ids=[case[0] for case in SUBSCRIPTS])
def test_einsum_gives_what_numpy_gives(subscripts, shapes, rng):
    arrays = [rng.normal(size=shape) for shape in shapes]
    params = [tg.param(f"p{index}", shape=shape) for index, shape in enumerate(shapes)]
    node = tg.einsum(subscripts, *params)
    expected = np.einsum(subscripts, *arrays)
    assert node.shape == expected.shape
    np.testing.assert_allclose(_run(node, {f"p{index}": array for index, array in enumerate(arrays)}), expected,
                               rtol=1e-13, atol=1e-13)


def test_tensordot_dot_and_batched_matmul_give_what_numpy_gives(rng):
    cases = [
        (tg.tensordot, (2, 3, 4), (3, 4, 5), {}), (tg.tensordot, (2, 3), (3, 2), {"axes": ([0, 1], [1, 0])}),
        (tg.tensordot, (2,), (3,), {"axes": 0}), (tg.dot, (), (2, 3), {}), (tg.dot, (2, 3), (), {}),
        (tg.dot, (2, 3, 4), (5, 4, 2), {}), (tg.dot, (2, 3, 4), (4,), {}), (tg.matmul, (2, 1, 3, 4), (5, 4, 2), {}),
        (tg.matmul, (4,), (2, 4, 3), {}), (tg.matmul, (2, 3, 4), (4,), {}),
    ]
    numpy_function = {tg.tensordot: np.tensordot, tg.dot: np.dot, tg.matmul: np.matmul}
    for function, left, right, keywords in cases:
        a, b = rng.normal(size=left), rng.normal(size=right)
        node = function(tg.param("a", shape=left), tg.param("b", shape=right), **keywords)
        expected = numpy_function[function](a, b, **keywords)
        np.testing.assert_allclose(_run(node, {"a": a, "b": b}), expected, rtol=1e-13, atol=1e-13)
    # x @ W with a symbolic batch of stacks
    x = tg.input("x", shape=("batch", 3, 4))
    W = tg.param("W", shape=(4, 2))
    data, weights = rng.normal(size=(5, 3, 4)), rng.normal(size=(4, 2))
    np.testing.assert_allclose(_run(x @ W, {"W": weights}, {"x": data}), data @ weights, rtol=1e-13)
    program = tg.compile(tg.sum(tg.square(x @ W)), wrt=[W])
    tg.testing.check_grads(program, {"W": weights}, {"x": data})


# Bad input: a clear error at the user's line, naming the op and the shapes.

def _raises(pattern: str):
    return pytest.raises(tg.ShapeError, match=pattern)


def test_bad_indices_are_refused_where_they_are_written():
    x = tg.param("x", shape=(4, 3))
    y = tg.input("y", shape=("batch", 3))
    with _raises(r"index\(x: f64\[4,3\]\) at test_shape_ops.py:\d+: index 4 is out of bounds for axis 0 of size 4"):
        x[4]
    with _raises(r"index -4 is out of bounds for axis 1 of size 3"):
        x[:, -4]
    with _raises(r"the index 1.0 is a float; indices must be integers"):
        x[1.0]
    with _raises(r"the slice slice\(0.5, 2, None\) has a start of type float"):
        x[0.5:2]
    with _raises(r"too many indices: 3 for 2 dimension\(s\)"):
        x[0, 0, 0]
    with _raises(r"the slice 3:1 of axis 0 \(size 4\) selects no entries"):
        x[3:1]
    with _raises(r"a slice step cannot be zero"):
        x[::0]
    with _raises(r"only one ellipsis"):
        x[..., ...]
    with _raises(r"use tg.take\(x, indices, axis\)"):
        x[[0, 1]]
    with _raises(r"a node \(i64\[\]\) is not a basic index; .* use tg.take"):
        x[tg.input("i", dtype="int64")]
    with _raises(r"boolean masks are not supported"):
        x[True]
    with _raises(r"the string 'a' is not an index"):
        x["a"]
    with _raises(r"the string '\[0:a\]' is not an index"):
        tg.ops.index(x, "[0:a]")
    with _raises(r"index\(y: f64\[batch,3\]\) .*cannot take index 0 of axis 0, the symbolic dimension 'batch'"):
        y[0]
    with _raises(r"cannot slice axis 0, the symbolic dimension 'batch', with 1:"):
        y[1:]


def test_bad_take_arguments_are_refused(rng):
    E = tg.param("E", shape=(5, 2))
    with _raises(r"take\(E: f64\[5,2\], f64\[3\]\) at test_shape_ops.py:\d+: indices must be an integer array, "
                 r"got dtype float64; round and convert"):
        tg.take(E, tg.const(np.array([0.0, 1.0, 2.0])))
    with _raises(r"take\(E: f64\[5,2\]\) at test_shape_ops.py:\d+: indices must be integers, got float64 \[0.5, 1.0\]"):
        tg.take(E, [0.5, 1.0])
    assert tg.take(E, [0, -1]).inputs[1].dtype == "int64"  # a list of ints stays integer
    with _raises(r"take\(E: f64\[5,2\], i64\[2\]\) .*index 5 in indices is out of bounds for axis 0 of size 5"):
        tg.take(E, tg.const(np.array([0, 5])))
    with _raises(r"axis 2 is out of range for 2 dimension\(s\)"):
        tg.take(E, tg.const(np.array([0])), axis=2)
    tokens = tg.input("tokens", shape=("batch",), dtype="int64")
    program = tg.compile(tg.sum(tg.take(E, tokens)))
    with pytest.raises(tg.TapeError, match=r"index 7 at position \(1,\) of indices is out of bounds for axis 0 of size 5"):
        program.run({"E": np.zeros((5, 2))}, {"tokens": np.array([0, 7])})


def test_bad_joins_are_refused():
    a, b = tg.param("a", shape=(2, 3)), tg.param("b", shape=(2, 4))
    with _raises(r"concatenate\(a: f64\[2,3\], b: f64\[2,4\]\) at test_shape_ops.py:\d+: along axis 0 the shapes "
                 r"must agree elsewhere, but axis 1 is 3 in operand 0 and 4 in operand 1"):
        tg.concatenate([a, b])
    with _raises(r"concatenate\(a: f64\[2,3\], b: f64\[2,4\]\) .*axis 2 is out of range for 2 dimension\(s\)"):
        tg.concatenate([a, b], axis=2)
    with _raises(r"operand 1 has 1 dimension\(s\), operand 0 has 2"):
        tg.concatenate([a, tg.param("v", shape=(3,))], axis=1)
    with _raises(r"axis 0 of operand 0 is the symbolic dimension 'batch'"):
        tg.concatenate([tg.input("x", shape=("batch", 3)), a])
    with _raises(r"concatenate at test_shape_ops.py:\d+: takes a list or tuple of nodes, got Node f64\[2,3\]"):
        tg.concatenate(a)
    with _raises(r"needs at least one operand"):
        tg.concatenate([])
    with _raises(r"stack\(a: f64\[2,3\], b: f64\[2,4\]\) .*operand 1 is \[2,4\] and operand 0 \[2,3\]"):
        tg.stack([a, b])
    with _raises(r"split\(b: f64\[2,4\]\) .*3 equal pieces do not divide axis 1 of size 4"):
        tg.split(b, 3, axis=1)
    with _raises(r"cuts \[3, 2\] must increase strictly"):
        tg.split(b, [3, 2], axis=1)
    with _raises(r"squeeze\(a: f64\[2,3\]\) .*axis 1 has size 3, not 1"):
        tg.squeeze(a, 1)
    with _raises(r"flip\(a: f64\[2,3\]\) .*axis \(0, -2\) repeats an axis"):
        tg.flip(a, (0, -2))


def test_bad_products_are_refused():
    A, B = tg.param("A", shape=(2, 3)), tg.param("B", shape=(4, 5))
    with _raises(r"einsum\('ij,jk->ik', A: f64\[2,3\], B: f64\[4,5\]\) at test_shape_ops.py:\d+: index 'j' has size 3 "
                 r"in one operand and 4 in operand 1"):
        tg.einsum("ij,jk->ik", A, B)
    with _raises(r"subscripts 'ij,jk->ik' name 2 operand\(s\), but 1 were given"):
        tg.einsum("ij,jk->ik", A)
    with _raises(r"operand 0 has 2 dimension\(s\) \[2,3\], but its subscripts 'ijk' name 3"):
        tg.einsum("ijk->i", A)
    with _raises(r"index 'i' is repeated within operand 0 \('ii'\); traces and diagonals are not supported"):
        tg.einsum("ii->i", tg.param("S", shape=(3, 3)))
    with _raises(r"the result's index 'z' belongs to no operand"):
        tg.einsum("ij->z", A)
    with _raises(r"ellipses \(\.\.\.\) are not supported"):
        tg.einsum("...j->j", A)
    with _raises(r"'1' is not a letter"):
        tg.einsum("i1->i", A)
    with _raises(r"tensordot\(A: f64\[2,3\], B: f64\[4,5\]\) .*axis 1 of a has size 3, axis 0 of b has size 4"):
        tg.tensordot(A, B, axes=1)
    with _raises(r"matmul\(S: f64\[2,2,3\], T: f64\[3,3,2\]\) .*the batch axes do not broadcast: \[2,2,3\] @ \[3,3,2\]"):
        tg.param("S", shape=(2, 2, 3)) @ tg.param("T", shape=(3, 3, 2))
    with _raises(r"inner dimensions differ: \[2,3\] @ \[4,5\]"):
        A @ B
    with _raises(r"matmul takes vectors, matrices and stacks of matrices, not scalars"):
        tg.matmul(A, tg.param("s"))
