"""Epochs: the checked rows of each step of a data set, and running them.

``_EpochPlan`` checks an epoch's data, order and batch size before any
step runs (``Program.map`` uses it too); ``_run_epoch`` loops the steps
in Python; a native program runs its full steps in one call
(``_runs_natively``, ``_native_epoch``) and the last, shorter batch as a
call (``_finish_epoch``). ``shuffled`` makes a seeded order of the rows.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tapegraph.errors import CallError, TapeError
from tapegraph.program import Program
from tapegraph.shapes import symbols

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

    def where(self, step: int) -> str:
        """``sgd epoch: step 3 (row 17)``: what an error names a step by, with its rows (the first 8 of a batch)."""
        chosen = self.steps[step]
        if self.batch_size is None:
            shown = f"row {chosen}"
        else:
            shown = f"rows {chosen[:8].tolist()}" + ("..." if len(chosen) > 8 else "")
        return f"{self.owner}: step {step} ({shown})"

    def failed(self, step: int, error: TapeError) -> TapeError:
        """``error`` (raised running ``step``) said again with the step and its rows first, of its own class."""
        return type(error)(f"{self.where(step)}: {error}")

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
        try:
            state, objectives[index] = step(state, rows.inputs(index))
        except TapeError as error:  # a kernel failed, or check mode stopped: say at which step
            raise rows.failed(index, error) from error.__cause__
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

    objectives = executable.epoch(state, fixed, data, rows.order, steps, batch, table, hyper_names, rows.where)
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
