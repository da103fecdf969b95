"""Training: optimizers as pure functions with explicit state, and epochs.

Every optimizer is one declaration of its update rule as expressions
(``_Rule.update``), appended to the program's tape as its update section:
the dump, ``source()`` and check mode see it like any other instruction.
Its hyperparameters (step size, momentum, betas, eps, weight decay) are
``hyper`` feeds of that tape, float64 scalars given at each call, so
changing them, or following a schedule (``tapegraph.schedules``), compiles
nothing new.

Conventions follow PyTorch's ``torch.optim`` (see docs/training.md):
weight decay of ``sgd``, ``adam`` and ``rmsprop`` adds ``weight_decay * p``
to the gradient (L2); ``adamw`` decays the parameter itself first,
``p * (1 - lr * weight_decay)``; Adam's bias corrections are applied as
``lr / (1 - b1**t)`` on the step and ``sqrt(v) / sqrt(1 - b2**t)`` in the
denominator, and eps is added after the square root, as is RMSProp's.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np

from tapegraph.compile.grad import grad
from tapegraph.errors import CallError, GraphError
from tapegraph.expr import HYPER, Node, caller_origin, origin_scope, param
from tapegraph.ops import add, div, mul, sqrt, square, sub
from tapegraph.program import Program
from tapegraph.shapes import array_type, symbols

#: A hyperparameter's value: a number, or a schedule ``count -> number``.
HyperValue = float | Callable[[int], float]


def hyper(name: str) -> Node:
    """A hyperparameter feed: a float64 scalar given at every call (an optimizer's, say)."""
    return Node(HYPER, (), (), (), "float64", name=name, origin=caller_origin())


def _check_program(program: Any, what: str) -> Program:
    if not isinstance(program, Program):
        raise TypeError(f"{what} needs a program made by tg.compile, got {type(program).__name__}")
    if program.objective is None:
        raise CallError(f"{what} needs a program with an objective to minimise, but this one was compiled with "
                        f"outputs only ({sorted(program.outputs)}): tg.compile(loss, wrt=[...], outputs=...)")
    if not program.wrt:
        raise ValueError(f"{what} needs a program compiled with wrt=[...] parameters to update")
    return program


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


class _Step:
    """What every optimizer step shares: its tape and how it prints, and,
    since any may take ``donate=True``, refusing arrays it cannot update in place."""

    _plan: Any
    _donated: tuple[str, ...]
    _undonated: tuple[tuple[str, bool], ...]
    _hypers: Mapping[str, Any]
    _names: tuple[str, ...]
    donate: bool

    def _label(self) -> str:
        """The rule's name, as its repr and dump print it: ``sgd``, ``adam``."""
        raise NotImplementedError

    def tape(self, sizes: Mapping[str, int] | None = None):
        """The step's tape: forward, reverse and update sections."""
        return _tape(self._plan, sizes)

    def dump(self, sizes: Mapping[str, int] | None = None) -> str:
        """The step's tape as text (see ``Program.dump``); the hyperparameters are its ``hyper`` feeds."""
        from tapegraph.inspect.dump import format_tape
        from tapegraph.backends import backend_note
        return format_tape(self.tape(sizes), f"{self._label()} step: {_format_hypers(self._hypers)}"
                           + backend_note(self.program.backend))

    def __repr__(self) -> str:
        donated = ", donate=True" if self.donate else ""
        return f"<{self._label()} step {_format_hypers(self._hypers)}{donated} over {list(self._names)}>"

    def __reduce__(self) -> tuple:
        # pickled as how it was made: its program (which pickles as its
        # expressions), hyperparameters (numbers or schedules) and flags;
        # the copy compiles its tape again on first use
        return (_made_again, (type(self), self.program, self._arguments()))

    def _arguments(self) -> dict[str, Any]:
        """The keyword arguments that, with the program, make this step again."""
        return {**self._hypers, "donate": self.donate}

    def _note_donated(self, donated: tuple[str, ...]) -> None:
        feeds = self._plan.feed_names
        #: The feed nodes by name (a slot's node is not the program's).
        self._feed_nodes = {name: node for name, _, node in feeds}
        #: The donated parameters among the plan's feeds, and every other feed
        #: (name, is it a parameter), which a donated array must not overlap.
        self._donated = tuple(name for name, kind, _ in feeds if kind == "param" and name in donated)
        self._undonated = tuple((name, kind == "param") for name, kind, _ in feeds
                                if name not in self._donated and kind != "hyper")

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
        node = self._feed_nodes[name]
        if isinstance(array, np.ndarray) and array.shape == node.shape and array.dtype == node.dtype:
            given = "a read-only array"
        elif isinstance(array, np.ndarray):
            given = f"an array of {array_type(array)}"
        else:
            given = type(array).__name__
        raise CallError(f"donate=True updates parameters in place, so {name!r} must be a writable numpy array "
                        f"of {node.type_str}; got {given}")


class SGDStep(_Step):
    """``step(params, inputs) -> (new_params, objective_value)``: plain SGD.

    One tape computes the objective, the gradients, and ``p - step_size *
    grad p`` for every ``wrt`` parameter (with ``weight_decay``, the
    gradient is ``grad p + weight_decay * p``). The objective is the value
    at the parameters given, before the update. The step size is the
    tape's ``hyper`` feed ``step_size``: ``step(params, inputs,
    step_size=0.01)`` overrides it for one call and compiles nothing. (The
    tape differentiates ``step_size * objective``, which gives the scaled
    gradients directly.)

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

    def __init__(self, program: Program, step_size: float, donate: bool = False, weight_decay: float = 0.0) -> None:
        self.program = _check_program(program, "sgd")
        self.step_size = check_hyper("tg.sgd", "step_size", step_size)
        self.weight_decay = check_hyper("tg.sgd", "weight_decay", weight_decay)
        self.donate = bool(donate)
        self._names = tuple(param.name for param in program.wrt)
        self._hypers = {"step_size": self.step_size}
        if self.weight_decay:
            self._hypers["weight_decay"] = self.weight_decay
        _check_free(program, self._hypers)
        step_size_node = hyper("step_size")
        # The gradients of step_size * objective are the scaled gradients the
        # update needs: seeding the reverse pass with the step size folds the
        # scaling into the scalars it multiplies by anyway, leaving one
        # instruction per parameter for the update instead of two.
        scaled = grad(mul(program.objective, step_size_node), program.wrt)
        roots = [("objective", program.objective, "forward")]
        roots += [(None, gradient, "reverse") for gradient in scaled]
        made_at = caller_origin()  # the user's line that made the step, which its update comes from
        for param_node, gradient in zip(program.wrt, scaled):
            with origin_scope(f"sgd update of {param_node.name} at {made_at}"):
                if self.weight_decay:
                    decay = mul(mul(step_size_node, hyper("weight_decay")), param_node)
                    gradient = add(gradient, decay)
                roots.append((f"new {param_node.name}", sub(param_node, gradient), "update"))
        if self.donate:
            returns = ["float"] + [("into", name) for name in self._names]
        else:
            returns = ["float"] + ["new"] * len(self._names)
        kind = "sgd" + (" weight_decay" if self.weight_decay else "") + (" donated" if self.donate else "")
        donated = self._names if self.donate else ()
        self._plan = program._custom_plan(("sgd", bool(self.weight_decay), self.donate), kind, roots, returns,
                                          ("dict, value", self._names), donated, self._refuse,
                                          self._check_no_overlap if self.donate else None)
        #: The hyper feeds the tape reads, in the order its entry takes
        #: their values (apart from the inputs), and this step's values.
        #: (A hyperparameter the tape does not read is not passed: an
        #: objective that no parameter reaches has constant gradients.)
        self._hyper_order = _hyper_order(self._plan)
        self._hyper_values = tuple(self._hypers[name] for name in self._hyper_order)
        #: Whether the program has parameters besides ``wrt``: a call then
        #: returns those given too, which the entry's packing does not.
        self._returns_others = bool(set(program.params) - set(self._names))
        self._note_donated(donated)

    def init(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Plain SGD's state is the parameters themselves: ``params``, as given."""
        return params

    def __call__(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None = None,
                 **hypers: float) -> tuple[dict[str, np.ndarray], float]:
        """One step from ``params`` on ``inputs``: (new parameters, objective at ``params``).

        The new parameters are the updated ``wrt`` parameters, then every
        other parameter given (unchanged, the caller's own objects), so
        that ``params, value = step(params, inputs)`` can go on looping.
        ``step_size=`` (and ``weight_decay=`` if the step has one)
        override the step's own for this call.

        Safe to call from several threads at once: each call runs on
        buffers of its own. A donated step writes into the arrays it is
        given, so two threads donating the same arrays race on them, as any
        two threads writing one array would: give each thread its own.
        """
        if hypers or self._returns_others:
            return self._call_with(params, inputs, hypers)
        # the common case in one call of the specialisation's generated
        # entry, which checks the arguments (a donated step's also refuses
        # donated arrays sharing memory, _check_no_overlap); kept to these
        # two lines, as each line here costs every step
        return self._plan.enter(params, inputs, None, self._hyper_values)

    def _call_with(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None,
                   hypers: Mapping[str, float]) -> tuple[dict[str, np.ndarray], float]:
        """``__call__`` with hyperparameters overridden, or for a program with parameters besides ``wrt``."""
        values = self._hyper_values
        if hypers:
            given = {**self._hypers, **self._override(hypers)}
            values = tuple(given[name] for name in self._hyper_order)
        updated, value = self._plan.enter(params, inputs, None, values)
        if len(params) > len(updated):
            for name, given in params.items():
                updated.setdefault(name, given)
        return updated, value

    def _override(self, hypers: Mapping[str, Any]) -> dict[str, float]:
        if "weight_decay" in hypers and "weight_decay" not in self._hypers:
            raise CallError("this sgd step was made with weight_decay=0, so its update has no decay term: "
                            "pass weight_decay= to tg.sgd to make it a runtime value")
        checked = _check_hypers("sgd step", hypers, self._hypers)
        for name, value in checked.items():
            if callable(value):
                raise CallError(f"a plain sgd step has no step count for a schedule of {name}: make the optimizer "
                                f"with tg.sgd(prog, step_size=schedule), whose state counts its steps")
        return {name: float(value) for name, value in checked.items()}

    def epoch(self, params: Mapping[str, Any], data: Mapping[str, Any], order: Any = None,
              batch_size: int | None = None, progress: bool = False,
              **hypers: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One step per entry of ``order`` (or per ``batch_size`` entries): ``(new_params, objectives)``.

        See ``Optimizer.epoch``; here the state is the parameters.
        """
        rows = _EpochPlan(self._plan, self.program, "sgd epoch", data, order, batch_size)
        values = self._hypers if not hypers else {**self._hypers, **self._override(hypers)}
        step = functools.partial(self, **hypers)
        if _runs_natively(self.program, rows, progress):
            if not isinstance(params, Mapping):
                return step(params, rows.inputs(0))  # the call explains
            table = np.array([[float(values[name]) for name in sorted(self._plan.hyper_names)]])
            runner, given = self, params
            if not self.donate:
                # the donated form of this step, on copies: the same values, and its
                # tape writes each update into the parameter's array instead of a copy
                runner = self._donated_twin()
                from tapegraph.calls import convert
                given = dict(params)
                for name in self._names:
                    if name in params:
                        array = convert("param", self.program.params[name], params[name])
                        given[name] = np.array(array, copy=True, order="C")
            natively = _native_epoch(runner, given, {}, rows, table, sorted(self._plan.hyper_names))
            if natively is not None:
                new_state, objectives, done = natively
                updated = dict(params)
                updated.update(new_state)
                return _finish_epoch(step, updated, rows, objectives, done)
        return _run_epoch(step, params, rows, progress)

    def _donated_twin(self) -> "SGDStep":
        """This step with ``donate=True`` (made once): what a native epoch runs on its own copies."""
        twin = getattr(self, "_twin", None)
        if twin is None:
            twin = self._twin = SGDStep(self.program, self.step_size, donate=True, weight_decay=self.weight_decay)
        return twin

    def _label(self) -> str:
        return "sgd"


def _made_again(kind: type, program: Program, arguments: Mapping[str, Any]) -> _Step:
    """An unpickled step or optimizer: made again on its (unpickled) program."""
    return kind(program, **arguments)


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


def _tape(plan: Any, sizes: Mapping[str, int] | None):
    from tapegraph.compile.lower import lower
    if sizes is None and plan.last is not None:
        return plan.last.tape
    return lower(plan.roots, dict(sizes or {}), plan.returns)


class _EpochPlan:
    """The checked data of one epoch (or ``Program.map``): each step's rows, refused before any step runs.

    ``whole_by_default``: with no ``batch_size``, a program with a batch
    dimension takes every row of ``order`` in one step (``map``) instead of
    being refused (``epoch``, where a full-batch step is rarely what is meant).
    """

    def __init__(self, plan: Any, program: Program, owner: str, data: Any, order: Any, batch_size: Any,
                 whole_by_default: bool = False) -> None:
        from tapegraph.calls import convert, did_you_mean
        self.owner = owner
        inputs = [(name, node) for name, kind, node in plan.feed_names if kind == "input"]
        batched = [name for name, node in inputs if symbols(node.shape)]
        #: Whether each step takes a batch of rows (the program has a batch dimension), or one row.
        self.batched = bool(batched)
        if not isinstance(data, Mapping):
            raise CallError(f"{owner}: data must be a dict of input name -> array (one row per example), "
                            f"got {type(data).__name__}")
        unknown = [name for name in data if name not in program.inputs]
        if unknown:
            raise CallError(f"{owner}: data has unknown input(s) {unknown}{did_you_mean(unknown, program.inputs)}; "
                            f"the program's inputs are {sorted(program.inputs)}")
        missing = [name for name, _ in inputs if name not in data]
        if missing:
            raise CallError(f"{owner}: data lacks input(s) {missing} that each step needs (given: {sorted(data)})")
        arrays = {}
        for name, node in inputs:
            array = convert("input", node, data[name])
            if array.ndim == 0:
                raise CallError(f"{owner}: data[{name!r}] is a single value; give an array whose leading axis "
                                f"runs over the examples")
            declared = node.shape[1:] if batched else node.shape
            if batched and (not node.shape or not isinstance(node.shape[0], str)):
                raise CallError(f"{owner}: input {name!r} ({node.type_str}) has no leading batch dimension, so its "
                                f"data cannot be sliced into minibatches with the others {batched}")
            row = array.shape[1:]
            if len(row) != len(declared) or any(not isinstance(dim, str) and dim != size
                                                for dim, size in zip(declared, row)):
                raise CallError(f"{owner}: data[{name!r}] has shape {array.shape}, so each example has shape {row}, "
                                f"but input {name!r} is declared {node.type_str}"
                                + (" (its leading axis is the batch)" if batched else ""))
            arrays[name] = array
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise CallError(f"{owner}: the data arrays' leading axes differ: {lengths}; each must have one row per example")
        self.examples = next(iter(lengths.values())) if lengths else 0
        self.order = self._check_order(order)
        if batched and batch_size is None and whole_by_default:
            self._stride = len(self.order)
        elif batched:
            if batch_size is None:
                raise CallError(f"{owner}: the program has a batch dimension (inputs {batched}): give batch_size "
                                f"(batch_size={len(self.order)} for one full-batch step)")
            if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
                raise CallError(f"{owner}: batch_size must be a positive integer, got {batch_size!r}")
            batch_size = int(batch_size)
            self._stride = batch_size
        else:
            if batch_size is not None:
                raise CallError(f"{owner}: batch_size={batch_size!r} given, but the program has no batch dimension "
                                f"(declare inputs with shape ('batch', ...) for minibatches); each step takes one row")
            self._stride = 1
        #: Rows per step (None: one row each, a program without a batch dimension).
        self.batch_size = batch_size if batched else None
        self.arrays = list(arrays.items())
        self._whole_order = order is None
        #: The number of steps (a last batch may be shorter).
        self.count = -(-len(self.order) // self._stride) if len(self.order) else 0

    # The steps' rows and the gathered data are made when a step runs in
    # Python: a native epoch reads the data and the order as they are, and
    # building them costs more than its steps (a Python object per row).
    @functools.cached_property
    def steps(self) -> list[Any]:
        """Each step's row (an int, no batch dimension) or rows (an array)."""
        if not self.batched:
            return [int(row) for row in self.order]
        if not len(self.order):
            return []
        return [self.order[start:start + self._stride] for start in range(0, len(self.order), self._stride)]

    @functools.cached_property
    def _gathered(self) -> list[tuple[str, np.ndarray]]:
        # A batched epoch gathers the rows in ``order`` once, so each step's
        # batch is a slice of that copy (a view with a gather's layout), not
        # a gather of its own; with no order, C-contiguous data is sliced as it is.
        if not self.batched:
            return []
        return [(name, array if self._whole_order and array.flags.c_contiguous else array[self.order])
                for name, array in self.arrays]

    def _check_order(self, order: Any) -> np.ndarray:
        owner = self.owner
        if order is None:
            return np.arange(self.examples)
        rows = np.asarray(order)
        if rows.ndim != 1:
            raise CallError(f"{owner}: order must be a 1-D array of row indices, got shape {rows.shape}")
        if rows.dtype.kind not in "iu":
            raise CallError(f"{owner}: order must hold integer row indices, got dtype {rows.dtype}"
                            + ("" if rows.dtype.kind == "b" else "; use tg.shuffled(n, seed) or .astype(int)"))
        if len(rows):
            bad = np.flatnonzero((rows < 0) | (rows >= self.examples))
            if len(bad):
                raise CallError(f"{owner}: order[{int(bad[0])}] = {int(rows[bad[0]])} is out of range: the data "
                                f"has {self.examples} rows (indices 0 to {self.examples - 1})")
        return rows

    def inputs(self, index: int) -> dict[str, Any]:
        """The inputs of step ``index``: its row of each array, or its batch of rows."""
        if self._gathered:
            start = index * self._stride
            stop = min(start + self._stride, len(self.order))
            return {name: array[start:stop] for name, array in self._gathered}
        rows = self.steps[index]
        return {name: array[rows] for name, array in self.arrays}

    def first_inputs(self) -> dict[str, Any]:
        """The first step's inputs, gathered alone (a native epoch checks them; its steps read the data)."""
        if not self.batched:
            return {name: array[int(self.order[0])] for name, array in self.arrays}
        rows = self.order[:self._stride]
        # as ``inputs(0)`` gives them: a view of C-contiguous data taken in its own order
        return {name: array[:self._stride] if self._whole_order and array.flags.c_contiguous else array[rows]
                for name, array in self.arrays}


def _run_epoch(step: Callable, state: Any, rows: _EpochPlan, progress: bool) -> tuple[Any, np.ndarray]:
    """Run ``step(state, inputs)`` once per step of ``rows``: the state after the last, and each step's objective."""
    count = rows.count
    objectives = np.empty(count)
    every = max(1, count // 10)
    started = time.perf_counter()
    for index in range(count):
        state, objectives[index] = step(state, rows.inputs(index))
        if progress and ((index + 1) % every == 0 or index + 1 == count):
            print(f"{rows.owner}: step {index + 1}/{count}, objective {objectives[index]:.6g}, "
                  f"{time.perf_counter() - started:.2f} s", file=sys.stderr)
    return state, objectives


def _runs_natively(program: Program, rows: _EpochPlan, progress: bool) -> bool:
    """True when an epoch runs as one native call: a native program, outside check mode, without progress lines."""
    from tapegraph.backends import checking
    return program.backend.name == "native" and not checking() and not progress and _full_steps(rows) > 0


def _full_steps(rows: _EpochPlan) -> int:
    """The steps of ``rows`` that share one specialisation: all but a last, shorter batch."""
    if rows.batch_size is None:
        return rows.count
    return len(rows.order) // rows.batch_size


def _native_epoch(optimizer: Any, params: Mapping[str, Any], slots: Mapping[str, np.ndarray], rows: _EpochPlan,
                  table: np.ndarray, hyper_names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, int] | None:
    """Run the epoch's full steps as one native call: (new state arrays by feed name, objectives, steps run).

    The first step's arguments are checked (and the step specialised) as
    a call would; a donated optimizer updates the caller's arrays in
    place, any other works on copies. None when the tape cannot be
    carried from step to step natively (the caller then loops in Python).
    """
    plan = optimizer._plan
    first = {**rows.first_inputs(), **dict(zip(hyper_names, table[0]))}
    feeds = {**params, **slots}
    if plan.overlap is not None:
        plan.overlap(feeds, first)
    executable, arrays = optimizer.program._prepare(plan, feeds, first)
    carried = executable.epoch_plan()
    if carried is None:
        return None
    given = dict(zip((name for name, _, _ in plan.feed_names), arrays))
    for index, name in plan.donated_feeds:
        if arrays[index] is not feeds[name] or not arrays[index].flags.writeable:
            plan.refuse(name, feeds[name])
        if not arrays[index].flags.c_contiguous:
            return None  # native code updates contiguous arrays in place only
    state = {}
    for feed in carried.values():
        array = given[feed]
        state[feed] = array if feed in plan.donated else np.array(array, copy=True, order="C")
    fixed = {name: value for name, value in given.items() if name not in state}
    steps = _full_steps(rows)
    batch = rows.batch_size
    data = dict(rows.arrays)

    def where(step: int) -> str:
        chosen = rows.steps[step]
        shown = f"row {chosen}" if batch is None else f"rows {chosen[:8].tolist()}" + ("..." if len(chosen) > 8 else "")
        return f"{rows.owner}: step {step} ({shown})"
    objectives = executable.epoch(state, fixed, data, rows.order, steps, batch, table, hyper_names, where)
    return state, objectives, steps


def _finish_epoch(step: Callable, state: Any, rows: _EpochPlan, objectives: np.ndarray,
                  done: int) -> tuple[Any, np.ndarray]:
    """After ``done`` native steps: the remaining (shorter last batch) step, run as a call."""
    if done == rows.count:
        return state, objectives
    values = np.empty(rows.count)
    values[:done] = objectives
    for index in range(done, rows.count):
        state, values[index] = step(state, rows.inputs(index))
    return state, values


def shuffled(n: int, seed: int | None = None) -> np.ndarray:
    """A random order of the rows ``0 .. n - 1``, the same for the same ``seed``.

    >>> import tapegraph as tg
    >>> tg.shuffled(5, seed=0)
    array([2, 4, 3, 0, 1])
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise CallError(f"shuffled: n must be a non-negative integer, got {n!r}")
    return np.random.default_rng(seed).permutation(int(n))


@attrs.frozen(repr=False)
class OptimizerState:
    """An optimizer's state between steps: parameters, step count, slots.

    Made by ``opt.init(params)`` and returned by each step; never changed
    by a step unless the optimizer donates (``donate=True``), which
    updates its arrays in place and hands the same arrays back in the new
    state (the old one is then used up).
    """

    #: The parameters by name (the ``wrt`` ones updated, others carried along).
    params: dict[str, np.ndarray]
    #: Steps taken so far (what a schedule is evaluated at for the next step).
    count: int
    #: The optimizer's per-parameter state: slot name -> parameter name -> array
    #: (``momentum_buffer``; Adam's ``exp_avg``, ``exp_avg_sq``; ...).
    slots: dict[str, dict[str, np.ndarray]]
    #: The plan of the optimizer that made it (program, rule and donation).
    owner: Any = attrs.field(eq=False)

    def __repr__(self) -> str:
        slots = ", ".join(self.slots) or "none"
        return f"<{self.owner.kind} state: count={self.count}, params={list(self.params)}, slots: {slots}>"


class Optimizer(_Step):
    """The common form of a stateful optimizer over a compiled program.

    ``state = opt.init(params)``; ``state, value = opt(state, inputs)``
    (one pure step; hyperparameters may be overridden per call, by name);
    ``state, values = opt.epoch(state, data, order=None, batch_size=None)``.
    A subclass declares its rule: the slots it keeps per parameter, its
    hyperparameters, the values fed for them at a step count (``fed``) and
    the update as expressions (``update``).
    """

    #: The optimizer's name, as in ``tg.<name>``.
    name = ""
    #: Per-parameter state arrays, zeros at ``init``.
    slot_names: tuple[str, ...] = ()

    def __init__(self, program: Program, hypers: Mapping[str, HyperValue], donate: bool = False,
                 structure: tuple = ()) -> None:
        self.program = _check_program(program, f"tg.{self.name}")
        self._hypers = _check_hypers(f"tg.{self.name}", hypers, hypers)
        self.donate = bool(donate)
        self._names = tuple(node.name for node in program.wrt)
        fed = self.fed(self._values(self._hypers, 0), 0)
        _check_free(program, fed)
        nodes = {name: hyper(name) for name in fed}
        roots = [("objective", program.objective, "forward")]
        roots += [(None, gradient, "reverse") for gradient in program.gradients]
        updates, slot_feeds = [], []
        made_at = caller_origin()  # the user's line that made the optimizer, which its update comes from
        for param_node, gradient in zip(program.wrt, program.gradients):
            slots = {slot: param(f"{slot}.{param_node.name}", param_node.shape, param_node.dtype)
                     for slot in self.slot_names}
            _check_free(program, {node.name: None for node in slots.values()})
            with origin_scope(f"{self.name} update of {param_node.name} at {made_at}"):
                new_param, new_slots = self.update(param_node, gradient, slots, nodes)
            updates.append((param_node.name, new_param))
            for slot in self.slot_names:
                updates.append((slots[slot].name, new_slots[slot]))
                slot_feeds.append((slot, param_node.name, slots[slot].name))
        roots += [(f"new {name}", node, "update") for name, node in updates]
        #: (slot, parameter, feed name) of each slot array, in the tape's result order.
        self._slot_feeds = tuple(slot_feeds)
        donated = tuple(name for name, _ in updates) if self.donate else ()
        returns = ["float"] + ([("into", name) for name, _ in updates] if self.donate else ["new"] * len(updates))
        kind = self.name + "".join(f" {flag}" for flag in structure) + (" donated" if self.donate else "")
        self._plan = program._custom_plan((self.name, structure, self.donate), kind, roots, returns,
                                          ("tuple", ()), donated, self._refuse,
                                          self._check_no_overlap if self.donate else None)
        self._plan.kind_name = self.name
        #: The hyper feeds the tape reads, in the order its entry takes them
        #: (one it does not read is not passed, see ``SGDStep``).
        self._hyper_order = _hyper_order(self._plan)
        self._owner = _Owner(self._plan, self.name, self)
        self._note_donated(donated)

    # The rule, declared by each optimizer.

    def fed(self, hypers: Mapping[str, float], count: int) -> dict[str, float]:
        """The values of the tape's hyper feeds for the step after ``count`` steps."""
        return dict(hypers)

    def update(self, param: Node, gradient: Node, slots: Mapping[str, Node],
               hypers: Mapping[str, Node]) -> tuple[Node, dict[str, Node]]:
        """The new parameter and new slots, as expressions."""
        raise NotImplementedError

    # Using it.

    def init(self, params: Mapping[str, Any]) -> OptimizerState:
        """The state before the first step: copies of ``params``, count 0, zero slots."""
        from tapegraph.calls import check_shape, convert
        if not isinstance(params, Mapping):
            raise CallError(f"{self.name}.init: params must be a dict of name -> array, got {type(params).__name__}")
        missing = [name for name in self._names if name not in params]
        if missing:
            raise CallError(f"{self.name}.init: parameter(s) {missing} missing from params (given: {sorted(params)})")
        copies = {}
        for name, value in params.items():
            node = self.program.params.get(name)
            if node is None:
                raise CallError(f"{self.name}.init: unknown parameter {name!r}; the program's parameters are "
                                f"{sorted(self.program.params)}")
            array = convert("param", node, value)
            check_shape("param", node, array, {})
            copies[name] = np.array(array, copy=True)
        slots: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slot_names}
        for slot, name, _ in self._slot_feeds:
            slots[slot][name] = np.zeros_like(copies[name])
        return OptimizerState(copies, 0, slots, self._owner)

    def __call__(self, state: OptimizerState, inputs: Mapping[str, Any] | None = None,
                 **hypers: HyperValue) -> tuple[OptimizerState, float]:
        """One step: (the new state, the objective at ``state.params``).

        Keyword arguments override hyperparameters for this call
        (``opt(state, inputs, learning_rate=1e-4)``); nothing is compiled.
        """
        if type(state) is not OptimizerState or state.owner is not self._owner:
            self._check_state(state)
        values = self._hypers if not hypers else self._override(hypers)
        count = state.count
        fed_values = self.fed(self._values(values, count), count)
        feeds = dict(state.params)
        for slot, name, feed in self._slot_feeds:
            feeds[feed] = state.slots[slot][name]
        # the hyperparameters go apart from the inputs, in the entry's order
        results = self._plan.enter(feeds, inputs, None, tuple([fed_values[name] for name in self._hyper_order]))
        params = dict(state.params)
        slots: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slot_names}
        position = 1
        for name in self._names:
            params[name] = results[position]
            position += 1
            for slot in self.slot_names:
                slots[slot][name] = results[position]
                position += 1
        return OptimizerState(params, count + 1, slots, self._owner), results[0]

    def epoch(self, state: OptimizerState, data: Mapping[str, Any], order: Any = None,
              batch_size: int | None = None, progress: bool = False,
              **hypers: HyperValue) -> tuple[OptimizerState, np.ndarray]:
        """Steps over a data set: ``(state after the last step, each step's objective)``.

        ``data`` maps each input name to an array whose leading axis runs
        over the examples. One step per entry of ``order`` (row indices,
        repeats allowed; default every row in turn), or, for a program
        with a ``"batch"`` dimension, one step per ``batch_size``
        consecutive entries (the last, shorter batch runs too). Everything
        is checked before the first step runs; ``progress=True`` prints a
        line to stderr every tenth of the epoch. The steps are the ones
        ``opt(state, inputs)`` takes, so the result equals calling them one
        by one.
        """
        if type(state) is not OptimizerState or state.owner is not self._owner:
            self._check_state(state)
        if hypers:
            self._override(hypers)
        rows = _EpochPlan(self._plan, self.program, f"{self.name} epoch", data, order, batch_size)
        step = functools.partial(self, **hypers)
        if _runs_natively(self.program, rows, progress):
            values = self._hypers if not hypers else self._override(hypers)
            names = sorted(self._plan.hyper_names)
            full = _full_steps(rows)
            constant = type(self).fed is Optimizer.fed and not any(callable(value) for value in values.values())
            counts = [state.count] if constant else range(state.count, state.count + max(full, 1))
            table = np.array([[self.fed(self._values(values, count), count)[name] for name in names]
                              for count in counts], dtype=float)
            slot_arrays = {feed: state.slots[slot][name] for slot, name, feed in self._slot_feeds}
            natively = _native_epoch(self, state.params, slot_arrays, rows, table, names)
            if natively is not None:
                new_state, objectives, done = natively
                params = dict(state.params)
                slots: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slot_names}
                for name in self._names:
                    params[name] = new_state[name]
                for slot, name, feed in self._slot_feeds:
                    slots[slot][name] = new_state[feed]
                after = OptimizerState(params, state.count + done, slots, self._owner)
                return _finish_epoch(step, after, rows, objectives, done)
        return _run_epoch(step, state, rows, progress)

    def _values(self, hypers: Mapping[str, HyperValue], count: int) -> dict[str, float]:
        """Each hyperparameter's value at step ``count`` (a schedule is evaluated, and checked)."""
        values = {}
        for name, value in hypers.items():
            values[name] = check_hyper(f"tg.{self.name}", name, value, count) if callable(value) else value
        return values

    def _override(self, hypers: Mapping[str, Any]) -> dict[str, HyperValue]:
        absent = self.absent_hypers()
        for name in hypers:
            if name in absent:
                raise CallError(f"this {self.name} optimizer was made with {name}=0, so its update has no such "
                                f"term: pass {name}= when making it to make it a runtime value")
        return {**self._hypers, **_check_hypers(f"{self.name} step", hypers, self._hypers)}

    def absent_hypers(self) -> tuple[str, ...]:
        """Hyperparameters left out of this optimizer's tape (a zero weight decay, say)."""
        return ()

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, OptimizerState):
            hint = " (plain tg.sgd takes the parameters themselves)" if isinstance(state, Mapping) else ""
            raise CallError(f"{self.name}: the state must be what {self.name}.init(params) or a step returned, "
                            f"got {type(state).__name__}{hint}")
        other = state.owner
        if other.plan is not self._plan and not _same_form(other, self._owner):
            if other.plan.kind_name != self.name:
                what = f"a {other.plan.kind_name} optimizer"
            elif other.plan not in self.program._plans.values():
                what = "an optimizer of another program"
            else:
                what = f"a {self.name} optimizer of another form ({other.plan.kind})"
            raise CallError(f"{self.name}: this state was made by {what}, not by this one ({self._plan.kind}); "
                            f"start from {self.name}.init(state.params)")
        # the same rule and program, another optimizer object (say, new hyperparameters): fine

    def _label(self) -> str:
        return self.name


