"""What a model, the metrics and the loss need to know about one dataset: :class:`TaskInfo`.

A small module with no heavy imports: models depend on it (and on nothing of the data package), datasets
build it from their Arrow metadata. The *task type* decides the loss and the metrics (see
:mod:`mamol.metrics`), never the dataset's name.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")
"""The three splits every dataset serves, in this order."""

KINDS = ("remote", "natural")
"""Data kinds: remote-sensing scenes (one encoder for every modality) and image–text pairs (two towers)."""

REMOTE = "remote"  # multi-class pixel classification scored by OA / AA / kappa / per-class accuracy
MULTICLASS = "multiclass"  # single-label classification scored by accuracy (Food-101)
MULTILABEL = "multilabel"  # multi-hot labels, BCE, F1 micro/macro/weighted/samples (MM-IMDb)
BINARY = "binary"  # two classes (2-way softmax) scored by AUROC of the positive class and accuracy (Hateful Memes)
TASK_TYPES = (REMOTE, MULTICLASS, MULTILABEL, BINARY)


@dataclass(frozen=True)
class TaskInfo:
    """One dataset as a model sees it (read from the Arrow metadata of its train split)."""

    name: str  # "houston2013", "synthetic", "mmimdb", ...
    kind: str  # one of KINDS
    task_type: str  # one of TASK_TYPES
    modalities: tuple[str, ...]  # code order of the missing-type bitmask; image-text: ("text", "image")
    bands: dict[str, int]  # remote: channels per modality; image-text: {}
    num_classes: int  # head outputs
    class_names: tuple[str, ...]
    patch_size: int  # remote patch side (14); image-text 0
    metadata: dict = field(default_factory=dict, compare=False)  # everything stored with the Arrow data

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TaskInfo {self.name!r}: kind must be one of {KINDS}, found {self.kind!r}")
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"TaskInfo {self.name!r}: task_type must be one of {TASK_TYPES}, found {self.task_type!r}")

    @property
    def loss(self) -> str:
        """``"bce"`` for multi-label tasks, ``"ce"`` (cross-entropy over the classes) otherwise."""
        return "bce" if self.task_type == MULTILABEL else "ce"

    def describe(self) -> str:
        """One line naming what a checkpoint made for this task must fit."""
        return f"{self.name}: modalities {list(self.modalities)}, bands {self.bands}, {self.num_classes} classes"


RELEASE_OVERLAP_NOTE = "test pixels overlap training pixels (release split)"
"""What every record of a run on data converted with ``--split release`` says (test_results.json, grid.json, report)."""


def data_notes(infos: Sequence[TaskInfo]) -> list[str]:
    """Caveats the data's metadata asks every result to carry: today, a ``--split release`` conversion's overlap."""
    notes = []
    for info in infos:
        meta = info.metadata
        if meta.get("split_method") == "release":
            tested = sum((meta.get("counts") or {}).get("test", []))
            notes.append(f"{info.name}: {RELEASE_OVERLAP_NOTE}: {meta.get('overlap', '?')} of {tested} test pixels "
                         f"are also training pixels")
    return notes
