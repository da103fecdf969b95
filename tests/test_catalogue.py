"""The catalogue of bad inputs (docs/errors.md): one test per row.

Each row of the page is a ``### id: title`` section with one Python block
and the text it prints. ``test_row[id]`` runs the page's set-up block, then
that row's block, in a fresh namespace and a fresh folder, and checks two
things: what it prints is what the page shows, and each printed error has
the class and the key parts of the message listed in ``EXPECTED`` below.
The first keeps the page true; the second keeps the messages good, since
regenerating the page (``TAPEGRAPH_UPDATE_DOCS=1 pytest tests/test_docs.py
-k errors``) would accept any text. The rows of the page, of its summary
table and of ``EXPECTED`` must match one for one.

Tests at the end pin errors that once fell short of the project's rules.
"""

from __future__ import annotations

import contextlib
import io
import linecache
import pathlib
import re

import numpy as np
import pytest

import tapegraph as tg

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "errors.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
ROW = re.compile(r"^### ([a-z-]+): ", re.M)
TABLE_ROW = re.compile(r"^\| `([a-z-]+)` \| .+ \| ([\w, ]+) \|$", re.M)
#: A printed error starts a line with its class name; its message may go on over indented lines.
PRINTED_ERROR = re.compile(r"^(\w+): ")

#: The mistakes issue 4 asks the catalogue to cover, by row id.
REQUIRED = {
    "shape-mismatch", "wrong-dtype", "missing-name", "extra-name", "wrong-shape", "non-scalar-objective",
    "wrt-not-a-parameter", "duplicate-names", "label-out-of-range", "integer-data", "empty-data", "step-size",
    "file-missing", "file-truncated", "file-not-npz",
}

