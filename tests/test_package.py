"""The package stands on its own: the wheel of ``pip install .`` works from a directory outside the checkout.

The wheel is built from the checkout and installed, without its dependencies, into a fresh virtual
environment whose only other packages are this environment's third-party libraries (a path in a ``.pth``
file: their ``.pth`` files, among them the editable install of the checkout, are not run). Every command then
runs from an empty folder, so neither ``config.py``, ``run.py`` nor ``datasets/`` can be found.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv holding the built wheel of the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "mamol", source / "mamol", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp / "dist").glob("mamol-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    (site / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_the_package_and_its_data_only(installed):
    wheel = next((installed.parents[2] / "dist").glob("mamol-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mamol/models/mamol-tiny.json" in names
    assert "mamol/data/shipped/food101_class_idx.json" in names
    assert "mamol/__main__.py" in names and "mamol/convert.py" in names
    assert not [n for n in names if n.split("/")[0] in ("config.py", "run.py", "tests", "datasets", "benchmarks")]


def test_entry_points_run_outside_the_checkout(installed, tmp_path):
    where = _run(installed, tmp_path, "-c", "import mamol; print(mamol.__file__)")
    assert where.returncode == 0, where.stderr
    assert not Path(where.stdout.strip()).is_relative_to(REPO)  # the installed copy, not the checkout's
    for module, expected in (("mamol.bench", "--methods"), ("mamol.demo", "--out"), ("mamol.convert", "--dataset")):
        proc = _run(installed, tmp_path, "-m", module, "--help")
        assert proc.returncode == 0, f"{module}: {proc.stderr[-2000:]}"
        assert expected in proc.stdout, module
    keys = _run(installed, tmp_path, "-m", "mamol", "print_config", "with", "task_finetune_mmimdb")
    assert keys.returncode == 0, keys.stderr[-2000:]
    assert "adapter_rank = None" in keys.stdout and "mmimdb_class_num = 23" in keys.stdout


def test_installed_converter_writes_a_scene(installed, tmp_path):
    scene = _run(installed, tmp_path, "-c", "from mamol.conversion.synthetic import make_synthetic_scene; "
                 "make_synthetic_scene('raw', height=32, width=40, hsi_bands=4, n_classes=4, seed=0)")
    assert scene.returncode == 0, scene.stderr[-2000:]
    proc = _run(installed, tmp_path, "-m", "mamol.convert", "--dataset", "synthetic", "--root", "raw",
                "--target", "arrow", "--train-per-class", "5", "--val-per-class", "2", "--test-per-class", "5", "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "arrow").glob("*.arrow")) == [
        "synthetic_scene.arrow", "synthetic_test.arrow", "synthetic_train.arrow", "synthetic_val.arrow"]
