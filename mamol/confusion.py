"""Confusion matrices and per-class precision, recall and F1 of a tested run, counted from its test predictions
(:mod:`mamol.predictions`): the decisions the metrics score, so recall of class k is the per-class accuracy
``acc_k`` of ``test_results.json``.

Single-label tasks (remote scenes, Food-101, Hateful Memes): one (K, K) matrix, rows = true class, columns =
predicted class, cells = sample counts. Multi-label tasks (MM-IMDb): one 2 × 2 matrix per class,
``[[TN, FP], [FN, TP]]`` (rows = true absent / present, columns = predicted absent / present).

Per class: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN), support = TP + FN;
a ratio with nothing to count (a class never predicted has no precision) is NaN, never a number that looks like a
score (as in :mod:`mamol.metrics`).

What a tested run writes beside ``test_results.json`` (:func:`write_run_confusion`): ``confusion.json`` (every
task), and per task a CSV (class names as header and row labels; multi-label: one row per class, TN FP FN TP) and
a figure (counts with row-normalised shading; multi-label: per-class F1 bars): ``confusion.csv`` /
``confusion.png`` for a run on one task, ``confusion_<task>.csv`` / ``.png`` for several.
"""
from __future__ import annotations

import csv
import io
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mamol.files import atomic_write, write_json, write_png
from mamol.predictions import TaskPredictions

CONFUSION_FILE = "confusion.json"
"""The file name in the run folder (``test_results.json`` records it under ``"confusion"``)."""
SCORES = ("precision", "recall", "f1")
MAX_ANNOTATED = 30  # classes up to which every cell of the figure shows its count (beyond, shading only)


@dataclass(frozen=True)
class Confusion:
    """The confusion counts of one task: (K, K) for a single-label task, (K, 2, 2) for a multi-label one."""

    class_names: tuple[str, ...]
    matrix: np.ndarray  # int64 counts

    @property
    def multilabel(self) -> bool:
        return self.matrix.ndim == 3

    @classmethod
    def of(cls, predictions: TaskPredictions, class_names: Sequence[str]) -> Confusion:
        """Count a task's test predictions; class k of the labels and decisions is ``class_names[k]``."""
        k = len(class_names)
        label, pred = predictions.label.astype(np.int64), predictions.pred.astype(np.int64)
        if predictions.multilabel:  # per class: index 2 * true + predicted of [[TN, FP], [FN, TP]]
            cells = 2 * label + pred  # (N, K)
            counts = np.stack([np.bincount(cells[:, c], minlength=4) for c in range(k)])
            return cls(tuple(class_names), counts.reshape(k, 2, 2))
        return cls(tuple(class_names), np.bincount(label * k + pred, minlength=k * k).reshape(k, k))

    def __add__(self, other: Confusion) -> Confusion:
        """Counts of both (runs on the same classes, e.g. seeds of one method)."""
        if self.class_names != other.class_names or self.matrix.shape != other.matrix.shape:
            raise ValueError(f"confusion matrices of different classes cannot be summed: {self.class_names} "
                             f"and {other.class_names}")
        return Confusion(self.class_names, self.matrix + other.matrix)

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K,) true positives, false positives and false negatives of each class."""
        if self.multilabel:
            return self.matrix[:, 1, 1], self.matrix[:, 0, 1], self.matrix[:, 1, 0]
        tp = np.diag(self.matrix)
        return tp, self.matrix.sum(axis=0) - tp, self.matrix.sum(axis=1) - tp

    def scores(self) -> dict[str, list[Any]]:
        """Per class, in class order: ``class``, ``support`` and precision, recall and F1 × 100 (NaN where 0/0)."""
        tp, fp, fn = (c.astype(np.float64) for c in self.counts())

        def ratio(num: np.ndarray, den: np.ndarray) -> list[float]:
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(den > 0, 100.0 * num / den, np.nan)
            return [round(float(v), 4) for v in values]

        return {"class": list(self.class_names), "support": [int(v) for v in tp + fn],
                "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}

    def to_dict(self) -> dict[str, Any]:
        if self.multilabel:
            return {"kind": "multi-label", "class_names": list(self.class_names),
                    "layout": "per class [[TN, FP], [FN, TP]] (rows: true absent/present, columns: predicted)",
                    "matrices": {name: m.tolist() for name, m in zip(self.class_names, self.matrix)}}
        return {"kind": "single-label", "class_names": list(self.class_names),
                "layout": "rows: true class, columns: predicted class", "matrix": self.matrix.tolist()}

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """(header, rows) of the CSV: class names as header and row labels, or TN FP FN TP per class."""
        if self.multilabel:
            return (["class", "TN", "FP", "FN", "TP"],
                    [[name, *m.reshape(4).tolist()] for name, m in zip(self.class_names, self.matrix)])
        return (["true \\ predicted", *self.class_names],
                [[name, *row.tolist()] for name, row in zip(self.class_names, self.matrix)])


def confusions(predictions: Mapping[str, TaskPredictions], class_names: Mapping[str, Sequence[str]]
               ) -> dict[str, Confusion]:
    """The confusion counts of every task of a run."""
    return {task: Confusion.of(p, class_names[task]) for task, p in predictions.items()}


def per_class_scores(predictions: Mapping[str, TaskPredictions], class_names: Mapping[str, Sequence[str]]
                     ) -> dict[str, dict[str, list[Any]]]:
    """``test_results.json``'s ``per_class``: per task, class names, support, precision, recall and F1 × 100."""
    return {task: c.scores() for task, c in confusions(predictions, class_names).items()}


