"""Remote-sensing datasets: sampled pixels (RemoteDataset) and every pixel of a scene (SceneWindows).

Both read memory-mapped Arrow files written by :mod:`mamol.conversion.remote` through zero-copy numpy
views; a sample copies only its own patch. SceneWindows also cuts whole batches at once (one gather per
modality, :meth:`SceneWindows.batch`), which a DataLoader uses by itself through ``__getitems__``. Sample dict
(one pixel)::

    {<modality>: float32 (C, P, P) for each selected modality (the fill where missing),
     "label": int64 (0..K-1; SceneWindows: -1 for unlabelled pixels), "row", "col": int64 pixel position,
     "missing_type": int64 code (mamol.missing), "index": int64, "task": str}

Selected modalities (the ``modalities`` key; None = HSI + LiDAR when stored, else HSI + the next stored one)
are kept in the canonical order hsi, lidar, sar, msi, which is the missing-type code order.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from mamol.data.arrow import column_views, read_metadata
from mamol.data.base import BaseArrowDataset, DatasetEntry, collate_samples, missing_arrow_error
from mamol.data.formats import MODALITY_ORDER, REMOTE_FORMAT, REMOTE_FORMAT_VERSION
from mamol.data.scene_rows import SceneRows
from mamol.errors import ConfigError, DataError
from mamol.missing import MODALITY_ALIASES, is_missing
from mamol.settings import DataSettings, MissingSettings
from mamol.tasks import REMOTE, TaskInfo

MISSING_FILLS = ("ones", "zeros")

logger = logging.getLogger(__name__)


def select_modalities(stored: Sequence[str], requested: Sequence[str] | str | None,
                      source: str = "") -> tuple[str, ...]:
    """The modalities a run uses, in code order: ``requested`` (validated) or the default pair."""
    stored = [m for m in MODALITY_ORDER if m in stored] + [m for m in stored if m not in MODALITY_ORDER]
    if requested is None:
        if "hsi" in stored and "lidar" in stored:
            return ("hsi", "lidar")
        first = "hsi" if "hsi" in stored else stored[0]
        rest = [m for m in stored if m != first]
        return (first, rest[0]) if rest else (first,)
    if isinstance(requested, str):
        requested = [t for t in requested.replace("+", ",").split(",") if t.strip()]
    wanted = [MODALITY_ALIASES.get(m.strip().lower(), m.strip().lower()) for m in requested]  # 'DSM' -> lidar
    absent = [m for m in wanted if m not in stored]
    if absent or not wanted or len(set(wanted)) != len(wanted):
        raise ConfigError(
            f"modalities={list(requested)!r}: {source or 'the data'} stores {stored}; "
            f"choose distinct names among them (or None for the default)"
        )
    ordered = tuple(m for m in stored if m in wanted)
    if list(ordered) != wanted:
        logger.info("modalities %s used in code order %s", wanted, ordered)
    return ordered


def _check_remote_metadata(metadata: dict, path: Path) -> None:
    if metadata.get("format") != REMOTE_FORMAT or metadata.get("kind") != "remote":
        raise DataError(
            f"{path}: not a remote scene file written by datasets/make_arrow.py (metadata format="
            f"{metadata.get('format')!r}, kind={metadata.get('kind')!r}; expected {REMOTE_FORMAT!r}, 'remote')"
        )
    if metadata.get("format_version") != REMOTE_FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {metadata.get('format_version')!r}, this code reads {REMOTE_FORMAT_VERSION}; "
            f"re-create it with datasets/make_arrow.py"
        )


class RemoteDataset(BaseArrowDataset):
    """One split (``<name>_<split>.arrow``) of a converted remote scene."""

    @classmethod
    def build_task_info(cls, entry: DatasetEntry, data: DataSettings, metadata: dict) -> TaskInfo:
        path = entry.arrow_path(data.root, "train")
        _check_remote_metadata(metadata, path)
        try:
            stored = [str(m) for m in metadata["modalities"]]
            bands = {str(m): int(b) for m, b in metadata["bands"].items()}
            num_classes, patch_size = int(metadata["num_classes"]), int(metadata["patch_size"])
            class_names = tuple(str(c) for c in metadata["class_names"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{path}: malformed metadata ({type(err).__name__}: {err}); expected modalities, bands "
                            f"per modality, num_classes, class_names and patch_size as datasets/make_arrow.py writes "
                            f"them; re-create the file with datasets/make_arrow.py") from err
        modalities = select_modalities(stored, data.modalities, str(path))
        if len(modalities) < 2:  # the models fuse modalities, and a missing one needs another one present
            raise (ConfigError if data.modalities is not None else DataError)(
                f"{path}: modalities={list(modalities)}; the models need at least two (the scene stores {stored}): "
                f"set modalities to two or more of them")
        if any(m not in bands for m in modalities):
            raise DataError(f"{path}: metadata gives bands for {sorted(bands)}, not for every modality of "
                            f"{list(modalities)}; re-create the file with datasets/make_arrow.py")
        return TaskInfo(name=entry.name, kind="remote", task_type=REMOTE, modalities=modalities,
                        bands={m: bands[m] for m in modalities}, num_classes=num_classes, class_names=class_names,
                        patch_size=patch_size, metadata=metadata)

    def __init__(self, entry: DatasetEntry, data: DataSettings, missing: MissingSettings, split: str) -> None:
        super().__init__(entry, data, missing, split)
        _check_remote_metadata(self.metadata, self.path)
        for key in ("bands", "class_names", "patch_size", "normalize", "scene_shape", "split_method", "split_seed",
                    "counts"):
            if self.metadata.get(key) != self.info.metadata.get(key):
                raise DataError(
                    f"{self.path}: {key}={self.metadata.get(key)!r} differs from the train file's "
                    f"{self.info.metadata.get(key)!r}; the splits come from different conversions, re-run "
                    f"datasets/make_arrow.py"
                )
        p = self.info.patch_size
        self.shapes = {m: (self.info.bands[m], p, p) for m in self.modalities}
        self._views: dict[str, list[np.ndarray]] | None = None
        self._starts: np.ndarray | None = None
        self._columns: dict[str, np.ndarray] | None = None

    def conversion_paths(self) -> list[Path]:
        scene = self.data.root / f"{self.name}_scene.arrow"
        return super().conversion_paths() + ([scene] if scene.is_file() else [])

    def process_state_keys(self) -> tuple[str, ...]:
        return ("_views", "_starts", "_columns")

    def on_open(self, table: pa.Table) -> None:
        for column, width in [*((m, math.prod(self.shapes[m])) for m in self.modalities),
                              *((c, None) for c in ("label", "row", "col"))]:
            if column not in table.column_names:
                raise DataError(f"{self.path}: column {column!r} is missing (columns: {table.column_names}); "
                                f"re-create the file with datasets/make_arrow.py")
            kind = table.schema.field(column).type
            if width is not None and not (pa.types.is_fixed_size_list(kind) and kind.list_size == width):
                raise DataError(f"{self.path}: column {column!r} holds {kind}, expected fixed-size lists of {width} "
                                f"values ({self.shapes[column]} per patch, as the metadata says)")
        self._views = {m: column_views(table, m, self.shapes[m]) for m in self.modalities}  # per chunk (n, C, P, P)
        lengths = [len(c) for c in table.column(self.modalities[0]).chunks]
        self._starts = np.cumsum([0, *lengths])[:-1]
        self._columns = {c: table.column(c).to_numpy() for c in ("label", "row", "col")}
        labels, classes = self._columns["label"], self.info.num_classes
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise DataError(f"{self.path}: labels must lie in 0..{classes - 1} ({classes} classes in the metadata), "
                            f"found {labels.min()}..{labels.max()}; re-create the file with datasets/make_arrow.py")

    def get_sample(self, index: int, missing_type: int) -> dict:
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        offset = index - int(self._starts[chunk])
        sample: dict = {}
        for bit, m in enumerate(self.modalities):
            if is_missing(missing_type, bit):
                sample[m] = self.fill(self.shapes[m])  # (C, P, P)
            else:
                sample[m] = torch.from_numpy(np.array(self._views[m][chunk][offset]))  # (C, P, P) copy
        for key in ("label", "row", "col"):
            sample[key] = torch.tensor(int(self._columns[key][index]), dtype=torch.int64)
        return sample

    def labels(self) -> np.ndarray:
        """All labels of the split (0..K-1), e.g. for class weights."""
        self.table  # noqa: B018 - open in this process
        return self._columns["label"].copy()

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the split's pixels in the scene, in sample order (e.g. to score a map on them)."""
        self.table  # noqa: B018 - open in this process
        return self._columns["row"].astype(np.int64), self._columns["col"].astype(np.int64)


