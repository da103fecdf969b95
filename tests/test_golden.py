"""Golden files: the SGD step's tape, the multiclass tape, its ``source()`` and its JSON export.

A change to what the compiler emits (an instruction, a destination, a
workspace, the generated code, the JSON layout) shows up here as a diff
against ``tests/golden/``. Origins are written without line numbers
(``homework_graphs.py:57`` becomes ``homework_graphs.py``), so editing a
test helper does not break them. After an intended change, rewrite them
with::

    TAPEGRAPH_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

and read the diff before committing it.
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.inspect.export import dumps, tape_to_dict

import homework_graphs as hw

GOLDEN = pathlib.Path(__file__).parent / "golden"
#: ``file.py:123`` in an origin.
_LINE_NUMBER = re.compile(r"\b([\w.-]+\.py):\d+\b")


def without_line_numbers(text: str) -> str:
    """``text`` with ``file.py:123`` written as ``file.py``."""
    return _LINE_NUMBER.sub(r"\1", text)


def _sgd_dumps() -> str:
    program = hw.ridge(num_features=3)
    pure = tg.sgd(program, step_size=0.1).dump()
    donated = tg.sgd(program, step_size=0.1, donate=True).dump()
    return f"{pure}\n\n# donate=True\n{donated}\n"


def _multiclass():
    return hw.multiclass(batch=True), {"batch": 4}


def _multiclass_dump() -> str:
    program, sizes = _multiclass()
    return program.dump(sizes=sizes) + "\n"


def _multiclass_source() -> str:
    program, sizes = _multiclass()
    return program.source(sizes=sizes, name="step")


def _multiclass_json() -> str:
    program, sizes = _multiclass()
    title = program.dump(sizes=sizes).splitlines()[0]
    return dumps(tape_to_dict(program.tape(sizes=sizes), title)) + "\n"


GOLDEN_FILES = {
    "sgd_dump.txt": _sgd_dumps,
    "multiclass_dump.txt": _multiclass_dump,
    "multiclass_source.py.txt": _multiclass_source,
    "multiclass_tape.json": _multiclass_json,
}


@pytest.mark.parametrize("name", sorted(GOLDEN_FILES))
def test_output_matches_its_golden_file(name):
    text = without_line_numbers(GOLDEN_FILES[name]())
    path = GOLDEN / name
    if os.environ.get("TAPEGRAPH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing; create it with TAPEGRAPH_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from tests/golden/{name}; see this module's docstring"


def test_line_numbers_are_stripped_from_origins_only():
    assert without_line_numbers("# %2 matmul at homework_graphs.py:57") == "# %2 matmul at homework_graphs.py"
    assert without_line_numbers("s1:f64[3] = 2.  # const at tape.md:18") == "s1:f64[3] = 2.  # const at tape.md:18"
    assert without_line_numbers("axis=(0,) value 12:3") == "axis=(0,) value 12:3"


def test_the_golden_source_computes_what_the_program_computes():
    program, sizes = _multiclass()
    rng = np.random.default_rng(7)
    params = hw.random_params(program, rng)
    inputs = {"x": rng.standard_normal((sizes["batch"], 2)), "y": np.array([2, 0, 1, 1])}
    value, grads = program.value_and_grad(params, inputs)
    namespace: dict = {}
    exec((GOLDEN / "multiclass_source.py.txt").read_text(), namespace)
    computed = namespace["step"](**params, **inputs)
    assert computed["objective"] == value
    for name, gradient in grads.items():
        np.testing.assert_array_equal(computed[f"grad {name}"], gradient)
