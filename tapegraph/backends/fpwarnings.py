"""numpy's floating-point warnings from a tape, attributed to the user's line.

numpy warns from the frame that called the ufunc, which for a tape is a
line of generated code (``<tapegraph tape 44>:4``): no use to a user. So
a call runs under ``np.errstate`` with numpy's ``"call"`` mode for the
categories that warn by default (divide, overflow, invalid), and the
callback does what the caller's own settings ask, with a better message
and location:

- ``"warn"``: ``warnings.warn_explicit`` at the first frame outside
  tapegraph and its generated code (the user's line), with the
  instruction and the node it computes in the message, through that
  frame's warning registry, so the usual filters ("default": once per
  line) apply as they would to any warning;
- ``"raise"``: ``FloatingPointError`` (which the call reports as a
  ``TapeError`` naming the instruction);
- ``"ignore"``, ``"call"``, ``"print"``, ``"log"``: as numpy would.

The caller's settings are read only when numpy reports something, from a
copy of the caller's context taken when the call starts, so a call that
warns about nothing pays for one ``np.errstate`` and no more. Underflow
keeps the caller's mode (numpy ignores it by default; calling back on
every underflow would cost a Python call each time).
"""

from __future__ import annotations

import contextvars
import os
import sys
import warnings
from typing import Any

import numpy as np

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_GENERATED_PREFIX = "<tapegraph tape"

#: numpy's names for what happened, and the ``np.geterr`` key of each.
_CATEGORY = {"divide by zero": "divide", "overflow": "over", "underflow": "under", "invalid value": "invalid"}


class _Report:
    """numpy's error callback for one call of one executable."""

    __slots__ = ("executable", "outer")

    def __init__(self, executable: Any, outer: contextvars.Context) -> None:
        self.executable = executable
        #: The caller's context, whose ``np.geterr`` says what the caller asked for.
        self.outer = outer

    def __call__(self, kind: str, flag: int) -> None:
        mode = self.outer.run(np.geterr).get(_CATEGORY.get(kind, "invalid"), "warn")
        if mode == "ignore":
            return
        if mode == "call":
            self.outer.run(np.geterrcall)(kind, flag)
            return
        user, where = _locate(self.executable, sys._getframe(1))
        message = f"{kind} encountered in {where}"
        if mode == "raise":
            raise FloatingPointError(message)
        if mode == "print":
            print(f"Warning: {message}")
            return
        if mode == "log":
            self.outer.run(np.geterrcall).write(f"Warning: {message}\n")
            return
        if user is None:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return
        registry = user.f_globals.setdefault("__warningregistry__", {})
        # no module_globals: asking a loader for the source fails for some (python -c)
        warnings.warn_explicit(message, RuntimeWarning, user.f_code.co_filename, user.f_lineno,
                               module=user.f_globals.get("__name__"), registry=registry)


def _locate(executable: Any, frame: Any) -> tuple[Any, str]:
    """The user's frame, and the op and instruction that numpy reported from."""
    where = "a tape"
    spans_by_file = getattr(executable, "_spans", {})
    while frame is not None:
        filename = frame.f_code.co_filename
        spans = spans_by_file.get(filename)
        if spans is not None:
            position = next((index for first, last, index in spans if first <= frame.f_lineno <= last), None)
            if position is not None:
                instruction = executable.tape.instructions[position]
                where = f"{instruction.op}: {instruction.section} instruction {position} ({instruction.label})"
        elif not filename.startswith(_PACKAGE_DIR) and not filename.startswith(_GENERATED_PREFIX):
            return frame, where
        frame = frame.f_back
    return None, where


def attributed_warnings(executable: Any) -> np.errstate:
    """The ``np.errstate`` a call of ``executable`` runs under (see the module's docstring)."""
    report = _Report(executable, contextvars.copy_context())
    return np.errstate(divide="call", over="call", invalid="call", call=report)
