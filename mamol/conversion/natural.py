"""What the image–text converters (MM-IMDb, Food-101, Hateful Memes) share: errors, checks, streaming writes.

Each dataset has its own module (:mod:`mamol.conversion.mmimdb`, :mod:`mamol.conversion.food101`,
:mod:`mamol.conversion.hateful_memes`) that turns its raw download into one Arrow file per split; every file
carries JSON metadata (class names, source files, counts) through :mod:`mamol.data.arrow`.

The conversion runs in two passes so that bad input fails early and by name: a cheap *plan* pass reads
the split, class and text files and checks that every listed image and label file exists (a
:class:`SplitPlan` per split), then the *convert* pass reads each image, checks that Pillow can decode it
(a corrupt file is reported by its path here, not later inside a data-loader worker) and streams the rows
into the Arrow file (written to a temporary file and renamed into place, so a failed run leaves no
half-written output).

Split / class files the raw downloads lack are looked for in the raw root first, then among the files
shipped with the package (:data:`mamol.data.formats.SHIPPED_DIR`: ``food101_class_idx.json``); see
``datasets/README.md`` for where they come from.
"""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from PIL import Image
from tqdm import tqdm

from mamol.conversion.writing import conversion_id, staged
from mamol.data.arrow import write_arrow
from mamol.data.formats import CONVERSION_KEY, NATURAL_MODALITIES
from mamol.errors import DataError

log = logging.getLogger(__name__)


_BATCH_ROWS = 256  # rows per Arrow record batch while streaming


class PrepareError(DataError):
    """Raw input that cannot be converted; the message names the file / key, what was expected and found."""


def verify_image(data: bytes, path: Path | str) -> None:
    """Raise :class:`PrepareError` naming ``path`` unless Pillow fully decodes ``data``.

    JPEGs are decoded in draft mode (reduced DCT scale): every byte is still read, so truncated or
    garbled files fail, at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (64, 64))
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise PrepareError(
            f"{path}: corrupt image, Pillow cannot decode it ({type(err).__name__}: {err}); expected a "
            f"readable JPEG/PNG. Re-download the file or remove its entry from the split file."
        ) from err


def read_image_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise PrepareError(f"{path}: image file not found")
    data = path.read_bytes()
    verify_image(data, path)
    return data


def load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fp:
            return json.load(fp)
    except FileNotFoundError as err:
        raise PrepareError(f"{path}: {what} not found") from err
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}: {what} is not valid JSON ({err})") from err


def need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        parent = path.parent
        found = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else "(no such folder)"
        raise PrepareError(f"{path}: {what} folder not found; {parent} holds {found}")
    return path


def find_side_file(explicit: str | Path | None, root: Path, raw_name: str, shipped_name: str,
                    datasets_dir: Path, what: str) -> Path:
    """``explicit`` if given, else ``root/raw_name``, else ``datasets_dir/shipped_name``."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise PrepareError(f"{path}: {what} not found (given explicitly)")
        return path
    candidates = [root / raw_name, datasets_dir / shipped_name]
    for path in candidates:
        if path.is_file():
            return path
    raise PrepareError(
        f"{what} not found: looked for {candidates[0]} and {candidates[1]}. "
        f"See datasets/README.md for where to get it."
    )


def split_lists(split_path: Path, splits: Sequence[str]) -> dict[str, list[str]]:
    """Read ``{split: [ids]}`` from ``split_path``, checking every split key is a list."""
    data = load_json(split_path, "split file")
    if not isinstance(data, dict):
        raise PrepareError(f"{split_path}: expected a JSON object {{split: [ids]}}, found {type(data).__name__}")
    out = {}
    for split in splits:
        if split not in data:
            raise PrepareError(f"{split_path}: split key '{split}' missing; expected keys {list(splits)}, "
                               f"found {sorted(data)}")
        if not isinstance(data[split], list):
            raise PrepareError(f"{split_path}: split '{split}' must be a list of ids, found "
                               f"{type(data[split]).__name__}")
        out[split] = [str(x) for x in data[split]]
    extra = sorted(set(data) - set(splits))
    if extra:
        log.info("%s: ignoring split keys %s (only %s are converted)", split_path, extra, list(splits))
    return out


@dataclass
class SplitPlan:
    """Rows of one split before the images are read: ``images[i]`` and the other columns' values."""

    images: list[Path] = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=dict)

    def add(self, image: Path, **values: Any) -> None:
        self.images.append(image)
        for key, value in values.items():
            self.columns.setdefault(key, []).append(value)

    def __len__(self) -> int:
        return len(self.images)


def write_split(path: Path, schema: pa.Schema, plan: SplitPlan, metadata: dict, progress: bool) -> Path:
    """Stream ``plan`` (reading + verifying each image) into the Arrow IPC file ``path``, atomically."""
    names = [n for n in schema.names if n != "image"]

    def batches() -> Iterable[pa.RecordBatch]:
        with tqdm(total=len(plan), desc=path.name, unit="img", disable=not progress, leave=False) as bar:
            for start in range(0, len(plan), _BATCH_ROWS):
                stop = min(start + _BATCH_ROWS, len(plan))
                cols = {"image": [read_image_bytes(p) for p in plan.images[start:stop]]}
                cols.update({n: plan.columns[n][start:stop] for n in names})
                bar.update(stop - start)
                yield pa.RecordBatch.from_pydict(cols, schema=schema)

    write_arrow(path, schema, batches(), metadata)
    log.info("wrote %s (%d rows)", path, len(plan))
    return path


def write_all(prefix: str, target: Path, schema: pa.Schema, plans: dict[str, SplitPlan],
               metadata: dict, progress: bool, samples: dict[str, int] | None = None) -> list[Path]:
    """Write one file per split, as one conversion (one id, staged, then put in place together:
    :mod:`mamol.conversion.writing`); ``samples`` counts samples per split where they differ from rows."""
    counts = {split: len(plan) for split, plan in plans.items()}
    samples = samples or counts
    contents = [json.dumps({"images": [str(i) for i in plan.images], "columns": plan.columns}, sort_keys=True,
                           default=str).encode("utf-8") for plan in plans.values()]
    identity = conversion_id({**metadata, "split_rows": counts, "split_samples": samples}, *contents)
    out = []
    with staged(target, prefix) as staging:
        for split, plan in plans.items():
            meta = dict(metadata, split=split, num_rows=len(plan), samples=samples[split], split_rows=counts,
                        split_samples=samples, **{CONVERSION_KEY: identity})
            write_split(staging / f"{prefix}_{split}.arrow", schema, plan, meta, progress)
            out.append(target / f"{prefix}_{split}.arrow")
    return out


def base_metadata(dataset: str, class_names: Sequence[str], loss: str, source: dict) -> dict:
    return {
        "dataset": dataset,
        "kind": "natural",
        "modalities": list(NATURAL_MODALITIES),
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "loss": loss,
        "source": source,
        "format": "mamol-natural-1",
    }
