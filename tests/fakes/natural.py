"""Tiny raw image–text datasets in the on-disk layouts of the real downloads (SPEC §3.2).

Each generator writes a handful of small, real image files (JPEG/PNG via Pillow) and the json / jsonl /
csv side files exactly where the converters (:mod:`mamol.data.mmimdb`, :mod:`mamol.data.food101`,
:mod:`mamol.data.hateful_memes`) look for them, so tests can run the whole ``raw -> make_arrow -> dataset``
path without the real data. Everything is drawn from a dedicated, seeded ``numpy.random.Generator``: the same
seed writes the same files.

Layouts written:

* MM-IMDb, ``layout="dcp"``: ``images/<id>.jpeg`` + ``labels/<id>.json`` + ``split.json``;
  ``layout="official"``: ``dataset/<id>.jpeg`` + ``dataset/<id>.json`` + ``split.json``.
* Food-101 (UPMC): ``images/{train,test}/<class>/<class>_<n>.jpg`` + ``class_idx.json`` + ``split.json``
  (val files live under ``train``) and titles in ``text.json`` (``text_source="json"``) or
  ``texts/{train_titles,test_titles}.csv`` (``text_source="csv"``: rows file, title, class; no header).
* Hateful Memes: ``img/<id>.png`` + ``train.jsonl``, ``dev_seen.jsonl`` / ``dev.jsonl``,
  ``test_seen.jsonl`` / ``test.jsonl`` (optionally unlabelled, as the challenge's), at the root or under
  ``data/`` (``nested=True``).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mamol.data.food101 import SHIPPED_FOOD101_CLASS_IDX

__all__ = [
    "RawManifest",
    "make_mmimdb_raw",
    "make_food101_raw",
    "make_hateful_memes_raw",
]

_WORDS = [
    "a", "the", "old", "new", "dark", "bright", "city", "night", "story", "love", "war", "family", "secret",
    "road", "house", "river", "friend", "young", "king", "dream", "ghost", "lost", "last", "first", "hidden",
    "journey", "village", "storm", "summer", "winter", "mountain", "ocean", "heart", "crispy", "sweet",
    "spicy", "fresh", "grilled", "baked", "homemade", "easy", "classic", "creamy", "roasted", "golden",
]

# A few real genre / class names so generated labels exercise the real mappings.
_MMIMDB_GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Horror", "Sci-Fi", "Short")
_FOOD_CLASSES = ("apple_pie", "baby_back_ribs", "cheese_plate", "cheesecake", "waffles")


@dataclass
class RawManifest:
    """What a generator wrote: its root and, per split, the expected Arrow row count and ids.

    ``rows`` counts Arrow rows (MM-IMDb: one row per movie, ``samples`` one per plot; other datasets:
    rows == samples).
    """

    root: Path
    rows: dict[str, int] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)


def _sentence(rng: np.random.Generator, lo: int = 3, hi: int = 12) -> str:
    n = int(rng.integers(lo, hi + 1))
    return " ".join(rng.choice(_WORDS, size=n)).capitalize()


def _image(rng: np.random.Generator, size: int) -> Image.Image:
    """A small RGB image: a random flat colour plus noise (so every file differs)."""
    base = rng.integers(0, 256, size=(1, 1, 3))
    noise = rng.integers(-40, 41, size=(size, size, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def make_mmimdb_raw(
    root: str | Path,
    layout: str = "dcp",
    counts: tuple[int, int, int] = (4, 2, 3),
    seed: int = 0,
    image_size: int = 32,
    max_plots: int = 3,
) -> RawManifest:
    """Write a tiny MM-IMDb download under ``root``.

    Args:
        layout: ``"dcp"`` (``images/`` + ``labels/``) or ``"official"`` (``dataset/`` holds both).
        counts: movies in (train, dev, test).
        max_plots: each movie gets 1..max_plots plots (one sample per plot downstream).
    """
    if layout not in ("dcp", "official"):
        raise ValueError(f"make_mmimdb_raw: layout must be 'dcp' or 'official', found {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / ("images" if layout == "dcp" else "dataset")
    lbl_dir = root / ("labels" if layout == "dcp" else "dataset")
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)

    manifest = RawManifest(root=root)
    split_ids: dict[str, list[str]] = {}
    movie = 0
    for split, n in zip(("train", "dev", "test"), counts):
        ids = []
        n_plots = 0
        for _ in range(n):
            mid = f"{movie:08d}"
            movie += 1
            ids.append(mid)
            plots = [_sentence(rng, 5, 30) for _ in range(int(rng.integers(1, max_plots + 1)))]
            n_plots += len(plots)
            k = int(rng.integers(1, 4))
            genres = [str(g) for g in rng.choice(_MMIMDB_GENRES, size=k, replace=False)]
            _image(rng, image_size).save(img_dir / f"{mid}.jpeg", format="JPEG", quality=90)
            _write_json(lbl_dir / f"{mid}.json", {"title": _sentence(rng, 1, 3), "plot": plots,
                                                  "genres": genres})
        split_ids[split] = ids
        manifest.rows[split] = n
        manifest.samples[split] = n_plots
        manifest.ids[split] = ids
    _write_json(root / "split.json", split_ids)
    return manifest


def make_food101_raw(
    root: str | Path,
    text_source: str = "json",
    counts: tuple[int, int, int] = (5, 2, 3),
    seed: int = 0,
    image_size: int = 32,
    write_split: bool = True,
    write_class_idx: bool = True,
    class_idx: dict[str, int] | None = None,
) -> RawManifest:
    """Write a tiny UPMC Food-101 download under ``root``.

    Images are drawn from a few real class names. ``class_idx.json`` (when written) is ``class_idx``
    (default: the shipped ``datasets/food101_class_idx.json``, all 101 classes, as the MMP/DCP release).

    Args:
        text_source: ``"json"`` writes ``text.json`` (file -> title); ``"csv"`` writes the official
            ``texts/{train,test}_titles.csv`` (file, title, class; no header).
        counts: files in (train, val, test); val files live under ``images/train``.
        write_split / write_class_idx: leave the file out to exercise the fallback to ``datasets/``.
    """
    if text_source not in ("json", "csv"):
        raise ValueError(f"make_food101_raw: text_source must be 'json' or 'csv', found {text_source!r}")
    if class_idx is None and write_class_idx:
        class_idx = json.loads(SHIPPED_FOOD101_CLASS_IDX.read_text())
    root = Path(root)
    rng = np.random.default_rng(seed)
    manifest = RawManifest(root=root)
    split_files: dict[str, list[str]] = {}
    titles: dict[str, tuple[str, str]] = {}  # file -> (title, class)
    csv_rows: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}
    per_class: dict[str, int] = {}
    for split, n in zip(("train", "val", "test"), counts):
        folder = "test" if split == "test" else "train"
        files = []
        for _ in range(n):
            cls = str(rng.choice(_FOOD_CLASSES))
            k = per_class.get(cls, 0)
            per_class[cls] = k + 1
            name = f"{cls}_{k}.jpg"
            path = root / "images" / folder / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _image(rng, image_size).save(path, format="JPEG", quality=90)
            files.append(name)
            title = _sentence(rng) + ", " + _sentence(rng, 1, 3)  # a comma exercises csv quoting
            titles[name] = (title, cls)
            csv_rows[folder].append((name, title, cls))
        split_files[split] = files
        manifest.rows[split] = manifest.samples[split] = n
        manifest.ids[split] = files
    if write_split:
        _write_json(root / "split.json", split_files)
    if write_class_idx:
        _write_json(root / "class_idx.json", class_idx)
    if text_source == "json":
        _write_json(root / "text.json", {f: t for f, (t, _) in titles.items()})
    else:
        (root / "texts").mkdir(parents=True, exist_ok=True)
        for folder, rows in csv_rows.items():
            with open(root / "texts" / f"{folder}_titles.csv", "w", newline="") as fp:
                csv.writer(fp).writerows(rows)
    return manifest


def make_hateful_memes_raw(
    root: str | Path,
    nested: bool = False,
    counts: tuple[int, int, int] = (6, 2, 3),
    seed: int = 0,
    image_size: int = 32,
    dev_name: str = "dev_seen",
    test_name: str = "test_seen",
    unlabelled_test: bool = False,
    extra_unlabelled_test: bool = True,
) -> RawManifest:
    """Write a tiny Hateful Memes download under ``root`` (or ``root/data`` when ``nested``).

    Args:
        dev_name / test_name: jsonl stems for the dev and test splits (``dev_seen``/``dev``,
            ``test_seen``/``test``).
        unlabelled_test: write the test split without ``label`` (as the challenge's ``test.jsonl``).
        extra_unlabelled_test: also write an unlabelled ``test.jsonl`` beside a ``test_seen.jsonl`` (as
            the phase-2 download has), which preparation must not pick.
    """
    root = Path(root)
    base = root / "data" if nested else root
    (base / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest = RawManifest(root=root)
    next_id = 10000

    def rows_for(n: int, labelled: bool) -> list[dict]:
        nonlocal next_id
        rows = []
        for _ in range(n):
            mid = next_id
            next_id += 1
            _image(rng, image_size).save(base / "img" / f"{mid}.png", format="PNG")
            row = {"id": mid, "img": f"img/{mid}.png", "text": _sentence(rng).lower()}
            if labelled:
                row["label"] = int(rng.integers(0, 2))
            rows.append(row)
        return rows

    def write_jsonl(stem: str, rows: list[dict]) -> None:
        with open(base / f"{stem}.jsonl", "w") as fp:
            fp.writelines(json.dumps(r) + "\n" for r in rows)

    for split, stem, n in zip(("train", "dev", "test"), ("train", dev_name, test_name), counts):
        labelled = not (split == "test" and unlabelled_test)
        rows = rows_for(n, labelled)
        write_jsonl(stem, rows)
        manifest.rows[split] = manifest.samples[split] = n
        manifest.ids[split] = [str(r["id"]) for r in rows]
    if extra_unlabelled_test and test_name != "test":
        write_jsonl("test", rows_for(2, labelled=False))
    return manifest
