"""UPMC Food-101 raw download -> ``food101_{train,val,test}.arrow`` (SPEC §3.2): the converter.

Columns: ``image`` (bytes), ``text`` (list<string> of 1: the title), ``label`` (int64, index in
``class_idx.json``), ``image_id`` (file name), ``split`` (string). Titles come from ``text.json`` (DCP) or
the official ``texts/{train,test}_titles.csv``. The split and class-index files are looked for in the raw
root (``split.json``, ``class_idx.json``), else the shipped ``food101_class_idx.json``
(:data:`mamol.data.formats.SHIPPED_DIR`); ``split_file`` names any other split file. The two-pass
conversion is described in :mod:`mamol.conversion.natural`.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import pyarrow as pa

from mamol.conversion.natural import (
    PrepareError,
    SplitPlan,
    base_metadata,
    find_side_file,
    load_json,
    need_dir,
    split_lists,
    write_all,
)
from mamol.data.formats import SHIPPED_DIR

log = logging.getLogger(__name__)

FOOD101_SPLITS: tuple[str, ...] = ("train", "val", "test")  # on-disk split names, as DCP

FOOD101_SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("text", pa.list_(pa.string())),
    ("label", pa.int64()),
    ("image_id", pa.string()),
    ("split", pa.string()),
])


def _food101_class_idx(path: Path) -> dict[str, int]:
    data = load_json(path, "Food-101 class index file")
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise PrepareError(f"{path}: expected a JSON object {{class name: int index}}, found {str(data):.80}")
    if sorted(data.values()) != list(range(len(data))):
        raise PrepareError(f"{path}: class indices must be 0..{len(data) - 1}, each once; found "
                           f"{sorted(data.values())[:10]}...")
    return data


def _food101_titles(root: Path) -> tuple[dict[str, str], dict[str, str], str]:
    """(file -> title, file -> class from the csv (empty for text.json), source description)."""
    text_json = root / "text.json"
    if text_json.is_file():
        data = load_json(text_json, "Food-101 title file")
        if not isinstance(data, dict):
            raise PrepareError(f"{text_json}: expected a JSON object {{file: title}}, found "
                               f"{type(data).__name__}")
        titles = {}
        for name, title in data.items():
            if isinstance(title, list) and len(title) >= 1:
                title = title[0]
            if not isinstance(title, str):
                raise PrepareError(f"{text_json}: title of '{name}' must be a string, found {title!r:.60}")
            titles[name] = title
        return titles, {}, str(text_json)
    csvs = [root / "texts" / "train_titles.csv", root / "texts" / "test_titles.csv"]
    if not any(p.is_file() for p in csvs):
        raise PrepareError(f"{root}: Food-101 titles not found; expected text.json (file -> title) or the "
                           f"official {csvs[0].relative_to(root)} and {csvs[1].relative_to(root)}")
    titles, classes = {}, {}
    for path in csvs:
        if not path.is_file():
            raise PrepareError(f"{path}: Food-101 title csv not found (its sibling exists)")
        with open(path, newline="", encoding="utf-8") as fp:
            for line, row in enumerate(csv.reader(fp), start=1):
                if not row:
                    continue
                if len(row) < 3:
                    raise PrepareError(f"{path}:{line}: expected 3 columns (file, title, class), found "
                                       f"{len(row)}: {row!r:.80}")
                name, title, cls = row[0], ",".join(row[1:-1]), row[-1]
                titles[name], classes[name] = title, cls
    return titles, classes, ", ".join(str(p) for p in csvs)


def prepare_food101(root: str | Path, target: str | Path, split_file: str | Path | None = None,
                    class_idx_file: str | Path | None = None,
                    datasets_dir: str | Path = SHIPPED_DIR, allow_missing_text: bool = False,
                    progress: bool = True) -> list[Path]:
    """Convert a raw UPMC Food-101 download to ``food101_{train,val,test}.arrow``.

    A file's class is the csv's class column, else its name up to the last ``_`` (``apple_pie_12.jpg``);
    train and val files live under ``images/train``, test files under ``images/test``. A split entry
    without a title is an error unless ``allow_missing_text`` (then it is skipped with a warning, as DCP
    did silently).
    """
    root, target, datasets_dir = Path(root), Path(target), Path(datasets_dir)
    need_dir(root, "Food-101 raw root")
    for folder in ("train", "test"):
        need_dir(root / "images" / folder, "Food-101 image")
    splits = FOOD101_SPLITS
    split_path = find_side_file(split_file, root, "split.json", "food101_split.json", datasets_dir,
                                 "Food-101 split file")
    class_path = find_side_file(class_idx_file, root, "class_idx.json", "food101_class_idx.json",
                                 datasets_dir, "Food-101 class index file")
    class_idx = _food101_class_idx(class_path)
    class_names = [c for c, _ in sorted(class_idx.items(), key=lambda kv: kv[1])]
    files = split_lists(split_path, splits)
    titles, csv_classes, text_source = _food101_titles(root)

    plans: dict[str, SplitPlan] = {}
    skipped: dict[str, int] = {}
    for split in splits:
        plan = SplitPlan()
        folder = "test" if split == "test" else "train"
        for name in files[split]:
            if name not in titles:
                if allow_missing_text:
                    skipped[split] = skipped.get(split, 0) + 1
                    continue
                raise PrepareError(f"{split_path}: file '{name}' of split '{split}' has no title in "
                                   f"{text_source} (pass allow_missing_text=True to skip such files)")
            cls = csv_classes.get(name) or name.rsplit("_", 1)[0]
            if cls not in class_idx:
                raise PrepareError(f"{split_path}: file '{name}' of split '{split}': class '{cls}' is not "
                                   f"in {class_path} ({len(class_idx)} classes)")
            img_path = root / "images" / folder / cls / name
            if not img_path.is_file():
                raise PrepareError(f"{split_path}: file '{name}' of split '{split}' has no image {img_path}")
            plan.add(img_path, text=[titles[name]], label=class_idx[cls], image_id=name, split=split)
        plans[split] = plan
    if skipped:
        log.warning("Food-101: skipped split entries without a title: %s", skipped)

    meta = base_metadata("food101", class_names, "ce", {
        "root": str(root), "split_file": str(split_path), "class_idx_file": str(class_path),
        "text_source": text_source, "skipped_without_text": skipped})
    return write_all("food101", target, FOOD101_SCHEMA, plans, meta, progress)
