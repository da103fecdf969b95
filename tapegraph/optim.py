"""Stochastic gradient descent as a pure function over a compiled program."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tapegraph.compile.grad import grad
from tapegraph.errors import CallError
from tapegraph.expr import origin_scope
from tapegraph.ops import mul, sub
from tapegraph.program import Program
from tapegraph.shapes import array_type


class SGDStep:
    """``step(params, inputs) -> (new_params, objective_value)``.

    One tape computes the objective, the gradients, and ``p - step_size *
    grad p`` for every ``wrt`` parameter. The objective is the value at
    the parameters given, before the update. (The tape differentiates
    ``step_size * objective``, which gives the scaled gradients directly.)

    Pure by default: the arrays given are not changed, and the arrays
    returned are new, never overwritten by a later call. With
    ``donate=True`` the caller gives up its parameter arrays: they are
    updated in place and returned (as with JAX's ``donate_argnums``), so a
    step allocates no arrays at all. They must then be numpy arrays of the
    declared shape and dtype. It saves the allocation of one new array per
    parameter per step (see docs/performance.md).

    Threads: steps may run from several threads at once, each call on
    buffers of its own. A donated step writes into the caller's arrays,
    so two threads donating the same arrays race on them; that race is
    the caller's (the step does not lock them): give each thread its own.
    """

    def __init__(self, program: Program, step_size: float, donate: bool = False) -> None:
        if not isinstance(program, Program):
            raise TypeError(f"sgd needs a program made by tg.compile, got {type(program).__name__}")
        if (isinstance(step_size, bool) or not isinstance(step_size, (int, float, np.floating, np.integer))
                or not math.isfinite(step_size) or step_size <= 0):
            raise CallError(f"tg.sgd: step_size must be a positive finite number, got {step_size!r}")
        if not program.wrt:
            raise ValueError("sgd needs a program compiled with wrt=[...] parameters to update")
        self.program = program
        self.step_size = float(step_size)
        self.donate = bool(donate)
        self._names = tuple(param.name for param in program.wrt)
        # The gradients of step_size * objective are the scaled gradients the
        # update needs: seeding the reverse pass with the step size folds the
        # scaling into constants it multiplies by anyway, leaving one
        # instruction per parameter for the update instead of two.
        scaled = grad(mul(program.objective, self.step_size), program.wrt)
        roots = [("objective", program.objective, "forward")]
        roots += [(None, gradient, "reverse") for gradient in scaled]
        for param, gradient in zip(program.wrt, scaled):
            with origin_scope(f"sgd update of {param.name}"):
                roots.append((f"new {param.name}", sub(param, gradient), "update"))
        if self.donate:
            returns = ["float"] + [("into", name) for name in self._names]
        else:
            returns = ["float"] + ["new"] * len(self._names)
        kind = f"sgd step_size={self.step_size}" + (" donated" if self.donate else "")
        donated = self._names if self.donate else ()
        self._plan = program._custom_plan(("sgd", self.step_size, self.donate), kind, roots, returns,
                                          ("dict, value", self._names), donated, self._refuse,
                                          self._check_no_overlap if self.donate else None)
        feeds = self._plan.feed_names
        #: The donated parameters among the plan's feeds, and every other feed
        #: (name, is it a parameter), which a donated array must not overlap.
        self._donated = tuple(name for name, kind, _ in feeds if kind == "param" and name in donated)
        self._undonated = tuple((name, kind == "param") for name, kind, _ in feeds if name not in self._donated)

    def __call__(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> tuple[dict[str, np.ndarray], float]:
        """One step from ``params`` on ``inputs``: (new parameters, objective at ``params``).

        The new parameters are the updated ``wrt`` parameters, then every
        other parameter given (unchanged, the caller's own objects), so
        that ``params, value = step(params, inputs)`` can go on looping.

        Safe to call from several threads at once: each call runs on
        buffers of its own. A donated step writes into the arrays it is
        given, so two threads donating the same arrays race on them, as any
        two threads writing one array would: give each thread its own.
        """
        # a donated step's entry refuses donated arrays sharing memory (_check_no_overlap)
        updated, value = self._plan.enter(params, inputs)
        if len(params) > len(updated):
            for name, given in params.items():
                updated.setdefault(name, given)
        return updated, value

    def _check_no_overlap(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> None:
        """Refuse donated arrays that share memory with another feed.

        Updating one in place would change the other mid-step (two
        parameters given one array both came back as zeros). The usual
        case is decided by identities alone: donated arrays that own
        their memory, none of them passed twice or viewed by another feed.
        Arguments that are missing or not arrays are left to the call,
        which explains them.
        """
        try:
            donated = [params[name] for name in self._donated]
            others = [params[name] if is_param else inputs[name] for name, is_param in self._undonated]
        except (KeyError, TypeError, IndexError):
            return
        if any(type(array) is not np.ndarray for array in donated):
            return
        owners = {id(array) for array in donated if array.base is None}
        if len(owners) == len(donated):
            for array in others:
                if id(array) in owners or id(getattr(array, "base", None)) in owners:
                    break
            else:
                return
        arrays = [*donated, *others]
        names = [*((name, True) for name in self._donated), *self._undonated]
        for index in range(len(donated)):
            for other in range(index + 1, len(arrays)):
                if not isinstance(arrays[other], np.ndarray):
                    continue
                if np.may_share_memory(arrays[index], arrays[other]) and np.shares_memory(arrays[index], arrays[other]):
                    self._refuse_overlap(arrays[index] is arrays[other], names[index], names[other])

    def _refuse_overlap(self, same: bool, first: tuple[str, bool], second: tuple[str, bool]) -> None:
        how = "are the same array" if same else "share memory (views of one array)"
        if first[1] and second[1]:
            names = f"{first[0]!r} and {second[0]!r}"
        else:
            names = " and ".join(f"{'parameter' if is_param else 'input'} {name!r}" for name, is_param in (first, second))
        raise CallError(f"donate=True updates parameters in place, so they must not share memory: "
                        f"{names} {how}; pass a copy of one of them")

    def _refuse(self, name: str, array: Any) -> None:
        param = self.program.params[name]
        if isinstance(array, np.ndarray) and array.shape == param.shape and array.dtype == param.dtype:
            given = "a read-only array"
        elif isinstance(array, np.ndarray):
            given = f"an array of {array_type(array)}"
        else:
            given = type(array).__name__
        raise CallError(f"donate=True updates parameters in place, so {name!r} must be a writable numpy array "
                        f"of {param.type_str}; got {given}")

    def tape(self, sizes: Mapping[str, int] | None = None):
        """The step's tape: forward, reverse and update sections."""
        from tapegraph.compile.lower import lower
        if sizes is None and self._plan.last is not None:
            return self._plan.last.tape
        return lower(self._plan.roots, dict(sizes or {}), self._plan.returns)

    def dump(self, sizes: Mapping[str, int] | None = None) -> str:
        """The step's tape as text (see ``Program.dump``)."""
        from tapegraph.inspect.dump import format_tape
        return format_tape(self.tape(sizes), f"sgd step: step_size = {self.step_size}")


def sgd(program: Program, step_size: float, donate: bool = False) -> SGDStep:
    """A pure SGD step for ``program``: ``step(params, inputs) -> (new_params, value)``.

    >>> import numpy as np, tapegraph as tg
    >>> w = tg.param("w", shape=(2,))
    >>> step = tg.sgd(tg.compile(tg.sum(tg.square(w)), wrt=[w]), step_size=0.25)
    >>> new_params, value = step({"w": np.array([1.0, 2.0])}, {})
    >>> new_params["w"], value
    (array([0.5, 1. ]), 5.0)
    """
    return SGDStep(program, step_size, donate)