@attrs.frozen(eq=False)
class _Owner:
    """Which optimizer form made a state: its plan (program, rule, donation)."""

    plan: Any
    kind: str
    #: The optimizer that made it: a pickled state carries it (as it was
    #: made, see ``_Step.__reduce__``), and unpickles owned by it.
    optimizer: Any

    def __reduce__(self) -> tuple:
        return (_owner_of, (self.optimizer,))


def _owner_of(optimizer: Optimizer) -> _Owner:
    return optimizer._owner


def _same_form(first: _Owner, second: _Owner) -> bool:
    """Two owners of one rule, flags and donation over equal programs (say, a
    program and its unpickled copy): their states are interchangeable."""
    one, other = first.optimizer.program, second.optimizer.program
    return (first.plan.kind == second.plan.kind
            and (one is other or one.objective == other.objective and one.wrt == other.wrt))


class SGD(Optimizer):
    """SGD with momentum (``tg.sgd(prog, step_size, momentum=0.9)``), as ``torch.optim.SGD``.

    ``g = grad + weight_decay * p``; ``buf = momentum * buf + g`` (zero at
    first, so the first ``buf`` is ``g``, as PyTorch's); the step is
    ``p - step_size * d`` with ``d = g + momentum * buf`` (Nesterov) or
    ``d = buf``. Without momentum, ``d = g`` (a schedule needs this form:
    plain ``tg.sgd`` keeps no step count).
    """

    name = "sgd"

    def __init__(self, program: Program, step_size: HyperValue, momentum: HyperValue = 0.0, nesterov: bool = False,
                 weight_decay: HyperValue = 0.0, donate: bool = False) -> None:
        self.nesterov = bool(nesterov)
        self._has_momentum = callable(momentum) or momentum != 0
        self._has_decay = callable(weight_decay) or weight_decay != 0
        if self.nesterov and not self._has_momentum:
            raise CallError("tg.sgd: nesterov=True needs a momentum > 0")
        self.slot_names = ("momentum_buffer",) if self._has_momentum else ()
        hypers: dict[str, HyperValue] = {"step_size": step_size}
        if self._has_momentum:
            hypers["momentum"] = momentum
        if self._has_decay:
            hypers["weight_decay"] = weight_decay
        structure = tuple(flag for flag, on in (("momentum", self._has_momentum), ("nesterov", self.nesterov),
                                                ("weight_decay", self._has_decay)) if on)
        super().__init__(program, hypers, donate, structure)

    def _arguments(self) -> dict[str, Any]:
        return {**super()._arguments(), "nesterov": self.nesterov}

    def absent_hypers(self) -> tuple[str, ...]:
        return tuple(name for name, on in (("momentum", self._has_momentum), ("weight_decay", self._has_decay)) if not on)

    def update(self, param, gradient, slots, hypers):
        if self._has_decay:
            gradient = add(gradient, mul(hypers["weight_decay"], param))
        new_slots = {}
        direction = gradient
        if self._has_momentum:
            buffer = add(mul(hypers["momentum"], slots["momentum_buffer"]), gradient)
            new_slots["momentum_buffer"] = buffer
            direction = add(gradient, mul(hypers["momentum"], buffer)) if self.nesterov else buffer
        return sub(param, mul(hypers["step_size"], direction)), new_slots


