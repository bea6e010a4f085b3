"""Evaluation metrics by task type, on torchmetrics (SPEC §6).

Remote scenes: OA (overall accuracy), AA (mean per-class recall), Cohen's kappa and per-class accuracy.
Multi-label (MM-IMDb): F1 micro / macro / weighted / samples (the_metric = macro). Multi-class (Food-101):
accuracy. Binary (Hateful Memes): AUROC (the_metric) and accuracy. Values are fractions in [0, 1]; reports
multiply by 100.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassCohenKappa,
    MultilabelF1Score,
)

from mamol.tasks import BINARY, MULTICLASS, MULTILABEL, REMOTE, TASK_TYPES


class SamplesF1(Metric):
    """Multi-label F1 averaged over samples (sklearn's ``average="samples"``), which torchmetrics lacks.

    Per sample: F1 = 2 |pred ∩ true| / (|pred| + |true|); a sample with no true and no predicted label scores 0
    (sklearn's default ``zero_division``).
    """

    full_state_update = False

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.add_state("f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: Tensor, target: Tensor) -> None:  # (B, L) probabilities, (B, L) {0, 1}
        pred = probs >= self.threshold
        true = target > 0.5
        overlap = (pred & true).sum(dim=1).double()
        denom = (pred.sum(dim=1) + true.sum(dim=1)).double()
        f1 = torch.where(denom > 0, 2.0 * overlap / denom.clamp(min=1), torch.zeros_like(denom))
        self.f1_sum += f1.sum()
        self.count += pred.shape[0]

    def compute(self) -> Tensor:
        return (self.f1_sum / self.count.clamp(min=1)).float()


class TaskMetrics(nn.Module):
    """The metrics of one task, chosen by its task type (:mod:`mamol.tasks`).

    ``update(logits, labels)``, ``compute() -> {name: value}`` (plus ``the_metric``, the checkpoint-selection
    metric), ``reset()``. A metric that is undefined on what was seen — AUROC when the split holds one class,
    F1 when it holds no positive label — is NaN, never a number that looks like a score; ``undefined`` then
    says which metrics and why.
    """

    def __init__(self, task_type: str, num_classes: int, sync: bool = True) -> None:
        """``sync=False``: ``compute`` reports what this process saw, also under DDP (a process scoring a whole
        split alone, e.g. the grid, must not wait for the others)."""
        super().__init__()
        self.task_type, self.num_classes = task_type, num_classes
        self.updated = False  # whether any batch was seen since the last reset
        self.undefined: dict[str, str] = {}  # metric -> why it is NaN, from the last compute()
        # Positive labels and samples seen (summed over processes), to tell when AUROC / F1 are undefined.
        kw = {"sync_on_compute": sync}
        self.counts = MetricCollection({"positives": SumMetric(**kw), "samples": SumMetric(**kw)})
        if task_type == REMOTE:
            self.metrics = MetricCollection({
                "OA": MulticlassAccuracy(num_classes, average="micro", **kw),
                "AA": MulticlassAccuracy(num_classes, average="macro", **kw),
                "kappa": MulticlassCohenKappa(num_classes, **kw),
                "class_acc": MulticlassAccuracy(num_classes, average=None, **kw),
            })
            self.the_metric = "OA"
        elif task_type == MULTILABEL:
            self.metrics = MetricCollection({
                "F1_micro": MultilabelF1Score(num_classes, average="micro", **kw),
                "F1_macro": MultilabelF1Score(num_classes, average="macro", **kw),
                "F1_weighted": MultilabelF1Score(num_classes, average="weighted", **kw),
                "F1_samples": SamplesF1(**kw),
            })
            self.the_metric = "F1_macro"
        elif task_type == BINARY:
            self.metrics = MetricCollection({
                "AUROC": BinaryAUROC(**kw),
                "accuracy": MulticlassAccuracy(num_classes, average="micro", **kw),
            }, compute_groups=False)  # updated one by one (AUROC takes p(positive), accuracy the logits)
            self.the_metric = "AUROC"
        elif task_type == MULTICLASS:
            self.metrics = MetricCollection({"accuracy": MulticlassAccuracy(num_classes, average="micro", **kw)})
            self.the_metric = "accuracy"
        else:
            raise ValueError(f"no metrics for task type {task_type!r}; expected one of {TASK_TYPES}")

    @torch.no_grad()
    def update(self, logits: Tensor, labels: Tensor) -> None:
        self.updated = True
        logits = logits.float()
        if self.task_type in (BINARY, MULTILABEL):
            self.counts["positives"].update((labels > 0).sum().float())
            self.counts["samples"].update(torch.tensor(float(labels.shape[0])))
        if self.task_type == MULTILABEL:
            self.metrics.update(torch.sigmoid(logits), labels.long())
        elif self.task_type == BINARY:
            probs = logits.softmax(dim=-1)
            self.metrics["AUROC"].update(probs[:, 1], labels)
            self.metrics["accuracy"].update(probs, labels)
        else:
            self.metrics.update(logits, labels)

    def _undefined(self) -> dict[str, str]:
        """Metrics that what was seen leaves undefined, with the reason."""
        if self.task_type not in (BINARY, MULTILABEL):
            return {}
        counts = self.counts.compute()
        positives, samples = int(counts["positives"]), int(counts["samples"])
        if self.task_type == BINARY and positives in (0, samples):
            which = "positive" if positives else "negative"
            return {"AUROC": f"all {samples} samples are {which}: AUROC needs both classes"}
        if self.task_type == MULTILABEL and positives == 0:
            reason = f"none of the {samples} samples has a positive label: F1 is 0/0"
            return {name: reason for name in ("F1_micro", "F1_macro", "F1_weighted", "F1_samples")}
        return {}

    def compute(self) -> dict[str, Tensor]:
        """Scalars by name (undefined ones NaN); remote ``class_acc`` is expanded to ``acc_<class index>``."""
        self.undefined = self._undefined()
        with warnings.catch_warnings():  # torchmetrics warns, then returns 0, for what _undefined() reports
            warnings.filterwarnings("ignore", message=".*(positive|negative) samples in targets.*")
            values = self.metrics.compute()
        out: dict[str, Tensor] = {}
        for key, value in values.items():
            if key in self.undefined:
                value = torch.full_like(value, float("nan"))  # on the metric's device, stacked with the others
            if key == "class_acc":
                out.update({f"{CLASS_PREFIX}{i}": v for i, v in enumerate(value)})
            else:
                out[key] = value
        out["the_metric"] = out[self.the_metric]
        return out

    def reset(self) -> None:
        self.updated = False
        self.metrics.reset()
        self.counts.reset()


def warn_undefined(where: str, undefined: Mapping[str, str]) -> None:
    """One warning line per metric that is NaN because it is undefined on what was scored (``TaskMetrics.undefined``:
    metric -> why), naming ``where`` (``val/hateful_memes``, an evaluate_grid setting): training and every command
    that scores say it in the same words. Rank 0 only."""
    for name, why in undefined.items():
        rank_zero_warn(f"{where}: {name} is undefined on this split and reported as NaN ({why})")


def predicted_labels(logits: Tensor, task_type: str) -> Tensor:
    """The decisions the metrics score, per sample: the argmax class (B,) for single-label tasks (remote, multi-class,
    binary: what OA and accuracy count), and for multi-label tasks (B, L) 0/1 per class, 1 where the sigmoid
    probability exceeds 0.5 (torchmetrics' rule in the F1 scores, among them the headline F1_macro; F1_samples
    also counts a probability of exactly 0.5, which a float logit of exactly 0 alone gives)."""
    logits = logits.detach().float()
    if task_type == MULTILABEL:
        return (torch.sigmoid(logits) > 0.5).to(torch.uint8)
    return logits.argmax(dim=-1)


CLASS_PREFIX = "acc_"
"""Per-class accuracies are named ``acc_<class index>`` (``<task>/acc_<i>`` with several tasks)."""


def is_class_metric(name: str) -> bool:
    """True for a per-class accuracy (``acc_3``, ``mmimdb/acc_3``), which summaries list apart or leave out."""
    return name.rsplit("/", 1)[-1].startswith(CLASS_PREFIX)


def class_metric_label(name: str, class_names: Mapping[str, Sequence[str]]) -> str:
    """The column name tables and CSV files give a per-class accuracy: ``acc_3`` -> ``acc_Healthy grass``
    (``<task>/acc_3`` -> ``<task>/acc_<name>``; without a task, the run's only one). Other metrics, and an index
    without a name, stay as they are. The logged keys (``metrics.csv``, ``test_results.json``, ``grid.json``) keep
    the index: a resumed run's history and every reader of those files rely on them."""
    if not is_class_metric(name):
        return name
    task, _, short = name.rpartition("/")
    index = short.removeprefix(CLASS_PREFIX)
    names = class_names.get(task) if task else next(iter(class_names.values())) if len(class_names) == 1 else None
    if not index.isdigit() or not names or int(index) >= len(names):
        return name
    return f"{task + '/' if task else ''}{CLASS_PREFIX}{names[int(index)]}"


def summary_metrics(names: Sequence[str], headline: str) -> list[str]:
    """The metrics tables, panels and summaries show, ``headline`` first: per-class accuracies left out, and
    ``the_metric`` too unless several tasks are mixed (then it is their mean, ``<task>/<metric>`` the others)."""
    several = any("/" in n for n in names)
    keep = [n for n in names if not is_class_metric(n) and (several or n != "the_metric")]
    return [headline] + [n for n in keep if n != headline]
