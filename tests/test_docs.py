"""The docs cannot rot: every Python block in README.md and docs/*.md runs.

Blocks of one file run in order in one namespace, compiled under the
file's name with the file's line numbers, so source lines printed by a
dump point into the document. A ```text block that directly follows a
Python block is that block's expected output and must match exactly;
after an intended change, ``TAPEGRAPH_UPDATE_DOCS=1 pytest tests/test_docs.py``
writes the new outputs into the documents (then reread their prose).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


def _blocks(path: pathlib.Path):
    """(source, first line, expected output or None, its span) per Python block."""
    text = path.read_text()
    matches = list(BLOCK.finditer(text))
    for index, match in enumerate(matches):
        if match.group(1) != "python":
            continue
        first_line = text.count("\n", 0, match.start(2)) + 1
        expected, span = None, None
        following = matches[index + 1] if index + 1 < len(matches) else None
        if following and following.group(1) == "text" and text[match.end():following.start()].strip() == "":
            expected, span = following.group(2), following.span(2)
        yield match.group(2), first_line, expected, span


@pytest.mark.parametrize("path", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_python_blocks_run_and_print_what_the_document_shows(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    # as a notebook does, so that inspect.getsource finds functions the blocks define
    # (prog.source() copies a user op's kernel)
    document = path.read_text()
    linecache.cache[path.name] = (len(document), None, document.splitlines(True), path.name)
    updates = []
    for source, first_line, expected, span in _blocks(path):
        padded = "\n" * (first_line - 1) + source
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(padded, path.name, "exec"), namespace)
        if expected is None:
            continue
        if os.environ.get("TAPEGRAPH_UPDATE_DOCS"):
            updates.append((span, output.getvalue()))
        else:
            assert output.getvalue() == expected, f"{path.name}:{first_line}: output differs from the document"
    if updates:
        text = path.read_text()
        for (start, end), new in reversed(updates):
            text = text[:start] + new + text[end:]
        path.write_text(text)


def test_importing_tapegraph_does_not_import_matplotlib():
    code = "import sys, tapegraph; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "False"