class SceneWindows(Dataset):
    """Every pixel of a scene (row-major), each with its window cut on the fly from ``<name>_scene.arrow``.

    Never materialises all patches, nor the scene: the padded scene is read a block of rows at a time
    (:class:`~mamol.data.scene_rows.SceneRows`) and each sample copies one window, so memory is bounded by a
    block and a batch, not by the scene.
    ``missing_type`` is applied to every pixel (for maps with a modality missing); ``labelled_only`` keeps
    only pixels with a label. A DataLoader with a batch size fetches whole batches through
    :meth:`__getitems__` (one gather per modality, :meth:`batch`) instead of one window per call; the
    batch dict is the one :meth:`collate` would make of the single samples.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        modalities: Sequence[str] | str | None = None,
        missing_type: int = 0,
        missing_fill: str = "ones",
        labelled_only: bool = False,
        task: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        _check_remote_metadata(self.metadata, self.path)
        if self.metadata.get("split") != "scene":
            raise ValueError(f"{self.path}: holds split {self.metadata.get('split')!r}, expected a scene file")
        self.modalities = select_modalities(self.metadata["modalities"], modalities, str(self.path))
        if not 0 <= missing_type < 2 ** len(self.modalities) - 1:
            raise ValueError(
                f"missing_type {missing_type} is not a code for {len(self.modalities)} modalities "
                f"{self.modalities} (expected 0 .. {2 ** len(self.modalities) - 2})"
            )
        if missing_fill not in MISSING_FILLS:
            raise ValueError(f"missing_fill must be one of {MISSING_FILLS}, got {missing_fill!r}")
        self.missing_type = int(missing_type)
        self.missing_fill = missing_fill
        self.task = task or self.metadata["dataset"]
        self.height, self.width = self.metadata["scene_shape"]
        self.patch_size = int(self.metadata["patch_size"])
        self.bands = {m: int(self.metadata["bands"][m]) for m in self.modalities}
        self._pixels: np.ndarray | None = None  # flat indices when labelled_only
        self.labelled_only = labelled_only
        self._windows: SceneRows | None = None
        self._labels: np.ndarray | None = None
        self._pid: int | None = None
        if labelled_only:
            self._open()
            self._pixels = np.flatnonzero(self._labels.ravel() > 0)
            self._windows = None  # reopened lazily in each process

    @classmethod
    def from_settings(cls, data: DataSettings, fill: str, name: str, missing_type: int = 0,
                      labelled_only: bool = False) -> SceneWindows:
        """Scene of dataset ``name`` in ``data.root`` with the run's modalities and ``fill``."""
        path = data.root / f"{name}_scene.arrow"
        if not path.is_file():
            raise missing_arrow_error(data.root, name, [path.name])
        return cls(path, data.modalities, missing_type, fill, labelled_only, name)

    def _open(self) -> None:
        if self._windows is not None and self._pid == os.getpid():
            return
        present = {m: self.bands[m] for bit, m in enumerate(self.modalities) if not is_missing(self.missing_type, bit)}
        self._windows = SceneRows(self.path, present, self.patch_size, self.metadata["padded_shape"])
        before = self.patch_size // 2
        self._labels = self._windows.labels[before:before + self.height, before:before + self.width]  # (H, W)
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_windows"], state["_labels"], state["_pid"] = None, None, None
        return state

    def __len__(self) -> int:
        return len(self._pixels) if self._pixels is not None else self.height * self.width

    def label_raster(self) -> np.ndarray:
        """(H, W) int16 labels of the whole scene: 0..K-1, -1 where unlabelled."""
        self._open()
        return self._labels - np.int16(1)

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict:
        """Samples ``indices`` as one batch dict (as :meth:`collate` of the single samples would give).

        Each present modality's windows are cut with one numpy gather from the memory-mapped scene:
        (B, C, P, P) float32, laid out channels-last in memory (the gather copies whole window rows of P x C
        values; convolutions take either layout). A missing modality is the fill as a real (B, C, P, P) tensor, not
        a broadcast view: the DataLoader pins batches for the GPU, and pinning a zero-stride tensor copies or
        fails depending on the torch version. Values equal those of the single samples.
        """
        index = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise IndexError(f"index {bad} out of range for {self.path.name} with {len(self)} pixels")
        self._open()
        flat = self._pixels[index] if self._pixels is not None else index
        rows, cols = np.divmod(flat, self.width)  # (B,), (B,)
        n, p = len(index), self.patch_size
        batch: dict = {}
        for bit, m in enumerate(self.modalities):
            if is_missing(self.missing_type, bit):
                fill = torch.ones if self.missing_fill == "ones" else torch.zeros
                batch[m] = fill(n, self.bands[m], p, p)  # (B, C, P, P), no zero stride (pinned)
            else:
                batch[m] = torch.from_numpy(self._windows.cut(m, rows, cols))  # (B, C, P, P) a gather per block
        batch["label"] = torch.from_numpy(self._labels[rows, cols].astype(np.int64) - 1)
        batch["row"] = torch.from_numpy(rows)
        batch["col"] = torch.from_numpy(cols)
        batch["missing_type"] = torch.full((n,), self.missing_type, dtype=torch.int64)
        batch["index"] = torch.from_numpy(index.copy())
        batch["task"] = self.task
        return batch

    def __getitems__(self, indices: list[int]) -> dict:
        """A DataLoader's batched fetch: the whole batch at once (:meth:`batch`); :meth:`collate` passes it on."""
        return self.batch(indices)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.path.name} with {len(self)} pixels")
        self._open()
        flat = int(self._pixels[index]) if self._pixels is not None else index
        row, col = divmod(flat, self.width)
        sample: dict = {}
        for bit, m in enumerate(self.modalities):
            shape = (self.bands[m], self.patch_size, self.patch_size)
            if is_missing(self.missing_type, bit):
                sample[m] = torch.ones(shape) if self.missing_fill == "ones" else torch.zeros(shape)
            else:
                sample[m] = torch.from_numpy(np.array(self._windows.cut(m, [row], [col])[0]))  # (C, P, P) copy
        sample["label"] = torch.tensor(int(self._labels[row, col]) - 1, dtype=torch.int64)
        sample["row"] = torch.tensor(row, dtype=torch.int64)
        sample["col"] = torch.tensor(col, dtype=torch.int64)
        sample["missing_type"] = torch.tensor(self.missing_type, dtype=torch.int64)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        sample["task"] = self.task
        return sample

    def collate(self, samples: list[dict] | dict) -> dict:
        """Batch dict of single samples (:func:`mamol.data.base.collate_samples`); a batch from
        :meth:`__getitems__` is returned as it is."""
        return samples if isinstance(samples, dict) else collate_samples(samples)