def file_stem(task: str, tasks: Sequence[str]) -> str:
    """``confusion`` for a run on one task, ``confusion_<task>`` for each task of a run on several."""
    return "confusion" if len(tasks) == 1 else f"confusion_{task}"


def write_csv(path: str | os.PathLike, confusion: Confusion) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header, rows = confusion.table()
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def confusion_figure(confusion: Confusion, title: str, path: str | os.PathLike) -> Path:
    """Single-label: the matrix, shaded by the row-normalised share (each true class sums to 1) with the counts
    written in the cells; multi-label: per-class F1 bars. Class names on the axes."""
    k = len(confusion.class_names)
    if confusion.multilabel:
        f1 = np.nan_to_num(np.asarray(confusion.scores()["f1"], float))
        fig = Figure(figsize=(6.4, 1.2 + 0.28 * k))
        ax = fig.add_subplot(1, 1, 1)
        y = np.arange(k)
        ax.barh(y, f1, color="tab:blue", edgecolor="0.2", linewidth=0.5)
        ax.set_yticks(y, confusion.class_names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("F1 (%)")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(textwrap.fill(title, width=70), fontsize=9)
        fig.tight_layout()
        return write_png(fig, path)
    matrix = confusion.matrix
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    side = max(4.0, 2.6 + 0.42 * k)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if k <= MAX_ANNOTATED:
        size = 8 if k <= 15 else 6
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=size,
                        color="white" if share[i, j] > 0.5 else "black")
    ticks = np.arange(k)
    small = 8 if k <= 20 else 5
    ax.set_xticks(ticks, confusion.class_names, rotation=45, ha="right", rotation_mode="anchor", fontsize=small)
    ax.set_yticks(ticks, confusion.class_names, fontsize=small)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(textwrap.fill(title, width=int((side + 1.2) * 11)), fontsize=9)  # never wider than the figure
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return write_png(fig, path)


def write_run_confusion(folder: Path, predictions: Mapping[str, TaskPredictions],
                        class_names: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Write ``confusion.json`` and each task's CSV and figure into a tested run's folder; returns the record
    ``test_results.json`` keeps under ``"confusion"`` (the file names, relative to the folder)."""
    found = confusions(predictions, class_names)
    tasks = list(found)
    files: dict[str, dict[str, str]] = {}
    for task, c in found.items():
        stem = file_stem(task, tasks)
        write_csv(folder / f"{stem}.csv", c)
        what = "per-class F1" if c.multilabel else "confusion matrix (rows: true; shading: share of the true class)"
        confusion_figure(c, f"{task}: {what}, {len(predictions[task].index)} test samples", folder / f"{stem}.png")
        files[task] = {"csv": f"{stem}.csv", "figure": f"{stem}.png"}
    write_json(folder / CONFUSION_FILE, {task: c.to_dict() for task, c in found.items()})
    return {"json": CONFUSION_FILE, "tasks": files}
