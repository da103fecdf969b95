"""Operators: primitives registered in ``REGISTRY``, and composites.

Importing this package imports every op module, which registers its ops.
The op functions (``tapegraph.ops.tanh``, ``tapegraph.ops.sum_to``) are
generated from the records: this module exports one per registered op and
one per composite, and ``PUBLIC_FUNCTIONS`` lists those that ``tapegraph``
exports at top level.
"""

from __future__ import annotations

from collections.abc import Callable

from tapegraph.ops.registry import (
    REGISTRY, REQUIRED, USER_OPS, Arg, Op, Sample, Scratch, apply, as_node, lookup_op, register, register_op,
)
from tapegraph.ops import comparison, elementwise, linalg, reductions, shaping, softmax  # noqa: F401  (they register their ops)
from tapegraph.ops.composites import COMPOSITES, Composite
from tapegraph.ops import contraction, shape_composites

COMPOSITES.update(shape_composites.COMPOSITES)
COMPOSITES.update(contraction.COMPOSITES)

#: Every op function by name: one per built-in op, one per composite.
FUNCTIONS: dict[str, Callable] = {name: op.function for name, op in REGISTRY.items()}
FUNCTIONS.update((name, composite.build) for name, composite in COMPOSITES.items())
#: The functions ``tapegraph`` exports at top level (``tg.tanh``); internal
#: ops (``sum_to``, ``pick``) stay here.
PUBLIC_FUNCTIONS: dict[str, Callable] = {name: function for name, function in FUNCTIONS.items()
                                         if name in COMPOSITES or REGISTRY[name].public}

globals().update(FUNCTIONS)
# the composites' docstring examples are collected from composites.py;
# the generated functions' examples are collected from here
__test__ = {name: op.function for name, op in REGISTRY.items()}

__all__ = [
    "REGISTRY", "USER_OPS", "COMPOSITES", "FUNCTIONS", "PUBLIC_FUNCTIONS", "REQUIRED",
    "Arg", "Op", "Sample", "Scratch", "Composite", "apply", "as_node", "lookup_op", "register", "register_op",
    *FUNCTIONS,
]
