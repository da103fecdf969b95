"""docs/ops.md is the registry's table of ops, and cannot drift from it.

The page is generated (``tapegraph.inspect.ops_table``); after adding or
changing an op, ``TAPEGRAPH_UPDATE_DOCS=1 python -m pytest
tests/test_ops_table.py`` rewrites it (then read the diff).
"""

from __future__ import annotations

import os
import pathlib

from tapegraph.inspect.ops_table import REGENERATE, gradient_sentences, maths, ops_table, syntax
from tapegraph.ops import COMPOSITES, REGISTRY

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "ops.md"


def test_docs_ops_md_is_the_generated_table():
    expected = ops_table()
    if os.environ.get("TAPEGRAPH_UPDATE_DOCS"):
        PAGE.write_text(expected)
    assert PAGE.read_text() == expected, f"docs/ops.md differs from the registry; regenerate it with: {REGENERATE}"


def test_every_op_and_composite_has_a_row_with_its_maths():
    text = ops_table()
    for name, op in REGISTRY.items():
        assert f"| `{name}` | `tg." in text, name
        assert maths(op.doc), f"op {name}: its docstring has no first paragraph to show as its maths"
    for name, composite in COMPOSITES.items():
        assert f"| `{name}` | `tg.{name}(" in text, name
        assert maths(composite.build.__doc__ or ""), f"composite {name}: its docstring has no first paragraph"


def test_the_table_reads_conventions_and_syntax_off_the_records():
    assert syntax()["a + b"] == "add" and syntax()["a[key]"] == "index" and syntax()["a.T"] == "transpose"
    lines = ops_table().splitlines()
    row = next(line for line in lines if line.startswith("| `gather` |"))
    assert "`tg.ops.gather(x, indices, axis=0)`" in row and "to `x`; none to `indices`" in row
    assert "`x`: float, `indices`: int" in row
    row = next(line for line in lines if line.startswith("| `take` |"))
    assert "`tg.take(x, indices, axis=0)`" in row and "`x`: float, `indices`: int" in row
    assert gradient_sentences("Sum it. The VJP spreads g. Not this.") == "The VJP spreads g."
    assert maths("``a | b``\n  over lines.\n\nMore.") == "`a \\| b` over lines."


def test_the_readme_points_to_the_table():
    readme = (PAGE.parent.parent / "README.md").read_text()
    assert "docs/ops.md" in readme