class Adam(Optimizer):
    """Adam (Kingma and Ba), as ``torch.optim.Adam``; ``decoupled`` gives AdamW.

    With ``t = count + 1``: ``g = grad (+ weight_decay * p)`` (Adam's L2
    form); ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)``: eps
    outside the square root, added to the bias-corrected root. AdamW
    instead multiplies ``p`` by ``1 - lr * weight_decay`` first and leaves
    the gradient alone. The bias corrections are fed per step as the
    hyper feeds ``bias_correction1`` and ``bias_correction2_sqrt``.
    """

    name = "adam"
    slot_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, program: Program, learning_rate: HyperValue = 1e-3, b1: HyperValue = 0.9,
                 b2: HyperValue = 0.999, eps: HyperValue = 1e-8, weight_decay: HyperValue = 0.0,
                 donate: bool = False, decoupled: bool = False) -> None:
        self.decoupled = bool(decoupled)
        if self.decoupled:
            self.name = "adamw"
        self._has_decay = callable(weight_decay) or weight_decay != 0
        hypers: dict[str, HyperValue] = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps}
        if self._has_decay:
            hypers["weight_decay"] = weight_decay
        super().__init__(program, hypers, donate, ("weight_decay",) if self._has_decay else ())

    def _arguments(self) -> dict[str, Any]:
        return {**super()._arguments(), "decoupled": self.decoupled}

    def absent_hypers(self) -> tuple[str, ...]:
        return () if self._has_decay else ("weight_decay",)

    def fed(self, hypers, count):
        step = count + 1
        return {**hypers, "bias_correction1": 1.0 - hypers["b1"] ** step,
                "bias_correction2_sqrt": math.sqrt(1.0 - hypers["b2"] ** step)}

    def update(self, param, gradient, slots, hypers):
        lr, b1, b2 = hypers["learning_rate"], hypers["b1"], hypers["b2"]
        if self._has_decay and self.decoupled:
            param_decayed = mul(param, sub(1.0, mul(lr, hypers["weight_decay"])))
        else:
            param_decayed = param
        if self._has_decay and not self.decoupled:
            gradient = add(gradient, mul(hypers["weight_decay"], param))
        exp_avg = add(mul(b1, slots["exp_avg"]), mul(sub(1.0, b1), gradient))
        exp_avg_sq = add(mul(b2, slots["exp_avg_sq"]), mul(sub(1.0, b2), square(gradient)))
        denominator = add(div(sqrt(exp_avg_sq), hypers["bias_correction2_sqrt"]), hypers["eps"])
        step_size = div(lr, hypers["bias_correction1"])
        new_param = sub(param_decayed, mul(step_size, div(exp_avg, denominator)))
        return new_param, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


