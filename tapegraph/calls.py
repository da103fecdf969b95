"""Checking the arrays a call is given against what a program declares.

Every call of a compiled program validates its feeds. The common case is
checked by code generated with each specialisation (``check_lines``):
a few comparisons per feed against its concrete dtype and shape, with
numpy scalars and Python numbers taken for 0-d feeds. The numpy backend
puts those lines at the top of its generated step; ``make_entry`` wraps
them around any other backend's step. Anything else goes to the general
path, which uses ``convert`` and ``check_shape`` here to convert a value
or explain what is wrong: the error names the parameter or input, what it
expects and what it got.
"""

from __future__ import annotations

import difflib
import itertools
import linecache
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tapegraph.errors import CallError
from tapegraph.expr import Node
from tapegraph.shapes import array_type


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
        raise CallError(f"{describe_feed(kind, node)} expects {node.type_str} ({len(declared)} dimension(s)), got an array of {array_type(array)}")
    for axis, (dim, actual) in enumerate(zip(declared, array.shape)):
        if isinstance(dim, str):
            if actual == 0:
                raise CallError(f"{describe_feed(kind, node)} has {dim}=0 (an array of {array_type(array)}): there is nothing "
                                f"to compute on an empty {dim}; give at least one row")
            if dim in sizes and sizes[dim] != actual:
                raise CallError(f"{describe_feed(kind, node)} has {dim}={actual} ({array_type(array)}), but {bound_by[dim]} has {dim}={sizes[dim]}")
            sizes[dim] = actual
            bound_by.setdefault(dim, describe_feed(kind, node))
        elif dim != actual:
            raise CallError(f"{describe_feed(kind, node)} expects {node.type_str}, got an array of {array_type(array)} (axis {axis} differs)")


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
_serial = itertools.count()

#: How a call hands back the step's results ``r``: ``("tuple", ())`` (``r``
#: itself), ``("dict", names)`` (``{name: r[0], ...}``), ``("value, dict",
#: names)`` (``r[0], {name: r[1], ...}``: value_and_grad) or ``("dict,
#: value", names)`` (``{name: r[1], ...}, r[0]``: an SGD step).
Packing = tuple[str, tuple[str, ...]]

#: The builtins check code calls: a function holding the checks must not
#: have a local (say, a feed's argument) of one of these names.
CHECK_BUILTINS = frozenset({"type", "len", "float", "int", "Exception", "TypeError", "OverflowError", "ValueError"})

Feed = tuple[str, bool, np.dtype, tuple[int, ...]]

#: The parameters of every generated entry: the hyperparameter values an
#: optimizer passes apart from the inputs (None from a program's own
#: calls), the call's two dicts, and the tuple of feeds the general path
#: has checked and converted already (see ``check_lines``). The values
#: come first so that an optimizer step can bind its own to the entry
#: (``types.MethodType(entry, values)``, see ``optim.step.SGDStep``).
ENTRY_PARAMETERS = "r0_hypers, r0_params, r0_inputs=None, r0_arrays=None"

#: The entry an SGD step calls also takes keyword arguments: the call
#: overriding its hyperparameters (``step(params, inputs, step_size=0.1)``).
ENTRY_OVERRIDES = ", **r0_overrides"


def entry_parameters(overrides: bool = False) -> str:
    """The parameter list of a generated entry; with ``overrides``, it takes keyword arguments too."""
    return ENTRY_PARAMETERS + (ENTRY_OVERRIDES if overrides else "")


def pack_expression(packing: Packing, results: str) -> str:
    """Python source of what a call returns, from the tuple named ``results``."""
    layout, names = packing
    if layout == "tuple":
        return results
    offset = 0 if layout == "dict" else 1
    entries = ", ".join(f"{name!r}: {results}[{index}]" for index, name in enumerate(names, start=offset))
    if layout == "dict":
        return f"{{{entries}}}"
    if layout == "value, dict":
        return f"({results}[0], {{{entries}}})"
    if layout == "dict, value":
        return f"({{{entries}}}, {results}[0])"
    raise ValueError(f"unknown packing {layout!r}")


