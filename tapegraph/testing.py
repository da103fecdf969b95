"""Gradient checks for your own test suites (and ours).

``check_grads`` compares a compiled program's gradients with central
differences of its objective, entry by entry (the homework's
``test_ComputationGraphFunction``); ``check_op`` does the same for one op
under a random upstream gradient (the homework's ``test_node_backward``).
Both raise ``AssertionError`` naming the parameter, the worst entry, the
two values and their relative error.

The numeric derivative of each entry is Richardson's extrapolation of
central differences, at a step that does not grow with the entry and at
one that does, whichever settles better (``numeric_gradient``): correct
gradients of a softmax at logits near 1e3 or 1e10 pass, and a gradient
wrong in its sixth digit still fails.

The relative error of an entry is ``|analytic - numeric| / max(|analytic|,
|numeric|, floor)``, with ``floor = floor_factor * max(1, |objective|)``:
entries far below the objective's scale are compared in absolute terms,
since central differences cannot resolve them relatively.

The step and the tolerances follow the precision the program computes in
(``settings_for``: the least precise floating dtype among its nodes),
from ``SETTINGS``: float64 steps by ``eps = 1e-5`` and passes errors up to
``rtol = 1e-6`` (floor factor 1e-3); float32, whose rounding (2**-24, about
6e-8) divided by a step of 1e-5 would be an error of 5e-3 on a correct
gradient, steps by 1e-2 and passes up to 1e-2 (floor factor 1e-2). Either
can be overridden by passing ``eps=`` and ``rtol=``; a float16 program
needs both (central differences in float16 resolve nothing finer than
about 10%), or checking in float32. See docs/testing.md, "Gradient checks
in float32".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from tapegraph.compile.graph import post_order
from tapegraph.errors import CallError
from tapegraph.expr import PARAM, Node, const, input, param
from tapegraph.ops.composites import Composite
from tapegraph.ops.elementwise import MUL
from tapegraph.ops.reductions import SUM
from tapegraph.ops.registry import Op

__all__ = ["SETTINGS", "CheckSettings", "build_node", "check_grads", "check_op", "numeric_gradient",
           "relative_errors", "settings_for"]


class CheckSettings(NamedTuple):
    """How central differences are taken and judged at one precision."""

    #: The step, relative to ``max(1, |x|)``.
    eps: float
    #: The largest relative error that passes.
    rtol: float
    #: Errors are relative to at least ``floor_factor * max(1, |objective|)``.
    floor_factor: float


#: The default settings by the dtype a program computes in. float32's
#: were measured with this module on every op's samples and the homework's
#: models in float32 (worst correct gradient 3e-3; float32's rounding is
#: divided by the step, its truncation error grows with the step's square):
#: a wrong factor of 1.05 or more, a sign or a missing term still fail.
SETTINGS: dict[str, CheckSettings] = {
    "float64": CheckSettings(eps=1e-5, rtol=1e-6, floor_factor=1e-3),
    "float32": CheckSettings(eps=1e-2, rtol=1e-2, floor_factor=1e-2),
}


def settings_for(program: Any, eps: float | None = None, rtol: float | None = None) -> CheckSettings:
    """The settings ``check_grads`` uses for ``program``: ``SETTINGS`` of its least precise float dtype.

    That is the dtype of any of its nodes (objective, gradients, what they
    are computed from) with the largest machine epsilon; ``eps`` and
    ``rtol``, when given, replace the defaults. A dtype without defaults
    (float16) needs both given.

    >>> import tapegraph as tg
    >>> w = tg.param("w", shape=(3,), dtype="float32")
    >>> tg.testing.settings_for(tg.compile(tg.sum(tg.tanh(w)), wrt=[w]))
    CheckSettings(eps=0.01, rtol=0.01, floor_factor=0.01)
    """
    if isinstance(getattr(program, "objective", None), Node):
        roots = [program.objective, *program.gradients]
    else:  # any object with params, run and value_and_grad: its declared parameters
        roots = list(program.params.values())
    floats = {np.dtype(node.dtype) for node in post_order(roots) if np.dtype(node.dtype).kind == "f"}
    dtype = max(floats, key=lambda kind: np.finfo(kind).eps).name if floats else "float64"
    defaults = SETTINGS.get(dtype)
    if defaults is None:
        if eps is None or rtol is None:
            raise CallError(f"the program computes in {dtype}, for which there are no default gradient-check "
                            f"settings (central differences in {dtype} resolve little): pass both eps= and rtol=, "
                            f"or check the model declared in float32 or float64")
        return CheckSettings(eps, rtol, SETTINGS["float32"].floor_factor)
    return CheckSettings(defaults.eps if eps is None else eps, defaults.rtol if rtol is None else rtol,
                         defaults.floor_factor)


def numeric_gradient(function: Callable[[dict[str, np.ndarray]], float], params: Mapping[str, np.ndarray],
                     name: str, eps: float = 1e-5) -> np.ndarray:
    """Central differences of ``function(params)`` in every entry of ``params[name]``, in float64.

    Each entry's derivative is taken with Richardson's extrapolation of
    central differences at a step ``h`` and ``h / 2`` (error of order
    ``h**4``), for two steps ``h``: ``eps`` itself, which does not grow
    with the entry (a softmax of logits near 1e3 or 1e10 varies on the
    scale of 1 whatever their size), and ``eps * |x|`` for an entry above
    1 (a function such as ``x**2`` whose scale grows with ``x``). The one
    whose two estimates agree better is kept. Steps are powers of two, at
    least 64 float spacings of the entry in its own dtype, so ``x +- h``
    are exact and the difference quotient divides by the step actually
    taken. ``params`` is not modified (the function is called on copies,
    of the same dtype: a float32 parameter is perturbed in float32).
    """
    trial = {key: np.array(value, dtype=_float_dtype(value), copy=True) for key, value in params.items()}
    values = trial[name]
    result = np.empty(values.shape)
    for index in np.ndindex(values.shape):
        original = float(values[index])

        def difference(step: float) -> float:
            values[index] = original + step
            upper_point, upper = float(values[index]), function(trial)
            values[index] = original - step
            lower_point, lower = float(values[index]), function(trial)
            values[index] = original
            if upper_point == lower_point:
                raise CallError(f"numeric gradient of {name!r} at index {tuple(int(i) for i in index)}: a step of "
                                f"{step:g} vanishes in {values.dtype} at {original!r}; give a larger eps")
            return (upper - lower) / (upper_point - lower_point)

        best, best_error = math.nan, math.inf
        for step in _steps(original, eps, values.dtype):
            coarse, fine = difference(step), difference(step / 2)
            error = abs(coarse - fine)
            if not error >= best_error:  # the first, a better one, or one where the last was NaN
                best, best_error = (4.0 * fine - coarse) / 3.0, error
        result[index] = best
    return result


def _steps(x: float, eps: float, dtype: np.dtype) -> list[float]:
    """The finite-difference steps tried at ``x``: ``eps``, and ``eps * |x|`` when that is larger."""
    floor = 64.0 * float(np.spacing(dtype.type(abs(x)))) if math.isfinite(x) else 0.0
    steps = []
    for target in (eps, eps * abs(x)) if math.isfinite(x) and abs(x) > 1.0 else (eps,):
        step = 2.0 ** math.ceil(math.log2(max(target, floor, 1e-300)))
        if step not in steps:
            steps.append(step)
    return steps


def _float_dtype(value: Any) -> np.dtype:
    """A floating array's own dtype, else float64 (plain numbers, integers)."""
    dtype = np.asarray(value).dtype
    return dtype if dtype.kind == "f" else np.dtype("float64")


