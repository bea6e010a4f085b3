"""Shared pieces of the experiment-command tests: a trained tiny checkpoint and in-process commands."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from run import ex
from tests.helpers import TINY, convert_scene, run_experiment

BANDS = 6


def base_updates(data_root: Path, tmp: Path) -> dict:
    """A short remote run on ``data_root``: batch 32, one epoch validated, tables and runs under ``tmp``."""
    return dict(data_root=str(data_root), datasets=["synthetic"], batch_size=32, per_gpu_batchsize=32,
                log_dir=str(tmp / "runs"), missing_table_root=str(tmp / "tables"), max_epoch=1,
                check_val_every_n_epoch=1, learning_rate=1e-3)


def run_command(command: str, *named: str, **updates) -> Path:
    """``python run.py <command> with <named> <TINY> <updates>`` in this process; returns the newest folder the
    command wrote (``<log_dir>/<exp_name>/version_<n>``; a sweep: ``<log_dir>/<exp_name>``)."""
    updates = {**TINY, **updates}
    ex.run(command_name=command, named_configs=list(named), config_updates=updates, options={"--loglevel": "ERROR"})
    folder = Path(updates["log_dir"]) / updates["exp_name"]
    if command == "sweep":
        return folder
    return max(folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


class Trained:
    """One tiny MaMOL run trained on the session's remote scene, and test_only results of its checkpoint."""

    def __init__(self, data_root: Path, tmp: Path) -> None:
        self.data_root, self.tmp = data_root, tmp
        self.base = base_updates(data_root, tmp)
        self.report = run_experiment("remote", **self.base, exp_name="trained")
        self.checkpoint = self.report["checkpoint"]
        self._tested: dict[tuple[float, str], dict] = {(0.7, "both"): self.report}  # the training run tested 0.7 / both

    def updates(self, **changes) -> dict:
        """The training run's config updates with ``changes`` (evaluations: batches of 128)."""
        return {**self.base, "batch_size": 128, "per_gpu_batchsize": 128, **changes}

    def test_only(self, ratio: float, kind: str) -> dict:
        """test_results.json of ``test_only`` with ``test_ratio=ratio test_type=kind`` (run once, then reused)."""
        key = (ratio, kind)
        if key not in self._tested:
            self._tested[key] = run_experiment("remote", **self.updates(
                exp_name="tested", test_only=True, load_path=self.checkpoint, test_ratio=ratio, test_type=kind))
        return self._tested[key]


@pytest.fixture(scope="session")
def scene_root(tmp_path_factory) -> Path:
    """A 32 x 40 two-modality scene (HSI 6 bands + LiDAR, 4 classes): 80 / 40 / 80 samples."""
    return convert_scene(tmp_path_factory.mktemp("experiments"), "arrow", hsi_bands=BANDS, size=(32, 40),
                         train_per_class=20, val_per_class=10, test_per_class=20)


@pytest.fixture(scope="session")
def small_scene_root(tmp_path_factory) -> Path:
    """A 12 x 16 scene with the bands and classes of ``scene_root`` (its checkpoints fit): 16 / 8 / 24 samples."""
    return convert_scene(tmp_path_factory.mktemp("small"), "arrow", hsi_bands=BANDS, size=(12, 16), seed=3,
                         train_per_class=4, val_per_class=2, test_per_class=6)


@pytest.fixture(scope="session")
def trained(scene_root, tmp_path_factory) -> Trained:
    return Trained(scene_root, tmp_path_factory.mktemp("trained"))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
