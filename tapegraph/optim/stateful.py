"""Optimizers with state: ``OptimizerState``, the ``Optimizer`` base, and SGD, Adam and RMSProp.

An ``Optimizer`` declares its rule (the slots kept per parameter, its
hyperparameters, the values fed at a step count, the update as
expressions) and appends the update to the program's tape. A state
remembers which optimizer form made it (``_Owner``), so a step refuses
another's state and a pickled state unpickles with its optimizer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from tapegraph.errors import CallError
from tapegraph.expr import Node, caller_origin, origin_scope, param
from tapegraph.ops import add, div, mul, sqrt, square, sub
from tapegraph.optim.epoch import _EpochPlan, _finish_epoch, _full_steps, _native_epoch, _run_epoch, _runs_natively
from tapegraph.optim.hypers import HyperValue, _check_free, _check_hypers, _hyper_order, check_hyper, hyper
from tapegraph.optim.step import _check_program, _Step
from tapegraph.program import Program

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
        results = self._plan.enter(tuple([fed_values[name] for name in self._hyper_order]), feeds, inputs)
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
    # the same expressions: their structures are one token (== on nodes builds a comparison)
    return (first.plan.kind == second.plan.kind
            and (one is other or one.objective.structure is other.objective.structure
                 and [node.structure for node in one.wrt] == [node.structure for node in other.wrt]))


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
