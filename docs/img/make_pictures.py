"""Redraw the graph and tape pictures committed in docs/img.

    python docs/img/make_pictures.py

Two sets:

- ``ridge_*.png`` and ``multiclass_*.png``: the estimators' own graphs,
  declared by ``models.RidgeRegression`` (400 features) and
  ``models.MulticlassClassifier`` (2 features, 10 hidden units, 3 classes)
  exactly as ``fit`` declares them; tapes for one example (``batch=1``),
  the homework's SGD step.
- ``tutorial_*.png``: made by running the Python blocks of
  ``docs/tutorial.md`` in this directory, so each picture is drawn by the
  very code the tutorial shows (the tests run those blocks too, in a
  temporary directory).

After redrawing, look at every picture: labels readable, none overlapping.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

import tapegraph as tg  # noqa: E402  (after the path set-up, so the checkout is what gets drawn)
from models import MulticlassClassifier, RidgeRegression  # noqa: E402
from tapegraph.inspect.draw import draw_graph, draw_tape  # noqa: E402

PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```\n", re.S | re.M)


def estimator_program(estimator, num_features: int) -> tg.Program:
    """The program an estimator compiles in ``fit``, declared by its own ``_declare``."""
    objective, wrt, outputs = estimator._declare(num_features)
    return tg.compile(objective, wrt=wrt, outputs=outputs)


def estimator_pictures() -> list[pathlib.Path]:
    """``ridge_graph.png``, ``ridge_tape.png``, ``multiclass_graph.png``, ``multiclass_tape.png``."""
    programs = {
        "ridge": estimator_program(RidgeRegression(l2_reg=1.0), num_features=400),
        "multiclass": estimator_program(MulticlassClassifier(num_hidden_units=10, num_class=3), num_features=2),
    }
    written = []
    for name, program in programs.items():
        draw_graph(program, HERE / f"{name}_graph.png")
        draw_tape(program, HERE / f"{name}_tape.png", sizes={"batch": 1})
        written += [HERE / f"{name}_graph.png", HERE / f"{name}_tape.png"]
    return written


def tutorial_pictures() -> list[pathlib.Path]:
    """Run the tutorial's Python blocks here; the pictures they draw land in this directory."""
    document = ROOT / "docs" / "tutorial.md"
    text = document.read_text()
    before = {path: path.stat().st_mtime_ns for path in HERE.glob("tutorial_*.png")}
    namespace: dict = {"__name__": "__tutorial__"}
    previous = os.getcwd()
    os.chdir(HERE)
    try:
        for match in PYTHON_BLOCK.finditer(text):
            padded = "\n" * text.count("\n", 0, match.start(1)) + match.group(1)
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(padded, document.name, "exec"), namespace)
    finally:
        os.chdir(previous)
    return sorted(path for path in HERE.glob("tutorial_*.png") if before.get(path) != path.stat().st_mtime_ns)


def main() -> None:
    for path in estimator_pictures() + tutorial_pictures():
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
