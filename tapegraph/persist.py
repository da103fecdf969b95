"""Saving and loading parameters: ``.npz`` files, no pickles, atomic writes.

A file holds one array per parameter, under its name, and one entry
``__tapegraph__``: a JSON text with the format's name and version and the
caller's metadata (say, the hyper-parameters that rebuild a model). Both
directions use ``allow_pickle=False``, so loading a file can never run
code. A save writes a temporary file next to the target, flushes it to
disk and renames it over the target in one step: a crash mid-write leaves
the old file as it was.

>>> import numpy as np, tempfile, os, tapegraph as tg
>>> path = os.path.join(tempfile.mkdtemp(), "ridge.npz")
>>> tg.save_params(path, {"w": np.arange(3.0), "b": np.array(0.5)}, meta={"l2_reg": 1.0})
>>> params, meta = tg.load_params(path, expected={"w": ((3,), "float64"), "b": ((), "float64")})
>>> params["w"], meta
(array([0., 1., 2.]), {'l2_reg': 1.0})
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from tapegraph.errors import MissingFileError, PersistError, SaveError
from tapegraph.shapes import array_type, format_type

__all__ = ["save_params", "load_params", "read_npz", "check_params", "write_atomically", "PersistError",
           "MissingFileError", "SaveError", "META_KEY"]

#: The archive entry holding the metadata (never a parameter name).
META_KEY = "__tapegraph__"
FORMAT = "tapegraph-params"
VERSION = 1

#: ``{name: (shape, dtype)}``, or a compiled program (its parameters).
Expected = Mapping[str, tuple[tuple[int, ...], Any]]

#: dtype kinds that ``.npz`` stores without a pickle and that make sense as parameters.
_NUMERIC_KINDS = "biufc"


def save_params(path: str | os.PathLike, params: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
    """Write ``params`` (name -> array) and JSON-able ``meta`` to ``path`` atomically.

    The arrays are stored as given (shape and dtype kept, 0-d arrays stay
    0-d); object arrays are refused, since they would need a pickle.
    ``path`` is written whole or not at all: the data go to a temporary
    file in the same folder, which is flushed to disk and then renamed over
    ``path``, so its old content survives any failure, and the temporary
    file is removed.

    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> save_params(path, {"w": np.zeros(2)}, meta={"epochs": 3})
    >>> load_params(path)[1]
    {'epochs': 3}
    """
    path = os.fspath(path)
    arrays = _arrays_to_save(params)
    if meta is not None and not isinstance(meta, Mapping):
        raise PersistError(f"cannot save the metadata for {path!r}: it must be a dict of JSON-able values, "
                           f"got {type(meta).__name__}")
    try:
        text = json.dumps({"format": FORMAT, "version": VERSION, "meta": dict(meta or {})}, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise PersistError(f"cannot save the metadata for {path!r}: it must be JSON-able ({error})") from None
    except RecursionError:
        raise PersistError(f"cannot save the metadata for {path!r}: it is nested too deeply to write as JSON") from None
    arrays[META_KEY] = np.array(text)  # a 0-d unicode array: stored as plain .npy text, no pickle
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


def _arrays_to_save(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(params, Mapping):
        raise PersistError(f"save_params needs a dict of name -> array, got {type(params).__name__}")
    arrays = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name or name == META_KEY:
            raise PersistError(f"cannot save parameter name {name!r}: use a non-empty string other than {META_KEY!r}")
        array = np.asarray(value)
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise PersistError(f"cannot save parameter {name!r} of dtype {array.dtype}: only numeric arrays are saved "
                               "(anything else would need a pickle)")
        arrays[name] = array
    return arrays


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(handle)`` on a new file next to ``path``, then rename it over ``path``.

    The file is flushed to disk before the rename, so ``path`` holds either
    its old content or all of the new, whatever happens during ``write``.
    Whatever keeps ``path`` from being written (its folder missing or a
    file, no permission, a full disk) is a ``PersistError`` naming
    ``path`` and the cause, never the temporary file.
    """
    path = os.fspath(path)
    folder = _check_target(path)
    try:
        temporary, descriptor = _create_temporary(path, folder)
    except OSError as error:
        raise _cannot_save(path, error) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if os.path.exists(path):
                # keep the old file's permissions (a private file stays private)
                os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        # also on KeyboardInterrupt: the old file stays, the partial one goes
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _cannot_save(path, error) from None
        raise
    _sync_folder(folder)


