"""Backends: how a specialised tape runs.

A backend translates a tape, and decides nothing the tape does not say.
Its protocol is small (see ``Backend``): bind a specialised tape to an
executable, which runs it on the caller's arrays and maps a failure back
to the instruction that raised it. ``numpy`` (straight-line numpy code
over preallocated buffers) is the default and the reference; ``native``
(numba code, a whole epoch per call: ``backends/native.py``) needs the
extra ``tapegraph[native]``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from tapegraph.compile.emit import Return
from tapegraph.compile.tape import Tape
from tapegraph.errors import TapeError

__all__ = ["Backend", "Executable", "Return", "backend_note", "check_finite", "checking", "checking_now", "get_backend"]


class Executable(Protocol):
    """A specialised tape bound to what runs it."""

    #: The tape it runs.
    tape: Tape

    def function(self, check: bool = False) -> Callable:
        """The step: one array per feed in, the results out as the tape's ``returns`` say."""

    def failure(self, error: Exception) -> TapeError:
        """``error``, raised while running, as a ``TapeError`` naming its instruction."""


class Backend(Protocol):
    """Turns specialised tapes into executables."""

    #: The name ``tg.compile(..., backend=NAME)`` selects it by.
    name: str

    def bind(self, tape: Tape, feed_order: Sequence[str]) -> Executable:
        """An executable of ``tape`` whose step takes the feeds in ``feed_order``."""


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a clear error for an unknown one."""
    if name == "numpy":
        from tapegraph.backends.numpy import NUMPY
        return NUMPY
    if name == "native":
        from tapegraph.backends.native import NATIVE, require_numba
        require_numba()  # without numba, say which extra to install now, at compile time
        return NATIVE
    raise ValueError(f"unknown backend {name!r}; the backends are ['numpy', 'native']")


def backend_note(backend: Backend) -> str:
    """What a dump's title adds for a backend other than numpy: ``"; native backend"``."""
    return "" if backend.name == "numpy" else f"; {backend.name} backend"


_checking: contextvars.ContextVar[bool] = contextvars.ContextVar("tapegraph_check_finite", default=False)


@contextlib.contextmanager
def check_finite(enabled: bool = True) -> Iterator[None]:
    """Check mode: stop at the first instruction that produces NaN or infinity.

    Inside the ``with`` block, every program call and SGD step runs a
    version of its tape that tests each instruction's result, and raises
    ``NonFiniteError`` naming the instruction (op, slot, the expression's
    name or source line) and what its operands held; numpy's warnings
    about invalid values, which that error replaces, are silenced. Outside
    the block the fast version runs: it has no tests in it at all.

    >>> import numpy as np, tapegraph as tg
    >>> x = tg.param("x", shape=(2,))
    >>> prog = tg.compile(tg.sum(tg.log(x, name="log x")), wrt=[x])
    >>> with tg.check_finite():
    ...     prog.value_and_grad({"x": np.array([1.0, -1.0])})
    Traceback (most recent call last):
    ...
    tapegraph.errors.NonFiniteError: forward instruction 0 (log, from log x) produced f64[2] [0, nan]:
      0  s2:f64[2]          = log s0                              # %1 log x
      operand 0 (s0, %0): f64[2] [1, -1]
    """
    token = _checking.set(enabled)
    try:
        yield
    finally:
        _checking.reset(token)


def checking() -> bool:
    """True inside ``check_finite()``."""
    return _checking.get()


#: ``checking`` without a Python function's frame: the context variable's
#: own getter, which every generated entry calls first (0.03 us less a call).
checking_now: Callable[[], bool] = _checking.get
