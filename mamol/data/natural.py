"""Image–text datasets of the DCP benchmarks: MM-IMDb, Food-101 and Hateful Memes (SPEC §3.2, §4).

Each split is one Arrow file written by :mod:`mamol.data.mmimdb`, :mod:`mamol.data.food101` or
:mod:`mamol.data.hateful_memes` (or by DCP/MMP's own ``make_arrow``: files without metadata are read too).
A sample is

* ``image``: float32 (3, S, S), S = ``image_size`` (224): resize shorter side to S (bicubic), center crop,
  CLIP mean/std (open_clip's eval transform); the fill (ones / zeros, ``missing_fill``) when the image is
  missing;
* ``text``: the raw string, ``""`` when the text is missing (tokenised in :meth:`collate`);
* ``label``: MM-IMDb float32 (23,) multi-hot; Food-101 / Hateful Memes int64 scalar;
* ``missing_type`` (code order ``("text", "image")``: 0 complete, 1 text missing, 2 image missing),
  ``index``, ``task``.

A batch adds ``text_ids`` (B, ``max_text_len``) int64 from open_clip's CLIP tokenizer (context 77,
truncated, end-of-text token kept). Images are decoded per sample from the memory-mapped Arrow bytes, so
DataLoader workers share the file through the OS page cache.

MM-IMDb yields one sample per plot; as in DCP, the missing table has one entry per *movie* (Arrow row),
so all plots of a movie share its missing pattern (a missing image or plot is a property of the movie).
"""
from __future__ import annotations

import functools
import io
import json
import logging
from typing import ClassVar

import numpy as np
import open_clip
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image
from torch import Tensor

from mamol.data.arrow import open_arrow
from mamol.data.base import BaseArrowDataset
from mamol.data.datamodule import TaskInfo
from mamol.data.food101 import SHIPPED_FOOD101_CLASS_IDX
from mamol.data.hateful_memes import HATEMEMES_CLASSES
from mamol.data.mmimdb import MMIMDB_GENRES
from mamol.missing import missing_code

logger = logging.getLogger(__name__)

__all__ = [
    "NATURAL_MODALITIES",
    "NaturalArrowDataset",
    "MMIMDbDataset",
    "Food101Dataset",
    "HatefulMemesDataset",
    "clip_image_transform",
    "clip_tokenizer",
]

NATURAL_MODALITIES: tuple[str, ...] = ("text", "image")  # code order of the missing-type bitmask
_TEXT_BIT = missing_code(("text",), NATURAL_MODALITIES)  # 1
_IMAGE_BIT = missing_code(("image",), NATURAL_MODALITIES)  # 2


@functools.lru_cache(maxsize=4)
def clip_image_transform(image_size: int = 224):
    """open_clip's eval transform: shorter side -> ``image_size`` (bicubic), center crop, CLIP mean/std."""
    return open_clip.image_transform(
        image_size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD,
        resize_mode="shortest", interpolation="bicubic",
    )


@functools.lru_cache(maxsize=4)
def clip_tokenizer(vit: str = "ViT-B/16", context_length: int = 77):
    """open_clip's tokenizer for ``vit`` (``ViT-B/16`` -> ``ViT-B-16``); CLIP's BPE tokenizer otherwise.

    Built once per process (DataLoader workers build their own). Texts longer than ``context_length``
    tokens are truncated with the end-of-text token kept last.
    """
    name = vit.replace("/", "-")
    if name in open_clip.list_models():
        return open_clip.get_tokenizer(name, context_length=context_length)
    # The tiny test/demo configs use CLIP's vocabulary: the plain CLIP tokenizer is the right one.
    return open_clip.SimpleTokenizer(context_length=context_length)


