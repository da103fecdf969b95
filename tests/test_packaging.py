"""Packaging: the distribution claims the top-level name ``tapegraph`` only.

The homework's models stay in ``models/`` at the top of the repository,
where ``python -m models`` runs them, and are installed as the subpackage
``tapegraph.models`` (``pyproject.toml``: package-dir). So after ``pip
install .`` (or ``-e .``), ``import models`` in any other folder fails,
and a user's own ``models.py`` shadows nothing of ours.

The slow test (about 10 s, marked ``packaging``) builds the wheel and the
editable wheel from a copy of the sources with the setuptools at hand, and
runs a fresh interpreter on each as ``pip install`` would lay it out:
``-S`` (no ``.pth`` files processed, so no other install of tapegraph is
seen) with the environment's site-packages on the path for numpy and the
rest.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _build(source: pathlib.Path, out: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The wheel and the editable wheel of ``source``, built with this environment's setuptools."""
    folders = out / "wheel", out / "editable"
    code = textwrap.dedent(f"""
        from setuptools import build_meta
        build_meta.build_wheel({str(folders[0])!r})
        build_meta.build_editable({str(folders[1])!r})
    """)
    for folder in folders:
        folder.mkdir(parents=True)
    result = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    wheels = [list(folder.glob("*.whl")) for folder in folders]
    assert all(len(found) == 1 for found in wheels), wheels
    return wheels[0][0], wheels[1][0]


#: Run in a fresh interpreter, from a folder of the user's: what an installed tapegraph gives.
PROBE = textwrap.dedent("""
    import contextlib, io, json, site, sys
    if sys.argv[1]:
        site.addsitedir(sys.argv[1])  # an editable install: its .pth installs its finder
    import tapegraph, tapegraph.models
    from tapegraph.models import RidgeRegression, load
    from tapegraph.cli import main
    import numpy as np
    report = {"tapegraph": tapegraph.__file__, "models": tapegraph.models.__file__}
    with contextlib.suppress(ModuleNotFoundError):
        import models
        report["top_level_models"] = models.__file__
    X = np.linspace(0, 1, 12).reshape(6, 2)
    ridge = RidgeRegression(max_num_epochs=2, random_state=0).fit(X, X @ np.array([1.0, -1.0]))
    ridge.save("ridge.npz")  # persist and its lazy imports, inside the package
    report["loaded"] = type(load("ridge.npz")).__module__
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        report["dump"] = main(["dump", "ridge", "--forward"])
        from tapegraph.models.__main__ import main as job
        try:
            job(["--help"])
        except SystemExit as stop:
            report["job"] = stop.code
    report["output"] = output.getvalue()
    print(json.dumps(report))
""")


def _probe(site_dir: pathlib.Path, editable: bool, cwd: pathlib.Path) -> dict:
    # the environment's packages (numpy, ...) as plain folders: -S processes no .pth file in them
    path = os.pathsep.join([str(site_dir), *site.getsitepackages()])
    env = {"PYTHONPATH": path, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-S", "-c", PROBE, str(site_dir) if editable else ""], cwd=cwd,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def _can_build_wheels() -> bool:
    """setuptools >= 70.1 builds wheels itself; older ones need the wheel package's bdist_wheel."""
    for module in ("setuptools.command.bdist_wheel", "wheel.bdist_wheel"):
        try:
            __import__(module)
            return True
        except ImportError:
            continue
    return False


@pytest.mark.packaging
@pytest.mark.skipif(not _can_build_wheels(), reason="needs setuptools>=70.1 (the test extra installs it)")
def test_the_wheel_and_the_editable_install_claim_no_top_level_models(tmp_path):
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tapegraph", "models"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheel, editable = _build(source, tmp_path / "dist")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/RECORD"))
        assert {name.split("/")[0] for name in names} == {"tapegraph", info}
        assert archive.read(f"{info}/top_level.txt").decode().split() == ["tapegraph"]
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        archive.extractall(tmp_path / "site")
    assert "tapegraph-demo = tapegraph.models.__main__:main" in entry_points
    assert "tapegraph = tapegraph.__main__:main" in entry_points
    assert sorted(name for name in names if name.startswith("tapegraph/models/")) == sorted(
        f"tapegraph/models/{path.name}" for path in (ROOT / "models").glob("*.py"))
    # pyproject.toml lists the packages: every one in the repository is in the wheel
    for init in (ROOT / "tapegraph").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"{init.parent.name} is missing from pyproject's packages"
    with zipfile.ZipFile(editable) as archive:
        archive.extractall(tmp_path / "editable")

    # a user's folder with a models.py of its own
    user = tmp_path / "user"
    user.mkdir()
    (user / "models.py").write_text("MINE = True\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    # installed, the models are tapegraph/models/; editable, the source's models/
    installed, linked = tmp_path / "site" / "tapegraph", source / "tapegraph"
    for site_dir, is_editable, package, models_folder in ((tmp_path / "site", False, installed, installed / "models"),
                                                          (tmp_path / "editable", True, linked, source / "models")):
        report = _probe(site_dir, is_editable, empty)
        assert "top_level_models" not in report, report  # import models fails
        assert report["tapegraph"] == str(package / "__init__.py")
        assert report["models"] == str(models_folder / "__init__.py")
        assert report["loaded"] == "tapegraph.models.estimators" and report["dump"] == 0 and report["job"] == 0
        # the installed models' lines are origins, as from the repository
        assert report["output"].startswith("program: objective = add at estimators.py:")
        assert "usage: " in report["output"]
        shadowed = _probe(site_dir, is_editable, user)
        assert shadowed["top_level_models"] == str(user / "models.py") and shadowed["dump"] == 0


def test_python_dash_m_models_runs_from_the_repository_root_without_an_install():
    # -S: no installed tapegraph is seen; the repository root (the current folder) serves both packages
    env = {"PYTHONPATH": os.pathsep.join(site.getsitepackages()), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run([sys.executable, "-S", "-m", "models", "--help"], cwd=ROOT, capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: python -m models")
    code = "import models, tapegraph.targets as t; print(models.__file__, t.homework_models('catalog').__file__)"
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    top_level, installed_name = result.stdout.split()
    assert top_level == str(ROOT / "models" / "__init__.py") and installed_name == str(ROOT / "models" / "catalog.py")
