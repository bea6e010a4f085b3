"""Image-text tasks through run.py's experiment: a fast_dev_run fit and a test_only run of each, tiny CLIP."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mamol.data.food101 import prepare_food101
from mamol.data.hateful_memes import prepare_hateful_memes
from mamol.data.mmimdb import prepare_mmimdb
from run import ex  # importing run registers its main function with the experiment
from tests.fakes.natural import make_food101_raw, make_hateful_memes_raw, make_mmimdb_raw

TASKS = {"mmimdb": ("task_finetune_mmimdb", "F1_macro"), "food101": ("task_finetune_food101", "accuracy"),
         "hatememes": ("task_finetune_hatememes", "AUROC")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("natural_runs")
    make_mmimdb_raw(root / "raw_mmimdb", counts=(6, 3, 4), seed=0)
    make_food101_raw(root / "raw_food", counts=(6, 3, 4), seed=0)
    make_hateful_memes_raw(root / "raw_hm", counts=(8, 4, 4), seed=0)
    prepare_mmimdb(root / "raw_mmimdb", root / "arrow", progress=False)
    prepare_food101(root / "raw_food", root / "arrow", progress=False)
    prepare_hateful_memes(root / "raw_hm", root / "arrow", progress=False)
    return root / "arrow"


def _run(data_root: Path, tmp: Path, task: str, **kw) -> dict:
    updates = dict(data_root=str(data_root), vit="tiny", clip_random_init=True, num_gpus=0, num_workers=0,
                   batch_size=4, per_gpu_batchsize=4, log_dir=str(tmp / "runs"),
                   missing_table_root=str(tmp / "tables"), exp_name=task, max_epoch=1)
    updates.update(kw)
    ex.run(named_configs=[TASKS[task][0]], config_updates=updates, options={"--loglevel": "ERROR"})
    runs = sorted((tmp / "runs" / task).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return json.loads((runs[-1] / "test_results.json").read_text()) | {"run_dir": str(runs[-1])}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_fast_dev_run_fit(data_root, tmp_path, task):
    report = _run(data_root, tmp_path, task, fast_dev_run=True)
    assert TASKS[task][1] in report["metrics"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_fit_then_test_only(data_root, tmp_path, task):
    fitted = _run(data_root, tmp_path, task, val_check_interval=1.0)
    checkpoint = fitted["checkpoint"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["mamol"]["infos"][0]["name"] == task
    evaluated = _run(data_root, tmp_path, task, test_only=True, load_path=checkpoint, test_ratio=0.7,
                     test_type="both")
    assert evaluated["metrics"] == pytest.approx(fitted["metrics"], abs=1e-6)  # same weights, same table
    assert evaluated["missing"]["missing_type"] == "both" and evaluated["checkpoint"] == checkpoint
    names = set(evaluated["metrics"])
    expected = {"mmimdb": {"F1_micro", "F1_macro", "F1_weighted", "F1_samples"},
                "food101": {"accuracy"}, "hatememes": {"AUROC", "accuracy"}}[task]
    assert expected <= names and not any(n.startswith("val") for n in names)


def test_two_tasks_train_and_evaluate_together(data_root, tmp_path):
    """DCP's multitask setting: one model, one head per task, batches never mixing tasks."""
    report = _run(data_root, tmp_path, "mmimdb", datasets=["mmimdb", "food101"],
                  loss_names={"mmimdb": 1, "food101": 1}, exp_name="mmimdb", val_check_interval=1.0)
    metrics = set(report["metrics"])
    assert {"mmimdb/F1_macro", "food101/accuracy", "the_metric"} <= metrics
    assert report["tasks"] == ["mmimdb", "food101"]