class NaturalArrowDataset(BaseArrowDataset):
    """Shared part of the three image–text datasets: image decoding, text, fill, tokenising collate."""

    kind: ClassVar[str] = "natural"
    split_files: ClassVar[dict[str, str]] = {"train": "train", "val": "dev", "test": "test"}
    text_column: ClassVar[str] = "text"
    loss: ClassVar[str] = "ce"
    class_num_key: ClassVar[str] = ""  # config key holding the head size, e.g. "food101_class_num"

    def __init__(self, cfg: dict, name: str, split: str) -> None:
        super().__init__(cfg, name, split)
        self.image_size = int(cfg.get("image_size", 224))
        self.max_text_len = int(cfg.get("max_text_len", 77))
        self.vit = str(cfg.get("vit", "ViT-B/16"))
        self._images: pa.ChunkedArray | None = None
        self._texts: pa.ChunkedArray | None = None
        self._labels: pa.ChunkedArray | None = None

    # ---------------------------------------------------------------- task info
    @classmethod
    def default_class_names(cls) -> tuple[str, ...]:
        """Class names used when a file carries no metadata (Arrow files made by DCP/MMP)."""
        raise NotImplementedError

    @classmethod
    def build_task_info(cls, cfg: dict, name: str, metadata: dict) -> TaskInfo:
        """TaskInfo from the stored metadata; the head size is the config's ``<dataset>_class_num``."""
        class_names = tuple(metadata.get("class_names") or cls.default_class_names())
        num_classes = int(cfg.get(cls.class_num_key) or len(class_names))
        if num_classes != len(class_names):
            raise ValueError(
                f"{cls.class_num_key}={num_classes} but the {name} Arrow data in {cfg['data_root']} has "
                f"{len(class_names)} classes; set {cls.class_num_key}={len(class_names)} or re-create the data"
            )
        if metadata.get("kind", "natural") != "natural":
            raise ValueError(f"{name}: Arrow metadata says kind={metadata.get('kind')!r}, expected 'natural'")
        return TaskInfo(name=name, kind="natural", modalities=NATURAL_MODALITIES, bands={},
                        num_classes=num_classes, class_names=class_names, loss=cls.loss, patch_size=0,
                        metadata=dict(metadata))

    # ---------------------------------------------------------------- per-process views
    def on_open(self, table: pa.Table) -> None:
        for col in ("image", self.text_column, "label"):
            if col not in table.column_names:
                raise ValueError(f"{self.path}: column {col!r} missing; expected columns image, "
                                 f"{self.text_column}, label; found {table.column_names}")
        self._images = table.column("image")
        self._texts = table.column(self.text_column)
        self._labels = table.column("label")

    def process_state_keys(self) -> tuple[str, ...]:
        return ("_images", "_texts", "_labels")

    # ---------------------------------------------------------------- reading
    def read_image(self, row: int) -> Tensor:
        """Decode row ``row``'s image bytes and apply the CLIP transform -> float32 (3, S, S)."""
        data = self._images[row].as_py()
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{self.path}: image of row {row} cannot be decoded ({err}); re-create the file "
                             f"with datasets/make_arrow.py, which checks every image") from err
        return clip_image_transform(self.image_size)(rgb)

    def read_text(self, row: int, position: int) -> str:
        """The text of row ``row`` (list columns: its element ``position``; plain string columns too)."""
        value = self._texts[row].as_py()
        if isinstance(value, list):
            return str(value[position]) if len(value) > position else ""
        return "" if value is None else str(value)

    def read_label(self, row: int) -> Tensor:
        return torch.tensor(int(self._labels[row].as_py()), dtype=torch.int64)

    def get_sample(self, index: int, missing_type: int) -> dict:
        """Sample ``index`` with a missing image replaced by the fill and a missing text by ``""``."""
        row, position = self.row_of(index)
        if missing_type & _IMAGE_BIT:
            image = self.fill((3, self.image_size, self.image_size))
        else:
            image = self.read_image(row)
        text = "" if missing_type & _TEXT_BIT else self.read_text(row, position)
        return {"image": image, "text": text, "label": self.read_label(row)}

    def collate(self, samples: list[dict]) -> dict:
        """Base stacking plus ``text_ids`` (B, max_text_len) int64 from open_clip's tokenizer."""
        batch = super().collate(samples)
        batch["text_ids"] = clip_tokenizer(self.vit, self.max_text_len)(batch["text"], self.max_text_len)
        return batch


class MMIMDbDataset(NaturalArrowDataset):
    """MM-IMDb genre classification (23 labels, multi-label, BCE): one sample per plot of each movie."""

    text_column: ClassVar[str] = "plots"
    loss: ClassVar[str] = "bce"
    class_num_key: ClassVar[str] = "mmimdb_class_num"

    def __init__(self, cfg: dict, name: str, split: str) -> None:
        super().__init__(cfg, name, split)
        # Sample -> (row, plot) from the plots column's list lengths (offsets only; no text is read).
        lengths = pc.list_value_length(open_arrow(self.path).column("plots")).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(np.float64), nan=0).astype(np.int64)  # null lists: no plot
        if (lengths == 0).any():
            bad = int(np.flatnonzero(lengths == 0)[0])
            raise ValueError(f"{self.path}: row {bad} has no plot; every movie needs at least one")
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

    def read_label(self, row: int) -> Tensor:
        label = self._labels[row].as_py()
        return torch.tensor(label, dtype=torch.float32)  # (23,) multi-hot


class Food101Dataset(NaturalArrowDataset):
    """UPMC Food-101 recipe classification (101 classes, CE); split files ``food101_{train,val,test}``."""

    split_files: ClassVar[dict[str, str]] = {"train": "train", "val": "val", "test": "test"}
    class_num_key: ClassVar[str] = "food101_class_num"

    @classmethod
    def default_class_names(cls) -> tuple[str, ...]:
        class_idx = json.loads(SHIPPED_FOOD101_CLASS_IDX.read_text())
        return tuple(c for c, _ in sorted(class_idx.items(), key=lambda kv: kv[1]))


class HatefulMemesDataset(NaturalArrowDataset):
    """Hateful Memes (2 classes, CE; AUROC on the hateful probability)."""

    class_num_key: ClassVar[str] = "hatememes_class_num"

    @classmethod
    def default_class_names(cls) -> tuple[str, ...]:
        return HATEMEMES_CLASSES
