"""Image-text tasks through run.py's experiment: a fast_dev_run fit and a test_only run of each, tiny CLIP."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mamol.predictions import read_predictions
from tests.helpers import read_csv, run_experiment

TASKS = {"mmimdb": ("task_finetune_mmimdb", "F1_macro"), "food101": ("task_finetune_food101", "accuracy"),
         "hatememes": ("task_finetune_hatememes", "AUROC")}


def _run(data_root: Path, tmp: Path, task: str, **updates) -> dict:
    """One epoch of ``task``'s named config on the fake data, batches of 4."""
    base = dict(data_root=str(data_root), batch_size=4, per_gpu_batchsize=4, log_dir=str(tmp / "runs"),
                missing_table_root=str(tmp / "tables"), exp_name=task, max_epoch=1)
    return run_experiment(TASKS[task][0], **{**base, **updates})


@pytest.mark.parametrize("task", sorted(TASKS))
def test_fast_dev_run_fit(natural_root, tmp_path, task):
    report = _run(natural_root, tmp_path, task, fast_dev_run=True)
    assert TASKS[task][1] in report["metrics"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_fit_then_test_only(natural_root, tmp_path, task):
    fitted = _run(natural_root, tmp_path, task, val_check_interval=1.0)
    checkpoint = fitted["checkpoint"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["mamol"]["infos"][0]["name"] == task
    evaluated = _run(natural_root, tmp_path, task, test_only=True, load_path=checkpoint, test_ratio=0.7,
                     test_type="both")
    assert evaluated["metrics"] == pytest.approx(fitted["metrics"], abs=1e-6)  # same weights, same table
    assert evaluated["missing"]["missing_type"] == "both" and evaluated["checkpoint"] == checkpoint
    names = set(evaluated["metrics"])
    expected = {"mmimdb": {"F1_micro", "F1_macro", "F1_weighted", "F1_samples"},
                "food101": {"accuracy"}, "hatememes": {"AUROC", "accuracy"}}[task]
    assert expected <= names and not any(n.startswith("val") for n in names)

    # The saved predictions are the decisions the metrics scored: their score is the reported one.
    saved = read_predictions(Path(evaluated["run_dir"]) / evaluated["predictions"])[task]
    assert saved.index.tolist() == sorted(saved.index.tolist()) and len(set(saved.index.tolist())) == len(saved.index)
    assert saved.missing_type.dtype == np.uint8 and set(saved.missing_type.tolist()) <= {0, 1, 2}
    if task == "mmimdb":  # 0/1 per genre; micro F1 = 2 TP / (2 TP + FP + FN) over all samples and genres
        assert saved.label.ndim == 2 and saved.pred.dtype == np.uint8
        tp = int((saved.pred & saved.label).sum())
        f1 = 2 * tp / (saved.pred.sum() + saved.label.sum())
        assert 100 * f1 == pytest.approx(evaluated["metrics"]["F1_micro"], abs=1e-3)
        assert saved.correct.tolist() == (saved.pred == saved.label).all(axis=1).tolist()  # exact match
    else:
        assert 100 * saved.correct.mean() == pytest.approx(evaluated["metrics"]["accuracy"], abs=1e-3)


def test_two_tasks_train_together_and_the_metric_is_the_mean_of_theirs(natural_root, tmp_path):
    """DCP's multitask setting: one model, one head per task, batches never mixing tasks; metrics per task as
    ``<stage>/<task>/<metric>`` and ``the_metric`` the mean of the tasks' own (MM-IMDb F1 macro, Food-101 accuracy)."""
    report = _run(natural_root, tmp_path, "mmimdb", datasets=["mmimdb", "food101"],
                  loss_names={"mmimdb": 1, "food101": 1}, exp_name="mmimdb", val_check_interval=1.0)
    metrics = report["metrics"]
    assert {"mmimdb/F1_macro", "food101/accuracy", "the_metric"} <= set(metrics)
    assert report["tasks"] == ["mmimdb", "food101"]
    assert metrics["mmimdb/F1_macro"] != metrics["food101/accuracy"]  # else any of them would pass for the mean
    assert metrics["the_metric"] == pytest.approx((metrics["mmimdb/F1_macro"] + metrics["food101/accuracy"]) / 2,
                                                  abs=1e-4)  # each rounded to 4 decimals in the report
    (val,) = [row for row in read_csv(Path(report["run_dir"]) / "metrics.csv") if row.get("val/the_metric")]
    assert float(val["val/the_metric"]) == pytest.approx(
        (float(val["val/mmimdb/F1_macro"]) + float(val["val/food101/accuracy"])) / 2, rel=1e-6)


@pytest.mark.parametrize("method", ["mamol", "moe_lora"])
def test_load_balancing_trains_when_whole_batches_miss_the_text(natural_root, tmp_path, method):
    """Batches of 2 with text missing in 70 % of the rows: some batches skip the text tower, whose layers must not
    bring back an earlier step's balance term (a backward through a freed graph)."""
    missing = {"train": "text", "val": "text", "test": "text"}
    report = _run(natural_root, tmp_path, "hatememes", method=method, load_balance_weight=0.1,
                  missing_type=missing, missing_ratio={"train": 0.7, "val": 0.7, "test": 0.7},
                  per_gpu_batchsize=2, batch_size=2, val_check_interval=1.0)
    assert "AUROC" in report["metrics"]
