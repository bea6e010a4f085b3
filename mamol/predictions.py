"""Per-sample test predictions: what a tested run saves beside ``test_results.json``, so that paired
significance tests (:mod:`mamol.experiments.significance`) need no re-evaluation.

``test_predictions.npz`` (numpy's zip of arrays, compressed) holds, for each task ``<task>`` of the run:

* ``<task>/index`` int32 (N,): the sample's index within the test split, the dataset index the datamodule serves
  (``sample["index"]``, the Arrow row or MM-IMDb's plot number): the same sample has the same index in every run
  on the same Arrow split, so two runs align sample by sample (int32: test splits of large scenes exceed 32,767);
* ``<task>/label``: the true label, int16 (N,) class, or uint8 (N, L) 0/1 per class for multi-label tasks;
* ``<task>/pred``: the decision the metrics score (:func:`mamol.metrics.predicted_labels`), shaped like ``label``;
* ``<task>/missing_type`` uint8 (N,): the sample's missing-modality code at test time (:mod:`mamol.missing`).

Rows are sorted by index. Under DDP the test split is sharded across the ranks (each sample to exactly one);
:meth:`PredictionRecorder.gathered` collects every rank's share, so the file is the same whatever the number of
processes, and rank 0 writes it. ``test_results.json`` names the file (``"predictions"``).
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.distributed as dist
from torch import Tensor

from mamol.errors import DataError, MissingFileError
from mamol.files import atomic_write

PREDICTIONS_FILE = "test_predictions.npz"
"""The file name in the run folder (``test_results.json`` records it under ``"predictions"``)."""
FIELDS = ("index", "label", "pred", "missing_type")


@dataclass(frozen=True)
class TaskPredictions:
    """The test samples of one task: index, true label, decision and missing code, one row per sample."""

    index: np.ndarray  # (N,) int32
    label: np.ndarray  # (N,) int16, or (N, L) uint8 for multi-label tasks
    pred: np.ndarray  # like label
    missing_type: np.ndarray  # (N,) uint8

    @property
    def multilabel(self) -> bool:
        return self.label.ndim == 2

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the decision equals the label; for a multi-label task, the whole label set (exact match)."""
        same = self.pred == self.label
        return same.all(axis=1) if self.multilabel else same

    def sorted(self) -> TaskPredictions:
        order = np.argsort(self.index, kind="stable")
        return TaskPredictions(*(getattr(self, f)[order] for f in FIELDS))


def _small(label: np.ndarray) -> np.ndarray:
    return label.astype(np.uint8) if label.ndim == 2 else label.astype(np.int16)


class PredictionRecorder:
    """Collects a test loop's decisions batch by batch (:meth:`add`), then every process's share (:meth:`gathered`)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[tuple[np.ndarray, ...]]] = {}

    def reset(self) -> None:
        self.parts = {}

    def add(self, task: str, index: Tensor, label: Tensor, pred: Tensor, missing_type: Tensor) -> None:
        """One batch: (B,) indices, (B,) or (B, L) labels and decisions, (B,) missing codes."""
        def host(t: Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        self.parts.setdefault(task, []).append((host(index).astype(np.int32), _small(host(label)),
                                                _small(host(pred)), host(missing_type).astype(np.uint8)))

    def _local(self) -> dict[str, tuple[np.ndarray, ...]]:
        return {task: tuple(np.concatenate(column) for column in zip(*parts)) for task, parts in self.parts.items()}

    def gathered(self) -> dict[str, TaskPredictions]:
        """Every process's samples, by task, sorted by index. Under DDP a collective: every rank must call it."""
        shares = [self._local()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shares = [None] * dist.get_world_size()
            dist.all_gather_object(shares, self._local())
        tasks = list(dict.fromkeys(t for share in shares for t in share))
        out = {}
        for task in tasks:
            columns = zip(*(share[task] for share in shares if task in share))
            out[task] = TaskPredictions(*(np.concatenate(c) for c in columns)).sorted()
        return out


def write_predictions(path: str | os.PathLike, predictions: Mapping[str, TaskPredictions]) -> Path:
    """Write ``test_predictions.npz`` atomically (temporary file in the same folder, then renamed)."""
    arrays = {f"{task}/{f}": getattr(p, f) for task, p in predictions.items() for f in FIELDS}
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)


def read_predictions(path: str | os.PathLike) -> dict[str, TaskPredictions]:
    """The predictions of a run by task; DataError naming the file when it is not one :func:`write_predictions`
    wrote."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such predictions file (test_results.json names it)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a predictions file written by run.py ({type(err).__name__}: {err})") from err
    tasks = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in arrays))
    out = {}
    for task in tasks:
        absent = [f for f in FIELDS if f"{task}/{f}" not in arrays]
        if absent:
            raise DataError(f"{path}: task {task!r} has no {', '.join(absent)}; expected {', '.join(FIELDS)} per "
                            f"task, found {sorted(arrays)}")
        p = TaskPredictions(*(arrays[f"{task}/{f}"] for f in FIELDS))
        n = len(p.index)
        if any(len(getattr(p, f)) != n for f in FIELDS) or p.label.shape != p.pred.shape:
            raise DataError(f"{path}: task {task!r}: index, label, pred and missing_type differ in length or shape "
                            f"({', '.join(f'{f} {getattr(p, f).shape}' for f in FIELDS)})")
        out[task] = p
    if not out:
        raise DataError(f"{path}: holds no predictions (expected <task>/{'|'.join(FIELDS)} arrays)")
    return out
