"""The ``tapegraph`` command: dump, gradcheck, draw, the JSON schema, and every bad input.

Most tests run the command in-process through ``tapegraph.cli.main`` (fast);
two run ``python -m tapegraph`` to prove the entry point works.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jsonschema
import numpy as np
import pytest

import tapegraph as tg
from models.catalog import MODELS, build
from tapegraph.cli import build_parser, label_ranges, main, parse_shapes, random_arrays
from tapegraph.inspect.export import TAPE_SCHEMA, tape_to_dict

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILTINS = list(MODELS)

TARGET_SCRIPT = '''
import numpy as np
import tapegraph as tg


def _model():
    x = tg.input("x", shape=("batch", 3))
    y = tg.input("y", shape=("batch",), dtype="int64")
    w = tg.param("w", shape=(4, 3))
    return tg.mean(tg.cross_entropy(tg.matmul(x, tg.transpose(w)), y)), w


def program():
    objective, w = _model()
    return tg.compile(objective, wrt=[w])


def pair():
    objective, w = _model()
    return objective, [w]


def arrays():
    return program(), {"w": np.ones((4, 3))}, {"x": np.ones((5, 3)), "y": np.array([0, 1, 2, 3, 0])}


def number():
    return 42


def wrong_tuple():
    return program(), [1, 2], {}


def program_and_list():
    return program(), []


def not_a_list():
    objective, w = _model()
    return objective, "w"


def needs(argument):
    return program()


def fails():
    return 1 / 0


def log_of_negative():
    w = tg.param("w", shape=(3,))
    return tg.sum(tg.log(w)), [w]


def unlabelled():
    # an integer input that is an output, not class labels: no range to draw it from
    counts = tg.input("counts", shape=(3,), dtype="int64")
    w = tg.param("w", shape=(3,))
    return tg.compile(tg.sum(tg.square(w)), wrt=[w], outputs={"counts": counts})


not_callable = 3
'''


@pytest.fixture
def script(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "target.py"
    path.write_text(TARGET_SCRIPT)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, expected_code: int = 2) -> None:
    assert code == expected_code
    assert err.startswith("tapegraph: error: ")
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(TAPE_SCHEMA)


# Help.

def test_top_level_help_names_every_command_target_form_and_exit_code(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for text in ("dump", "gradcheck", "draw", *BUILTINS, "path/to/script.py:NAME", "package.module:NAME",
                 "module-level tg.Program or optimizer",
                 "--shapes", "Exit codes"):
        assert text in out


@pytest.mark.parametrize("command", ["dump", "gradcheck", "draw"])
def test_every_option_of_every_subcommand_is_documented_in_its_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    subparser = next(action for action in build_parser()._subparsers._group_actions).choices[command]
    for action in subparser._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
        for option in action.option_strings:
            assert option in out
    assert "examples:" in out and "TARGET" in out


# dump.

def test_dump_of_a_builtin_model_is_the_program_dump_at_batch_1(capsys):
    code, out, _ = run(capsys, "dump", "ridge")
    program, _, _ = build("ridge")
    assert code == 0
    assert out == program.dump(sizes={"batch": 1}) + "\n"


def test_forward_and_reverse_print_only_their_section_with_the_full_dumps_numbering(capsys):
    _, full, _ = run(capsys, "dump", "multiclass")
    for section, other in (("forward", "reverse"), ("reverse", "forward")):
        code, out, _ = run(capsys, "dump", "multiclass", f"--{section}")
        assert code == 0
        assert f"{section} tape (" in out and f"{other} tape" not in out
        assert "buffers" not in out and "feeds:" not in out
        instructions = [line for line in out.splitlines() if re.match(r"\s+\d+\s+s\d+:", line)]
        assert instructions and all(line in full.splitlines() for line in instructions)
    _, forward, _ = run(capsys, "dump", "multiclass", "--forward")
    _, reverse, _ = run(capsys, "dump", "multiclass", "--reverse")
    count = len(re.findall(r"^\s+\d+\s+s\d+:", full, re.MULTILINE))
    assert len(re.findall(r"^\s+\d+\s+s\d+:", forward + reverse, re.MULTILINE)) == count


def test_sgd_dump_has_an_update_section_with_the_models_step_size(capsys):
    code, out, _ = run(capsys, "dump", "mlp", "--kind", "sgd")
    assert code == 0
    assert out.startswith(f"sgd step: step_size = {MODELS['mlp'].step_size}\n")
    assert "update tape (4 instructions)" in out  # one subtraction per parameter
    code, out, _ = run(capsys, "dump", "mlp", "--kind", "sgd", "--update", "--step-size", "0.5")
    assert code == 0 and "step_size = 0.5" in out and "forward tape" not in out


def test_run_dump_has_no_reverse_section(capsys):
    code, out, _ = run(capsys, "dump", "linear", "--kind", "run")
    assert code == 0 and out.splitlines()[0].endswith("; run") and "reverse tape" not in out


def test_shapes_specialises_the_symbolic_batch_dimension(capsys):
    _, out, _ = run(capsys, "dump", "ridge", "--shapes", "batch=32")
    assert "sizes: batch=32" in out and "s0:f64[32,400] <- input x" in out
    _, out, _ = run(capsys, "dump", "ridge", "--shapes", "batch=7", "--features", "3")
    assert "s0:f64[7,3] <- input x" in out


def test_parse_shapes_reads_several_sizes():
    assert parse_shapes("batch=32, seq = 8") == {"batch": 32, "seq": 8}


# JSON.

def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(TAPE_SCHEMA)
    assert TAPE_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("kind", ["value_and_grad", "run", "sgd"])
def test_json_of_every_builtin_model_follows_the_schema(capsys, name, kind):
    code, out, _ = run(capsys, "dump", name, "--format", "json", "--kind", kind, "--shapes", "batch=4")
    assert code == 0
    data = json.loads(out)
    validator().validate(data)
    assert data["sizes"] == {"batch": 4}
    assert data["sections"] == {"run": ["forward"], "value_and_grad": ["forward", "reverse"],
                                "sgd": ["forward", "reverse", "update"]}[kind]
    assert [item["index"] for item in data["instructions"]] == list(range(len(data["instructions"])))
    assert data["total_bytes"] == sum(buffer["bytes"] for buffer in data["buffers"]) + data["workspace_bytes"]


def test_json_is_byte_for_byte_stable(capsys):
    outputs = {run(capsys, "dump", "multiclass", "--format", "json")[1] for _ in range(2)}
    assert len(outputs) == 1


def test_json_matches_the_tape_it_exports(capsys):
    program, _, _ = build("multiclass")
    tape = program.tape(sizes={"batch": 1})
    _, out, _ = run(capsys, "dump", "multiclass", "--format", "json")
    data = json.loads(out)
    assert data["title"] == program.dump(sizes={"batch": 1}).splitlines()[0]
    assert [item["op"] for item in data["instructions"]] == [instruction.op.name for instruction in tape.instructions]
    assert [item["output"] for item in data["instructions"]] == [instruction.output for instruction in tape.instructions]
    assert {item["name"]: [item["slot"], item["value"]] for item in data["results"]} == {
        name: list(place) for name, place in tape.results.items()}
    # a batch of one row: cross_entropy and its gradient run in Python floats, with no workspace
    assert data["workspace_bytes"] == 0 and data["workspaces"] == [] and not tape.workspaces
    assert data["instructions"][0]["static"] == {"transpose_a": False, "transpose_b": True}


def test_json_section_filter_lists_only_that_sections_instructions(capsys):
    _, out, _ = run(capsys, "dump", "ridge", "--format", "json", "--reverse")
    data = json.loads(out)
    validator().validate(data)
    assert data["sections"] == ["reverse"]
    assert {item["section"] for item in data["instructions"]} == {"reverse"}
    assert data["instructions"][0]["index"] == 7


def test_the_schema_rejects_extra_missing_and_mistyped_fields(capsys):
    _, out, _ = run(capsys, "dump", "ridge", "--format", "json")
    good = json.loads(out)
    broken = [
        {**good, "extra": 1},
        {key: value for key, value in good.items() if key != "buffers"},
        {**good, "version": 1},
        {**good, "instructions": [{**good["instructions"][0], "destination": {"kind": "elsewhere", "feed": None}}]},
        {**good, "results": [{key: value for key, value in good["results"][0].items() if key != "returned"}]},
        {**good, "instructions": [{**good["instructions"][0], "shape": "[1]"}]},
        {**good, "feeds": [{**good["feeds"][0], "kind": "output"}]},
        {**good, "constants": [{**good["constants"][0], "colour": "red"}]},
    ]
    for data in broken:
        assert not validator().is_valid(data)


def test_constants_export_all_their_values_and_non_finite_floats_as_strings():
    w = tg.param("w", shape=(20,))
    big = tg.const(np.arange(20.0))
    odd = tg.const(np.array([np.inf, -np.inf, np.nan]))
    objective = tg.sum(w * big) + tg.sum(tg.exp(tg.mean(w) * odd))
    data = tape_to_dict(tg.compile(objective, wrt=[w]).tape())
    validator().validate(data)
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN or Infinity tokens
    by_label = {tuple(item["shape"]): item for item in data["constants"]}
    # every entry, however many: the export is enough to run the tape
    assert by_label[(20,)]["values"] == list(range(20)) and by_label[(20,)]["max"] == 19.0
    assert by_label[(3,)]["values"] == ["inf", "-inf", "nan"]


# gradcheck.

@pytest.mark.parametrize("name", ["ridge", "mlp", "multiclass"])
def test_gradcheck_of_builtin_models_prints_each_parameters_error(capsys, name):
    code, out, err = run(capsys, "gradcheck", name)
    assert code == 0, err
    program, _, _ = build(name)
    rows = {line.split()[0]: float(line.split()[-1]) for line in out.splitlines()[2:-1]}
    assert list(rows) == [param.name for param in program.wrt]
    assert all(error <= 1e-6 for error in rows.values())
    assert out.splitlines()[0].startswith(f"gradcheck {name} (batch=3) at fit's starting parameters")
    assert out.splitlines()[-1].startswith("ok:")


def test_gradcheck_with_random_params_checks_ridge_away_from_zero(capsys):
    _, at_start, _ = run(capsys, "gradcheck", "ridge")
    code, drawn, _ = run(capsys, "gradcheck", "ridge", "--random-params", "--seed", "1")
    assert code == 0 and "random parameters (seed 1)" in drawn
    assert at_start.split("objective ")[1] != drawn.split("objective ")[1]


def test_gradcheck_fails_with_exit_code_1_when_an_error_exceeds_rtol(capsys):
    code, out, err = run(capsys, "gradcheck", "mlp", "--rtol", "1e-30")
    assert_one_line_error(code, err, expected_code=1)
    assert "gradient check failed: gradient of parameter" in err
    assert "W1" in out  # the table is printed before the verdict


def test_gradcheck_fails_cleanly_on_a_nan_objective(capsys, script):
    code, _, err = run(capsys, "gradcheck", f"{script}:log_of_negative")
    assert_one_line_error(code, err, expected_code=1)
    assert "objective is nan" in err


def test_gradcheck_draws_labels_below_the_number_of_classes(script):
    code = main(["gradcheck", f"{script}:program", "--shapes", "batch=50"])
    assert code == 0
    from tapegraph.cli import load_target
    program = load_target(f"{script}:program").program
    assert label_ranges(program, {"batch": 50}) == {"y": 4}
    params, inputs = random_arrays(program, {"batch": 50}, np.random.default_rng(0))
    assert inputs["y"].dtype == np.int64 and set(inputs["y"]) == {0, 1, 2, 3}
    assert params["w"].shape == (4, 3) and inputs["x"].shape == (50, 3)


def test_gradcheck_uses_the_arrays_a_target_returns(capsys, script):
    code, out, _ = run(capsys, "gradcheck", f"{script}:arrays")
    assert code == 0
    assert "(batch=5) at the arrays it returned: objective 1.38629" in out


# Script and module targets.

def test_script_targets_returning_a_program_a_pair_or_arrays(capsys, script):
    outputs = {}
    for function in ("program", "pair", "arrays"):
        code, outputs[function], err = run(capsys, "dump", f"{script}:{function}", "--forward")
        assert code == 0, err
    assert outputs["program"] == outputs["pair"]
    assert "sizes: batch=1" in outputs["program"] and "sizes: batch=5" in outputs["arrays"]


def test_module_targets_are_imported_from_the_current_folder(capsys, script, monkeypatch):
    monkeypatch.chdir(script.parent)
    module = "cli_target_module_for_tests"
    (script.parent / f"{module}.py").write_text(TARGET_SCRIPT)
    monkeypatch.delitem(sys.modules, module, raising=False)
    code, out, err = run(capsys, "dump", f"{module}:pair", "--reverse")
    assert code == 0, err
    assert "reverse tape (4 instructions)" in out
    assert str(script.parent) not in sys.path  # put back as it was
    sys.modules.pop(module, None)


def test_a_script_can_import_its_neighbours(capsys, tmp_path):
    (tmp_path / "neighbour_for_cli_tests.py").write_text("import tapegraph as tg\nW = tg.param('w', shape=(2,))\n")
    (tmp_path / "main_script.py").write_text(
        "import tapegraph as tg\nfrom neighbour_for_cli_tests import W\n"
        "def build():\n    return tg.sum(tg.square(W)), [W]\n")
    code, out, err = run(capsys, "gradcheck", f"{tmp_path / 'main_script.py'}:build")
    sys.modules.pop("neighbour_for_cli_tests", None)
    assert code == 0, err
    assert "(fixed shapes) at random values (seed 0)" in out


# draw.

def test_draw_writes_a_png_of_the_graph_and_an_svg_of_the_tape(capsys, tmp_path):
    graph, tape = tmp_path / "graph.png", tmp_path / "tape.svg"
    code, out, err = run(capsys, "draw", "ridge", "-o", str(graph), "--features", "3")
    assert code == 0, err
    assert graph.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and out == f"wrote {graph} (graph of ridge)\n"
    code, _, err = run(capsys, "draw", "mlp", "-o", str(tape), "--what", "tape", "--kind", "sgd",
                       "--shapes", "batch=2")
    assert code == 0, err
    text = tape.read_text()
    assert "<svg" in text and "update" in text


# Bad input: one line on stderr, a non-zero exit code, no traceback.

BAD_INPUTS = [
    (["dump", "ridg"], "unknown model 'ridg': the built-in models are linear, ridge, mlp, multiclass"),
    (["dump", "does/not/exist.py:build"], "file 'does/not/exist.py' does not exist"),
    (["dump", "model.py"], "names a script but no function"),
    (["dump", "no_such_module_anywhere:build"], "cannot import module 'no_such_module_anywhere'"),
    (["dump", "{script}:missing"], "has no function 'missing'; it defines arrays, fails,"),
    (["dump", "{script}:not_callable"], "'not_callable' is a int, not a function"),
    (["dump", "{script}:number"], "returned an object of type int; expected a tg.Program"),
    (["dump", "{script}:wrong_tuple"], ("returned a tuple (Program, list, dict); in (program, params, inputs), "
                                        "params and inputs must be dicts")),
    (["dump", "{script}:program_and_list"], ("returned a tuple (Program, list); expected a tg.Program, an optimizer "
                                             "(tg.sgd, tg.adam, ...), a (program, params, inputs) tuple, or an "
                                             "(objective, [params...]) pair")),
    (["dump", "{script}:program", "--kind", "step"], "--kind step is the step of an optimizer, and "),
    (["dump", "{script}:not_a_list"], "the second item must be a list of tg.param nodes"),
    (["dump", "{script}:needs"], "needs() needs arguments (argument)"),
    (["dump", "{script}:fails"], "ZeroDivisionError: division by zero (at target.py:"),
    (["dump", "ridge", "--shapes", "batch=abc"], "the size of 'batch' must be a positive integer, got 'abc'"),
    (["dump", "ridge", "--shapes", "batch"], "'batch' is not NAME=INT"),
    (["dump", "ridge", "--shapes", "=3"], "'=3' has no dimension name"),
    (["dump", "ridge", "--shapes", "batch=0"], "must be a positive integer, got '0'"),
    (["dump", "ridge", "--shapes", "bach=3"], ("--shapes names bach, which ridge does not have; "
                                               "its symbolic dimensions are batch")),
    (["dump", "{script}:log_of_negative", "--shapes", "batch=3"], "it has no symbolic dimensions"),
    (["dump", "ridge", "--shapes", "batch=3", "--shapes", "batch=4"], "two sizes, 3 and 4"),
    (["gradcheck", "{script}:arrays", "--shapes", "batch=2"], "disagrees with the arrays"),
    (["gradcheck", "{script}:unlabelled"], "cannot draw values for input 'counts'"),
    (["dump", "ridge", "--kind", "run", "--reverse"], "a run tape has no reverse section"),
    (["dump", "ridge", "--update"], "use --kind sgd for the update section"),
    (["dump", "ridge", "--step-size", "0.1"], "--step-size applies to --kind sgd only"),
    (["dump", "ridge", "--kind", "sgd", "--step-size", "-1"], "expected a positive number"),
    (["dump", "{script}:pair", "--features", "3"], "--features applies to the built-in models only"),
    (["dump", "ridge", "--format", "xml"], "invalid choice: 'xml'"),
    (["dump", "ridge", "--forward", "--reverse"], "not allowed with argument"),
    (["dump"], "the following arguments are required: TARGET"),
    (["transmogrify"], "invalid choice: 'transmogrify'"),
    ([], "choose a command: dump, gradcheck or draw"),
    (["draw", "ridge", "-o", "picture.jpg"], "must end in .png or .svg"),
    (["draw", "ridge", "-o", "no/such/folder/x.png"], "does not exist"),
    (["draw", "ridge", "-o", "x.png", "--kind", "run"], "use them with --what tape"),
    (["gradcheck", "ridge", "--rtol", "nan"], "expected a finite number"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(argv) or "(none)" for argv, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_code_2(capsys, script, argv, message):
    argv = [item.replace("{script}", str(script)) for item in argv]
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err)
    assert message in err
    assert out == ""


# The entry point.

def test_python_dash_m_tapegraph_runs_the_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "tapegraph", "dump", "ridge", "--forward", "--features", "3"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    program, _, _ = build("ridge", 3)
    title, _sizes, *forward = result.stdout.splitlines()
    assert title == program.dump(sizes={"batch": 1}).splitlines()[0]
    assert forward[0] == "forward tape (7 instructions):"
    bad = subprocess.run([sys.executable, "-m", "tapegraph", "dump", "ridge", "--shapes", "batch=abc"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == ("tapegraph: error: argument --shapes: the size of 'batch' must be a positive integer, "
                          "got 'abc'; see 'tapegraph dump --help'\n")


def test_the_console_script_entry_point_is_main_of_tapegraph_main(capsys):
    from tapegraph.__main__ import main as entry_point

    assert entry_point(["dump", "linear", "--forward"]) == 0
    assert "forward tape" in capsys.readouterr().out
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'tapegraph = "tapegraph.__main__:main"' in pyproject


# The built-in models are what fit trains.

@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_models_compile_the_tape_fit_trains(name):
    program, params, inputs = build(name, num_features=2, batch=5)
    estimator = MODELS[name].make().set_params(max_num_epochs=1, random_state=0, verbose=False)
    estimator.fit(inputs["x"], inputs["y"])

    def layout(prog: tg.Program) -> list:
        # labels name the file that compiled the program, so compare everything else
        data = tape_to_dict(prog.tape(sizes={"batch": 1}))
        return [{key: value for key, value in item.items() if key != "label"} for item in data["instructions"]]

    assert layout(program) == layout(estimator.program_)
    assert sorted(params) == sorted(estimator.params_)
    assert all(params[key].shape == np.shape(estimator.params_[key]) for key in params)


def test_builtin_default_features_are_the_homeworks():
    assert {name: model.num_features for name, model in MODELS.items()} == {
        "linear": 400, "ridge": 400, "mlp": 1, "multiclass": 2}
    _, _, inputs = build("multiclass", batch=50)
    assert set(inputs["y"]) <= {0, 1, 2}
    with pytest.raises(ValueError, match="unknown built-in model 'lasso'"):
        build("lasso")
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        build("ridge", batch=0)


def test_loading_a_script_leaves_sys_path_and_sys_modules_as_they_were(script):
    before = list(sys.path)
    assert main(["dump", f"{script}:program"]) == 0
    assert sys.path == before
    assert not [name for name in sys.modules if name.startswith("_tapegraph_target_")]


def test_cli_module_does_not_import_matplotlib_until_drawing():
    code = textwrap.dedent("""
        import sys, tapegraph.cli
        tapegraph.cli.main(["dump", "ridge", "--forward"])
        print("matplotlib" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)
    assert result.stdout.strip().endswith("False"), result.stderr


