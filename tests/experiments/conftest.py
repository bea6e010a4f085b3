"""Fixtures of the experiment-command tests: scenes and a trained tiny checkpoint with its test_only results."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import convert_scene, run_experiment, short_run

BANDS = 6


class Trained:
    """One tiny MaMOL run trained on the session's remote scene, and test_only results of its checkpoint."""

    def __init__(self, data_root: Path, tmp: Path) -> None:
        self.data_root, self.tmp = data_root, tmp
        self.base = short_run(data_root, tmp)
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
