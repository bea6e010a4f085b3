"""MM-IMDb raw download (DCP or official layout) -> ``mmimdb_{train,dev,test}.arrow`` (SPEC §3.2): the converter.

Columns: ``image`` (bytes), ``plots`` (list<string>), ``label`` (list<int64>, 23-way multi-hot in
:data:`mamol.data.mmimdb.MMIMDB_GENRES` order), ``genres`` (list<string>, as in the raw file), ``image_id`` (string),
``split`` (string). The split file is ``split.json`` in the raw root, else ``split_file``. The two-pass
conversion is described in :mod:`mamol.conversion.natural`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

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
from mamol.data.mmimdb import MMIMDB_GENRES

log = logging.getLogger(__name__)


MMIMDB_SPLITS: tuple[str, ...] = ("train", "dev", "test")  # on-disk split names, as DCP

MMIMDB_SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("plots", pa.list_(pa.string())),
    ("label", pa.list_(pa.int64())),
    ("genres", pa.list_(pa.string())),
    ("image_id", pa.string()),
    ("split", pa.string()),
])


def _mmimdb_layout(root: Path) -> tuple[str, Path, Path]:
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "dcp", root / "images", root / "labels"
    if (root / "dataset").is_dir():
        return "official", root / "dataset", root / "dataset"
    found = sorted(p.name for p in root.iterdir())
    raise PrepareError(
        f"{root}: no MM-IMDb layout found; expected images/ + labels/ (DCP) or dataset/ (official "
        f"mmimdb.tar.gz), found {found}"
    )


def prepare_mmimdb(root: str | Path, target: str | Path, split_file: str | Path | None = None,
                   datasets_dir: str | Path = SHIPPED_DIR, progress: bool = True) -> list[Path]:
    """Convert a raw MM-IMDb download (DCP or official layout) to ``mmimdb_{train,dev,test}.arrow``.

    Every id in the split file needs ``<id>.jpeg`` and ``<id>.json`` (keys ``plot``: list of strings,
    ``genres``: list of strings). Genres outside :data:`MMIMDB_GENRES` are kept in ``genres`` and left
    out of ``label`` (as DCP).
    """
    root, target, datasets_dir = Path(root), Path(target), Path(datasets_dir)
    need_dir(root, "MM-IMDb raw root")
    layout, img_dir, lbl_dir = _mmimdb_layout(root)
    splits = MMIMDB_SPLITS
    split_path = find_side_file(split_file, root, "split.json", "mmimdb_split.json", datasets_dir,
                                 "MM-IMDb split file")
    ids = split_lists(split_path, splits)
    genre_index = {g: i for i, g in enumerate(MMIMDB_GENRES)}
    unknown: dict[str, int] = {}

    plans: dict[str, SplitPlan] = {}
    plots_per_split: dict[str, int] = {}
    for split in splits:
        plan = SplitPlan()
        for mid in tqdm(ids[split], desc=f"mmimdb {split} labels", disable=not progress, leave=False):
            lbl_path, img_path = lbl_dir / f"{mid}.json", img_dir / f"{mid}.jpeg"
            if not lbl_path.is_file():
                raise PrepareError(f"{split_path}: id '{mid}' of split '{split}' has no label file "
                                   f"{lbl_path}")
            if not img_path.is_file():
                raise PrepareError(f"{split_path}: id '{mid}' of split '{split}' has no image {img_path}")
            record = load_json(lbl_path, "MM-IMDb label file")
            plots, genres = _mmimdb_fields(record, lbl_path)
            label = [0] * len(MMIMDB_GENRES)
            for g in genres:
                if g in genre_index:
                    label[genre_index[g]] = 1
                else:
                    unknown[g] = unknown.get(g, 0) + 1
            plan.add(img_path, plots=plots, label=label, genres=genres, image_id=mid, split=split)
        plans[split] = plan
        plots_per_split[split] = sum(len(p) for p in plan.columns.get("plots", []))
    if unknown:
        log.info("MM-IMDb: genres outside the 23 classes (kept in 'genres', not in 'label'): %s", unknown)

    meta = base_metadata("mmimdb", MMIMDB_GENRES, "bce", {
        "root": str(root), "layout": layout, "split_file": str(split_path)})
    return write_all("mmimdb", target, MMIMDB_SCHEMA, plans, meta, progress, samples=plots_per_split)


def _mmimdb_fields(record: Any, path: Path) -> tuple[list[str], list[str]]:
    if not isinstance(record, dict):
        raise PrepareError(f"{path}: expected a JSON object with 'plot' and 'genres', found "
                           f"{type(record).__name__}")
    for key in ("plot", "genres"):
        if key not in record:
            raise PrepareError(f"{path}: label field '{key}' missing; expected keys 'plot' (list of "
                               f"strings) and 'genres' (list of strings), found {sorted(record)}")
    plots, genres = record["plot"], record["genres"]
    if isinstance(plots, str):
        plots = [plots]
    if not isinstance(plots, list) or not plots or not all(isinstance(p, str) for p in plots):
        raise PrepareError(f"{path}: field 'plot' must be a non-empty list of strings, found {plots!r:.80}")
    if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
        raise PrepareError(f"{path}: field 'genres' must be a list of strings, found {genres!r:.80}")
    return plots, genres
