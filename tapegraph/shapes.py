"""Shapes with symbolic dimensions, broadcasting, and the short type names.

A shape is a tuple of dimensions; a dimension is an ``int`` or a ``str``
naming a size that is only known when a program is called (``"batch"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Dim = int | str
Shape = tuple[Dim, ...]

_SHORT_DTYPE = {
    "float64": "f64",
    "float32": "f32",
    "float16": "f16",
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "uint8": "u8",
    "bool": "bool",
}


def as_shape(shape: Sequence[Dim] | int) -> Shape:
    """Normalise a user's shape to a tuple of ints and symbol names.

    >>> as_shape(("batch", 400))
    ('batch', 400)
    """
    if isinstance(shape, str):
        # shape=("batch") is the string "batch": iterating it would give
        # five symbolic dimensions b, a, t, c, h
        hint = (f"for one symbolic dimension write shape=({shape!r},) (with the comma)" if shape.isidentifier()
                else "write a tuple such as shape=(3,) or shape=('batch', 3)")
        raise ValueError(f"shape {shape!r} is a string, not a tuple of dimensions; {hint}")
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise ValueError(f"shape {shape!r} is not a tuple of dimensions; write one such as shape=(3,) or shape=('batch', 3)")
    dims = []
    for dim in shape:
        if isinstance(dim, str):
            if not dim.isidentifier():
                raise ValueError(f"symbolic dimension {dim!r} must be an identifier, like 'batch'")
            dims.append(dim)
        elif isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 0:
            dims.append(int(dim))
        else:
            raise ValueError(f"dimension {dim!r} in shape {tuple(shape)!r} is neither a size >= 0 nor a symbol name")
    return tuple(dims)


def is_concrete(shape: Shape) -> bool:
    """True when no dimension of ``shape`` is symbolic."""
    return all(isinstance(dim, int) for dim in shape)


def symbols(shape: Shape) -> tuple[str, ...]:
    """The symbolic dimensions of ``shape``, in order."""
    return tuple(dim for dim in shape if isinstance(dim, str))


def substitute(shape: Shape, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """Fill in the symbolic dimensions of ``shape`` from ``sizes``."""
    return tuple(sizes[dim] if isinstance(dim, str) else dim for dim in shape)


def broadcast(*shapes: Shape) -> Shape:
    """numpy's broadcasting rule over shapes that may hold symbols.

    A symbol matches only itself or 1; raises ``ValueError`` otherwise.
    """
    ndim = max((len(shape) for shape in shapes), default=0)
    result: list[Dim] = []
    for axis in range(ndim):
        dim: Dim = 1
        for shape in shapes:
            offset = axis - (ndim - len(shape))
            if offset < 0:
                continue
            other = shape[offset]
            if other == 1 or other == dim:
                continue
            if dim == 1:
                dim = other
            else:
                raise ValueError(f"shapes {', '.join(format_shape(s) for s in shapes)} do not broadcast")
        result.append(dim)
    return tuple(result)


def format_shape(shape: Shape) -> str:
    """``(400,)`` -> ``[400]``, ``('batch', 10)`` -> ``[batch,10]``."""
    return "[" + ",".join(str(dim) for dim in shape) + "]"


def short_dtype(dtype: np.dtype | str) -> str:
    """``float64`` -> ``f64``: the dtype spelling used in dumps."""
    name = np.dtype(dtype).name
    return _SHORT_DTYPE.get(name, name)


def format_type(shape: Shape, dtype: np.dtype | str) -> str:
    """``f64[batch,400]``: the type of a value as dumps and error messages print it."""
    return short_dtype(dtype) + format_shape(shape)


def array_type(array: np.ndarray) -> str:
    """``f64[3,4]``: an array's type in the notation of ``format_type``."""
    return format_type(array.shape, array.dtype)
