"""Metrics against hand-computed values."""
import numpy as np
import pytest
import torch

from mamol.metrics import SamplesF1, TaskMetrics


def _logits(pred: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(pred), num_classes).float() * 5.0


def test_remote_metrics_match_hand_computed_confusion_matrix():
    target = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    pred = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]
    # confusion (rows = truth): [[2,1,1],[1,2,0],[0,0,3]]
    cm = np.array([[2, 1, 1], [1, 2, 0], [0, 0, 3]], dtype=float)
    n = cm.sum()
    oa = np.trace(cm) / n
    recalls = np.diag(cm) / cm.sum(axis=1)
    pe = (cm.sum(axis=0) * cm.sum(axis=1)).sum() / n**2
    kappa = (oa - pe) / (1 - pe)

    metrics = TaskMetrics("remote", 3)
    metrics.update(_logits(pred[:6], 3), torch.tensor(target[:6]))  # two batches accumulate
    metrics.update(_logits(pred[6:], 3), torch.tensor(target[6:]))
    out = metrics.compute()
    assert out["OA"].item() == pytest.approx(oa)
    assert out["AA"].item() == pytest.approx(recalls.mean())
    assert out["kappa"].item() == pytest.approx(kappa)
    for i in range(3):
        assert out[f"acc_{i}"].item() == pytest.approx(recalls[i])
    assert out["the_metric"].item() == pytest.approx(oa)
    metrics.reset()
    assert not metrics.updated


def test_samples_f1_matches_per_sample_definition():
    target = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]])
    probs = torch.tensor([[0.9, 0.1, 0.2, 0.0], [0.1, 0.8, 0.7, 0.0], [0.6, 0.6, 0.6, 0.6], [0.1, 0.1, 0.1, 0.2]])
    # per sample: 2*1/(1+2)=2/3, 2*1/(2+1)=2/3, 2*3/(4+3)=6/7, no prediction -> 0
    expected = (2 / 3 + 2 / 3 + 6 / 7 + 0.0) / 4
    metric = SamplesF1()
    metric.update(probs[:2], target[:2])
    metric.update(probs[2:], target[2:])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)


def test_mmimdb_metrics_names_and_macro_is_the_metric():
    metrics = TaskMetrics("multilabel", 4)
    target = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]])
    logits = torch.tensor([[3.0, -3.0, 3.0, -3.0], [-3.0, 3.0, -3.0, -3.0]])
    metrics.update(logits, target.float())
    out = metrics.compute()
    assert set(out) == {"F1_micro", "F1_macro", "F1_weighted", "F1_samples", "the_metric"}
    assert out["F1_samples"].item() == pytest.approx(1.0)
    assert out["F1_micro"].item() == pytest.approx(1.0)
    # per class: 1, 1, 1 and 0 for class 3 (no label, no prediction); weighted by the supports 1, 1, 1, 0
    assert out["F1_macro"].item() == pytest.approx(0.75) and out["F1_weighted"].item() == pytest.approx(1.0)
    assert out["the_metric"] == out["F1_macro"]


def test_hatememes_auroc_and_accuracy():
    metrics = TaskMetrics("binary", 2)
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.5], [0.0, 3.0]])  # p1 ranks: 0.12, 0.73, 0.62, 0.95
    metrics.update(logits, labels)
    out = metrics.compute()
    assert out["AUROC"].item() == pytest.approx(0.75)  # pairs (pos > neg): 3 of 4
    assert out["accuracy"].item() == pytest.approx(0.75)
    assert out["the_metric"] == out["AUROC"]


def test_samples_f1_equals_the_per_sample_loop_on_random_data():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(64, 23, generator=gen)
    target = (torch.rand(64, 23, generator=gen) < 0.15).long()
    expected = []
    for p_row, t_row in zip(probs.tolist(), target.tolist()):
        pred = {i for i, p in enumerate(p_row) if p >= 0.5}
        true = {i for i, t in enumerate(t_row) if t}
        expected.append(2 * len(pred & true) / (len(pred) + len(true)) if pred or true else 0.0)
    metric = SamplesF1()
    for start in range(0, 64, 16):
        metric.update(probs[start:start + 16], target[start:start + 16])
    assert metric.compute().item() == pytest.approx(sum(expected) / len(expected), abs=1e-6)


@pytest.mark.parametrize("label", [0, 1])
def test_auroc_on_a_one_class_split_is_undefined_not_zero(label):
    metrics = TaskMetrics("binary", 2)
    metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0]]), torch.tensor([label] * 3))
    out = metrics.compute()
    assert torch.isnan(out["AUROC"]) and torch.isnan(out["the_metric"])
    assert out["accuracy"].item() == pytest.approx(2 / 3 if label == 0 else 1 / 3)  # still defined
    assert "all 3 samples are" in metrics.undefined["AUROC"]
    metrics.reset()
    metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert metrics.compute()["AUROC"].item() == pytest.approx(1.0) and metrics.undefined == {}


def test_f1_without_any_positive_label_is_undefined():
    metrics = TaskMetrics("multilabel", 4)
    metrics.update(torch.randn(5, 4), torch.zeros(5, 4, dtype=torch.long))
    out = metrics.compute()
    assert all(torch.isnan(out[k]) for k in ("F1_micro", "F1_macro", "F1_weighted", "F1_samples", "the_metric"))
    assert set(metrics.undefined) == {"F1_micro", "F1_macro", "F1_weighted", "F1_samples"}


def test_an_undefined_score_never_selects_a_checkpoint(tmp_path):
    from mamol.train import BestCheckpoint

    best = BestCheckpoint(dirpath=tmp_path, monitor="val/the_metric", mode="max", save_top_k=1)
    assert not best.check_monitor_top_k(None, torch.tensor(float("nan")))
    assert best.check_monitor_top_k(None, torch.tensor(50.0))  # nothing saved yet: any number is the best


def test_an_undefined_metric_is_nan_on_the_metrics_device(monkeypatch):
    """The NaN of an undefined metric is made where the other values are (a CPU NaN stacked with CUDA values
    fails); the ``meta`` device stands in for CUDA on a CPU machine."""
    metrics = TaskMetrics("binary", 2)
    metrics.update(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    on_meta = {"AUROC": torch.empty((), device="meta"), "accuracy": torch.empty((), device="meta")}
    monkeypatch.setattr(metrics.metrics, "compute", lambda: on_meta)
    out = metrics.compute()
    assert set(metrics.undefined) == {"AUROC"}
    assert out["AUROC"].device.type == "meta" and out["the_metric"].device.type == "meta"
