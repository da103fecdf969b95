"""The executor: a tape bound to preallocated arrays and kernel closures.

Binding happens once per specialisation; running is copying the caller's
arrays into the feed buffers and ``for thunk in thunks: thunk()``. Nothing
is allocated and no graph is walked per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tapegraph.errors import TapeError
from tapegraph.ops import REGISTRY
from tapegraph.compile.tape import Tape


class Executable:
    """A ``Tape`` bound to arrays: call ``run`` with one array per feed."""

    def __init__(self, tape: Tape, feed_order: Sequence[str] | None = None) -> None:
        """Allocate and bind; ``feed_order`` names the feeds in the order
        ``run`` will get their arrays (default: the tape's order)."""
        self.tape = tape
        self.buffers = [np.empty(buffer.shape, dtype=buffer.dtype) for buffer in tape.buffers]
        for constant in tape.constants:
            np.copyto(self.buffers[constant.slot], constant.array)
        slot_of_feed = {feed.name: feed.slot for feed in tape.feeds}
        if feed_order is None:
            feed_order = [feed.name for feed in tape.feeds]
        self.feed_buffers = tuple(self.buffers[slot_of_feed[name]] for name in feed_order)
        thunks = []
        for instruction in tape.instructions:
            op = REGISTRY[instruction.op]
            static = dict(instruction.static)
            in_shapes = [self.buffers[slot].shape for slot in instruction.inputs]
            scratch = op.workspace(in_shapes, instruction.shape, instruction.dtype, **static) if op.workspace else {}
            thunks.append(op.bind(
                [self.buffers[slot] for slot in instruction.inputs],
                self.buffers[instruction.output],
                {**static, **dict(instruction.derived)},
                scratch,
            ))
        self.thunks = tuple(thunks)
        #: Result name -> the buffer holding it after ``run``.
        self.results = {name: self.buffers[slot] for name, (slot, _) in tape.results.items()}
        #: The same buffers, in the order the roots were given.
        self.result_buffers = tuple(self.results.values())

    def run(self, arrays: Sequence[np.ndarray]) -> None:
        """Copy ``arrays`` (validated by the caller, one per feed) in and run the tape."""
        for buffer, array in zip(self.feed_buffers, arrays):
            np.copyto(buffer, array)
        if not self.thunks:
            return
        try:
            for thunk in self.thunks:
                thunk()
        except Exception as error:
            # the loop variable still names the instruction that failed
            raise self._failure(thunk, error) from error

    def _failure(self, thunk, error: Exception) -> TapeError:
        from tapegraph.compile.dump import format_instruction
        position = next(index for index, candidate in enumerate(self.thunks) if candidate is thunk)
        instruction = self.tape.instructions[position]
        return TapeError(
            f"{instruction.section} instruction {position} failed ({type(error).__name__}: {error}):\n"
            f"  {format_instruction(position, instruction)}")