class RMSProp(Optimizer):
    """RMSProp (Hinton), as ``torch.optim.RMSprop`` (not centred, no momentum).

    ``g = grad (+ weight_decay * p)``; ``s = alpha s + (1 - alpha) g^2``;
    ``p - learning_rate * g / (sqrt(s) + eps)``: eps outside the root.
    """

    name = "rmsprop"
    slot_names = ("square_avg",)

    def __init__(self, program: Program, learning_rate: HyperValue = 1e-2, alpha: HyperValue = 0.99,
                 eps: HyperValue = 1e-8, weight_decay: HyperValue = 0.0, donate: bool = False) -> None:
        self._has_decay = callable(weight_decay) or weight_decay != 0
        hypers: dict[str, HyperValue] = {"learning_rate": learning_rate, "alpha": alpha, "eps": eps}
        if self._has_decay:
            hypers["weight_decay"] = weight_decay
        super().__init__(program, hypers, donate, ("weight_decay",) if self._has_decay else ())

    def absent_hypers(self) -> tuple[str, ...]:
        return () if self._has_decay else ("weight_decay",)

    def update(self, param, gradient, slots, hypers):
        alpha = hypers["alpha"]
        if self._has_decay:
            gradient = add(gradient, mul(hypers["weight_decay"], param))
        square_avg = add(mul(alpha, slots["square_avg"]), mul(sub(1.0, alpha), square(gradient)))
        new_param = sub(param, mul(hypers["learning_rate"], div(gradient, add(sqrt(square_avg), hypers["eps"]))))
        return new_param, {"square_avg": square_avg}


