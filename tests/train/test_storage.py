"""Storage that fails under a run: a full disk, a read-only folder, a file where a folder belongs.

Each ends in one ``error:`` line naming the path (exit status 2), with no temporary file and no empty run
folder left behind. The full and read-only disks are real: small tmpfs mounts (the suite runs as root, as CI
does); the atomic writer is also tested with a failing ``os.replace``.
"""
from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest

import run
from mamol.errors import StorageError
from mamol.files import atomic_write
from tests.helpers import TINY, make_arrow_script
from tests.train.test_cli import _error_line


@pytest.fixture
def mount(tmp_path):
    """``mount(size, read_only=False)``: a fresh tmpfs of ``size`` bytes under tmp_path, unmounted afterwards."""
    mounted: list[Path] = []

    def make(size: int, read_only: bool = False) -> Path:
        point = tmp_path / f"mnt_{uuid.uuid4().hex[:6]}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs needs root: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.suffix == ".tmp")


def _args(root: Path, tmp_path: Path, log_dir: Path) -> list[str]:
    words = {**TINY, "data_root": str(root), "datasets": ["synthetic"], "log_dir": str(log_dir), "max_epoch": 1,
             "check_val_every_n_epoch": 1,
             "missing_table_root": str(tmp_path / "tables"), "batch_size": 32, "per_gpu_batchsize": 32}
    return [f"{k}={v!r}" if isinstance(v, (list, str)) else f"{k}={v}" for k, v in words.items()]


def test_full_disk_during_conversion(mount, tmp_path, capfd):
    from mamol.conversion.synthetic import make_synthetic_scene

    make_synthetic_scene(tmp_path / "raw", height=32, width=40, hsi_bands=4, n_classes=4, seed=0)
    full = mount(160 * 1024)
    status = make_arrow_script().main(["--dataset", "synthetic", "--root", str(tmp_path / "raw"), "--target",
                                       str(full / "arrow"), "-q"])
    line = _error_line(status, capfd.readouterr().err)
    assert "no space left on the device" in line and str(full / "arrow") in line
    assert _leftovers(full) == [] and not (full / "arrow").exists()  # the folder it created is gone too


def test_full_disk_during_training(mount, remote_root, tmp_path, capfd):
    full = mount(256 * 1024)  # room for the run folder and its config, not for a checkpoint
    status = run.command_line(["run.py", "with", "remote", *_args(remote_root, tmp_path, full / "runs")])
    line = _error_line(status, capfd.readouterr().err, alone=False)
    assert "no space left on the device" in line and "last.ckpt" in line
    assert _leftovers(full) == []  # no partial checkpoint, and the failed run's folder is gone
    assert not (full / "runs" / "mamol" / "version_0").exists()


def test_read_only_log_dir(mount, remote_root, tmp_path, capfd):
    read_only = mount(64 * 1024, read_only=True)
    status = run.command_line(["run.py", "with", "remote", *_args(remote_root, tmp_path, read_only / "runs")])
    line = _error_line(status, capfd.readouterr().err)
    assert f"log_dir='{read_only / 'runs'}'" in line and "read-only" in line


def test_files_in_the_way(remote_root, tmp_path, capfd):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    status = run.command_line(["run.py", "with", "remote", *_args(remote_root, tmp_path, blocker)])
    line = _error_line(status, capfd.readouterr().err)
    assert f"log_dir='{blocker}'" in line and "a file stands where a folder is expected" in line
    status = make_arrow_script().main(["--dataset", "synthetic", "--root", str(tmp_path), "--target", str(blocker)])
    assert "--target" in _error_line(status, capfd.readouterr().err) and blocker.read_text() == "not a folder"


def test_a_text_file_as_checkpoint_and_a_seed_that_is_no_integer(remote_root, tmp_path, capfd):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello\n")
    args = _args(remote_root, tmp_path, tmp_path / "runs")
    status = run.command_line(["run.py", "with", "remote", *args, "test_only=True", f"load_path={text}"])
    assert "is not a readable PyTorch checkpoint" in _error_line(status, capfd.readouterr().err)
    status = run.command_line(["run.py", "with", "remote", *args, "seed=abc"])
    assert _error_line(status, capfd.readouterr().err) == "error: seed='abc': expected an integer, found str"
    assert not (tmp_path / "runs").exists() or _leftovers(tmp_path / "runs") == []


def test_atomic_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.json"

    def refuse(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src), None, str(dst))

    monkeypatch.setattr("mamol.files.os.replace", refuse)
    with pytest.raises(StorageError, match=r"cannot write .*out\.json.*read-only"), atomic_write(target, "w") as f:
        f.write("{}")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PermissionError), atomic_write(tmp_path / "x", "w"):  # a caller's own error stays its own
        raise PermissionError(errno.EACCES, "reading something else")
    assert list(tmp_path.iterdir()) == []
