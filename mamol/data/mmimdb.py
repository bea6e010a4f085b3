"""MM-IMDb (SPEC §3.2): the Dataset of ``mmimdb_{train,dev,test}.arrow`` and its catalogue entry.

Columns: ``image`` (bytes), ``plots`` (list<string>), ``label`` (list<int64>, 23-way multi-hot in
:data:`MMIMDB_GENRES` order), ``genres`` (list<string>, as in the raw file), ``image_id`` (string),
``split`` (string); written by :mod:`mamol.conversion.mmimdb`.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from mamol.data.arrow import open_arrow
from mamol.data.base import DatasetEntry
from mamol.data.formats import NATURAL_MODALITIES
from mamol.data.natural import NaturalArrowDataset
from mamol.errors import DataError
from mamol.settings import DataSettings, MissingSettings
from mamol.tasks import MULTILABEL

#: MM-IMDb genre order, label index 0..22 (SPEC §3.2, as DCP/MMP).
MMIMDB_GENRES: tuple[str, ...] = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
    "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
    "Musical", "Western", "Sport", "Short", "Film-Noir",
)


class MMIMDbDataset(NaturalArrowDataset):
    """MM-IMDb genre classification (23 labels, multi-label, BCE): one sample per plot of each movie."""

    text_column: ClassVar[str] = "plots"

    def __init__(self, entry: DatasetEntry, data: DataSettings, missing: MissingSettings, split: str) -> None:
        super().__init__(entry, data, missing, split)
        # Sample -> (row, plot) from the plots column's list lengths (offsets only; no text is read).
        lengths = pc.list_value_length(open_arrow(self.path).column("plots")).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(np.float64), nan=0).astype(np.int64)  # null lists: no plot
        if (lengths == 0).any():
            bad = int(np.flatnonzero(lengths == 0)[0])
            raise DataError(f"{self.path}: row {bad} has no plot; every movie needs at least one")
        self._rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)  # (n_samples,)
        starts = np.cumsum(lengths) - lengths
        self._positions = np.arange(len(self._rows), dtype=np.int64) - np.repeat(starts, lengths)

    @classmethod
    def default_class_names(cls) -> tuple[str, ...]:
        return MMIMDB_GENRES

    def num_samples(self) -> int:
        return len(self._rows)

    def row_of(self, index: int) -> tuple[int, int]:
        """(movie row, plot position in its ``plots`` list) of sample ``index``."""
        return int(self._rows[index]), int(self._positions[index])

    def check_labels(self, labels: pa.ChunkedArray) -> None:
        """Multi-hot rows of exactly K = 23 zeros and ones."""
        lengths = pc.list_value_length(labels)
        values = pc.list_flatten(labels)
        classes = self.info.num_classes
        bounds = pc.min_max(lengths).as_py()
        if len(labels) and (labels.null_count or bounds["min"] != classes or bounds["max"] != classes
                            or not pc.all(pc.is_in(values, pa.array([0, 1]))).as_py()):
            raise DataError(f"{self.path}: each label must be a multi-hot list of {classes} zeros and ones; found "
                            f"lists of {bounds['min']}..{bounds['max']} values")

    def read_label(self, row: int) -> Tensor:
        label = self._labels[row].as_py()
        return torch.tensor(label, dtype=torch.float32)  # (23,) multi-hot


ENTRY = DatasetEntry(
    name="mmimdb", kind="natural", task_type=MULTILABEL, dataset=MMIMDbDataset,
    split_files={"train": "train", "val": "dev", "test": "test"}, modalities=NATURAL_MODALITIES,
    aliases=("mm-imdb",), title="MM-IMDb", class_num=23, class_doc="genres, multi-label",
    val_check_interval=0.2)
"""The catalogue entry of MM-IMDb."""
