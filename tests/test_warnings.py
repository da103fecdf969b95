"""numpy's warnings from a compiled step name the user's line that declared the node.

The step's code object carries the user's file and lines (see
``backends/numpy.py``, ``Executable._compile``), so a RuntimeWarning that a
ufunc issues inside it reads ``model.py:12: RuntimeWarning: ...`` followed by
the user's own source line, and the step costs no more per call.
"""

from __future__ import annotations

import importlib.util
import linecache
import pathlib
import sys
import traceback
import warnings

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.backends.numpy import instruction_origin, relocation_works
from tapegraph.expr import origin_file


def _line() -> int:
    """The caller's line."""
    return sys._getframe(1).f_lineno


def _runtime_warnings(call) -> list[tuple[str, str, int]]:
    """(message, file name, line) of each RuntimeWarning that ``call()`` issues."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [(str(warning.message), warning.filename, warning.lineno) for warning in caught
            if issubclass(warning.category, RuntimeWarning)]


def _import(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_this_python_reads_the_relocated_lines():
    # else every step would keep the generated lines (a supported fallback,
    # but not what this Python should do)
    assert relocation_works()


def test_forward_and_reverse_instructions_warn_at_the_line_that_declared_their_node():
    w = tg.param("w", shape=(2,))
    logs = tg.log(w)
    log_line = _line() - 1
    total = tg.sum(logs) - tg.sum(tg.exp(w * 1000.0))  # -inf - inf: no warning of its own
    exp_line = _line() - 1
    program = tg.compile(total, wrt=[w])
    for _ in range(2):  # the general path, then the generated entry
        found = _runtime_warnings(lambda: program.value_and_grad({"w": np.array([0.0, 1.0])}))
        assert sorted(found) == sorted([
            ("divide by zero encountered in log", __file__, log_line),        # forward
            ("overflow encountered in exp", __file__, exp_line),              # forward
            ("divide by zero encountered in divide", __file__, log_line),     # reverse: 1 / w
        ])
    shown = linecache.getline(__file__, log_line)
    assert shown.strip() == "logs = tg.log(w)"


def test_folding_constants_warns_at_the_line_that_declared_the_node_and_keeps_numpys_settings():
    def declare():
        return tg.log(tg.const(np.array([-1.0, 0.0, 1.0])))
    line = declare.__code__.co_firstlineno + 1
    assert sorted(_runtime_warnings(declare)) == [("divide by zero encountered in log", __file__, line),
                                                  ("invalid value encountered in log", __file__, line)]
    with np.errstate(invalid="ignore"):
        assert _runtime_warnings(declare) == [("divide by zero encountered in log", __file__, line)]
    with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
        declare()
    # a fold inside differentiation (d(w / c)/dw = 1 / c, both constants)
    # names the line that declared the division, as the gradient's label does
    c = tg.const(np.array([0.0, 2.0]))
    w = tg.param("w", shape=(2,))
    objective = tg.sum(w / c)
    division_line = _line() - 1
    found = _runtime_warnings(lambda: tg.grad(objective, w))
    assert found == [("divide by zero encountered in divide", __file__, division_line)]


def test_an_optimizers_update_warns_at_the_line_that_made_the_optimizer():
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(w), wrt=[w])
    step = tg.sgd(program, step_size=1e308)
    made = _line() - 1
    found = _runtime_warnings(lambda: step({"w": np.array([-1e308, 0.0])}, {}))
    assert found == [("overflow encountered in subtract", __file__, made)]  # w - 1e308 * grad

    x = tg.input("x", shape=(2,))  # an input, not a constant: the gradient is not folded at compile time
    scaled = tg.compile(tg.sum(w * x), wrt=[w])
    adam = tg.adam(scaled, learning_rate=0.1)
    made = _line() - 1
    state = adam.init({"w": np.ones(2)})
    found = _runtime_warnings(lambda: adam(state, {"x": np.full(2, 1e200)}))
    assert found == [("overflow encountered in square", __file__, made)]  # the second moment of 1e200
    assert "sub at adam update of w at test_warnings.py:" in adam.dump()


def test_a_failure_names_its_instruction_among_several_declared_on_one_line():
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(tg.log(w * 2.0)), wrt=[w])
    declared = _line() - 1
    program.value_and_grad({"w": np.ones(2)})
    with np.errstate(invalid="raise"), pytest.raises(tg.TapeError) as error:
        program.value_and_grad({"w": np.array([-1.0, 1.0])})
    # mul, log and sum share the line: the instruction is found from the failing bytecode
    assert str(error.value).startswith("forward instruction 1 failed (FloatingPointError: invalid value "
                                       "encountered in log):\n     1  ")
    # the traceback of the cause shows the user's line, in the tape's step
    frames = traceback.extract_tb(error.value.__cause__.__traceback__)
    ours = [frame for frame in frames if frame.name.startswith("<tapegraph tape ")]
    assert [(frame.filename, frame.lineno, frame.line) for frame in ours] == [
        (__file__, declared, "program = tg.compile(tg.sum(tg.log(w * 2.0)), wrt=[w])")]


def test_check_mode_stops_at_the_users_line_too():
    w = tg.param("w", shape=(2,))
    program = tg.compile(tg.sum(tg.log(w)), wrt=[w])
    declared = _line() - 1
    with tg.check_finite(), pytest.raises(tg.NonFiniteError, match=r"forward instruction 0 \(log") as error:
        program.value_and_grad({"w": np.array([-1.0, 1.0])})
    frames = traceback.extract_tb(error.value.__traceback__)
    assert (__file__, declared) in [(frame.filename, frame.lineno) for frame in frames
                                    if frame.name.startswith("<tapegraph tape ")]


HELPER = '''import tapegraph as tg


def log_of(w):
    return tg.log(w)


def log_of_exp(w):
    return tg.log(tg.exp(w * 1000.0))
'''


def test_instructions_from_several_files_name_the_file_that_declared_most(tmp_path):
    """A code object names one file: the one that declared the most instructions.
    The lines of the others, and lines with no origin, are line 0 of that file."""
    (tmp_path / "layers_for_warnings.py").write_text(HELPER)
    layers = _import(tmp_path / "layers_for_warnings.py", "layers_for_warnings")
    helper = str(tmp_path / "layers_for_warnings.py")
    w = tg.param("w", shape=(2,))

    # log in the helper; mul, exp, sum here: this file is named, the helper's log is line 0
    program = tg.compile(tg.sum(tg.exp(layers.log_of(w) * 1000.0)), wrt=[w])
    here = _line() - 1
    found = _runtime_warnings(lambda: program.run({"w": np.array([-1.0, 3.0])}, {}))
    assert found == [("invalid value encountered in log", __file__, 0),
                     ("overflow encountered in exp", __file__, here)]

    # mul, exp, log in the helper; sum here: the helper is named
    program = tg.compile(tg.sum(layers.log_of_exp(w)), wrt=[w])
    found = _runtime_warnings(lambda: program.run({"w": np.array([1.0, 2.0])}, {}))
    assert found == [("overflow encountered in exp", helper, 9)]
    assert linecache.getline(helper, 9).strip() == "return tg.log(tg.exp(w * 1000.0))"

    # one instruction each (log there, sum here): on a tie, the file of the first instruction
    program = tg.compile(tg.sum(layers.log_of(w)), wrt=[w])
    found = _runtime_warnings(lambda: program.run({"w": np.array([-1.0, 2.0])}, {}))
    assert found == [("invalid value encountered in log", helper, 5)]


def test_without_a_line_of_the_users_the_generated_line_is_shown():
    """Named values carry no line in the tape: the step keeps its generated lines,
    registered with linecache, whose comment names the value."""
    w = tg.param("w", shape=(2,))
    logs = tg.log(w).named("logs")
    program = tg.compile(tg.sum(logs).named("total"), wrt=[w])
    [(message, filename, line)] = _runtime_warnings(lambda: program.run({"w": np.array([-1.0, 1.0])}, {}))
    assert message == "invalid value encountered in log"
    assert filename.startswith("<tapegraph tape ")
    assert "np.log(" in linecache.getline(filename, line) and "# %1 logs" in linecache.getline(filename, line)


def test_a_label_gives_its_file_and_line_only_when_the_file_is_known_by_that_name(tmp_path):
    w = tg.param("w", shape=(2,))
    tg.log(w)
    declared = _line() - 1
    assert origin_file("test_warnings.py") == __file__
    assert instruction_origin(f"log at test_warnings.py:{declared}") == (__file__, declared)
    assert instruction_origin(f"mul at grad of log at test_warnings.py:{declared}") == (__file__, declared)
    assert instruction_origin("add at grad of w") is None
    assert instruction_origin("logs") is None
    assert instruction_origin("log at nowhere_declared.py:3") is None
    # two files of one name declaring nodes: an origin cannot tell them apart
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same_name_layers.py").write_text(HELPER)
        _import(tmp_path / folder / "same_name_layers.py", f"same_name_layers_{folder}").log_of(w)
    assert origin_file("same_name_layers.py") is None
    assert instruction_origin("log at same_name_layers.py:5") is None