def check_lines(feeds: Sequence[Feed], variables: Sequence[str], donated: Collection[str] = (),
                numbers: Collection[str] = (), indent: str = "        ", overlap: bool = False,
                hypers: Collection[str] = (), overrides: bool = False) -> list[str]:
    """The statements that check one specialisation's arguments, generated with it.

    They run first in a function of ``entry_parameters(overrides)``.
    The general path, which has checked and converted the arguments
    itself, passes them as the tuple ``r0_arrays``: they are unpacked into
    the variables unchecked. Otherwise (``r0_arrays`` is None) they take
    each feed (name, is it a parameter, dtype, concrete shape) from its
    dict into its variable in ``variables``, and return
    ``r0_fallback(r0_params, r0_inputs)`` unless every one is what this
    specialisation runs on: an ndarray of exactly that dtype and shape, or
    for a 0-d feed a numpy scalar of that dtype (what ``Y[i]`` gives) or a
    Python number of its kind, turned into a 0-d array. The fallback is
    the general path, which converts what it can and explains the rest, so
    the error texts are the general path's. Check mode
    (``r0_checking()``) also goes there. A ``donated`` parameter must also
    be writable, and is never converted: the step writes into the array
    the caller gave. A float64 feed in ``numbers`` (one the step reads only
    as ``float(feed)``) takes a Python float or ``np.float64`` as it is.
    With ``overlap`` (and ``donated``), the last lines decide by
    identities alone that no donated array shares memory with another
    feed: each donated array owns its memory, none is given twice, and no
    other feed is one of them or a view of one. Where that does not hold,
    they call ``r0_overlap(r0_params, r0_inputs)``, which looks closer and
    raises if memory is shared. (The general path calls it itself.)
    The hyperparameter feeds named in ``hypers`` come instead in the
    tuple ``r0_hypers``, in the order of ``feeds`` (an optimizer passes the
    values it has checked itself, which saves merging them into the
    inputs); a float serves each at once. When ``r0_hypers`` is None they
    are looked for in the inputs, on the general path. The general path
    is given them merged into the inputs: ``r0_fallback(r0_params,
    r0_inputs, r0_hypers)`` (see ``check_namespace``). With ``overrides``,
    keyword arguments (``r0_overrides``, see ``entry_parameters``) go
    first to ``r0_override(r0_hypers, r0_params, r0_inputs,
    r0_overrides)``, the optimizer's check of hyperparameters overridden
    for one call.
    The dtypes and numpy scalar types are ``r0_dtype<i>``, ``r0_scalar<i>``
    (see ``check_namespace``).
    """
    fallback = "return r0_fallback(r0_params, r0_inputs, r0_hypers)"
    lines = []
    if overrides:
        lines += ["if r0_overrides:  # hyperparameters given for this call",
                  "    return r0_override(r0_hypers, r0_params, r0_inputs, r0_overrides)"]
    lines += [
        "if r0_inputs is None:",
        "    r0_inputs = {}",
        "if r0_checking():",
        f"    {fallback}",
    ]
    given = [(variable, feed) for variable, feed in zip(variables, feeds) if feed[0] not in hypers or feed[1]]
    passed = [variable for variable, feed in zip(variables, feeds) if feed[0] in hypers and not feed[1]]
    lines.append("try:")
    for variable, (name, is_param, _, _) in given:
        lines.append(f"    {variable} = {'r0_params' if is_param else 'r0_inputs'}[{name!r}]")
    if passed:
        # None (not passed: they are in the inputs) or a wrong length raises: the general path
        lines.append(f"    {''.join(variable + ', ' for variable in passed)}= r0_hypers")
    lines += [
        f"    if len(r0_params) + len(r0_inputs) != {len(given)}:  # a name this call does not take",
        f"        {fallback}",
        "except Exception:  # not a dict, a name missing: the general path says which",
        f"    {fallback}",
    ]
    for index, (variable, (name, is_param, dtype, shape)) in enumerate(zip(variables, feeds)):
        # (a 0-d array's ndim is read faster than its shape)
        shape_differs = f"{variable}.ndim" if shape == () else f"{variable}.shape != {shape!r}"
        exact = f"type({variable}) is not r0_ndarray or {variable}.dtype is not r0_dtype{index} or {shape_differs}"
        if is_param and name in donated:
            lines += [f"if {exact} or not {variable}.flags.writeable:", f"    {fallback}"]
            continue
        python_type = {"f": "float", "i": "int", "u": "int"}.get(dtype.kind) if shape == () else None
        if python_type is None:
            lines += [f"if {exact}:", f"    {fallback}"]
        elif name in numbers and dtype == np.float64:
            # read only as float(feed): a float is as good as a 0-d array; a
            # float is tested first where one is expected (a hyperparameter)
            not_float = f"type({variable}) is not float"
            not_scalar = f"type({variable}) is not r0_scalar{index}"
            if variable in passed:
                lines.append(f"if {not_float} and ({exact}) and {not_scalar}:")
            elif is_param:  # most often the 0-d array a step returned
                lines.append(f"if ({exact}) and {not_scalar} and {not_float}:")
            else:  # most often a numpy scalar, what Y[i] gives
                lines.append(f"if {not_scalar} and {not_float} and ({exact}):")
            lines.append(f"    {fallback}")
        else:
            # X[i] of a 1-D array gives its numpy scalar: exactly the dtype
            lines += [f"if {exact}:",
                      f"    if type({variable}) is r0_scalar{index}:",
                      f"        {variable} = r0_asarray({variable})",
                      f"    elif type({variable}) is {python_type}:",
                      "        try:",
                      f"            {variable} = r0_asarray({variable}, r0_dtype{index})",
                      "        except (OverflowError, ValueError):  # an int too large for the dtype",
                      f"            {fallback}",
                      "    else:",
                      f"        {fallback}"]
    if overlap and donated:
        lines += overlap_lines(feeds, variables, donated, numbers)
    unpack = "".join(variable + ", " for variable in variables) or "_"
    bypass = ["if r0_arrays is not None:  # the general path: checked and converted already",
              f"    {unpack} = r0_arrays",
              "else:"]
    return [indent + line for line in bypass + ["    " + line for line in lines]]