def _check_target(path: str) -> str:
    """The folder a file can be saved to at ``path``, or a ``PersistError`` saying why not."""
    if _ends_with_separator(path):
        raise PersistError(f"cannot save to {path!r}: the path ends with a {path[-1]!r}, which names a folder; "
                           f"drop the trailing {path[-1]!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        # the nearest part of the path that exists says what is wrong (named as the caller wrote it)
        existing = os.path.dirname(path)
        while existing and not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if existing and os.path.exists(existing) and not os.path.isdir(existing):
            raise PersistError(f"cannot save to {path!r}: {existing!r} is a file, not a folder")
        raise PersistError(f"cannot save to {path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise PersistError(f"cannot save to {path!r}: it is a folder")
    return folder


def _ends_with_separator(path: str) -> bool:
    return path.endswith(os.sep) or bool(os.altsep) and path.endswith(os.altsep)


def _cannot_save(path: str, error: OSError) -> SaveError:
    reason = error.strerror or str(error)
    hint = "; the folder must be writable" if isinstance(error, PermissionError) else ""
    return SaveError(f"cannot save to {path!r} ({type(error).__name__}: {reason}){hint}")


def _create_temporary(path: str, folder: str) -> tuple[str, int]:
    # os.open with mode 0o666 lets the umask decide the permissions, as for
    # any new file (tempfile's files are private, 0o600, which a saved model should not be)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue


def _sync_folder(folder: str) -> None:
    # make the rename itself durable; not every platform can open a folder
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_params(path: str | os.PathLike, expected: Expected | Any | None = None,
                what: str = "parameter file") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by ``save_params``: ``(params, meta)``.

    With ``expected`` (``{name: (shape, dtype)}``, or a compiled program
    whose parameters the file must hold), every missing name, extra name
    and wrong shape or dtype is reported in one ``PersistError``. A file
    that is missing raises ``MissingFileError`` (a ``PersistError`` and a
    ``FileNotFoundError``); one that is truncated, damaged, not an ``.npz``
    archive or holding pickled objects raises ``PersistError`` (see
    ``read_npz``). Each message names the file and what is wrong, and
    starts with ``what`` (say, ``"model file"``).
    """
    path = os.fspath(path)
    if expected is not None:
        expected = _expected_types(expected)
    arrays = read_npz(path, what=what)
    text = arrays.pop(META_KEY, None)
    if text is None or text.dtype.kind != "U" or text.ndim != 0:
        raise PersistError(f"{what} {path!r} was not written by tapegraph.save_params: it has no "
                           f"{META_KEY!r} entry (it holds {sorted(arrays)})")
    try:
        header = json.loads(str(text))
    except ValueError as error:
        raise PersistError(f"{what} {path!r}: its {META_KEY!r} entry is not valid JSON ({error})") from None
    except RecursionError:
        raise PersistError(f"{what} {path!r}: its {META_KEY!r} entry is not valid JSON for tapegraph "
                           "(it is nested too deeply to read)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PersistError(f"{what} {path!r}: its {META_KEY!r} entry does not describe a {FORMAT} file")
    if header.get("version") != VERSION:
        raise PersistError(f"{what} {path!r} is format version {header.get('version')!r}; "
                           f"this tapegraph reads version {VERSION}")
    meta = header.get("meta") or {}
    if not isinstance(meta, dict):
        raise PersistError(f"{what} {path!r}: its metadata is a {type(meta).__name__}, not a dict")
    if expected is not None:
        check_params(arrays, expected, where=f"{what} {path!r}")
    return arrays, meta


def read_npz(path: str | os.PathLike, what: str = "file") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path``, by name, never unpickling anything.

    Whatever is wrong with the file becomes one clear error that starts
    with ``what`` and the path: ``MissingFileError`` (also a
    ``FileNotFoundError``) for a missing file, ``PersistError`` (also a
    ``ValueError``) for a folder, an empty, truncated or damaged file, a
    single ``.npy`` array, another kind of file, or an entry holding
    pickled objects.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.npz")
    >>> with open(path, "w") as handle:
    ...     _ = handle.write("w = [1, 2]")
    >>> read_npz(path, what="data file")
    Traceback (most recent call last):
    ...
    tapegraph.errors.PersistError: data file '...notes.npz' is not a readable .npz archive (it does not start as a zip archive does)
    """
    path = os.fspath(path)
    if _ends_with_separator(path) and not os.path.isdir(path):
        raise PersistError(f"{what} {path!r}: the path ends with a {path[-1]!r}, which names a folder; "
                           f"drop the trailing {path[-1]!r}")
    if not os.path.exists(path):
        raise MissingFileError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise PersistError(f"{what} {path!r} is a folder, not an .npz file")
    try:
        with open(path, "rb") as handle:
            start = handle.read(6)
            handle.seek(0)
            # numpy gets our handle, so the file is closed even when numpy fails halfway through it
            return _read_members(path, what, start, handle)
    except OSError as error:  # not readable at all (permissions, a device error)
        raise PersistError(f"{what} {path!r} cannot be read ({type(error).__name__}: {error})") from None


def _read_members(path: str, what: str, start: bytes, handle: BinaryIO) -> dict[str, np.ndarray]:
    # numpy's own messages mislead here (a text file "contains pickled data"), so look at the magic bytes first
    if start.startswith(b"\x93NUMPY"):
        raise PersistError(f"{what} {path!r} holds a single array, not an .npz archive (it is an .npy file)")
    if not start.startswith(b"PK"):
        kind = "it is empty" if not start else "it does not start as a zip archive does"
        raise PersistError(f"{what} {path!r} is not a readable .npz archive ({kind})")
    try:
        archive = np.load(handle, allow_pickle=False)
    except (ValueError, zipfile.BadZipFile, OSError, EOFError, KeyError) as error:
        raise PersistError(f"{what} {path!r} is not a readable .npz archive: it is truncated, damaged or another "
                           f"kind of file ({type(error).__name__}: {error})") from None
    arrays = {}
    with archive:
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError as error:
                if "pickle" in str(error):
                    raise PersistError(f"{what} {path!r}: cannot read {name!r}, which holds pickled objects "
                                       "(never loaded: loading a pickle can run any code)") from None
                raise PersistError(f"{what} {path!r}: cannot read {name!r}, which is damaged ({error})") from None
            except Exception as error:  # zipfile, zlib and the OS raise their own kinds for damaged entries
                raise PersistError(f"{what} {path!r}: cannot read {name!r}, which is damaged "
                                   f"({type(error).__name__}: {error})") from None
            if not isinstance(arrays[name], np.ndarray):  # numpy returns the raw bytes of other entries
                raise PersistError(f"{what} {path!r}: its entry {name!r} is not a .npy array "
                                   "(an .npz archive written by numpy holds only arrays)")
    return arrays


def _expected_types(expected: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``expected`` as ``{name: (shape, dtype)}``, from a mapping or a compiled program."""
    from tapegraph.program import Program  # here, not at the top: the program module is much bigger than this one

    if isinstance(expected, Program):
        return {name: (tuple(node.shape), np.dtype(node.dtype)) for name, node in expected.params.items()}
    if not isinstance(expected, Mapping):
        raise TypeError(f"expected must be a dict of name -> (shape, dtype) or a program made by tg.compile, "
                        f"got {type(expected).__name__}")
    result = {}
    for name, entry in expected.items():
        try:
            shape, dtype = entry
            result[name] = (tuple(int(size) for size in shape), np.dtype(dtype))
        except (TypeError, ValueError):
            raise TypeError(f"expected[{name!r}] must be a (shape, dtype) pair such as ((3,), 'float64'), "
                            f"got {entry!r}") from None
    return result


def check_params(params: Mapping[str, np.ndarray], expected: Expected | Any, where: str = "params") -> None:
    """Raise ``PersistError`` listing every difference between ``params`` and ``expected``.

    ``expected`` is ``{name: (shape, dtype)}`` or a compiled program; the
    message names every missing name, every unexpected one, and every
    array of the wrong shape or dtype.

    >>> import numpy as np
    >>> check_params({"w": np.zeros(4), "c": np.zeros(1)}, {"w": ((3,), "float64"), "b": ((), "float64")})
    Traceback (most recent call last):
    ...
    tapegraph.errors.PersistError: params does not match the model's parameters: missing ['b']; unexpected ['c']; 'w' is f64[4], expected f64[3]
    """
    expected = _expected_types(expected)
    missing = [name for name in expected if name not in params]
    extra = [name for name in params if name not in expected]
    wrong = []
    for name, (shape, dtype) in expected.items():
        if name in params:
            array = np.asarray(params[name])
            if array.shape != shape or array.dtype != dtype:
                wrong.append(f"{name!r} is {array_type(array)}, expected {format_type(shape, dtype)}")
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra}")
    problems.extend(wrong)
    if problems:
        raise PersistError(f"{where} does not match the model's parameters: " + "; ".join(problems))