def sgd(program: Program, step_size: HyperValue, momentum: HyperValue = 0.0, nesterov: bool = False,
        weight_decay: HyperValue = 0.0, donate: bool = False) -> SGDStep | SGD:
    """SGD for ``program``; plain, it is a pure step ``step(params, inputs) -> (new_params, value)``.

    With a momentum (or Nesterov momentum) or a schedule for the step
    size, it is an ``Optimizer`` with state: ``state = opt.init(params)``,
    ``state, value = opt(state, inputs)``. See ``SGDStep`` and ``SGD``.

    >>> import numpy as np, tapegraph as tg
    >>> w = tg.param("w", shape=(2,))
    >>> step = tg.sgd(tg.compile(tg.sum(tg.square(w)), wrt=[w]), step_size=0.25)
    >>> new_params, value = step({"w": np.array([1.0, 2.0])}, {})
    >>> new_params["w"], value
    (array([0.5, 1. ]), 5.0)
    """
    if callable(step_size) or callable(momentum) or momentum != 0:
        return SGD(program, step_size, momentum, nesterov, weight_decay, donate)
    if nesterov:
        raise CallError("tg.sgd: nesterov=True needs a momentum > 0")
    if callable(weight_decay):
        return SGD(program, step_size, momentum, nesterov, weight_decay, donate)
    return SGDStep(program, step_size, donate, weight_decay)


