"""The catalogue of bad inputs (docs/errors.md): one test per row.

Each row of the page is a ``### id: title`` section with one Python block
and the text it prints. Each test runs the page's set-up block, then one
row's block, in a fresh namespace, and compares what it prints with the
page. A row whose message changes fails here (regenerate the page's
outputs with ``TAPEGRAPH_UPDATE_DOCS=1 pytest tests/test_docs.py -k errors``,
then reread the page).
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "errors.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
ROW = re.compile(r"^### ([a-z-]+): ", re.M)

#: The mistakes the catalogue must cover (issue 4), by row id.
REQUIRED = {
    "shape-mismatch", "wrong-dtype", "missing-name", "extra-name", "wrong-shape", "non-scalar-objective",
    "wrt-not-a-parameter", "duplicate-names", "label-out-of-range", "integer-data", "empty-data", "step-size",
    "file-missing", "file-truncated", "file-not-npz",
}


def _python_blocks(text: str, offset: int) -> list[tuple[str, int, str | None]]:
    """(source, first line, expected output) of each python block in ``text``."""
    blocks = []
    matches = list(BLOCK.finditer(text))
    for index, match in enumerate(matches):
        if match.group(1) != "python":
            continue
        following = matches[index + 1] if index + 1 < len(matches) else None
        expected = None
        if following and following.group(1) == "text" and not text[match.end():following.start()].strip():
            expected = following.group(2)
        blocks.append((match.group(2), offset + text.count("\n", 0, match.start(2)) + 1, expected))
    return blocks


def _page():
    text = PAGE.read_text()
    starts = [match.start() for match in ROW.finditer(text)]
    setup = _python_blocks(text[:starts[0]], 0)
    rows = {}
    for start, end in zip(starts, [*starts[1:], len(text)]):
        row_id = ROW.match(text, start).group(1)
        rows[row_id] = _python_blocks(text[start:end], text.count("\n", 0, start))
    return setup, rows


SETUP, ROWS = _page()


def _run(source: str, first_line: int, namespace: dict) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile("\n" * (first_line - 1) + source, PAGE.name, "exec"), namespace)
    return output.getvalue()


def test_the_catalogue_covers_every_required_mistake_once():
    assert REQUIRED <= set(ROWS), f"rows missing from docs/errors.md: {sorted(REQUIRED - set(ROWS))}"
    ids = ROW.findall(PAGE.read_text())
    assert len(ids) == len(set(ids)), "a row id appears twice"


@pytest.mark.parametrize("row_id", sorted(ROWS))
def test_each_row_raises_the_error_the_page_shows(row_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # rows that write files write them here
    blocks = ROWS[row_id]
    assert len(blocks) == 1 and blocks[0][2] is not None, f"row {row_id} needs one python block and its output"
    namespace: dict = {"__name__": "__errors__"}
    for source, first_line, _ in SETUP:
        _run(source, first_line, namespace)
    source, first_line, expected = blocks[0]
    printed = _run(source, first_line, namespace)
    assert printed == expected
    # every row shows at least one real error, named by its class
    assert re.search(r"^(\w+Error): ", printed, re.M), printed
