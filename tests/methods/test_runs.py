"""Every method through run.py's experiment (in process): fast_dev_run on a 2-modality scene, a 3-modality
scene and an image-text task; fit -> test_only round trips; a method mismatch refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mamol.errors import CheckpointError
from mamol.methods import METHODS
from tests.helpers import run_experiment

DATA = ("remote", "remote_3modality", "mmimdb")


def _run(tmp: Path, data: str, roots: dict[str, Path], **updates) -> dict:
    """A tiny run of ``data`` (remote: batches of 8; image-text: batches of 4) with ``updates``."""
    base = dict(log_dir=str(tmp / "runs"), missing_table_root=str(tmp / "tables"), max_epoch=1)
    if data == "mmimdb":
        return run_experiment("task_finetune_mmimdb", **{**base, "data_root": str(roots["natural"]), "batch_size": 4,
                                                         "per_gpu_batchsize": 4, "val_check_interval": 1.0, **updates})
    root = roots["remote3"] if data == "remote_3modality" else roots["remote"]
    return run_experiment(data, **{**base, "data_root": str(root), "datasets": ["synthetic"], "batch_size": 8,
                                   "per_gpu_batchsize": 8, "check_val_every_n_epoch": 1, "learning_rate": 1e-3,
                                   **updates})


@pytest.fixture
def roots(remote_root, remote3_root, natural_root) -> dict[str, Path]:
    return {"remote": remote_root, "remote3": remote3_root, "natural": natural_root}


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_fast_dev_run(tmp_path, roots, method, data):
    report = _run(tmp_path, data, roots, method=method, fast_dev_run=True, exp_name=method)
    assert report["method"] == method
    assert ("F1_macro" if data == "mmimdb" else "OA") in report["metrics"]
    if data == "remote_3modality":
        assert report["dataset"]["synthetic"]["modalities"] == ["hsi", "lidar", "sar"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_fit_then_test_only_round_trip(tmp_path, roots, method):
    """On image-text data, so both towers' trained parts (prompts of the text tower too) are saved and loaded."""
    fitted = _run(tmp_path, "mmimdb", roots, method=method, exp_name="fit")
    state = torch.load(fitted["checkpoint"], map_location="cpu", weights_only=True)
    assert state["mamol"]["method"] == method
    evaluated = _run(tmp_path, "mmimdb", roots, method=method, exp_name="eval", test_only=True,
                     load_path=fitted["checkpoint"])
    assert evaluated["metrics"] == pytest.approx(fitted["metrics"], abs=1e-6)  # same weights, same table
    if method == "dcp":  # a checkpoint of another method is refused (here: DCP's, loaded by the default, MaMOL)
        with pytest.raises(CheckpointError, match="method='dcp'.*pass method=dcp"):
            _run(tmp_path, "mmimdb", roots, exp_name="other", test_only=True, load_path=fitted["checkpoint"])


@pytest.mark.parametrize("data", ("remote", "mmimdb"))
def test_moe_lora_with_the_sparse_router_trains_and_tests(tmp_path, roots, data):
    """``moe_lora moe_router=sparse``: a whole run, fit then test_only, on a scene and an official-layout dataset."""
    fitted = _run(tmp_path, data, roots, method="moe_lora", moe_router="sparse", exp_name="fit")
    evaluated = _run(tmp_path, data, roots, method="moe_lora", moe_router="sparse", exp_name="eval", test_only=True,
                     load_path=fitted["checkpoint"])
    assert evaluated["metrics"] == pytest.approx(fitted["metrics"], abs=1e-6)
    assert fitted["config"]["moe_router"] == "sparse"