def overlap_lines(feeds: Sequence[Feed], variables: Sequence[str], donated: Collection[str],
                  numbers: Collection[str]) -> list[str]:
    """The test of ``check_lines`` that no donated array overlaps another feed.

    It runs after the type checks, so each feed has its concrete dtype
    and shape, each donated one is an ndarray, and every other one an
    ndarray or (a feed in ``numbers``) a number, which shares no memory.
    Two feeds can be one object only if their dtypes and shapes agree, so
    only those pairs are compared; a view's ``base`` is the array that
    owns its memory, so one attribute per other feed is compared with the
    donated arrays.
    """
    mine = [(variable, (dtype, shape)) for variable, (name, is_param, dtype, shape) in zip(variables, feeds)
            if is_param and name in donated]
    others = [(variable, (dtype, shape), name in numbers) for variable, (name, is_param, dtype, shape)
              in zip(variables, feeds) if not (is_param and name in donated)]
    owned = [f"{variable}.base is not None" for variable, _ in mine]
    owned += [f"{first} is {second}" for index, (first, kind) in enumerate(mine)
              for second, other in mine[index + 1:] if other == kind]
    lines = [f"if {' or '.join(owned)}:  # not each its own memory: look closer",
             "    r0_overlap(r0_params, r0_inputs)"]
    for variable, kind, maybe_number in others:
        tests = [f"r0_base is {owner}" for owner, _ in mine]
        tests += [f"{variable} is {owner}" for owner, owner_kind in mine if owner_kind == kind]
        test = f"if {' or '.join(tests)}:  # {variable} may be or view a donated array: look closer"
        lines += [f"r0_base = {variable}.base", test, "    r0_overlap(r0_params, r0_inputs)"]
        if maybe_number:  # a number (type float or a numpy scalar) shares no memory
            lines = lines[:-3] + [f"if type({variable}) is r0_ndarray:"] + ["    " + line for line in lines[-3:]]
    return lines


