"""Exception types.

Every error tapegraph raises on purpose is a ``TapegraphError``; the
subclasses also derive from the built-in exception a user would catch for
that kind of mistake, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class TapegraphError(Exception):
    """Base class of the errors tapegraph raises on purpose."""


class ShapeError(TapegraphError, ValueError):
    """Operand shapes or dtypes do not fit an op (raised when a node is built)."""


class GraphError(TapegraphError, ValueError):
    """The graph handed to ``compile`` or ``grad`` is not well formed."""


class CallError(TapegraphError, ValueError):
    """Arguments given to a compiled program do not match what it expects."""


class TapeError(TapegraphError, RuntimeError):
    """An instruction failed while a tape was running."""


class NonFiniteError(TapeError, FloatingPointError):
    """In check mode (``tg.check_finite()``), an instruction produced NaN or infinity."""


class PersistError(TapegraphError, ValueError):
    """A parameter file cannot be written or read, or does not match what was expected."""


class MissingFileError(PersistError, FileNotFoundError):
    """A file to load does not exist (so ``except FileNotFoundError`` catches it too)."""


class OpError(TapegraphError, ValueError):
    """An op is declared wrongly, its name is taken, or it is not registered where it must be (pickling)."""


class SaveError(PersistError, OSError):
    """A file cannot be written: its folder, permissions, the disk (so ``except OSError`` catches it too)."""


class AllocationError(TapegraphError, MemoryError):
    """A value is too large to allocate (so ``except MemoryError`` catches it too); the message names it."""


class MissingExtraError(TapegraphError, ImportError):
    """An optional capability needs a package that is not installed; the message names the extra to install."""
