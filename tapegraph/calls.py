"""Checking the arrays a call is given against what a program declares.

Every call of a compiled program validates its feeds; the common case (an
array of the declared dtype and shape) is a few comparisons, and anything
else comes here to be converted or explained: the error names the
parameter or input, what it expects and what it got.
"""

from __future__ import annotations

import itertools
import linecache
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.errors import CallError
from tapegraph.expr import Node
from tapegraph.shapes import format_shape


def count(mapping: Any) -> int:
    if type(mapping) is dict:  # the usual case, without an ABC check
        return len(mapping)
    return len(mapping) if isinstance(mapping, Mapping) else 0


def describe_feed(kind: str, node: Node) -> str:
    return f"{'parameter' if kind == 'param' else 'input'} {node.name!r}"


def convert(kind: str, node: Node, value: Any) -> np.ndarray:
    """Turn a given value into an array for ``node``, or say why not."""
    declared = np.dtype(node.dtype)
    if isinstance(value, Node):
        raise CallError(f"{describe_feed(kind, node)} got a tapegraph node; pass a numpy array of {node.type_str}")
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


_serial = itertools.count()

#: Names the generated entry uses for itself; its feed variables are ``a0``, ``a1``, ...
_ENTRY_GLOBALS = ("step", "failure", "fallback", "checking", "ndarray", "asarray")


def entry_source(feeds: Sequence[tuple[str, bool, np.dtype, tuple[int, ...]]], packing: str = "r",
                 donated: Collection[str] = (), numbers: Collection[str] = ()) -> str:
    """Python source of ``make(...)``, which returns the entry of one specialisation.

    ``feeds`` holds (name, is it a parameter, dtype, concrete shape) per
    feed, in the order the step takes them. The entry
    ``enter(params, inputs)`` takes each feed from its dict and, when every
    one is what this specialisation runs on (an ndarray of exactly that
    dtype and shape, or for a 0-d feed a Python number or numpy scalar of
    its kind, turned into a 0-d array), calls ``step`` on them; a failure
    inside the step comes out as ``failure(error)``; what it returns is
    ``packing``, an expression over the step's results ``r``. Anything else (a
    missing or unknown name, another dtype or shape, check mode) goes to
    ``fallback(params, inputs)``, the general path that converts what it
    can and explains the rest, so the error texts are the general path's.
    A ``donated`` parameter must also be writable, and is never converted:
    the step writes into the array the caller gave. A float64 feed in
    ``numbers`` (one the step reads only as ``float(feed)``) takes a Python
    float or ``np.float64`` as it is, with no conversion at all.
    """
    dtypes = [f"dtype{index}" for index in range(len(feeds))]
    scalars = [f"scalar{index}" for index in range(len(feeds))]
    lines = [
        f"def make({', '.join([*_ENTRY_GLOBALS, *dtypes, *scalars])}):",
        "    def enter(params, inputs):",
        "        if inputs is None:",
        "            inputs = {}",
        "        if checking():",
        "            return fallback(params, inputs)",
    ]
    if feeds:
        lines.append("        try:")
        for index, (name, is_param, _, _) in enumerate(feeds):
            lines.append(f"            a{index} = {'params' if is_param else 'inputs'}[{name!r}]")
        lines += ["        except Exception:  # not a dict, a name missing: the general path says which",
                  "            return fallback(params, inputs)"]
    lines += [
        "        try:",
        f"            if len(params) + len(inputs) != {len(feeds)}:  # a name this call does not take",
        "                return fallback(params, inputs)",
        "        except TypeError:  # not a dict",
        "            return fallback(params, inputs)",
    ]
    for index, (name, is_param, dtype, shape) in enumerate(feeds):
        variable = f"a{index}"
        exact = f"type({variable}) is not ndarray or {variable}.dtype is not dtype{index} or {variable}.shape != {shape!r}"
        if is_param and name in donated:
            lines += [f"        if {exact} or not {variable}.flags.writeable:",
                      "            return fallback(params, inputs)"]
            continue
        lines.append(f"        if {exact}:")
        python_type = {"f": "float", "i": "int", "u": "int"}.get(dtype.kind) if shape == () else None
        if python_type is None:
            lines.append("            return fallback(params, inputs)")
        elif name in numbers and dtype == np.float64:
            # read only as float(feed): a float is as good as a 0-d array
            lines += [f"            if type({variable}) is not scalar{index} and type({variable}) is not float:",
                      "                return fallback(params, inputs)"]
        else:
            # X[i] of a 1-D array gives its numpy scalar: exactly the dtype
            lines += [f"            if type({variable}) is scalar{index}:",
                      f"                {variable} = asarray({variable})",
                      f"            elif type({variable}) is {python_type}:",
                      "                try:",
                      f"                    {variable} = asarray({variable}, dtype{index})",
                      "                except (OverflowError, ValueError):  # an int too large for the dtype",
                      "                    return fallback(params, inputs)",
                      "            else:",
                      "                return fallback(params, inputs)"]
    arguments = ", ".join(f"a{index}" for index in range(len(feeds)))
    lines += [
        "        try:",
        f"            r = step({arguments})",
        "        except Exception as error:",
        "            raise failure(error) from error",
        f"        return {packing}",
        "    return enter",
        "",
    ]
    return "\n".join(lines)


def make_entry(feeds: Sequence[tuple[str, bool, np.dtype, tuple[int, ...]]], step: Callable, failure: Callable,
               fallback: Callable, checking: Callable[[], bool], packing: str = "r",
               donated: Collection[str] = (), numbers: Collection[str] = ()) -> Callable:
    """Compile ``entry_source(feeds, packing, donated, numbers)``: the entry of one specialisation."""
    text = entry_source(feeds, packing, donated, numbers)
    namespace: dict[str, Any] = {}
    filename = f"<tapegraph call check {next(_serial)}>"
    # registered so that tracebacks through the entry show its lines
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    exec(compile(text, filename, "exec"), namespace)
    dtypes = [np.dtype(dtype) for _, _, dtype, _ in feeds]
    scalars = [dtype.type for dtype in dtypes]
    return namespace["make"](step, failure, fallback, checking, np.ndarray, np.asarray, *dtypes, *scalars)
