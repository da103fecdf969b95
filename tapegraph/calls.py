"""Checking the arrays a call is given against what a program declares.

Every call of a compiled program validates its feeds; the common case (an
array of the declared dtype and shape) is a few comparisons, and anything
else comes here to be converted or explained: the error names the
parameter or input, what it expects and what it got.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tapegraph.errors import CallError
from tapegraph.expr import Node
from tapegraph.shapes import format_shape


def count(mapping: Any) -> int:
    if type(mapping) is dict:  # the usual case, without an ABC check
        return len(mapping)
    return len(mapping) if isinstance(mapping, Mapping) else 0


def did_you_mean(names: Iterable[Any], known: Iterable[str]) -> str:
    """`` (did you mean 'weights'?)`` for names close to a known one, else ``""``."""
    known = list(known)
    guesses = []
    for name in names:
        if isinstance(name, str):
            guesses += [match for match in difflib.get_close_matches(name, known, n=1) if match not in guesses]
    if not guesses:
        return ""
    return " (did you mean " + " or ".join(repr(guess) for guess in guesses) + "?)"


def describe_feed(kind: str, node: Node) -> str:
    return f"{'parameter' if kind == 'param' else 'input'} {node.name!r}"


def convert(kind: str, node: Node, value: Any) -> np.ndarray:
    """Turn a given value into an array for ``node``, or say why not."""
    declared = np.dtype(node.dtype)
    if isinstance(value, Node):
        raise CallError(f"{describe_feed(kind, node)} got a tapegraph node; pass a numpy array of {node.type_str}")
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray and not isinstance(value, np.memmap):
        _refuse_subclass(kind, node, value)
    try:
        array = np.asarray(value)
    except Exception as error:  # numpy raises several kinds for odd objects
        raise CallError(f"{describe_feed(kind, node)} expects an array of {node.type_str}, got {type(value).__name__}: {error}") from None
    is_number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if array.dtype.kind in "OSUV" or array.dtype.kind == "b" and not isinstance(value, np.ndarray):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise CallError(f"{describe_feed(kind, node)} expects an array of {node.type_str}, got {type(value).__name__} {shown}")
    if declared.kind == "f":
        if array.dtype.kind == "f" or (is_number and array.dtype.kind in "iu"):
            return array.astype(declared, copy=False)
        raise CallError(f"{describe_feed(kind, node)} expects floating-point data ({node.type_str}), got an array of dtype {array.dtype}"
                        + ("; convert integer data with .astype(float)" if array.dtype.kind in "iub" else ""))
    if declared.kind in "iu":
        if array.dtype.kind in "iu":
            if not np.can_cast(array.dtype, declared):
                _check_integers_fit(kind, node, array, declared)
            return array.astype(declared, copy=False)
        raise CallError(f"{describe_feed(kind, node)} expects integer data ({node.type_str}), such as class labels, got dtype {array.dtype}")
    return array.astype(declared, copy=False)


def check_shape(kind: str, node: Node, array: np.ndarray, sizes: dict[str, int], bound_by: dict[str, str] | None = None) -> None:
    """Check an array against a declared shape, binding symbolic sizes."""
    bound_by = {} if bound_by is None else bound_by
    declared = node.shape
    if array.ndim != len(declared):
        raise CallError(f"{describe_feed(kind, node)} expects shape {format_shape(declared)} ({len(declared)} dimension(s)), got an array of shape {array.shape}")
    for axis, (dim, actual) in enumerate(zip(declared, array.shape)):
        if isinstance(dim, str):
            if actual == 0:
                raise CallError(f"{describe_feed(kind, node)} has {dim}=0 (an array of shape {array.shape}): there is nothing "
                                f"to compute on an empty {dim}; give at least one row")
            if dim in sizes and sizes[dim] != actual:
                raise CallError(f"{describe_feed(kind, node)} has {dim}={actual} (shape {array.shape}), but {bound_by[dim]} has {dim}={sizes[dim]}")
            sizes[dim] = actual
            bound_by.setdefault(dim, describe_feed(kind, node))
        elif dim != actual:
            raise CallError(f"{describe_feed(kind, node)} expects shape {format_shape(declared)}, got an array of shape {array.shape} (axis {axis} differs)")


def _refuse_subclass(kind: str, node: Node, value: np.ndarray) -> None:
    """An array subclass carries meaning (a mask, matrix semantics, units)
    that a plain array would drop, so it is refused rather than converted."""
    if isinstance(value, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(value))
        raise CallError(f"{describe_feed(kind, node)} got a masked array ({masked} of {value.size} entries masked); "
                        "tapegraph would use the masked values: pass .filled(value) with the value masked entries "
                        "should take, or leave the masked rows out")
    kind_name = f"{type(value).__module__.split('.')[0]}.{type(value).__qualname__}"
    raise CallError(f"{describe_feed(kind, node)} got a {kind_name}, an array subclass whose meaning tapegraph "
                    f"would not keep; pass np.asarray(...) of it if plain numbers are meant")


def _check_integers_fit(kind: str, node: Node, array: np.ndarray, declared: np.dtype) -> None:
    """Refuse integers that ``declared`` cannot hold: ``astype`` would wrap
    them (2**64 - 1 becoming the label -1, or 300 the valid label 44)."""
    if array.size == 0:
        return
    limits = np.iinfo(declared)
    outside = (array < limits.min) | (array > limits.max)
    if outside.any():
        position = int(np.flatnonzero(outside)[0])
        where = "" if array.ndim == 0 else f" (at index {tuple(int(i) for i in np.unravel_index(position, array.shape))})"
        raise CallError(f"{describe_feed(kind, node)} expects integer data ({node.type_str}): "
                        f"{array.flat[position]}{where} does not fit in {declared}")
