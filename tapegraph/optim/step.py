"""The step base every optimizer shares (``_Step``) and plain SGD (``SGDStep``).

``_Step`` holds what any step has: its tape and dump, its repr, how it
pickles (as how it was made, ``_made_again``) and, since any may take
``donate=True``, refusing arrays it cannot update in place. ``SGDStep``
is ``tg.sgd`` without state: ``step(params, inputs) -> (new_params, value)``.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from tapegraph.compile.grad import grad
from tapegraph.errors import CallError
from tapegraph.expr import caller_origin, origin_scope
from tapegraph.ops import add, mul, sub
from tapegraph.optim.epoch import _EpochPlan, _finish_epoch, _native_epoch, _run_epoch, _runs_natively
from tapegraph.optim.hypers import _check_free, _check_hypers, _format_hypers, _hyper_order, check_hyper, hyper
from tapegraph.program import Program
from tapegraph.shapes import array_type

def _check_program(program: Any, what: str) -> Program:
    if not isinstance(program, Program):
        raise TypeError(f"{what} needs a program made by tg.compile, got {type(program).__name__}")
    if program.objective is None:
        raise CallError(f"{what} needs a program with an objective to minimise, but this one was compiled with "
                        f"outputs only ({sorted(program.outputs)}): tg.compile(loss, wrt=[...], outputs=...)")
    if not program.wrt:
        raise ValueError(f"{what} needs a program compiled with wrt=[...] parameters to update")
    return program


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


class _CallSignature:
    """A class's ``__signature__`` for its instances' calls: None on the
    class itself, whose signature is its constructor's."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature

    def __get__(self, instance: Any, owner: type | None = None) -> inspect.Signature | None:
        return None if instance is None else self.signature


class SGDStep(_Step, functools.partial):
    """``step(params, inputs) -> (new_params, objective_value)``: plain SGD.

    A call is one step from ``params`` on ``inputs``: it returns the new
    parameters, the updated ``wrt`` parameters and then every other
    parameter given (unchanged, the caller's own objects), so that
    ``params, value = step(params, inputs)`` can go on looping, and the
    objective at ``params``. ``step(params, inputs, step_size=0.01)`` (and
    ``weight_decay=`` if the step has one) overrides the step's own for
    that call.

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

    Why a ``functools.partial``: a step is called once per example, and
    CPython 3.11 calls an instance of a class with a Python ``__call__``
    through its type's slot, which builds the arguments anew and a bound
    method, 0.1 to 0.3 us a step more than calling a function. A partial
    calls its function from C: the step is a partial of its plan's
    generated entry bound to the step's hyperparameter values
    (``types.MethodType(entry, values)``, ``follow_entry``), so a call runs
    the entry's argument checks and then the tape at once. ``func``,
    ``args`` and ``keywords`` are partial's and say how (they are not part
    of the step's API); the call's signature is ``__signature__``.
    """

    #: What ``inspect.signature`` and ``help`` show for a call of a step.
    __signature__ = _CallSignature(inspect.Signature([
        inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        inspect.Parameter("hypers", inspect.Parameter.VAR_KEYWORD),
    ]))

    def __new__(cls, program: Program, step_size: float, donate: bool = False,
                weight_decay: float = 0.0) -> "SGDStep":
        # partial's own constructor takes the function to call: the entry is
        # bound in __init__, once the plan exists (follow_entry)
        return super().__new__(cls, _not_bound)

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
                                          self._check_no_overlap if self.donate else None, overridable=True)
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
        # a call given hyperparameters by keyword: checked as for any sgd
        # step of this plan (the plan's steps differ in their values only)
        self._plan.override = functools.partial(_call_overridden, self._plan, tuple(self._hypers))
        self._plan.follow(self)

    def follow_entry(self, enter: Any) -> None:
        """Call ``enter``, the plan's entry (``_Plan.follow``), with this step's hyperparameters.

        Made again when the plan's entry changes (a new specialisation):
        the entry bound before still works, through the general path.
        """
        if self._returns_others:
            call: Any = self._call_returning_others
        else:
            call = types.MethodType(enter, self._hyper_values)
        functools.partial.__setstate__(self, (call, (), None, self.__dict__))

    def init(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """Plain SGD's state is the parameters themselves: ``params``, as given."""
        return params

    def _call_returning_others(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None = None,
                               **hypers: float) -> tuple[dict[str, np.ndarray], float]:
        """A call for a program with parameters besides ``wrt``: those given are returned too."""
        updated, value = self._plan.enter(self._hyper_values, params, inputs, **hypers)
        if len(params) > len(updated):
            for name, given in params.items():
                updated.setdefault(name, given)
        return updated, value

    def _override(self, hypers: Mapping[str, Any]) -> dict[str, float]:
        return _check_overrides(hypers, self._hypers)

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


def _not_bound(*args: Any, **kwargs: Any) -> Any:
    """What an SGD step calls before its ``__init__`` has bound its entry (never, once made)."""
    raise TypeError("this sgd step was not made: use tg.sgd(program, step_size)")


def _check_overrides(hypers: Mapping[str, Any], known: Collection[str]) -> dict[str, float]:
    """The hyperparameters a plain SGD call gives by keyword, checked: ``known`` are the step's."""
    if "weight_decay" in hypers and "weight_decay" not in known:
        raise CallError("this sgd step was made with weight_decay=0, so its update has no decay term: "
                        "pass weight_decay= to tg.sgd to make it a runtime value")
    checked = _check_hypers("sgd step", hypers, dict.fromkeys(known))
    for name, value in checked.items():
        if callable(value):
            raise CallError(f"a plain sgd step has no step count for a schedule of {name}: make the optimizer "
                            f"with tg.sgd(prog, step_size=schedule), whose state counts its steps")
    return {name: float(value) for name, value in checked.items()}


def _call_overridden(plan: Any, known: tuple[str, ...], values: tuple[float, ...], params: Any, inputs: Any,
                     overrides: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], float]:
    """An SGD plan's ``override``: a call given hyperparameters by keyword.

    ``values`` are the step's own, in the entry's order; the ones given
    replace them for this call (``known`` names the step's
    hyperparameters, ``_check_overrides``).
    """
    checked = _check_overrides(overrides, known)
    order = _hyper_order(plan)
    given = {**dict(zip(order, values)), **checked}
    return plan.enter(tuple(given[name] for name in order), params, inputs)


def _made_again(kind: type, program: Program, arguments: Mapping[str, Any]) -> _Step:
    """An unpickled step or optimizer: made again on its (unpickled) program."""
    return kind(program, **arguments)


def _tape(plan: Any, sizes: Mapping[str, int] | None):
    from tapegraph.compile.lower import lower
    if sizes is None and plan.last is not None:
        return plan.last.tape
    return lower(plan.roots, dict(sizes or {}), plan.returns)