def check_namespace(feeds: Sequence[Feed], fallback: Callable, checking: Callable[[], bool],
                    overlap: Callable[[Any, Any], None] | None = None,
                    hypers: Collection[str] = (), override: Callable | None = None) -> dict[str, Any]:
    """The values of the names ``check_lines`` uses (all but the entry's parameters).

    ``fallback(params, inputs)`` is the general path; it is given the
    hyperparameters of ``hypers`` merged into the inputs when they were
    passed apart. ``overlap(params, inputs)`` raises if a donated array
    shares memory with another feed (``check_lines(..., overlap=True)``
    calls it). ``override(values, params, inputs, overrides)`` runs a
    call that overrides hyperparameters (``check_lines(...,
    overrides=True)`` calls it).
    """
    passed = tuple(name for name, is_param, _, _ in feeds if name in hypers and not is_param)

    def general(params: Any, inputs: Any, values: Any = None) -> Any:
        return fallback(params, inputs if values is None else with_hypers(inputs, passed, values))

    namespace: dict[str, Any] = {"r0_fallback": general, "r0_checking": checking,
                                 "r0_ndarray": np.ndarray, "r0_asarray": np.asarray}
    if overlap is not None:
        namespace["r0_overlap"] = overlap
    if override is not None:
        namespace["r0_override"] = override
    for index, (_, _, dtype, _) in enumerate(feeds):
        namespace[f"r0_dtype{index}"] = np.dtype(dtype)
        namespace[f"r0_scalar{index}"] = np.dtype(dtype).type
    return namespace


def with_hypers(inputs: Any, names: Sequence[str], values: Any) -> Any:
    """The inputs with hyperparameter values (a sequence, one per name) added.

    Inputs that are not a dict are left as they are: the general path
    explains them. A ``values`` that does not hold one value per name is
    a programming error of the optimizer, said as such.
    """
    values = tuple(values)
    if len(values) != len(names):
        raise ValueError(f"hyperparameters {list(names)} were given {len(values)} value(s)")
    merged = dict(zip(names, values))
    if inputs is None:
        return merged
    if isinstance(inputs, Mapping):
        return {**inputs, **merged}
    return inputs


def entry_source(feeds: Sequence[Feed], packing: Packing = ("tuple", ()), donated: Collection[str] = (),
                 numbers: Collection[str] = (), names: Sequence[str] = (), overlap: bool = False,
                 hypers: Collection[str] = (), overrides: bool = False) -> str:
    """Python source of ``make(r0_step, r0_failure, <names>)``, which returns an entry.

    The entry ``enter(<entry_parameters(overrides)>)`` runs ``check_lines`` and then
    ``r0_step`` on the feeds, in order; a failure inside the step comes out
    as ``r0_failure(error)``, and what it returns is packed as ``packing``
    says. This is the entry for a backend whose step takes the feeds as
    arguments; a backend may instead put the checks at the top of its own
    generated step (the numpy backend does, saving a call).
    """
    variables = [f"a{index}" for index in range(len(feeds))]
    lines = [
        f"def make({', '.join(['r0_step', 'r0_failure', *names])}):",
        f"    def enter({entry_parameters(overrides)}):",
        *check_lines(feeds, variables, donated, numbers, overlap=overlap, hypers=hypers, overrides=overrides),
        "        try:",
        f"            r0_results = r0_step({', '.join(variables)})",
        "        except Exception as error:",
        "            raise r0_failure(error) from error",
        f"        return {pack_expression(packing, 'r0_results')}",
        "    return enter",
        "",
    ]
    return "\n".join(lines)


def make_entry(feeds: Sequence[Feed], step: Callable, failure: Callable, fallback: Callable,
               checking: Callable[[], bool], packing: Packing = ("tuple", ()), donated: Collection[str] = (),
               numbers: Collection[str] = (), overlap: Callable[[Any, Any], None] | None = None,
               hypers: Collection[str] = (), override: Callable | None = None) -> Callable:
    """Compile ``entry_source``: the entry of one specialisation whose step takes the feeds as arguments."""
    namespace = check_namespace(feeds, fallback, checking, overlap, hypers, override)
    text = entry_source(feeds, packing, donated, numbers, list(namespace), overlap is not None, hypers,
                        override is not None)
    filename = f"<tapegraph call check {next(_serial)}>"
    # registered so that tracebacks through the entry show its lines
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    scope: dict[str, Any] = {}
    exec(compile(text, filename, "exec"), scope)
    return scope["make"](step, failure, *namespace.values())
