"""Hateful Memes download -> ``hatememes_{train,dev,test}.arrow`` (SPEC §3.2): the converter.

Columns: ``image`` (bytes), ``text`` (list<string> of 1, as DCP/MMP store it), ``label`` (int64, 0/1),
``split`` (string). The jsonl files and ``img/`` live at the raw root or under ``data/``. The two-pass
conversion is described in :mod:`mamol.conversion.natural`.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from mamol.conversion.natural import PrepareError, SplitPlan, base_metadata, need_dir, write_all
from mamol.data.hateful_memes import HATEMEMES_CLASSES

log = logging.getLogger(__name__)


HATEMEMES_SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("text", pa.list_(pa.string())),
    ("label", pa.int64()),
    ("split", pa.string()),
])


def _read_jsonl(path: Path, require_label: bool) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fp:
        for line, raw in enumerate(fp, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise PrepareError(f"{path}:{line}: not valid JSON ({err})") from err
            needed = ("img", "text", "label") if require_label else ("img", "text")
            for key in needed:
                if key not in row:
                    raise PrepareError(f"{path}:{line}: field '{key}' missing; expected keys {list(needed)}, "
                                       f"found {sorted(row)}")
            if require_label and row["label"] not in (0, 1):
                raise PrepareError(f"{path}:{line}: 'label' must be 0 or 1, found {row['label']!r}")
            row["_line"] = line
            rows.append(row)
    return rows


def _jsonl_has_labels(path: Path) -> bool:
    return all("label" in row for row in _read_jsonl(path, require_label=False))


def prepare_hateful_memes(root: str | Path, target: str | Path, allow_missing_test: bool = False,
                          progress: bool = True) -> list[Path]:
    """Convert a Hateful Memes download (files at ``root`` or ``root/data``) to ``hatememes_*.arrow``.

    dev: ``dev_seen.jsonl``, else ``dev.jsonl`` (same 500 memes). test: ``test_seen.jsonl`` (the labelled
    phase-2 release), else ``test.jsonl`` only if every row has a label. The challenge's unlabelled
    ``test.jsonl`` cannot be a test set: that is an error, unless ``allow_missing_test`` (then only train
    and dev are written, with a warning).
    """
    root, target = Path(root), Path(target)
    need_dir(root, "Hateful Memes raw root")
    base = next((b for b in (root, root / "data") if (b / "train.jsonl").is_file()), None)
    if base is None:
        raise PrepareError(f"{root}: Hateful Memes train.jsonl not found at the root or in data/; found "
                           f"{sorted(p.name for p in root.iterdir())}")
    need_dir(base / "img", "Hateful Memes image")

    def pick(split: str, names: Sequence[str]) -> Path | None:
        for name in names:
            path = base / name
            if not path.is_file():
                continue
            if split == "test" and name == "test.jsonl" and not _jsonl_has_labels(path):
                continue
            return path
        return None

    sources = {"train": base / "train.jsonl", "dev": pick("dev", ("dev_seen.jsonl", "dev.jsonl")),
               "test": pick("test", ("test_seen.jsonl", "test.jsonl"))}
    if sources["dev"] is None:
        raise PrepareError(f"{base}: no dev split; expected dev_seen.jsonl or dev.jsonl")
    if sources["test"] is None:
        note = (f"{base}: no labelled test split; expected test_seen.jsonl (labelled, from the phase-2 "
                f"release of the Hateful Memes challenge). The challenge's test.jsonl has no labels and "
                f"cannot serve as a test set.")
        if not allow_missing_test:
            raise PrepareError(note + " Pass allow_missing_test=True to write only train and dev.")
        log.warning("%s Writing train and dev only.", note)
        del sources["test"]

    plans: dict[str, SplitPlan] = {}
    for split, path in sources.items():
        plan = SplitPlan()
        labels = set()
        for row in _read_jsonl(path, require_label=True):
            img_path = base / row["img"]
            if not img_path.is_file():
                raise PrepareError(f"{path}:{row['_line']}: image '{row['img']}' not found at {img_path}")
            plan.add(img_path, text=[str(row["text"])], label=int(row["label"]), split=split)
            labels.add(int(row["label"]))
        if len(labels) == 1:  # AUROC, the selection metric, is undefined on such a split
            log.warning("%s: every meme of the %s split is %s: AUROC (the selection metric) is undefined on it and "
                        "will be reported as NaN", path, split, HATEMEMES_CLASSES[labels.pop()])
        plans[split] = plan

    meta = base_metadata("hatememes", HATEMEMES_CLASSES, "ce", {
        "root": str(root), "files": {s: str(p) for s, p in sources.items()}})
    return write_all("hatememes", target, HATEMEMES_SCHEMA, plans, meta, progress)
