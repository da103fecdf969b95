"""Operators: primitives registered in ``REGISTRY``, and composites.

Importing this package imports every op module, which registers its ops.
"""

from tapegraph.ops.registry import REGISTRY, Arg, Op, Sample, Scratch, apply, as_node, register
from tapegraph.ops.elementwise import add, div, exp, log, mul, neg, relu, sigmoid, sign, square, sub, tanh
from tapegraph.ops.reductions import broadcast_to, expand, mean, sum, sum_squares, sum_to
from tapegraph.ops.linalg import matmul, outer
from tapegraph.ops.shaping import reshape, transpose
from tapegraph.ops.softmax import cross_entropy, log_softmax, pick, softmax, softmax_minus_onehot, unpick
from tapegraph.ops.composites import (
    COMPOSITES, affine, dot, l2_norm_penalty, nll, squared_l2_distance, vector_scalar_affine,
)

__all__ = [
    "REGISTRY", "COMPOSITES", "Arg", "Op", "Sample", "Scratch", "apply", "as_node", "register",
    "add", "sub", "mul", "div", "neg", "exp", "log", "tanh", "square", "relu", "sign", "sigmoid",
    "sum", "mean", "sum_squares", "expand", "sum_to", "broadcast_to", "matmul", "outer", "reshape", "transpose",
    "softmax", "log_softmax", "cross_entropy", "softmax_minus_onehot", "pick", "unpick",
    "vector_scalar_affine", "affine", "squared_l2_distance", "l2_norm_penalty", "dot", "nll",
]
