"""tapegraph: a functional graph compiler for automatic differentiation.

Declare a model as an immutable expression, compile it to flat forward and
reverse tapes over preallocated numpy buffers, and run pure SGD steps::

    import tapegraph as tg
    x = tg.input("x", shape=(400,))
    y = tg.input("y")
    w = tg.param("w", shape=(400,))
    b = tg.param("b")
    pred = tg.vector_scalar_affine(x, w, b)
    loss = tg.squared_l2_distance(pred, y) + tg.l2_norm_penalty(w, l2_reg=1.0)
    prog = tg.compile(loss, wrt=[w, b], outputs={"prediction": pred})
    print(prog.dump())
"""

from tapegraph import testing
from tapegraph.inspect.draw import draw_graph, draw_tape
from tapegraph.backends import check_finite
from tapegraph.compile.grad import grad
from tapegraph.errors import (
    AllocationError, CallError, GraphError, MissingFileError, NonFiniteError, OpError, PersistError, ShapeError, TapeError, TapegraphError,
)
from tapegraph.expr import Node, const, input, param
from tapegraph.ops import PUBLIC_FUNCTIONS, REQUIRED, Arg, Op, Sample, register_op
from tapegraph import schedules
from tapegraph.optim import (
    SGD, Adam, Optimizer, OptimizerState, RMSProp, SGDStep, adam, adamw, rmsprop, sgd, shuffled,
)
from tapegraph.persist import load_params, read_npz, save_params
from tapegraph.program import Program, Specialization, SpecializationError, compile, no_new_specializations

# the op functions (tg.tanh, tg.sum, tg.affine, ...), generated from the
# op records and the composites: see tapegraph.ops
globals().update(PUBLIC_FUNCTIONS)

__version__ = "0.1.0"

__all__ = [
    "input", "param", "const", "Node", "grad", "compile", "Program", "sgd", "SGDStep", "testing",
    "adam", "adamw", "rmsprop", "SGD", "Adam", "RMSProp", "Optimizer", "OptimizerState", "shuffled", "schedules",
    "check_finite", "no_new_specializations", "Specialization", "draw_graph", "draw_tape",
    "save_params", "load_params", "read_npz", "PersistError", "MissingFileError",
    "TapegraphError", "AllocationError", "ShapeError", "GraphError", "CallError", "TapeError", "NonFiniteError", "SpecializationError",
    "OpError", "Op", "Sample", "Arg", "REQUIRED", "register_op",
    *PUBLIC_FUNCTIONS,
]
