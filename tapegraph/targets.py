"""Loading the TARGET of a ``tapegraph`` command: a built-in model or a user's function.

A TARGET is a built-in model name (``linear``, ``ridge``, ``mlp``,
``multiclass``: ``models/catalog.py``, installed as
``tapegraph.models.catalog``), ``path/to/script.py:NAME``
(loaded by file path, with the script's folder on ``sys.path`` while it
loads) or ``package.module:NAME`` (imported, the current folder first).
NAME is a module-level ``tg.Program`` or optimizer (``tg.sgd``,
``tg.adam``, ...), taken as it is, or a function called with no arguments
that returns one of those, a ``(program, params, inputs)`` tuple or an
``(objective, [params...])`` pair, which is compiled. Everything that can
go wrong is a ``TargetError`` with one line saying what; ``sys.path`` and
``sys.modules`` are left as they were.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from tapegraph.errors import TapegraphError
from tapegraph.expr import Node
from tapegraph.optim import Optimizer, SGDStep
from tapegraph.program import Program, compile as compile_program

_RETURN_FORMS = ("a tg.Program, an optimizer (tg.sgd, tg.adam, ...), a (program, params, inputs) tuple, "
                 "or an (objective, [params...]) pair")
#: What a module-level name can be, taken as it is instead of called.
_VALUES = (Program, SGDStep, Optimizer)


class TargetError(Exception):
    """A TARGET that cannot be loaded; the message is one line for the user."""


class Target(NamedTuple):
    """What a TARGET argument names, loaded."""

    #: The TARGET as typed, for messages and titles.
    text: str
    program: Program
    #: Arrays the target came with (built-in models, ``(program, params, inputs)``), else None.
    params: dict[str, Any] | None
    inputs: dict[str, Any] | None
    #: The SGD step size the target trains with, if it has one.
    step_size: float | None
    #: The optimizer the target named (``tg.adam(prog)``, say), whose
    #: program is ``program``; None for other targets.
    optimizer: SGDStep | Optimizer | None = None


def builtin_models() -> dict[str, Any]:
    """The built-in models by name (``models/catalog.py``: ``MODELS``), imported when first needed."""
    return homework_models("catalog").MODELS


#: The name the homework's models (``models/`` of the repository) are installed under.
MODELS_PACKAGE = "tapegraph.models"


def homework_models(submodule: str) -> Any:
    """``tapegraph.models.<submodule>``: a module of the homework's models (``models/`` of the repository).

    ``pip install`` puts the folder in ``tapegraph`` as its subpackage
    ``models`` (claiming no top-level name). A tapegraph imported from a
    source checkout, installed or not, takes the ``models/`` beside it,
    under the same name: that one belongs with this tapegraph's code.
    """
    if MODELS_PACKAGE not in sys.modules:
        import tapegraph
        root = os.path.dirname(os.path.dirname(os.path.abspath(tapegraph.__file__)))
        folder = os.path.join(root, "models")
        # pyproject.toml beside it: the repository, not an installed tree
        if os.path.isfile(os.path.join(root, "pyproject.toml")) and os.path.isfile(os.path.join(folder, "__init__.py")):
            spec = importlib.util.spec_from_file_location(MODELS_PACKAGE, os.path.join(folder, "__init__.py"),
                                                          submodule_search_locations=[folder])
            module = importlib.util.module_from_spec(spec)
            sys.modules[MODELS_PACKAGE] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[MODELS_PACKAGE]
                raise
            tapegraph.models = module
    return importlib.import_module(f"{MODELS_PACKAGE}.{submodule}")


def names_a_function(text: str) -> bool:
    """True for ``script.py:function`` or ``module:function``, False for a built-in model name."""
    return ":" in text


def load_target(text: str, *, features: int | None = None, batch: int = 1, seed: int = 0) -> Target:
    """Load a TARGET: a built-in model name, ``path/to/script.py:function`` or ``package.module:function``.

    Built-in models are built with ``features`` input features and ``batch``
    rows of data; a function is called with no arguments. Raises
    ``TargetError`` with one line saying what is wrong.
    """
    if not names_a_function(text):
        models = builtin_models()
        if text not in models:
            if text.endswith(".py"):
                raise TargetError(f"{text!r} names a script but no function in it: write {text}:FUNCTION")
            raise TargetError(f"unknown model {text!r}: the built-in models are {', '.join(models)}; "
                           f"or name a function as path/to/script.py:FUNCTION or package.module:FUNCTION")
        program, params, inputs = homework_models("catalog").build(text, features, batch=batch, seed=seed)
        return Target(text, program, params, inputs, models[text].step_size)
    if features is not None:
        raise TargetError("--features applies to the built-in models only")
    source, _, name = text.rpartition(":")
    if not name.isidentifier():
        raise TargetError(f"TARGET {text!r}: {name!r} after ':' is not a function name")
    if source.endswith(".py") or "/" in source or os.sep in source:
        with _script_path(os.path.dirname(os.path.abspath(source))):
            module = _load_file(source)
            result = _call(module, name, text)
    else:
        with _script_path(os.getcwd()):  # as `python -m` does, so modules next to you are found
            module = _import_module(source)
            result = _call(module, name, text)
    return _interpret(result, text)


@contextlib.contextmanager
def _script_path(folder: str) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the block, so a script can import its neighbours."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _load_file(path: str) -> Any:
    if not os.path.exists(path):
        raise TargetError(f"file {path!r} does not exist")
    if not os.path.isfile(path):
        raise TargetError(f"{path!r} is not a file (expected a Python script)")
    module_name = "_tapegraph_target_" + "".join(c if c.isalnum() else "_" for c in os.path.basename(path)[:-3])
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load {path!r} as a Python script")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module  # some code (dataclasses, pickle) looks its module up here
    try:
        spec.loader.exec_module(module)
    except BaseException as error:  # noqa: BLE001 - the user's script may raise anything, SystemExit too
        raise TargetError(f"running {path!r} failed: {_describe_exception(error)}") from None
    finally:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
    return module


def _import_module(name: str) -> Any:
    if not all(part.isidentifier() for part in name.split(".")):
        raise TargetError(f"{name!r} is not a module name (package.module) nor a path to a .py file")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if name == missing or name.startswith(missing + "."):
            raise TargetError(f"cannot import module {name!r}: no module named {missing!r} "
                           f"(looked in the current folder and the installed packages)") from None
        raise TargetError(f"importing module {name!r} failed: {_describe_exception(error)}") from None
    except BaseException as error:  # noqa: BLE001 - as for scripts
        raise TargetError(f"importing module {name!r} failed: {_describe_exception(error)}") from None


def _call(module: Any, name: str, text: str) -> Any:
    """What ``module.name`` gives: a program or optimizer as it is, else what the function returns."""
    function = getattr(module, name, None)
    if function is None:
        defined = sorted(key for key, value in vars(module).items()
                         if (inspect.isfunction(value) and value.__module__ == module.__name__
                             or isinstance(value, _VALUES))
                         and not key.startswith("_"))
        listing = f"; it defines {', '.join(defined)}" if defined else "; it defines no functions"
        raise TargetError(f"{text.rpartition(':')[0]!r} has no function {name!r}{listing}")
    if isinstance(function, _VALUES):  # an optimizer is callable, but takes a state
        return function
    if not callable(function):
        raise TargetError(f"TARGET {text!r}: {name!r} is a {type(function).__name__}, not a function, "
                          f"a tg.Program or an optimizer")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        signature = None  # some builtins have none; calling them tells
    if signature is not None:
        required = [parameter.name for parameter in signature.parameters.values()
                    if parameter.default is parameter.empty
                    and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)]
        if required:
            raise TargetError(f"TARGET {text!r}: {name}() needs arguments ({', '.join(required)}), "
                           f"but it is called with none")
    try:
        return function()
    except BaseException as error:  # noqa: BLE001 - as for scripts
        raise TargetError(f"calling {name}() of {text!r} failed: {_describe_exception(error)}") from None


def _describe_exception(error: BaseException) -> str:
    """``ValueError: message (at script.py:12)``, on one line."""
    text = " ".join(str(error).split()) or "(no message)"
    summary = f"{type(error).__name__}: {text}"
    frames = traceback.extract_tb(error.__traceback__)
    if frames and not isinstance(error, (TapegraphError, SyntaxError)):  # those name their own line
        summary += f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})"
    return summary


def _interpret(result: Any, text: str) -> Target:
    """A Target from what the function returned, or an error naming what it returned."""
    if isinstance(result, Program):
        return Target(text, result, None, None, None)
    if isinstance(result, (SGDStep, Optimizer)):
        return Target(text, result.program, None, None, getattr(result, "step_size", None), result)
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], Program):
        program, params, inputs = result
        if not isinstance(params, Mapping) or not isinstance(inputs, Mapping):
            raise TargetError(f"{text} returned {_describe_value(result)}; in (program, params, inputs), params and "
                           f"inputs must be dicts of name -> array")
        return Target(text, program, dict(params), dict(inputs), None)
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Node):
        objective, wrt = result
        if isinstance(wrt, (str, Node)) or not isinstance(wrt, Sequence) or not all(
                isinstance(param, Node) for param in wrt):
            raise TargetError(f"{text} returned {_describe_value(result)}; in (objective, [params...]), the second "
                           f"item must be a list of tg.param nodes")
        try:
            program = compile_program(objective, wrt=list(wrt))
        except (TapegraphError, TypeError, ValueError) as error:
            raise TargetError(f"{text} returned an objective that does not compile: {error}") from None
        return Target(text, program, None, None, None)
    raise TargetError(f"{text} returned {_describe_value(result)}; expected {_RETURN_FORMS}")


def _describe_value(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, tuple):
        return f"a tuple ({', '.join(type(item).__name__ for item in value)})"
    return f"an object of type {type(value).__name__}"