# Issue 14: module-level programs and optimizers as targets; float32 gradient checks.

MODULE_LEVEL = '''
import tapegraph as tg

x = tg.input("x", shape=("batch", 3))
w = tg.param("w", shape=(3,))
prog = tg.compile(tg.mean(tg.tanh(x @ w)), wrt=[w])
opt = tg.adam(prog, learning_rate=0.01)
step = tg.sgd(prog, step_size=0.25)

w32 = tg.param("w32", shape=(3,), dtype="float32")
x32 = tg.input("x32", shape=("batch", 3), dtype="float32")
prog32 = tg.compile(tg.mean(tg.tanh(x32 @ w32)), wrt=[w32])
# a float32 program whose gradient is 3% too large
wrong32 = tg.compile(tg.mean(tg.tanh(x32 @ w32)), wrt=[w32])
wrong32.value_and_grad = lambda params, inputs=None: (lambda value, grads: (value, {"w32": grads["w32"] * 1.03}))(
    *prog32.value_and_grad(params, inputs))

w16 = tg.param("w16", shape=(3,), dtype="float16")
prog16 = tg.compile(tg.sum(tg.square(w16)), wrt=[w16])


def make_rmsprop():
    return tg.rmsprop(prog)
'''


@pytest.fixture
def module_level(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "module_level.py"
    path.write_text(MODULE_LEVEL)
    return path


def test_a_module_level_program_is_a_target(capsys, module_level):
    code, out, _ = run(capsys, "dump", f"{module_level}:prog", "--shapes", "batch=2")
    assert code == 0
    assert out.startswith("program: objective = mean at module_level.py:6; wrt = [w]; value_and_grad\nsizes: batch=2")
    code, out, _ = run(capsys, "gradcheck", f"{module_level}:prog")
    assert code == 0 and "ok: 1 gradient(s) agree" in out


@pytest.mark.parametrize("name, title", [("opt", "adam step: learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-08"),
                                         ("step", "sgd step: step_size=0.25"),
                                         ("make_rmsprop", "rmsprop step: learning_rate=0.01, alpha=0.99, eps=1e-08")])
def test_an_optimizer_is_a_target_and_its_step_is_the_default_tape(capsys, module_level, name, title):
    code, out, _ = run(capsys, "dump", f"{module_level}:{name}", "--shapes", "batch=2")
    assert code == 0
    assert out.startswith(title + "\nsizes: batch=2") and "update tape (" in out
    code, update, _ = run(capsys, "dump", f"{module_level}:{name}", "--update", "--shapes", "batch=2")
    assert code == 0 and update.startswith(title) and "forward tape" not in update and "update tape (" in update
    # the optimizer's program, as the other kinds see it
    code, out, _ = run(capsys, "dump", f"{module_level}:{name}", "--kind", "value_and_grad")
    assert code == 0 and out.startswith("program: objective = mean at module_level.py:6")
    code, out, _ = run(capsys, "gradcheck", f"{module_level}:{name}")
    assert code == 0 and "ok: 1 gradient(s) agree" in out


def test_an_optimizer_targets_step_tape_is_drawn(capsys, module_level, tmp_path):
    picture = tmp_path / "adam.png"
    code, out, _ = run(capsys, "draw", f"{module_level}:opt", "-o", str(picture), "--what", "tape")
    assert code == 0 and picture.read_bytes().startswith(b"\x89PNG")


def test_gradcheck_takes_float32_settings_for_a_float32_program(capsys, module_level):
    code, out, _ = run(capsys, "gradcheck", f"{module_level}:prog32")
    assert code == 0, out
    assert "eps 0.01, rtol 0.01" in out and "w32        f32[3]" in out
    code, out, err = run(capsys, "gradcheck", f"{module_level}:wrong32")
    assert_one_line_error(code, err, expected_code=1)
    assert "gradient check failed: gradient of parameter 'w32' is wrong" in err
    # the float64 settings, asked for, call the correct float32 gradient wrong
    code, _, err = run(capsys, "gradcheck", f"{module_level}:prog32", "--eps", "1e-5", "--rtol", "1e-6")
    assert code == 1


def test_gradcheck_of_float16_needs_eps_and_rtol(capsys, module_level):
    code, _, err = run(capsys, "gradcheck", f"{module_level}:prog16")
    assert_one_line_error(code, err)
    assert "computes in float16" in err and "pass both --eps and --rtol" in err
    code, out, _ = run(capsys, "gradcheck", f"{module_level}:prog16", "--eps", "0.1", "--rtol", "0.1")
    assert code == 0 and "eps 0.1, rtol 0.1" in out
