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
        self._plan = program._custom_plan(("sgd", self.step_size, self.donate), kind, roots, returns)
        feed_positions = {name: index for index, (name, _, _) in enumerate(self._plan.feed_names)}
        #: (position among the plan's feeds, name) of each donated parameter.
        self._donated = tuple((feed_positions[name], name) for name in self._names if name in feed_positions)
        #: Positions of the other feeds, which a donated array must not overlap.
        self._undonated = tuple(sorted(set(feed_positions.values()) - {index for index, _ in self._donated}))

    def __call__(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> tuple[dict[str, np.ndarray], float]:
        """One step: the updated ``wrt`` parameters, then every other parameter
        given (unchanged, the caller's own objects), and the objective."""
        program = self.program
        executable, arrays = program._prepare(self._plan, params, inputs if inputs is not None else {})
        if self.donate:
            for index, name in self._donated:
                # _prepare passes a given array through only when it is an
                # ndarray of the declared dtype and shape
                if arrays[index] is not params[name] or not arrays[index].flags.writeable:
                    self._refuse(name, params[name])
            self._check_no_overlap(arrays)
        value, *new_params = program._run(executable, self._plan, arrays)
        updated = dict(zip(self._names, new_params))
        if len(params) > len(updated):
            # parameters outside wrt come back as given, so that
            # ``params, value = step(params, inputs)`` can go on looping
            for name, given in params.items():
                updated.setdefault(name, given)
        return updated, value

    def _check_no_overlap(self, arrays: list) -> None:
        """Refuse donated arrays that share memory with another feed.

        Updating one in place would change the other mid-step (two
        parameters given one array both came back as zeros). The usual
        case is decided by identities alone: donated arrays that own
        their memory, none of them passed twice or viewed by another feed.
        """
        owners = {id(arrays[index]) for index, _ in self._donated if arrays[index].base is None}
        if len(owners) == len(self._donated):
            for position in self._undonated:
                array = arrays[position]
                if id(array) in owners or id(array.base) in owners:
                    break
            else:
                return
        feeds = self._plan.feed_names
        donated = {index for index, _ in self._donated}
        for index, _ in self._donated:
            for other in range(len(feeds)):
                if other == index or (other in donated and other < index):
                    continue
                if np.may_share_memory(arrays[index], arrays[other]) and np.shares_memory(arrays[index], arrays[other]):
                    self._refuse_overlap(arrays, *sorted((index, other)))

    def _refuse_overlap(self, arrays: list, first: int, second: int) -> None:
        feeds = self._plan.feed_names
        how = "are the same array" if arrays[first] is arrays[second] else "share memory (views of one array)"
        if feeds[first][1] == feeds[second][1] == "param":
            names = f"{feeds[first][0]!r} and {feeds[second][0]!r}"
        else:
            names = " and ".join(f"{'parameter' if feeds[position][1] == 'param' else 'input'} {feeds[position][0]!r}"
                                 for position in (first, second))
        raise CallError(f"donate=True updates parameters in place, so they must not share memory: "
                        f"{names} {how}; pass a copy of one of them")

    def _refuse(self, name: str, array: Any) -> None:
        param = self.program.params[name]
        if isinstance(array, np.ndarray) and array.shape == param.shape and array.dtype == param.dtype:
            given = "a read-only array"
        elif isinstance(array, np.ndarray):
            given = f"an array of shape {array.shape} and dtype {array.dtype}"
        else:
            given = type(array).__name__
        raise CallError(f"donate=True updates parameters in place, so {name!r} must be a writable numpy array "
                        f"of shape {param.shape} and dtype {param.dtype}; got {given}")

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
