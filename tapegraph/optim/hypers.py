"""Hyperparameters: the ``hyper`` feeds of an update tape, and checking their values.

A hyperparameter (step size, momentum, betas, eps, weight decay) is a
float64 scalar fed at every call, so changing it, or following a schedule
(``tapegraph.schedules``), compiles nothing. Here: the feed itself
(``hyper``), each one's allowed range (``_RANGES``, ``check_hyper``), the
check of the names and values an optimizer is given (none may be named
like a feed of the program), the order a tape's entry takes them in, and
how a step's hyperparameters print.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tapegraph.errors import CallError, GraphError
from tapegraph.expr import HYPER, Node, caller_origin
from tapegraph.program import Program

#: A hyperparameter's value: a number, or a schedule ``count -> number``.
HyperValue = float | Callable[[int], float]


def hyper(name: str) -> Node:
    """A hyperparameter feed: a float64 scalar given at every call (an optimizer's, say)."""
    return Node(HYPER, (), (), (), "float64", name=name, origin=caller_origin())


#: Allowed values of each hyperparameter: (low, low included, high, high included).
_RANGES = {
    "step_size": (0.0, False, math.inf, False),
    "learning_rate": (0.0, False, math.inf, False),
    "momentum": (0.0, True, math.inf, False),
    "weight_decay": (0.0, True, math.inf, False),
    "b1": (0.0, True, 1.0, False),
    "b2": (0.0, True, 1.0, False),
    "alpha": (0.0, True, 1.0, True),
    "eps": (0.0, False, math.inf, False),
}


def check_hyper(owner: str, name: str, value: Any, count: int | None = None) -> float:
    """``value`` as a float, or a ``CallError`` naming the hyperparameter and its allowed range."""
    scheduled = callable(value) and count is not None
    if scheduled:
        try:
            value = value(count)
        except Exception as error:
            raise CallError(f"{owner}: the schedule for {name} failed at step count {count}: {error}") from error
        owner = f"{owner} (schedule for {name} at step count {count})"
    low, low_in, high, high_in = _RANGES.get(name, (-math.inf, False, math.inf, False))
    # a schedule may decay the step size to zero (cosine's end); a number may not
    low_in = low_in or scheduled
    if (low, high) == (0.0, math.inf):
        need = "a non-negative finite number" if low_in else "a positive finite number"
    else:
        need = f"a finite number in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise CallError(f"{owner}: {name} must be {need}, got {value!r}")
    given, value = value, float(value)
    if not math.isfinite(value) or value < low or value == low and not low_in or value > high or value == high and not high_in:
        raise CallError(f"{owner}: {name} must be {need}, got {given!r}")
    return value


def _check_hypers(owner: str, given: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and values of hyperparameters given (a schedule is checked at step 0)."""
    result = {}
    for name, value in given.items():
        if name not in known:
            from tapegraph.calls import did_you_mean
            raise CallError(f"{owner}: unknown hyperparameter {name!r}{did_you_mean([name], known)}; "
                            f"its hyperparameters are {sorted(known)}")
        checked = check_hyper(owner, name, value, 0)
        result[name] = value if callable(value) else checked
    return result


def _hyper_order(plan: Any) -> tuple[str, ...]:
    """The hyper feeds of ``plan`` in the order its entry takes their values (``calls.check_lines``)."""
    return tuple(name for name, kind, _ in plan.feed_names if kind == "hyper")


def _check_free(program: Program, names: Mapping[str, Any]) -> None:
    """Refuse a hyperparameter or state slot named like one of the program's feeds."""
    for name in names:
        if name in program.params or name in program.inputs:
            kind = "parameter" if name in program.params else "input"
            raise GraphError(f"the program has a {kind} named {name!r}, the name of an optimizer's feed; "
                             f"rename the {kind}")


def _format_hypers(hypers: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" if callable(value) else f"{name}={value:g}" for name, value in hypers.items())