def adam(program: Program, learning_rate: HyperValue = 1e-3, b1: HyperValue = 0.9, b2: HyperValue = 0.999,
         eps: HyperValue = 1e-8, weight_decay: HyperValue = 0.0, donate: bool = False) -> Adam:
    """Adam for ``program`` (PyTorch's conventions; weight decay as L2 in the gradient). See ``Adam``."""
    return Adam(program, learning_rate, b1, b2, eps, weight_decay, donate)


def adamw(program: Program, learning_rate: HyperValue = 1e-3, b1: HyperValue = 0.9, b2: HyperValue = 0.999,
          eps: HyperValue = 1e-8, weight_decay: HyperValue = 1e-2, donate: bool = False) -> Adam:
    """AdamW for ``program``: Adam with decoupled weight decay (PyTorch's default 0.01). See ``Adam``."""
    return Adam(program, learning_rate, b1, b2, eps, weight_decay, donate, decoupled=True)


def rmsprop(program: Program, learning_rate: HyperValue = 1e-2, alpha: HyperValue = 0.99, eps: HyperValue = 1e-8,
            weight_decay: HyperValue = 0.0, donate: bool = False) -> RMSProp:
    """RMSProp for ``program`` (PyTorch's defaults and conventions). See ``RMSProp``."""
    return RMSProp(program, learning_rate, alpha, eps, weight_decay, donate)
