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
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from tapegraph.errors import TapegraphError

#: The archive entry holding the metadata (never a parameter name).
META_KEY = "__tapegraph__"
FORMAT = "tapegraph-params"
VERSION = 1

#: ``{name: (shape, dtype)}``, or a compiled program (its parameters).
Expected = Mapping[str, tuple[tuple[int, ...], str]]


class PersistError(TapegraphError, ValueError):
    """A parameter file cannot be written or read, or does not match what was expected."""


def save_params(path: str | os.PathLike, params: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> None:
    """Write ``params`` (name -> array) and JSON-able ``meta`` to ``path`` atomically.

    The arrays are stored as given (shape and dtype kept); object arrays are
    refused, since they would need a pickle. ``path`` is written whole or
    not at all: its old content survives any failure.
    """
    path = os.fspath(path)
    arrays = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name or name == META_KEY:
            raise PersistError(f"cannot save parameter name {name!r}: use a non-empty string other than {META_KEY!r}")
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise PersistError(f"cannot save parameter {name!r} of dtype {array.dtype}: only numeric arrays are saved "
                               "(anything else would need a pickle)")
        arrays[name] = array
    try:
        text = json.dumps({"format": FORMAT, "version": VERSION, "meta": dict(meta or {})}, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise PersistError(f"cannot save the metadata for {path!r}: it must be JSON-able ({error})") from None
    arrays[META_KEY] = np.array(text)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PersistError(f"cannot save to {path!r}: the folder {folder!r} does not exist")
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)  # numeric and text arrays only (checked above): no pickles
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        # also on KeyboardInterrupt: the old file stays, the partial one goes
        if os.path.exists(handle.name):
            os.unlink(handle.name)
        raise
    _sync_folder(folder)


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


def load_params(path: str | os.PathLike, expected: Expected | Any | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by ``save_params``: ``(params, meta)``.

    With ``expected`` (``{name: (shape, dtype)}``, or a compiled program
    whose parameters the file must hold), every missing name, extra name
    and wrong shape or dtype is reported in one ``PersistError``. A file
    that is missing, truncated, not an ``.npz`` archive or holding pickled
    objects raises ``PersistError`` (``FileNotFoundError`` for a missing
    one) naming the file and what is wrong.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"parameter file {path!r} does not exist")
    if os.path.isdir(path):
        raise PersistError(f"parameter file {path!r} is a folder, not an .npz file")
    arrays = _read_archive(path)
    text = arrays.pop(META_KEY, None)
    if text is None or text.dtype.kind != "U" or text.ndim != 0:
        raise PersistError(f"parameter file {path!r} was not written by tapegraph.save_params: it has no "
                           f"{META_KEY!r} entry (it holds {sorted(arrays)})")
    try:
        header = json.loads(str(text))
    except ValueError as error:
        raise PersistError(f"parameter file {path!r}: its {META_KEY!r} entry is not valid JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PersistError(f"parameter file {path!r}: its {META_KEY!r} entry does not describe a {FORMAT} file")
    if header.get("version") != VERSION:
        raise PersistError(f"parameter file {path!r} is format version {header.get('version')!r}; "
                           f"this tapegraph reads version {VERSION}")
    if expected is not None:
        check_params(arrays, expected, where=f"parameter file {path!r}")
    return arrays, dict(header.get("meta") or {})


def _read_archive(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as handle:
        start = handle.read(6)
    if start.startswith(b"\x93NUMPY"):
        raise PersistError(f"parameter file {path!r} holds a single array (.npy), not an .npz archive")
    if not start.startswith(b"PK"):
        kind = "it is empty" if not start else "it does not start as a zip archive does"
        raise PersistError(f"parameter file {path!r} is not an .npz archive ({kind})")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise PersistError(f"parameter file {path!r} holds a single array (.npy), not an .npz archive")
        with archive:
            return {name: archive[name] for name in archive.files}
    except PersistError:
        raise
    except ValueError as error:
        if "pickle" in str(error):
            raise PersistError(f"parameter file {path!r} holds pickled objects, which tapegraph never writes and "
                               "will not load") from None
        raise PersistError(f"parameter file {path!r} is not a readable .npz archive ({error})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:
        raise PersistError(f"parameter file {path!r} is not a readable .npz archive: it is truncated, damaged or "
                           f"another kind of file ({type(error).__name__}: {error})") from None
    except Exception as error:  # zlib and zipfile raise their own kinds for damaged members
        raise PersistError(f"parameter file {path!r} is damaged ({type(error).__name__}: {error})") from None


def check_params(params: Mapping[str, np.ndarray], expected: Expected | Any, where: str = "params") -> None:
    """Raise ``PersistError`` listing every difference between ``params`` and ``expected``."""
    if hasattr(expected, "params") and not isinstance(expected, Mapping):
        expected = {name: (node.shape, node.dtype) for name, node in expected.params.items()}
    missing = [name for name in expected if name not in params]
    extra = [name for name in params if name not in expected]
    wrong = []
    for name, (shape, dtype) in expected.items():
        if name in params:
            array = params[name]
            if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
                wrong.append(f"{name!r} is {array.dtype}{list(array.shape)}, expected {np.dtype(dtype)}{list(shape)}")
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra}")
    if wrong:
        problems.append("; ".join(wrong))
    if problems:
        raise PersistError(f"{where} does not match the model's parameters: " + "; ".join(problems))
