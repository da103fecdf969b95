"""The main job (python -m models): a quick run, its outputs, and its errors."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from models.__main__ import EXPERIMENTS, main
from models.data import generate_problem, save_problem

ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_run_of_every_experiment(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for experiment in EXPERIMENTS.values():
        assert f"== {experiment.label}: " in out
    assert "Epoch 0: Ave objective=" in out and "Test set accuracy = " in out
    table = (tmp_path / "summary.txt").read_text()
    assert table.splitlines()[0].split() == ["experiment", "epochs", "train", "loss", "val", "loss", "test", "acc", "ms/epoch"]
    assert table in out
    assert "Ridge with L2Reg=1                  100 " in table  # 2000 epochs / 20
    for name in ("linear_regression", "ridge_regression", "mlp_regression", "multiclass"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG)


def test_data_option_reads_a_problem_file(tmp_path, capsys):
    path = tmp_path / "problem.npz"
    save_problem(path, generate_problem(seed=3, num_points=300, num_train=60))
    assert main(["ridge-0", "--quick", "--data", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"regression problem: {path}; 60 training and 240 validation points" in out
    assert sorted(os.listdir(tmp_path / "out")) == ["ridge_regression.png", "summary.txt"]


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/missing.npz"], "--data: problem file '{tmp}/missing.npz' does not exist"),
    (["--data", "{tmp}/garbage.npz"], "--data: problem file '{tmp}/garbage.npz' is not a readable .npz archive"),
    (["ridge-2"], "unknown experiment 'ridge-2'; choose from linear, ridge-1"),
    (["--out", "{tmp}/garbage.npz/out"], "--out: cannot create the folder"),
])
def test_bad_arguments_are_clear_errors(tmp_path, capsys, args, message):
    (tmp_path / "garbage.npz").write_text("garbage")
    argv = [arg.format(tmp=tmp_path) for arg in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_python_dash_m_models_runs_without_importing_matplotlib_first(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys, models; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "False"
    result = subprocess.run([sys.executable, "-m", "models", "multiclass", "--quick", "--out", "plots"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Test set accuracy = 1.000" in result.stdout
    assert (tmp_path / "plots" / "multiclass.png").is_file()
