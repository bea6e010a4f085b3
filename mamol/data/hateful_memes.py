"""Hateful Memes (SPEC §3.2): the Dataset of ``hatememes_{train,dev,test}.arrow`` and its catalogue entry.

Columns: ``image`` (bytes), ``text`` (list<string> of 1, as DCP/MMP store it), ``label`` (int64, 0/1),
``split`` (string); written by :mod:`mamol.conversion.hateful_memes`.
"""
from __future__ import annotations

from mamol.data.base import DatasetEntry
from mamol.data.formats import NATURAL_MODALITIES
from mamol.data.natural import NaturalArrowDataset
from mamol.tasks import BINARY

HATEMEMES_CLASSES: tuple[str, ...] = ("not_hateful", "hateful")


class HatefulMemesDataset(NaturalArrowDataset):
    """Hateful Memes (2 classes, CE; AUROC on the hateful probability)."""

    @classmethod
    def default_class_names(cls) -> tuple[str, ...]:
        return HATEMEMES_CLASSES


ENTRY = DatasetEntry(
    name="hatememes", kind="natural", task_type=BINARY, dataset=HatefulMemesDataset,
    split_files={"train": "train", "val": "dev", "test": "test"},
    modalities=NATURAL_MODALITIES, aliases=("hateful_memes", "hateful-memes"), title="Hateful Memes", class_num=2,
    class_doc="2-way softmax", val_check_interval=0.11)
"""The catalogue entry of Hateful Memes."""
