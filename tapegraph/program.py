"""Compiled programs: ``tg.compile`` and what a program can do when called.

A ``Program`` holds the symbolic expressions (objective, gradients, named
outputs). Each call specialises it to the concrete sizes of the arrays
given, lowering to a tape once per distinct set of sizes and caching it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, NamedTuple

import numpy as np

from tapegraph.errors import CallError, GraphError, NonFiniteError, TapeError
from tapegraph.expr import HYPER, INPUT, PARAM, Node
from tapegraph.shapes import symbols
from tapegraph.inspect.dump import format_tape
from tapegraph.calls import (
    Packing, check_lines, check_namespace, check_shape, convert, count, did_you_mean, entry_parameters, make_entry,
    pack_expression, with_hypers,
)
from tapegraph.backends import Executable, Return, backend_note, checking, checking_now, get_backend
from tapegraph.compile.graph import check_names, leaves, post_order
from tapegraph.compile.grad import check_objective, check_wrt, grad
from tapegraph.compile.lower import Root, lower
from tapegraph.compile.tape import Tape

log = logging.getLogger("tapegraph")

#: Specialisations kept per kind of call; the oldest is dropped beyond this.
MAX_SPECIALIZATIONS = 16

_frozen: contextvars.ContextVar[bool] = contextvars.ContextVar("tapegraph_no_new_specializations", default=False)


class Specialization(NamedTuple):
    """One cached specialisation of a program (see ``Program.specializations``)."""

    #: What it computes: ``value_and_grad``, ``run <outputs>``, ``sgd``, ``adam donated``, ...
    kind: str
    #: The sizes of the symbolic dimensions (empty when there are none).
    sizes: dict[str, int]
    #: The shapes of the feeds whose declared shapes hold symbols: the cache key.
    shapes: dict[str, tuple[int, ...]]
    #: Instructions in its tape, and the bytes of its buffers.
    instructions: int
    bytes: int


class SpecializationError(CallError):
    """A call needed a new specialisation inside ``no_new_specializations()``."""


@contextlib.contextmanager
def no_new_specializations() -> Iterator[None]:
    """Inside the block, a call that would compile a new specialisation fails.

    Use it to make sure a training loop runs on the tapes already compiled
    (say, that a last short minibatch does not compile a tape of its own):

    >>> import numpy as np, tapegraph as tg
    >>> x = tg.input("x", shape=("batch", 2))
    >>> prog = tg.compile(tg.sum(tg.square(x)))
    >>> prog.run({}, {"x": np.ones((4, 2))})["objective"]
    8.0
    >>> with tg.no_new_specializations():
    ...     prog.run({}, {"x": np.ones((3, 2))})
    Traceback (most recent call last):
    ...
    tapegraph.program.SpecializationError: run objective would specialise to batch=3 inside no_new_specializations(); cached: batch=4
    """
    token = _frozen.set(True)
    try:
        yield
    finally:
        _frozen.reset(token)


class _Plan:
    """One set of roots (say, objective and gradients) and its specialisations.

    A call goes through ``enter(hypers, params, inputs)``: the generated
    entry of the specialisation used last (see ``calls.entry_source``),
    which runs the step at once when the arguments are what that
    specialisation takes, and otherwise hands them to ``fallback``, the
    general path (``Program._call_general``: convert or explain, find or
    make the specialisation, run). ``hypers`` is None but for an
    optimizer's plan (``calls.check_lines``). Whoever holds ``enter``
    itself rather than the plan (an SGD step binds it to its values)
    follows it with ``follow``.
    """

    def __init__(self, kind: str, roots: Sequence[Root], returns: Sequence[Return], fallback: Callable,
                 packing: Packing = ("tuple", ()), donated: Sequence[str] = (),
                 refuse: Callable[[str, Any], None] | None = None,
                 overlap: Callable[[Any, Any], None] | None = None, overridable: bool = False) -> None:
        self.kind = kind
        #: How a call returns the step's tuple of results (``calls.Packing``);
        #: ``pack`` does it on the general path.
        self.packing = packing
        self.pack: Callable[[tuple], Any] = eval(f"lambda r: {pack_expression(packing, 'r')}")  # names are repr()'d
        self.roots = tuple(roots)
        #: How the compiled step returns each named root (``emit.Return``): lowered into its tapes.
        self.returns = tuple(returns)
        nodes = post_order(node for _, node, _ in roots)
        # hyperparameters (``tg.adam``'s step size, say) come from the
        # optimizer, apart from the inputs (``calls.check_lines``); the
        # general path takes them in the inputs dict
        self.feeds = tuple(leaves(nodes, PARAM) + leaves(nodes, INPUT) + leaves(nodes, HYPER))
        #: Names of the hyperparameter feeds, which the inputs may hold too.
        self.hyper_names = frozenset(node.name for node in self.feeds if node.op is HYPER)
        self.feed_names = tuple((node.name, node.op.name, node) for node in self.feeds)
        #: Per feed: name, is it a parameter, node, dtype, and the shape every
        #: call must match (None where the shape holds a symbol).
        self.feed_specs = tuple(
            (node.name, node.op is PARAM, node, np.dtype(node.dtype), None if symbols(node.shape) else node.shape)
            for node in self.feeds)
        #: Positions of the feeds whose shapes hold symbols: they key the cache.
        self.symbolic = tuple(index for index, node in enumerate(self.feeds) if symbols(node.shape))
        self.cache: dict[tuple, Executable] = {}
        self.last: Executable | None = None
        #: Parameters the step updates in place (``tg.sgd(..., donate=True)``),
        #: and what raises the error for a given value that cannot be.
        self.donated = tuple(donated)
        self.refuse = refuse
        #: ``overlap(params, inputs)`` raises if a donated array shares
        #: memory with another feed; the generated entry calls it only when
        #: identities alone do not rule that out.
        self.overlap = overlap
        #: (position among the feeds, name) of each donated parameter.
        self.donated_feeds = tuple((index, node.name) for index, node in enumerate(self.feeds)
                                   if node.op is PARAM and node.name in self.donated)
        #: The general path, ``fallback(params, inputs)``; ``enter`` until a
        #: specialisation exists.
        self.fallback = functools.partial(fallback, self)
        #: ``override(hypers, params, inputs, overrides)``: a call given
        #: hyperparameters by keyword, for the plan of an SGD step, which
        #: sets it; None: the plan's entries take no keyword arguments.
        self.override: Callable | None = None
        if overridable:
            self.override = _overrides_not_set
        self.enter: Callable = self._enter_first
        #: Callbacks ``follower(enter)``, each called with the new entry
        #: when ``enter`` changes (see ``set_enter``); held weakly.
        self._followers: weakref.WeakSet = weakref.WeakSet()
        self._followers_lock = threading.Lock()
        #: Held while specialising: two threads needing the same new
        #: specialisation lower it once.
        self.lock = threading.Lock()

    def _enter_first(self, hypers: Any, params: Any, inputs: Any = None, arrays: None = None,
                     **overrides: Any) -> Any:
        """``enter`` until a specialisation exists: the general path, given
        the hyperparameters (passed apart, see ``calls.check_lines``) in the inputs."""
        if overrides:
            if self.override is None:
                raise TypeError(f"this call takes no keyword arguments (got {', '.join(sorted(overrides))})")
            return self.override(hypers, params, inputs, overrides)
        if hypers is not None:
            names = tuple(node.name for node in self.feeds if node.op is HYPER)
            inputs = with_hypers(inputs, names, hypers)
        return self.fallback(params, inputs)

    def follow(self, follower: Any) -> None:
        """Call ``follower.follow_entry(enter)`` now and whenever ``enter`` changes.

        Held weakly: a follower that is no longer used is dropped.
        """
        with self._followers_lock:
            self._followers.add(follower)
            follower.follow_entry(self.enter)

    def set_enter(self, enter: Callable) -> None:
        """Make ``enter`` the plan's entry (a specialisation's) and tell its followers."""
        if enter is not self.enter:
            # (a follower made meanwhile in another thread is told too; an
            # entry told late still runs: through the general path)
            with self._followers_lock:
                self.enter = enter
                for follower in list(self._followers):
                    follower.follow_entry(enter)


class Program:
    """A compiled objective with its gradients and named outputs, or a predictor.

    Made by ``tg.compile``; see there for an example. Without an objective
    (``tg.compile(outputs={...})``) the program computes its outputs only:
    ``run`` and ``map`` work, while ``value_and_grad`` and the optimizers,
    which need an objective, raise a ``CallError`` saying so. Calls may come from
    several threads at once: each runs on buffers of its own, and a new
    specialisation is made once however many threads need it (see
    docs/tape.md, "Calls from several threads").
    """

    def __init__(self, objective: Node | None, wrt: Sequence[Node] = (), outputs: Mapping[str, Node] | None = None,
                 backend: str = "numpy") -> None:
        #: What runs this program's tapes (``tapegraph.backends``).
        self.backend = get_backend(backend)
        self.outputs = self._check_outputs(outputs or {})
        #: The scalar objective, or None for a forward-only program (a predictor).
        self.objective = None if objective is None else check_objective(objective)
        if self.objective is None:
            if wrt is not None and (isinstance(wrt, Node) or len(wrt)):
                raise GraphError("wrt=[...] needs an objective to differentiate, but this program has none; "
                                 "give one (tg.compile(loss, wrt=..., outputs=...)), or put a gradient in the "
                                 "outputs: outputs={'g': tg.grad(loss, w)}")
            if not self.outputs:
                raise GraphError("a program needs an objective or at least one output: "
                                 "tg.compile(loss, wrt=[...]) or tg.compile(outputs={'prediction': ...})")
        self.wrt = tuple(check_wrt(wrt))
        self.gradients = () if self.objective is None else tuple(grad(self.objective, self.wrt))
        objective_nodes = [] if self.objective is None else [self.objective]
        nodes = post_order([*objective_nodes, *self.outputs.values(), *self.wrt, *self.gradients])
        check_names(nodes)
        #: Declared parameters and inputs by name.
        self.params = {node.name: node for node in leaves(nodes, PARAM)}
        self.inputs = {node.name: node for node in leaves(nodes, INPUT)}
        self._plans: dict[Any, _Plan] = {}
        self._plans_lock = threading.Lock()
        self._wrt_names = tuple(param.name for param in self.wrt)

    def _require_objective(self, what: str) -> None:
        """Raise for a call that needs an objective (``value_and_grad``, say) on a forward-only program."""
        if self.objective is None:
            raise CallError(f"{what} needs an objective, but this program was compiled with outputs only "
                            f"({sorted(self.outputs)}); compile it with one, tg.compile(loss, wrt=[...], outputs=...), "
                            f"or use run or map for its outputs")
    def __reduce__(self) -> tuple:
        # A program pickles as its expressions (nodes pickle by structure,
        # leaves with their identity, ops by registered name) and its
        # backend's name; the copy differentiates them again and compiles
        # its tapes on first use. Specialisations, buffers and generated
        # code are this process's, and are not pickled.
        return (type(self), (self.objective, self.wrt, self.outputs, self.backend.name))

    def _check_outputs(self, outputs: Mapping[str, Node]) -> dict[str, Node]:
        if not isinstance(outputs, Mapping):
            raise GraphError(f"outputs must be a dict of name -> node, got {type(outputs).__name__}")
        for name, node in outputs.items():
            if not isinstance(name, str) or not name or name == "objective":
                raise GraphError(f"output name {name!r} is not allowed: use a non-empty string other than 'objective'")
            if not isinstance(node, Node):
                raise GraphError(f"output {name!r} must be a tapegraph node, got {type(node).__name__}")
        return dict(outputs)

    # Plans: which roots a call computes.

    def _value_and_grad_plan(self) -> _Plan:
        plan = self._plans.get("value_and_grad")
        if plan is None:
            self._require_objective("value_and_grad")
            roots = [("objective", self.objective, "forward")]
            roots += [(f"grad {param.name}", gradient, "reverse") for param, gradient in zip(self.wrt, self.gradients)]
            returns = ["float"] + ["new"] * len(self.gradients)
            plan = self._custom_plan("value_and_grad", "value_and_grad", roots, returns,
                                     ("value, dict", self._wrt_names))
        return plan

    def _run_plan(self, names: tuple[str, ...]) -> _Plan:
        plan = self._plans.get(("run", names))
        if plan is None:
            if "objective" in names:
                self._require_objective("outputs=['objective']")
            available = {"objective": self.objective, **self.outputs} if self.objective is not None else dict(self.outputs)
            unknown = [name for name in names if name not in available]
            if unknown:
                raise CallError(f"unknown output(s) {unknown}{did_you_mean(unknown, available)}; "
                                f"this program has {sorted(available)}")
            roots = [(name, available[name], "forward") for name in names]
            returns = ["float" if name == "objective" else "new" for name in names]
            plan = self._custom_plan(("run", names), "run " + ",".join(names), roots, returns, ("dict", names))
        return plan

    def _custom_plan(self, key: Any, kind: str, roots: Sequence[Root], returns: Sequence[Return],
                     packing: Packing = ("tuple", ()), donated: Sequence[str] = (),
                     refuse: Callable[[str, Any], None] | None = None,
                     overlap: Callable[[Any, Any], None] | None = None, overridable: bool = False) -> _Plan:
        """A plan over any roots built from this program's expressions (used by ``tg.sgd``).

        ``packing`` says how a call returns the results (``calls.Packing``);
        ``donated`` names parameters the step updates in place;
        ``refuse(name, value)`` raises the error for a value given for one
        that cannot be; ``overlap(params, inputs)`` refuses donated arrays
        that share memory with another feed; ``overridable``: its entries
        take hyperparameters by keyword, as the plan's ``override`` says.
        """
        plan = self._plans.get(key)
        if plan is None:
            with self._plans_lock:  # two threads asking at once get one plan
                plan = self._plans.get(key)
                if plan is None:
                    plan = _Plan(kind, roots, returns, self._call_general, packing, donated, refuse, overlap,
                                 overridable)
                    self._plans[key] = plan
        return plan

    # Calling.

    def _prepare(self, plan: _Plan, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> tuple[Executable, list]:
        """Validate the caller's arrays and find (or build) the specialisation.

        This runs at every call, so the common case is kept to a few
        comparisons per feed; anything unusual goes to the slow paths that
        convert values or explain what is wrong.
        """
        arrays = []
        for name, is_param, node, dtype, shape in plan.feed_specs:
            try:
                value = params[name] if is_param else inputs[name]
            except (KeyError, TypeError, IndexError):
                raise self._name_error(plan, params, inputs) from None
            if type(value) is not np.ndarray or value.dtype != dtype:
                value = convert("param" if is_param else "input", node, value)
            if shape is not None and value.shape != shape:
                check_shape("param" if is_param else "input", node, value, {})
            arrays.append(value)
        if count(params) + count(inputs) != len(arrays):
            self._check_unknown(params, inputs, self._extra_names(plan))
        if plan.symbolic:
            key = tuple(arrays[index].shape for index in plan.symbolic)
            executable = plan.cache.get(key)
            if executable is None:
                executable = self._specialize(plan, arrays, key)
        else:
            executable = plan.last or self._specialize(plan, arrays, ())
        plan.last = executable
        plan.set_enter(executable.enter)
        return executable, arrays

    def _specialize(self, plan: _Plan, arrays: list, key: tuple) -> Executable:
        with plan.lock:
            # another thread may have made it while this one waited
            executable = plan.cache.get(key)
            if executable is None:
                executable = self._specialize_locked(plan, arrays, key)
        return executable

    def _specialize_locked(self, plan: _Plan, arrays: list, key: tuple) -> Executable:
        sizes: dict[str, int] = {}
        bound_by: dict[str, str] = {}
        for (name, kind, node), array in zip(plan.feed_names, arrays):
            check_shape(kind, node, array, sizes, bound_by)
        if _frozen.get():
            cached = "; ".join(_format_sizes(executable.tape.sizes) for executable in plan.cache.values()) or "none"
            raise SpecializationError(f"{plan.kind} would specialise to {_format_sizes(sizes)} inside "
                                      f"no_new_specializations(); cached: {cached}")
        tape = lower(plan.roots, sizes, plan.returns)
        executable = self.backend.bind(tape, [name for name, _, _ in plan.feed_names])
        feeds = [(name, kind == "param", np.dtype(node.dtype), tuple(sizes.get(dim, dim) for dim in node.shape))
                 for name, kind, node in plan.feed_names]
        # a backend may say which feeds its step reads only as numbers
        # (the numpy backend does); the entry then takes floats as they are
        number_feeds = getattr(executable, "number_feeds", None)
        numbers = number_feeds() if number_feeds is not None else frozenset()
        if plan.hyper_names:
            numbers = numbers | _read_as_numbers_or_either(tape, plan.hyper_names)
        #: The entry that checks a call's arguments for this specialisation
        #: and runs its step: the backend's own, with the checks at the top of
        #: its generated step, or else one calling the step (``calls``).
        executable.enter = None
        # (a step's override is looked up at each such call: the step sets
        # it once the plan exists)
        override = None if plan.override is None else functools.partial(_override, plan)
        if hasattr(executable, "entry"):
            executable.enter = executable.entry(
                lambda arguments: check_lines(feeds, arguments, plan.donated, numbers,
                                              overlap=plan.overlap is not None, hypers=plan.hyper_names,
                                              overrides=override is not None),
                check_namespace(feeds, plan.fallback, checking_now, plan.overlap, plan.hyper_names, override),
                lambda results: pack_expression(plan.packing, results),
                entry_parameters(override is not None))
        if executable.enter is None:
            executable.enter = make_entry(feeds, executable.function(), executable.failure,
                                          plan.fallback, checking_now, plan.packing, plan.donated, numbers,
                                          plan.overlap, plan.hyper_names, override)
        plan.cache[key] = executable
        log.info("tapegraph: specialised %s to %s (%d instructions, %d bytes)", plan.kind,
                 _format_sizes(sizes), len(tape.instructions), tape.total_bytes)
        if len(plan.cache) > MAX_SPECIALIZATIONS:
            # many sizes (predicting on arrays of every length) must not
            # keep every size's buffers alive: drop the oldest
            oldest = next(iter(plan.cache))
            dropped = plan.cache.pop(oldest)
            log.info("tapegraph: dropped the specialisation of %s to %s (more than %d cached)", plan.kind,
                     _format_sizes(dropped.tape.sizes), MAX_SPECIALIZATIONS)
        return executable

    def _call(self, plan: _Plan, params: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> tuple:
        """Validate, specialise if needed, run; the step's results as a plain tuple.

        The general path, for code that wants the results unpacked; calls
        from users go through ``plan.enter``, which packs them.
        """
        executable, arrays = self._prepare(plan, params, inputs if inputs is not None else {})
        return self._run(executable, plan, arrays)

    def _call_general(self, plan: _Plan, params: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> Any:
        """The general path of a call: anything the generated entry does not take at once."""
        if plan.overlap is not None:
            plan.overlap(params, inputs)
        if inputs is None:
            inputs = {}
        executable, arrays = self._prepare(plan, params, inputs)
        for index, name in plan.donated_feeds:
            # _prepare passes a given array through only when it is an
            # ndarray of the declared dtype and shape
            if arrays[index] is not params[name] or not arrays[index].flags.writeable:
                plan.refuse(name, params[name])
        if checking():
            return plan.pack(self._call_checked(executable, plan, arrays))
        # the entry without its checks: these arguments are checked
        return executable.enter(None, None, None, arrays)

    def _run(self, executable: Executable, plan: _Plan, arrays: list) -> tuple:
        """Run a prepared call (see ``_prepare``)."""
        if checking():
            return self._call_checked(executable, plan, arrays)
        try:
            # compiled on first use: calls from users go through the entry
            return executable.function()(*arrays)
        except Exception as error:
            raise executable.failure(error) from error

    def _call_checked(self, executable: Executable, plan: _Plan, arrays: list) -> tuple:
        step = executable.function(check=True)
        try:
            with np.errstate(all="ignore"):  # the check reports what numpy would warn about
                return step(*arrays)
        except NonFiniteError:
            raise
        except Exception as error:
            raise executable.failure(error) from error

    def _name_error(self, plan: _Plan, params: Any, inputs: Any) -> CallError:
        for label, given in (("params", params), ("inputs", inputs)):
            if not isinstance(given, Mapping):
                return CallError(f"{label} must be a dict of name -> array, got {type(given).__name__}")
        self._check_unknown(params, inputs, self._extra_names(plan))
        missing_params = [name for name, kind, _ in plan.feed_names if kind == "param" and name not in params]
        missing_inputs = [name for name, kind, _ in plan.feed_names if kind != "param" and name not in inputs]
        parts = []
        if missing_params:
            parts.append(f"parameter(s) {missing_params} missing from params (given: {sorted(params)})")
        if missing_inputs:
            parts.append(f"input(s) {missing_inputs} missing from inputs (given: {sorted(inputs)})")
        return CallError("; ".join(parts) + f". This call needs params {_names(plan, 'param')} and inputs {_names(plan, 'input')}.")

    def _extra_names(self, plan: _Plan) -> frozenset[str]:
        """The feeds of ``plan`` that the program does not declare: an
        optimizer's hyperparameters and state slots."""
        return frozenset(name for name, _, _ in plan.feed_names if name not in self.params and name not in self.inputs)

    def _check_unknown(self, params: Mapping[str, Any], inputs: Mapping[str, Any],
                       extra: Collection[str] = frozenset()) -> None:
        """Raise for a name given that is neither declared nor in ``extra``
        (an optimizer's hyperparameters and state slots)."""
        for label, given, declared, other, other_label in (
            ("params", params, self.params, self.inputs, "inputs"),
            ("inputs", inputs, self.inputs, self.params, "params"),
        ):
            for name in given:
                if name in declared or name in extra:
                    continue
                if name in other:
                    raise CallError(f"{name!r} is declared as {'an input' if label == 'params' else 'a parameter'}; pass it in {other_label}, not {label}")
                raise CallError(f"unknown name {name!r} in {label}{did_you_mean([name], declared)}; "
                                f"this program's {label} are {sorted(declared)}")

    def value_and_grad(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> tuple[float, dict[str, np.ndarray]]:
        """The objective (a float) and its gradient for each ``wrt`` parameter.

        Gradients are new arrays of the parameters' shapes (0-d for scalars);
        nothing given is modified.

        >>> import numpy as np, tapegraph as tg
        >>> w = tg.param("w", shape=(2,))
        >>> prog = tg.compile(tg.sum(tg.square(w)), wrt=[w])
        >>> value, grads = prog.value_and_grad({"w": np.array([1.0, 2.0])}, {})
        >>> value, grads["w"]
        (5.0, array([2., 4.]))
        """
        return self._value_and_grad_plan().enter(None, params, inputs)

    def run(self, params: Mapping[str, Any], inputs: Mapping[str, Any] | None = None,
            outputs: Iterable[str] | None = None) -> dict[str, Any]:
        """Forward only: ``{"objective": float, name: array, ...}``.

        With ``outputs=["prediction"]`` only those are computed, from only
        the parameters and inputs they need (a prediction needs no label).
        A program without an objective computes its outputs.
        """
        names = self._default_outputs() if outputs is None else tuple(outputs)
        if isinstance(outputs, str):
            names = (outputs,)
        return self._run_plan(names).enter(None, params, inputs)

    def map(self, params: Mapping[str, Any], data: Mapping[str, Any], outputs: Iterable[str] | None = None,
            batch_size: int | None = None) -> dict[str, np.ndarray]:
        """``run`` over a whole data set: each output stacked, one row per example.

        ``data`` maps each input the outputs need to an array whose leading
        axis runs over the examples (as ``epoch``'s data; inputs the outputs
        do not need may be left out). A per-example program runs once per
        row, and each output comes back stacked: shape ``(n, *its shape)``
        (the objective too, as ``n`` floats). A program with a ``"batch"``
        dimension runs on all rows at once, or on ``batch_size`` rows at a
        time (the last, shorter batch too), and its outputs, which must
        have the batch as their leading axis, are concatenated. The default
        ``outputs`` are those ``run`` computes, except, for a batched
        program, those that do not run over the batch (the objective).
        Everything is checked before the first call: the data's names and
        row shapes, leading axes that differ, the outputs, and a
        ``batch_size`` for a program without a batch dimension.

        The result equals a loop of ``run`` calls on each row (or batch),
        bit for bit: it is that loop. On a native program (outside
        ``tg.check_finite()``) the loop is one native call over every row
        (every full batch; the last, shorter one is a call of its own),
        and the labels and indices of every row are checked before it runs.

        >>> import numpy as np, tapegraph as tg
        >>> x = tg.input("x", shape=(2,))
        >>> w = tg.param("w", shape=(2,))
        >>> predictor = tg.compile(outputs={"prediction": x @ w, "scaled": 2.0 * x})
        >>> results = predictor.map({"w": np.array([1.0, -1.0])}, {"x": np.array([[3.0, 1.0], [0.0, 2.0]])})
        >>> results["prediction"], results["scaled"].shape
        (array([ 2., -2.]), (2, 2))
        """
        from tapegraph.optim import _EpochPlan  # optim imports this module
        if isinstance(outputs, str):
            outputs = (outputs,)
        batched = any(symbols(node.shape) for node in self.inputs.values())
        if outputs is None:
            names = self._default_outputs()
            if batched:
                names = tuple(name for name in names if name != "objective" and _leading_symbol(self.outputs[name]))
        else:
            names = tuple(outputs)
        if not names:
            raise CallError("map: no output runs over the examples (none has a leading batch dimension); "
                            "name the outputs to compute, or use run")
        plan = self._run_plan(names)
        rows = _EpochPlan(plan, self, "map", data, None, batch_size, whole_by_default=True)
        if not rows.arrays:
            raise CallError(f"map: the outputs {list(names)} read no input, so there are no examples to map over; "
                            f"use run")
        if rows.batched:
            leading = {_leading_symbol(node) for name, kind, node in plan.feed_names if kind == "input"}
            for name in names:
                node = self.objective if name == "objective" else self.outputs[name]
                if _leading_symbol(node) not in leading:
                    raise CallError(f"map: output {name!r} ({node.type_str}) does not run over the batch (its leading "
                                    f"axis is not the inputs' {sorted(leading)}), so its batches cannot be put together "
                                    f"row by row; compute it with run, or leave it out of outputs=[...]")
        native = self._map_natively(plan, params, rows)
        done = 0 if native is None else native[1]
        # one run per step, as a backend may replace: the loop is the meaning
        results = []
        for index in range(done, len(rows.steps)):
            try:
                results.append(plan.enter(None, params, rows.inputs(index)))
            except TapeError as error:  # a kernel failed, or check mode stopped: say at which step
                raise rows.failed(index, error) from error.__cause__
        if native is not None:
            if not results:
                return {name: native[0][name] for name in names}
            # the last, shorter batch ran as a call: put after the native steps' rows
            results.insert(0, native[0])
        stacked = {}
        for name in names:
            node = self.objective if name == "objective" else self.outputs[name]
            if native is not None:
                stacked[name] = np.concatenate([result[name] for result in results])
            elif not results:
                stacked[name] = _no_rows(node, rows.batched)
            elif rows.batched and len(results) == 1:
                stacked[name] = results[0][name]  # a new array already: no copy
            elif rows.batched:
                stacked[name] = np.concatenate([result[name] for result in results])
            else:
                stacked[name] = np.stack([np.asarray(result[name], dtype=node.dtype) for result in results])
        return stacked

    def _map_natively(self, plan: _Plan, params: Mapping[str, Any], rows: Any) -> tuple[dict, int] | None:
        """``map``'s steps that share one specialisation as one native call: (stacked results, steps run).

        None when the loop of calls runs instead: not a native program,
        checking for non-finite values, no rows, or a batched program
        without ``batch_size`` (one call already) or with fewer rows than
        one batch.
        """
        if self.backend.name != "native" or checking() or not rows.steps:
            return None
        if rows.batched and (rows.batch_size is None or len(rows.order) < rows.batch_size):
            return None
        steps = len(rows.steps) if rows.batch_size is None else len(rows.order) // rows.batch_size
        # the first step's arguments checked, and the step specialised, as a call would
        executable, arrays = self._prepare(plan, params, rows.inputs(0))
        fixed = {name: array for (name, kind, _), array in zip(plan.feed_names, arrays) if kind != "input"}
        return executable.map(fixed, dict(rows.arrays), rows.order, steps, rows.batch_size, rows.where), steps

    def _default_outputs(self) -> tuple[str, ...]:
        """What ``run`` computes when not told: the objective (if any), then every output."""
        return (*(("objective",) if self.objective is not None else ()), *self.outputs)

    # Inspecting.

    def tape(self, kind: str | None = None, sizes: Mapping[str, int] | None = None,
             outputs: Sequence[str] | None = None) -> Tape:
        """The tape of ``value_and_grad`` (or ``run`` with ``kind="run"``).

        The default kind is ``value_and_grad``, or ``run`` for a program
        without an objective. Symbolic dimensions need ``sizes``
        (``{"batch": 32}``) unless the program has already been called with them.
        """
        kind = self._kind(kind)
        if kind == "value_and_grad":
            plan = self._value_and_grad_plan()
        elif kind == "run":
            plan = self._run_plan(tuple(outputs) if outputs else self._default_outputs())
        else:
            raise ValueError(f"kind must be 'value_and_grad' or 'run', got {kind!r}")
        needed = sorted({name for _, _, node in plan.feed_names for name in symbols(node.shape)})
        if sizes is None and needed and plan.last is not None:
            return plan.last.tape
        if sizes is None and needed:
            # fall back to the sizes of any call made so far (say, by tg.sgd)
            for other in list(self._plans.values()):  # another thread may add one
                if other.last is not None and all(name in other.last.tape.sizes for name in needed):
                    sizes = other.last.tape.sizes
        sizes = dict(sizes or {})
        missing = [name for name in needed if name not in sizes]
        if missing:
            raise CallError(f"give the size of {missing} to see the tape, e.g. sizes={{{missing[0]!r}: 32}}")
        return lower(plan.roots, {name: int(sizes[name]) for name in needed}, plan.returns)

    def dump(self, kind: str | None = None, sizes: Mapping[str, int] | None = None,
             outputs: Sequence[str] | None = None) -> str:
        """The tape as text: feeds, forward and reverse instructions, buffers.

        The format is described in ``docs/tape.md``.
        """
        kind = self._kind(kind)
        return format_tape(self.tape(kind, sizes, outputs),
                           f"program: {self._describe()}; {kind}" + backend_note(self.backend))

    def _kind(self, kind: str | None) -> str:
        if kind is None:
            return "value_and_grad" if self.objective is not None else "run"
        return kind

    def _describe(self) -> str:
        """What the program computes, as dumps title it: ``objective = %3 add; wrt = [w, b]``."""
        if self.objective is None:
            return f"outputs = [{', '.join(self.outputs)}] (no objective)"
        wrt = ", ".join(param.name for param in self.wrt)
        return f"objective = {self.objective.label}; wrt = [{wrt}]"

    def specializations(self) -> list[Specialization]:
        """Each cached specialisation, in the order they were made.

        At most ``MAX_SPECIALIZATIONS`` (16) are kept per kind of call
        (``value_and_grad``, each ``run`` output set, each SGD step); beyond
        that the oldest is dropped, and made again if its sizes come back.

        >>> import numpy as np, tapegraph as tg
        >>> x = tg.input("x", shape=("batch", 2))
        >>> prog = tg.compile(tg.sum(tg.square(x)))
        >>> _ = prog.run({}, {"x": np.ones((4, 2))})
        >>> prog.specializations()
        [Specialization(kind='run objective', sizes={'batch': 4}, shapes={'x': (4, 2)}, instructions=2, bytes=72)]
        """
        found = []
        # copies: another thread may add a plan or a specialisation meanwhile
        for plan in list(self._plans.values()):
            symbolic_names = [plan.feeds[index].name for index in plan.symbolic]
            for key, executable in list(plan.cache.items()):
                tape = executable.tape
                found.append(Specialization(plan.kind, dict(tape.sizes), dict(zip(symbolic_names, key)),
                                            len(tape.instructions), tape.total_bytes))
        return found

    def source(self, kind: str | None = None, sizes: Mapping[str, int] | None = None,
               outputs: Sequence[str] | None = None, name: str | None = None, backend: str = "numpy") -> str:
        """The tape as a standalone Python function that needs only numpy.

        One line per instruction, commented with the expression it came
        from; buffers are local arrays. ``kind``, ``sizes`` and ``outputs``
        choose the tape as for ``dump``. The function takes the parameters
        and inputs as arguments and returns a dict like ``run`` (``run``)
        or ``{"objective": ..., "grad w": ...}`` (``value_and_grad``).
        ``backend="native"`` gives instead the numba module the native
        backend runs (see ``tapegraph.backends.native``).

        >>> import numpy as np, tapegraph as tg
        >>> w = tg.param("w", shape=(2,))
        >>> text = tg.compile(tg.sum(tg.square(w)), wrt=[w]).source(name="f")
        >>> print(text[text.index("    # forward"):])
            # forward
            np.square(w, out=s2)                          # %1 square at ...
            v2 = float(np.add.reduce(s2, axis=None))      # %2 sum at ...
            # reverse
            r4 = np.multiply(s1, w)                       # %4 mul at grad of square at ...
            return {'objective': v2, 'grad w': r4}
        >>> namespace = {}
        >>> exec(text, namespace)
        >>> namespace["f"](np.array([1.0, 2.0]))
        {'objective': 5.0, 'grad w': array([2., 4.])}
        """
        from tapegraph.backends.source import standalone_source
        kind = self._kind(kind)
        tape = self.tape(kind, sizes, outputs)
        if backend != "numpy":
            # the backend's generated module (backend="native": the numba code that runs)
            plan = self._value_and_grad_plan() if kind == "value_and_grad" else \
                self._run_plan(tuple(outputs) if outputs else self._default_outputs())
            return get_backend(backend).bind(tape, [feed_name for feed_name, _, _ in plan.feed_names]).source()
        return standalone_source(tape, name or kind, f"{kind} of {self._describe()}")

    def _repr_html_(self) -> str:
        """The dump and a picture of the graph, for Jupyter (never raises)."""
        from tapegraph.inspect.display import program_html
        return program_html(self)

    def _repr_png_(self) -> bytes | None:
        """A picture of the expression graph, for Jupyter; None when it cannot be drawn."""
        from tapegraph.inspect.display import program_png
        return program_png(self)

    def __repr__(self) -> str:
        if self.objective is None:
            return f"<Program outputs={list(self.outputs)} (no objective)>"
        wrt = ", ".join(param.name for param in self.wrt)
        return f"<Program objective={self.objective.label} wrt=[{wrt}] outputs={list(self.outputs)}>"


def _override(plan: _Plan, hypers: Any, params: Any, inputs: Any, overrides: Mapping[str, Any]) -> Any:
    """A generated entry's ``r0_override``: the plan's step runs the call."""
    return plan.override(hypers, params, inputs, overrides)


def _overrides_not_set(hypers: Any, params: Any, inputs: Any, overrides: Mapping[str, Any]) -> Any:
    raise RuntimeError("this plan takes hyperparameters by keyword, but its step has not said how")


def _read_as_numbers_or_either(tape: Tape, names: Collection[str]) -> frozenset[str]:
    """The hyperparameter feeds among ``names`` that a Python float serves.

    Every read of such a feed takes a number (``float(feed)``) or either
    form (a ufunc's operand), and it is not returned: a float is as good
    as a 0-d array there, so an optimizer passes its floats unconverted.
    """
    forms: dict[int, set[str]] = {}
    for instruction in tape.instructions:
        for index, value in enumerate(instruction.input_values):
            forms.setdefault(value, set()).add(instruction.form(index))
    returned = {value for _, value in tape.results.values()}
    return frozenset(feed.name for feed in tape.feeds
                     if feed.name in names and feed.shape == () and feed.dtype == "float64" and feed.in_place
                     and feed.value not in returned and forms.get(feed.value, set()) <= {"number", "either"})


def _leading_symbol(node: Node) -> str | None:
    """The symbol of ``node``'s leading dimension (``"batch"``), or None."""
    if node.shape and isinstance(node.shape[0], str):
        return node.shape[0]
    return None


def _no_rows(node: Node, batched: bool) -> np.ndarray:
    """What ``map`` gives for ``node`` over a data set of no rows: an empty stack of its rows."""
    row = node.shape[1:] if batched else node.shape
    if symbols(row):
        raise CallError(f"map: the data has no rows, and output {node.label} ({node.type_str}) has sizes that only "
                        f"a call would fix, so its empty result has no known shape")
    return np.empty((0, *row), dtype=node.dtype)


def _format_sizes(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={size}" for name, size in sizes.items()) or "fixed shapes"


def _names(plan: _Plan, kind: str) -> list[str]:
    return sorted(name for name, feed_kind, _ in plan.feed_names if feed_kind == kind)


def compile(objective: Node | None = None, wrt: Sequence[Node] = (), outputs: Mapping[str, Node] | None = None,
            backend: str = "numpy") -> Program:
    """Compile a scalar objective, its gradients wrt ``wrt``, and named outputs.

    Without an objective, ``tg.compile(outputs={"prediction": pred})``
    compiles a predictor: ``run`` and ``map`` compute its outputs, which may
    have any shape, gradients included (``outputs={"g": tg.grad(loss, w)}``).

    ``backend`` names what runs the program's tapes: ``"numpy"`` (generated
    straight-line numpy code) is the default; ``"native"`` runs numba code,
    a whole epoch per call (the extra ``tapegraph[native]``).

    >>> import numpy as np, tapegraph as tg
    >>> x = tg.input("x", shape=(2,))
    >>> y = tg.input("y")
    >>> w = tg.param("w", shape=(2,))
    >>> b = tg.param("b")
    >>> pred = tg.vector_scalar_affine(x, w, b)
    >>> prog = tg.compile(tg.squared_l2_distance(pred, y), wrt=[w, b], outputs={"prediction": pred})
    >>> params = {"w": np.array([1.0, -1.0]), "b": 0.5}
    >>> prog.run(params, {"x": np.array([3.0, 1.0])}, outputs=["prediction"])
    {'prediction': array(2.5)}
    """
    return Program(objective, wrt, outputs, backend)