def relative_errors(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> np.ndarray:
    """Entrywise ``|a - n| / max(|a|, |n|, floor)``."""
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return np.abs(analytic - numeric) / scale


def check_grads(program: Any, params: Mapping[str, Any], inputs: Mapping[str, Any] | None = None, *,
                eps: float | None = None, rtol: float | None = None) -> dict[str, float]:
    """Check ``program.value_and_grad`` against central differences.

    Returns the largest relative error per parameter; raises
    ``AssertionError`` for the worst entry above ``rtol``. ``eps`` and
    ``rtol`` default to the program's precision's (``settings_for``:
    1e-5 and 1e-6 in float64, 1e-2 and 1e-2 in float32).

    >>> import numpy as np, tapegraph as tg
    >>> w = tg.param("w", shape=(3,))
    >>> prog = tg.compile(tg.sum(tg.tanh(w)), wrt=[w])
    >>> errors = tg.testing.check_grads(prog, {"w": np.array([0.1, -0.5, 2.0])})
    >>> errors["w"] < 1e-6
    True
    """
    inputs = dict(inputs or {})
    params = {name: np.asarray(value, dtype=program.params[name].dtype if name in program.params else None)
              for name, value in params.items()}
    eps, rtol, floor_factor = settings_for(program, eps, rtol)
    value, gradients = program.value_and_grad(params, inputs)

    def objective(trial: dict[str, np.ndarray]) -> float:
        return program.run(trial, inputs, outputs=["objective"])["objective"]

    floor = floor_factor * max(1.0, abs(value))
    worst: dict[str, float] = {}
    for name, analytic in gradients.items():
        if name not in params:
            continue
        numeric = numeric_gradient(objective, params, name, eps)
        errors = relative_errors(analytic, numeric, floor)
        worst[name] = float(errors.max()) if errors.size else 0.0
        if errors.size and not worst[name] <= rtol:  # also catches NaN
            index = np.unravel_index(int(np.nanargmax(np.where(np.isnan(errors), np.inf, errors))), errors.shape)
            index = tuple(int(i) for i in index)
            raise AssertionError(
                f"gradient of parameter {name!r} is wrong at index {index}: analytic {float(analytic[index])!r}, "
                f"numeric {float(numeric[index])!r}, relative error {errors[index]:.3g} > {rtol:g} "
                f"(objective {value:.6g}, eps {eps:g})")
    return worst


def check_op(op: Op | Composite | Callable[..., Node], arrays: Sequence[Any], static: Mapping[str, Any] | None = None, *,
             seed: int = 0, eps: float | None = None, rtol: float | None = None) -> dict[str, float]:
    """Check one op's VJP: ``J = sum(op(*arrays) * U)`` for a random upstream ``U``.

    Floating-point arguments become parameters ``a0, a1, ...`` (of their
    own dtypes) and are checked; integer arguments (labels) become inputs
    and get no gradient. Returns the largest relative error per argument.
    ``eps`` and ``rtol`` default by precision, as for ``check_grads``.

    >>> import numpy as np, tapegraph as tg
    >>> errors = tg.testing.check_op(tg.tanh.op, [np.array([0.3, -1.2])])  # an op function's record
    >>> max(errors.values()) < 1e-6
    True
    """
    from tapegraph.program import compile as compile_program

    rng = np.random.default_rng(seed)
    static = dict(static or {})
    nodes, params, inputs = [], {}, {}
    for position, value in enumerate(arrays):
        array = np.asarray(value)
        name = f"a{position}"
        if array.dtype.kind == "f":
            nodes.append(param(name, shape=array.shape, dtype=array.dtype))
            params[name] = array
        else:
            nodes.append(input(name, shape=array.shape, dtype=array.dtype))
            inputs[name] = array
    output = build_node(op, nodes, static)
    upstream = const(rng.standard_normal(output.shape).astype(output.dtype))
    objective = SUM(MUL(output, upstream))
    wrt = [node for node in nodes if node.op is PARAM]
    program = compile_program(objective, wrt=wrt)
    return check_grads(program, params, inputs, eps=eps, rtol=rtol)


def build_node(op: Op | Composite | Callable[..., Node], nodes: Sequence[Node], static: Mapping[str, Any]) -> Node:
    """Apply an op (built-in or user-declared), a composite, or any node-building function."""
    if isinstance(op, Op):
        return op(*nodes, **static)
    if isinstance(op, Composite):
        if op.call is not None:
            return op.call(op.build, nodes, dict(static))
        return op.build(*nodes, **static)
    return op(*nodes, **static)
