"""The package as a user installs it: a wheel in a fresh venv, run from an empty folder.

One slow test (about 2-3 minutes: a venv, torch's CPU wheel and the package's requirements from
the package index): the wheel is built from the clone's files, holds every properties file
(the top-level ``properties/`` is the one source, shipped as ``recbole_mma4ctr/properties/``),
installs into a venv that has never seen the clone, and ``python -m recbole_mma4ctr`` and the
``recbole-mma4ctr`` console script there give the same effective config and the same test
metrics as ``run_recbole_mma4ctr.py`` in the clone. Without its ``overall.yaml`` the installed
package refuses to run. The cheap checks of the wheel's contents run without the venv.
"""

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

RUN = ["--model=MMa4CTR", "--dataset=wechat", "--synthetic_scale=tiny", "--epochs=1", "--show_progress=False"]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "recbole_mma4ctr", "properties")


def clean_env() -> dict:
    """The environment without anything pointing Python at the clone."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(command, cwd, **kwargs):
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=clean_env(), capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the clone's package files (the clone stays untouched)."""
    root = tmp_path_factory.mktemp("build")
    (root / "src").mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / "src" / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, root / "src" / name)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", root / "dist",
         root / "src"], cwd=root)
    (built,) = (root / "dist").glob("recbole_mma4ctr-*.whl")
    return built


def test_the_wheel_holds_every_module_every_properties_file_and_the_console_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "recbole_mma4ctr").rglob("*.py")}
    properties = {"recbole_mma4ctr/" + str(p.relative_to(REPO)) for p in (REPO / "properties").rglob("*") if p.is_file()}
    assert "recbole_mma4ctr/properties/overall.yaml" in properties
    assert modules <= names and properties <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "recbole-mma4ctr = recbole_mma4ctr.__main__:run" in text


def record_of(output: str, folder: Path) -> dict:
    """The result record a run printed the path of (its last line, relative to ``folder``)."""
    return json.loads((folder / output.strip().splitlines()[-1]).read_text())


@pytest.mark.slow
def test_an_installed_wheel_runs_from_an_empty_folder_like_the_clone(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python, console = env_dir / "bin" / "python", env_dir / "bin" / "recbole-mma4ctr"
    run([python, "-m", "pip", "install", "--quiet", "torch==2.13.0"], cwd=tmp_path)
    run([python, "-m", "pip", "install", "--quiet", wheel], cwd=tmp_path)
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "recbole==1.2.1"], cwd=tmp_path)  # docs/install.md

    folders = {name: tmp_path / name for name in ("module", "console", "clone", "prepare")}
    for folder in folders.values():
        folder.mkdir()
    where = run([python, "-c", "from recbole_mma4ctr.settings import properties_dir; print(properties_dir())"],
                cwd=folders["prepare"]).stdout.strip()
    assert Path(where) == Path(run([python, "-c", "import recbole_mma4ctr; print(recbole_mma4ctr.__file__)"],
                                   cwd=folders["prepare"]).stdout.strip()).parent / "properties"
    assert "site-packages" in where
    assert "synth" in run([python, "-m", "recbole_mma4ctr.prepare", "--help"], cwd=folders["prepare"]).stdout

    by_module = record_of(run([python, "-m", "recbole_mma4ctr", *RUN], cwd=folders["module"]).stdout, folders["module"])
    by_console = record_of(run([console, *RUN], cwd=folders["console"]).stdout, folders["console"])
    clone = subprocess.run([sys.executable, REPO / "run_recbole_mma4ctr.py", *RUN], cwd=folders["clone"],
                           env={**clean_env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert clone.returncode == 0, clone.stderr[-3000:]
    by_clone = record_of(clone.stdout, folders["clone"])

    # paths are relative to the working folder in all three, so the whole effective config matches
    assert by_module["config"] == by_clone["config"] == by_console["config"]
    assert by_module["config"]["metrics"] == ["AUC", "GAUC", "UAUC", "LogLoss"]  # ours, not RecBole's defaults
    assert by_module["test"] == by_clone["test"] == by_console["test"]
    assert by_module["split_sizes"] == by_clone["split_sizes"]

    # an installed package without its overall.yaml refuses to run instead of using RecBole's defaults
    (Path(where) / "overall.yaml").unlink()
    broken = subprocess.run([python, "-m", "recbole_mma4ctr", *RUN], cwd=folders["prepare"], env=clean_env(),
                            capture_output=True, text=True)
    assert broken.returncode != 0 and "properties/overall.yaml not found" in broken.stderr