#: Per row, in order, what each ``show(...)`` must print: the error's class
#: name and fragments its message must contain (``None`` for "no error").
EXPECTED: dict[str, list[tuple[str, list[str]] | None]] = {
    "shape-mismatch": [
        ("ShapeError", ["matmul(W: f64[2,4], x: f64[3]) at errors.md:", "inner dimensions differ: [2,4] @ [3]"]),
        ("ShapeError", ["add(x: f64[3], v: f64[2])", "shapes [3], [2] do not broadcast"]),
        ("ShapeError", ["affine(W: f64[2,4], x: f64[3], b: f64[])", "needs W of shape [m,d], x of shape [d]"]),
    ],
    "wrong-dtype": [
        ("ShapeError", ["tanh(labels: i64[3])", "integer dtype int64; this op needs floating-point data"]),
        ("ShapeError", ["input 'z': dtype 'float63' is not a numpy dtype", "such as 'float64'"]),
        ("ShapeError", ["param 'k'", "int64 is not floating point"]),
        ("CallError", ["input 'label' expects integer data (i64[])", "got dtype float64"]),
    ],
    "shape-string": [
        ("ShapeError", ["input 'rows': shape 'batch' is a string, not a tuple of dimensions",
                        "write shape=('batch',) (with the comma)"]),
        ("ShapeError", ["param 'v': shape '3' is a string", "shape=(3,)"]),
        ("ShapeError", ["param 'v': shape 3.0 is not a tuple of dimensions"]),
    ],
    "homework-arguments": [
        ("ShapeError", ["l2_norm_penalty at errors.md:", "l2_reg must be a number >= 0 or a scalar node, got str '1.0'"]),
        ("ShapeError", ["l2_reg must be a number >= 0 or a scalar node, got -1.0"]),
        ("ShapeError", ["vector_scalar_affine at errors.md:", "b must be a tapegraph node or a number, got str 'b'"]),
    ],
    "non-scalar-objective": [
        ("GraphError", ["the objective must be a scalar", "has shape f64[3]", "reduce it with tg.sum or tg.mean"]),
    ],
    "wrt-not-a-parameter": [
        ("GraphError", ["wrt must list parameters made with tg.param, but got input 'x' (f64[3])"]),
        ("GraphError", ["wrt must list parameters made with tg.param, but got an expression, mul at errors.md:"]),
        ("GraphError", ["wrt must list parameters made with tg.param, but got str 'w'"]),
    ],
    "duplicate-names": [
        ("GraphError", ["param 'w' (f64[3] and f64[2]) is declared at errors.md:", "and again at errors.md:",
                        "give each its own name"]),
        ("GraphError", ["two different nodes are named 'w'", "input f64[3] at errors.md:"]),
    ],
    "declared-twice": [
        ("GraphError", ["param 'V' (f64[3,3]) is declared twice at errors.md:", "(in a loop?)",
                        "two parameters under one name", "such as f\"V{i}\"",
                        "to share one parameter, call tg.param once and reuse that node"]),
        ("GraphError", ["param 'w' (f64[3]) is declared at errors.md:", "and again at errors.md:"]),
        None,
    ],
    "unknown-size": [
        ("GraphError", ["has shape f64[batch]", "no parameter or input of this call has a 'batch' dimension"]),
    ],
    "missing-name": [
        ("CallError", ["parameter(s) ['b'] missing from params (given: ['w'])",
                       "input(s) ['y'] missing from inputs (given: ['x'])",
                       "This call needs params ['b', 'w'] and inputs ['x', 'y']."]),
        ("CallError", ["input(s) ['x', 'y'] missing from inputs (given: [])"]),
    ],
    "extra-name": [
        ("CallError", ["unknown name 'z' in inputs; this program's inputs are ['x', 'y']"]),
        ("CallError", ["unknown name 'c' in params; this program's params are ['b', 'w']"]),
        ("CallError", ["'w' is declared as a parameter; pass it in params, not inputs"]),
        ("CallError", ["unknown name 'bais' in params (did you mean 'bias'?); this program's params are ['bias']"]),
    ],
    "wrong-shape": [
        ("CallError", ["input 'x' expects f64[3], got an array of f64[4] (axis 0 differs)"]),
        ("CallError", ["input 'x' expects f64[3] (1 dimension(s)), got an array of f64[1,3]"]),
        ("CallError", ["parameter 'b' expects f64[]", "got an array of f64[1]"]),
    ],
    "integer-data": [
        ("CallError", ["input 'x' expects floating-point data (f64[3]), got an array of dtype int64",
                       "convert integer data with .astype(float)"]),
        ("CallError", ["parameter 'w' expects floating-point data (f64[3]), got an array of dtype bool"]),
        None,
        None,
    ],
    "not-an-array": [
        ("CallError", ["input 'x' expects an array of f64[3], got str '1, 2, 3'"]),
        ("CallError", ["input 'x' got a tapegraph node; pass a numpy array of f64[3]"]),
        ("CallError", ["inputs must be a dict of name -> array, got list"]),
    ],
    "array-subclass": [
        ("CallError", ["input 'x' got a masked array (1 of 3 entries masked)", "would use the masked values",
                       "pass .filled(value)"]),
        ("CallError", ["input 'x' got a numpy.matrix, an array subclass whose meaning tapegraph would not keep",
                       "np.asarray"]),
        ("ValueError", ["RidgeRegression: X is a masked array (1 of 4 entries masked); the masked values would be used",
                        "pass X.filled(value)"]),
    ],
    "empty-data": [
        ("CallError", ["input 'x' has batch=0 (an array of f64[0,3])", "give at least one row"]),
        ("ValueError", ["RidgeRegression: X is empty (shape (0, 3)); it needs at least one row"]),
        ("ValueError", ["RidgeRegression: X must be a 2-D array, got shape (0,)"]),
        ("ValueError", ["MulticlassClassifier: y must be a non-empty 1-D array of labels, got shape (0,)"]),
    ],
    "unknown-output": [
        ("CallError", ["unknown output(s) ['predictions'] (did you mean 'prediction'?); "
                       "this program has ['objective', 'prediction']"]),
    ],
    "label-out-of-range": [
        ("TapeError", ["forward instruction 0 failed", "label 3 is outside 0..2", "= cross_entropy s0 s1",
                       "cross_entropy at errors.md:"]),
        ("TapeError", ["label -1 is outside 0..2"]),
        ("ValueError", ["MulticlassClassifier: labels must be in 0 .. 2 (num_class=3), got [3]"]),
        ("ValueError", ["MulticlassClassifier: labels must be integers 0 .. 2, got an array of dtype float64"]),
    ],
    "label-type": [
        ("CallError", ["input 'label' expects integer data (i64[]): 18446744073709551615 does not fit in int64"]),
        ("CallError", ["input 'small_label' expects integer data (i8[]): 300 does not fit in int8"]),
        ("ShapeError", ["cross_entropy(no_classes: f64[0], label: i64[]) at errors.md:",
                        "axis 0 holds the classes, and it has none"]),
    ],
    "not-finite": [
        ("NonFiniteError", ["forward instruction 0 (log, from log w) produced f64[3] [0, nan, 0.693147]",
                            "operand 0 (s0, %0): f64[3] [1, -1, 2]"]),
        ("ValueError", ["RidgeRegression: X contains NaN or infinity (1 entries; first at index (0, 1))"]),
    ],
    "numpy-warning": [
        ("RuntimeWarning", ["invalid value encountered in log",
                            "; at errors.md:", ": log_w = tg.compile(tg.sum(tg.log(w)), wrt=[w])"]),
    ],
    "no-new-specialization": [
        ("SpecializationError", ["would specialise to batch=5 inside no_new_specializations(); cached: batch=4"]),
    ],
    "too-large": [
        ("AllocationError", ["buffer s", "param H), f64[10000000,10000000], needs 727.6 TiB, which cannot be "
                             "allocated (not enough memory)"]),
        ("AllocationError", ["broadcast_to(f64[3]) at errors.md:", "folding constants: the result of broadcast_to, "
                             "f64[10000000,10000000,3], needs 2.1 PiB, which cannot be allocated (not enough memory)"]),
    ],
    "step-size": [
        ("CallError", ["tg.sgd: step_size must be a positive finite number, got 0"]),
        ("CallError", ["tg.sgd: step_size must be a positive finite number, got nan"]),
        ("CallError", ["tg.sgd: step_size must be a positive finite number, got '0.01'"]),
        ("ValueError", ["RidgeRegression: step_size must be a positive finite number or 'auto', got -1"]),
    ],
    "donate-not-writable": [
        ("CallError", ["donate=True updates parameters in place, so 'w' must be a writable numpy array of f64[3]",
                       "got a read-only array"]),
        ("CallError", ["'w' must be a writable numpy array", "got list"]),
    ],
    "donate-aliasing": [
        ("CallError", ["donate=True updates parameters in place, so they must not share memory: 'u' and 'v' are the "
                       "same array; pass a copy of one of them"]),
        ("CallError", ["'u' and 'v' share memory (views of one array)"]),
        ("CallError", ["parameter 'w' and input 'x' are the same array"]),
    ],
    "not-fitted": [
        ("NotFittedError", ["this RidgeRegression is not fitted yet; call fit(X, y) first"]),
        ("NotFittedError", ["this RidgeRegression is not fitted yet"]),
    ],
    "file-missing": [
        ("MissingFileError", ["parameter file 'no-such-file.npz' does not exist"]),
        ("MissingFileError", ["model file 'no-such-model.npz' does not exist"]),
        ("MissingFileError", ["problem file 'no-such-problem.npz' does not exist"]),
    ],
    "file-truncated": [
        ("PersistError", ["parameter file 'cut.npz' is not a readable .npz archive: it is truncated, damaged or "
                          "another kind of file (BadZipFile"]),
    ],
    "file-not-npz": [
        ("PersistError", ["parameter file 'notes.npz' is not a readable .npz archive",
                          "it does not start as a zip archive does"]),
        ("PersistError", ["parameter file 'empty.npz' is not a readable .npz archive (it is empty)"]),
        ("PersistError", ["parameter file 'array.npy' holds a single array, not an .npz archive"]),
        ("PersistError", ["parameter file 'pickled.npz': cannot read 'w', which holds pickled objects"]),
        ("PersistError", ["parameter file 'foreign.npz' was not written by tapegraph.save_params",
                          "it holds ['w']"]),
        ("PersistError", ["parameter file 'zipped.npz': its entry 'readme.txt' is not a .npy array"]),
    ],
    "file-unsaveable": [
        ("PersistError", ["cannot save to 'saved.npz/': the path ends with a '/', which names a folder",
                          "drop the trailing '/'"]),
        ("PersistError", ["cannot save to 'notes.txt/saved.npz': 'notes.txt' is a file, not a folder"]),
        ("PersistError", ["cannot save the metadata for 'saved.npz': it is nested too deeply to write as JSON"]),
        ("SaveError", ["cannot save to 'saved.npz' (OSError: No space left on device)"]),
    ],
    "file-mismatch": [
        ("PersistError", ["parameter file 'other.npz' does not match the model's parameters", "missing ['b']",
                          "unexpected ['bias']", "'w' is f64[4], expected f64[3]"]),
        ("PersistError", ["'w' is f64[4], expected f32[4]"]),
    ],
    "model-file-mismatch": [
        ("PersistError", ["model file 'ridge-model.npz' holds a model of class RidgeRegression, not MLPRegression"]),
        ("PersistError", ["model file 'edited-model.npz' does not match the model's parameters", "missing ['b']",
                          "'w' is f64[4], expected f64[3]"]),
        ("PersistError", ["holds no estimator this package knows (class 'Perceptron')", "'RidgeRegression'"]),
    ],
    "problem-file": [
        ("ValueError", ["problem file 'partial.npz' lacks ['x_test', 'y_test', 'coefs_true']",
                        "it has ['x_train', 'y_train']"]),
        ("ValueError", ["problem file 'wide.npz': 'x_train' must be a 1-D array of finite numbers, got shape (5, 2)"]),
        ("PersistError", ["problem file 'objects.npz': cannot read 'x_train', which holds pickled objects"]),
        ("PersistError", ["problem file 'notes.npz' is not a readable .npz archive"]),
    ],
    "value-comparison": [
        ("TypeError", ["the truth of equal at errors.md:", "known only when the program runs", "tg.where",
                       "same expression, compare the two nodes"]),
        ("TypeError", ["the truth of greater at errors.md:", "known only when the program runs", "tg.where"]),
        ("ShapeError", ["pow(f64[2], f64[]) at errors.md:", "negative base to a non-integer power",
                        "-8.0 ** 0.5"]),
        ("ShapeError", ["where(x: f64[3], x: f64[3], f64[])", "the condition 'x' has dtype float64",
                        "must be boolean"]),
        ("ShapeError", ["clip(x: f64[3])", "low bound 1.0 is above its high bound -1.0"]),
    ],
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
    table = {row_id: classes for row_id, classes in TABLE_ROW.findall(text[:starts[0]])}
    return text, setup, rows, table


TEXT, SETUP, ROWS, TABLE = _page()


def _run(source: str, first_line: int, namespace: dict) -> str:
    output = io.StringIO()
    # the page's lines, for what shows a source line (numpy-warning), as tests/test_docs.py does
    linecache.cache[PAGE.name] = (len(TEXT), None, TEXT.splitlines(True), PAGE.name)
    with contextlib.redirect_stdout(output):
        # compiled under the page's name and lines, so source lines in messages read errors.md:NN
        exec(compile("\n" * (first_line - 1) + source, PAGE.name, "exec"), namespace)
    return output.getvalue()


def _printed_errors(printed: str) -> list[tuple[str, str] | None]:
    """Each ``show`` result: (class name, message with its continuation lines), or None for "no error"."""
    results: list[tuple[str, str] | None] = []
    for line in printed.splitlines():
        match = PRINTED_ERROR.match(line)
        if line == "no error":
            results.append(None)
        elif match:
            results.append((match.group(1), line[match.end():]))
        else:
            assert results and results[-1] is not None and line.startswith(" "), f"unexpected line {line!r}"
            name, message = results[-1]
            results[-1] = (name, message + "\n" + line)
    return results


def test_the_catalogue_covers_every_required_mistake_once():
    ids = ROW.findall(TEXT)
    assert len(ids) == len(set(ids)), "a row id appears twice"
    assert REQUIRED <= set(ids), f"rows missing from docs/errors.md: {sorted(REQUIRED - set(ids))}"


def test_the_page_the_table_and_the_tests_list_the_same_rows_in_the_same_order():
    assert list(ROWS) == list(EXPECTED), "docs/errors.md's rows and EXPECTED differ"
    assert list(TABLE) == list(ROWS), "the summary table's rows and the page's sections differ"


@pytest.mark.parametrize("row_id", list(EXPECTED))
def test_row(row_id, tmp_path, monkeypatch):
    """The row prints what the page shows, and each error has the expected class and message parts."""
    monkeypatch.chdir(tmp_path)  # rows that write files write them here
    assert row_id in ROWS, f"docs/errors.md has no row {row_id!r}"
    blocks = ROWS[row_id]
    assert len(blocks) == 1 and blocks[0][2] is not None, f"row {row_id} needs one python block and its output"
    namespace: dict = {"__name__": "__errors__"}
    for source, first_line, _ in SETUP:
        _run(source, first_line, namespace)
    source, first_line, expected = blocks[0]
    printed = _run(source, first_line, namespace)
    assert printed == expected, f"row {row_id} prints something else than docs/errors.md shows"
    results = _printed_errors(printed)
    wanted = EXPECTED[row_id]
    assert len(results) == len(wanted), f"row {row_id} printed {len(results)} results, expected {len(wanted)}"
    for index, (result, want) in enumerate(zip(results, wanted)):
        if want is None:
            assert result is None, f"row {row_id}, line {index}: expected no error, got {result}"
            continue
        assert result is not None, f"row {row_id}, line {index}: expected {want[0]}, got no error"
        name, message = result
        assert name == want[0], f"row {row_id}, line {index}: {name}: {message}"
        for fragment in want[1]:
            assert fragment in message, f"row {row_id}, line {index}: {fragment!r} not in {message!r}"
        if name != "TapeError" and name != "NonFiniteError":  # these two add the instruction's dump lines
            assert "\n" not in message, f"row {row_id}, line {index}: a message should be one paragraph"
    classes = sorted({result[0] for result in results if result is not None})
    assert sorted(TABLE[row_id].split(", ")) == classes, f"the summary table lists other classes for {row_id}"


# Errors that once broke the project's rules (a plain ValueError raised on
# purpose, a label error that did not say where): each test pins the fix.

def test_step_size_error_is_a_tapegraph_error():
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(tg.square(w)), wrt=[w])
    with pytest.raises(tg.TapegraphError, match=r"step_size must be a positive finite number, got 0$"):
        tg.sgd(program, step_size=0)


def test_a_dtype_that_is_not_one_names_the_node_and_what_is_accepted():
    with pytest.raises(tg.ShapeError, match=r"^input 'z': dtype 'float63' is not a numpy dtype; use a numpy dtype "
                                            r"such as 'float64', 'float32' or, for labels, 'int64'$"):
        tg.input("z", shape=(3,), dtype="float63")
    with pytest.raises(tg.ShapeError, match=r"^param 'k': dtype int64 is not floating point; gradients need floats"):
        tg.param("k", shape=(3,), dtype="int64")


def test_a_label_out_of_range_in_a_batch_says_where():
    scores = tg.input("scores", shape=("batch", 3))
    labels = tg.input("labels", shape=("batch",), dtype="int64")
    program = tg.compile(tg.mean(tg.cross_entropy(scores, labels)))
    with pytest.raises(tg.TapeError, match=r"label 5 at index \(1,\) is outside 0\.\.2"):
        program.run({}, {"scores": np.zeros((3, 3)), "labels": np.array([0, 5, 1])})
