"""What the image–text datasets of the DCP benchmarks share (SPEC §3.2, §4): :class:`NaturalArrowDataset`.

The datasets themselves (MM-IMDb, Food-101, Hateful Memes) live in :mod:`mamol.data.mmimdb`,
:mod:`mamol.data.food101` and :mod:`mamol.data.hateful_memes`, each beside its converter. Each split is one
Arrow file written by that converter (or by DCP/MMP's own ``make_arrow``: files without metadata are read
too). A sample is

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
import logging
from typing import ClassVar

import open_clip
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image
from torch import Tensor

from mamol.data.base import BaseArrowDataset, DatasetEntry
from mamol.data.formats import NATURAL_MODALITIES
from mamol.errors import DataError
from mamol.missing import is_missing
from mamol.settings import DataSettings, MissingSettings
from mamol.tasks import TaskInfo

logger = logging.getLogger(__name__)

_TEXT = NATURAL_MODALITIES.index("text")  # position in the code order: code 1 = text missing
_IMAGE = NATURAL_MODALITIES.index("image")  # code 2 = image missing


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

    text_column: ClassVar[str] = "text"

    def __init__(self, entry: DatasetEntry, data: DataSettings, missing: MissingSettings, split: str) -> None:
        super().__init__(entry, data, missing, split)
        self.image_size, self.max_text_len, self.vit = data.image_size, data.max_text_len, data.vit
        self._images: pa.ChunkedArray | None = None
        self._texts: pa.ChunkedArray | None = None
        self._labels: pa.ChunkedArray | None = None

    # ---------------------------------------------------------------- task info
    @classmethod
    def default_class_names(cls) -> tuple[str, ...]:
        """Class names used when a file carries no metadata (Arrow files made by DCP/MMP)."""
        raise NotImplementedError

    @classmethod
    def build_task_info(cls, entry: DatasetEntry, data: DataSettings, metadata: dict) -> TaskInfo:
        """TaskInfo from the stored metadata; the head size is the config's ``<dataset>_class_num``."""
        class_names = tuple(metadata.get("class_names") or cls.default_class_names())
        key = f"{entry.name}_class_num"
        num_classes = data.class_num.get(entry.name, len(class_names))
        if num_classes != len(class_names):
            raise DataError(
                f"{key}={num_classes} but the {entry.name} Arrow data in {data.root} has {len(class_names)} "
                f"classes; set {key}={len(class_names)} or re-create the data"
            )
        if metadata.get("kind", "natural") != "natural":
            raise DataError(f"{entry.name}: Arrow metadata says kind={metadata.get('kind')!r}, expected 'natural'")
        return TaskInfo(name=entry.name, kind="natural", task_type=entry.task_type, modalities=NATURAL_MODALITIES,
                        bands={}, num_classes=num_classes, class_names=class_names, patch_size=0,
                        metadata=dict(metadata))

    # ---------------------------------------------------------------- per-process views
    def on_open(self, table: pa.Table) -> None:
        for col in ("image", self.text_column, "label"):
            if col not in table.column_names:
                raise DataError(f"{self.path}: column {col!r} missing; expected columns image, "
                                 f"{self.text_column}, label; found {table.column_names}")
        self._images = table.column("image")
        self._texts = table.column(self.text_column)
        self._labels = table.column("label")
        self.check_labels(self._labels)

    def check_labels(self, labels: pa.ChunkedArray) -> None:
        """Class indices in 0..K-1 (K = the head size); a DataError naming the file otherwise."""
        if not pa.types.is_integer(labels.type):
            raise DataError(f"{self.path}: column 'label' holds {labels.type}, expected integer class indices")
        bounds = pc.min_max(labels).as_py()
        classes = self.info.num_classes
        if len(labels) and (labels.null_count or bounds["min"] < 0 or bounds["max"] >= classes):
            raise DataError(f"{self.path}: labels must lie in 0..{classes - 1}, found {bounds['min']}..{bounds['max']}"
                            f"{' and missing labels' if labels.null_count else ''}")

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
            raise DataError(f"{self.path}: image of row {row} cannot be decoded ({err}); re-create the file "
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
        if is_missing(missing_type, _IMAGE):
            image = self.fill((3, self.image_size, self.image_size))
        else:
            image = self.read_image(row)
        text = "" if is_missing(missing_type, _TEXT) else self.read_text(row, position)
        return {"image": image, "text": text, "label": self.read_label(row)}

    def collate(self, samples: list[dict]) -> dict:
        """Base stacking plus ``text_ids`` (B, max_text_len) int64 from open_clip's tokenizer."""
        batch = super().collate(samples)
        batch["text_ids"] = clip_tokenizer(self.vit, self.max_text_len)(batch["text"], self.max_text_len)
        return batch
