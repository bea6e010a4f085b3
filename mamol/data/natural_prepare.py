"""Raw MM-IMDb / Food-101 / Hateful Memes downloads -> the Arrow files DCP reads (SPEC §3.2).

``prepare_natural(dataset, root, target)`` writes

* ``mmimdb_{train,dev,test}.arrow``: ``image`` (bytes), ``plots`` (list<string>), ``label`` (list<int64>,
  23-way multi-hot in :data:`MMIMDB_GENRES` order), ``genres`` (list<string>, as in the raw file),
  ``image_id`` (string), ``split`` (string);
* ``food101_{train,val,test}.arrow``: ``image``, ``text`` (list<string> of 1: the title), ``label`` (int64,
  index in ``class_idx.json``), ``image_id`` (file name), ``split``;
* ``hatememes_{train,dev,test}.arrow``: ``image``, ``text`` (list<string> of 1, as DCP/MMP store it),
  ``label`` (int64, 0/1), ``split``.

Each file carries JSON metadata (class names, source files, counts) through :mod:`mamol.data.arrow`.

The conversion runs in two passes so that bad input fails early and by name: a cheap *plan* pass reads
the split, class and text files and checks that every listed image and label file exists, then the
*convert* pass reads each image, checks that Pillow can decode it (a corrupt file is reported by its path
here, not later inside a data-loader worker) and streams the rows into the Arrow file (written to a
temporary file and renamed into place, so a failed run leaves no half-written output).

Split / class files the raw downloads lack are looked for in the raw root first, then in the repository's
``datasets/`` folder (``mmimdb_split.json``, ``food101_split.json``, ``food101_class_idx.json``); see
``datasets/README.md`` for where they come from.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa
from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)

__all__ = [
    "MMIMDB_GENRES",
    "FOOD101_CLASSES",
    "HATEMEMES_CLASSES",
    "NATURAL_DATASETS",
    "DEFAULT_DATASETS_DIR",
    "SHIPPED_FOOD101_CLASS_IDX",
    "PrepareError",
    "prepare_natural",
    "prepare_mmimdb",
    "prepare_food101",
    "prepare_hateful_memes",
    "verify_image",
]

#: MM-IMDb genre order, label index 0..22 (SPEC §3.2, as DCP/MMP).
MMIMDB_GENRES: tuple[str, ...] = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror", "Documentary",
    "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History", "Music", "Animation",
    "Musical", "Western", "Sport", "Short", "Film-Noir",
)

#: The 101 Food-101 classes in their standard (alphabetical, ``meta/classes.txt``) order. Label indices
#: come from ``class_idx.json`` instead (the MMP/DCP release's order, shipped as
#: ``datasets/food101_class_idx.json``), so that labels match Arrow files made by DCP.
FOOD101_CLASSES: tuple[str, ...] = (
    "apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad", "beignets",
    "bibimbap", "bread_pudding", "breakfast_burrito", "bruschetta", "caesar_salad", "cannoli",
    "caprese_salad", "carrot_cake", "ceviche", "cheese_plate", "cheesecake", "chicken_curry",
    "chicken_quesadilla", "chicken_wings", "chocolate_cake", "chocolate_mousse", "churros", "clam_chowder",
    "club_sandwich", "crab_cakes", "creme_brulee", "croque_madame", "cup_cakes", "deviled_eggs", "donuts",
    "dumplings", "edamame", "eggs_benedict", "escargots", "falafel", "filet_mignon", "fish_and_chips",
    "foie_gras", "french_fries", "french_onion_soup", "french_toast", "fried_calamari", "fried_rice",
    "frozen_yogurt", "garlic_bread", "gnocchi", "greek_salad", "grilled_cheese_sandwich", "grilled_salmon",
    "guacamole", "gyoza", "hamburger", "hot_and_sour_soup", "hot_dog", "huevos_rancheros", "hummus",
    "ice_cream", "lasagna", "lobster_bisque", "lobster_roll_sandwich", "macaroni_and_cheese", "macarons",
    "miso_soup", "mussels", "nachos", "omelette", "onion_rings", "oysters", "pad_thai", "paella", "pancakes",
    "panna_cotta", "peking_duck", "pho", "pizza", "pork_chop", "poutine", "prime_rib",
    "pulled_pork_sandwich", "ramen", "ravioli", "red_velvet_cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed_salad", "shrimp_and_grits", "spaghetti_bolognese", "spaghetti_carbonara",
    "spring_rolls", "steak", "strawberry_shortcake", "sushi", "tacos", "takoyaki", "tiramisu",
    "tuna_tartare", "waffles",
)

HATEMEMES_CLASSES: tuple[str, ...] = ("not_hateful", "hateful")

#: dataset name (as ``--dataset`` accepts it) -> Arrow prefix and on-disk split names.
NATURAL_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mmimdb": ("mmimdb", ("train", "dev", "test")),
    "food101": ("food101", ("train", "val", "test")),
    "hateful_memes": ("hatememes", ("train", "dev", "test")),
}
_ALIASES = {"hatememes": "hateful_memes", "hateful-memes": "hateful_memes", "mm-imdb": "mmimdb",
            "food-101": "food101", "upmc_food101": "food101"}

#: Shipped split / class files (repository ``datasets/``), the fallback after the raw root.
DEFAULT_DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"
SHIPPED_FOOD101_CLASS_IDX = DEFAULT_DATASETS_DIR / "food101_class_idx.json"

_BATCH_ROWS = 256  # rows per Arrow record batch while streaming


class PrepareError(ValueError):
    """Raw input that cannot be converted; the message names the file / key, what was expected and found."""


# --------------------------------------------------------------------------------------------- helpers
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


def _read_image(path: Path) -> bytes:
    if not path.is_file():
        raise PrepareError(f"{path}: image file not found")
    data = path.read_bytes()
    verify_image(data, path)
    return data


def _load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fp:
            return json.load(fp)
    except FileNotFoundError as err:
        raise PrepareError(f"{path}: {what} not found") from err
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}: {what} is not valid JSON ({err})") from err


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        parent = path.parent
        found = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else "(no such folder)"
        raise PrepareError(f"{path}: {what} folder not found; {parent} holds {found}")
    return path


def _find_side_file(explicit: str | Path | None, root: Path, raw_name: str, shipped_name: str,
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


def _split_lists(split_path: Path, splits: Sequence[str]) -> dict[str, list[str]]:
    """Read ``{split: [ids]}`` from ``split_path``, checking every split key is a list."""
    data = _load_json(split_path, "split file")
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
class _SplitPlan:
    """Rows of one split before the images are read: ``images[i]`` and the other columns' values."""

    images: list[Path] = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=dict)

    def add(self, image: Path, **values: Any) -> None:
        self.images.append(image)
        for key, value in values.items():
            self.columns.setdefault(key, []).append(value)

    def __len__(self) -> int:
        return len(self.images)


def _write_split(path: Path, schema: pa.Schema, plan: _SplitPlan, metadata: dict, progress: bool) -> Path:
    """Stream ``plan`` (reading + verifying each image) into the Arrow IPC file ``path``, atomically."""
    from mamol.data import arrow as arrow_io

    names = [n for n in schema.names if n != "image"]

    def batches() -> Iterable[pa.RecordBatch]:
        with tqdm(total=len(plan), desc=path.name, unit="img", disable=not progress, leave=False) as bar:
            for start in range(0, len(plan), _BATCH_ROWS):
                stop = min(start + _BATCH_ROWS, len(plan))
                cols = {"image": [_read_image(p) for p in plan.images[start:stop]]}
                cols.update({n: plan.columns[n][start:stop] for n in names})
                bar.update(stop - start)
                yield pa.RecordBatch.from_pydict(cols, schema=schema)

    arrow_io.write_arrow(path, schema, batches(), metadata)
    log.info("wrote %s (%d rows)", path, len(plan))
    return path


def _write_all(prefix: str, target: Path, schema: pa.Schema, plans: dict[str, _SplitPlan],
               metadata: dict, progress: bool, samples: dict[str, int] | None = None) -> list[Path]:
    """Write one file per split; ``samples`` counts samples per split where they differ from rows."""
    target.mkdir(parents=True, exist_ok=True)
    counts = {split: len(plan) for split, plan in plans.items()}
    samples = samples or counts
    out = []
    for split, plan in plans.items():
        meta = dict(metadata, split=split, num_rows=len(plan), samples=samples[split], split_rows=counts,
                    split_samples=samples)
        out.append(_write_split(target / f"{prefix}_{split}.arrow", schema, plan, meta, progress))
    return out


def _base_metadata(dataset: str, class_names: Sequence[str], loss: str, source: dict) -> dict:
    return {
        "dataset": dataset,
        "kind": "natural",
        "modalities": ["text", "image"],
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "loss": loss,
        "source": source,
        "format": "mamol-natural-1",
    }


# --------------------------------------------------------------------------------------------- MM-IMDb
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
                   datasets_dir: str | Path = DEFAULT_DATASETS_DIR, progress: bool = True) -> list[Path]:
    """Convert a raw MM-IMDb download (DCP or official layout) to ``mmimdb_{train,dev,test}.arrow``.

    Every id in the split file needs ``<id>.jpeg`` and ``<id>.json`` (keys ``plot``: list of strings,
    ``genres``: list of strings). Genres outside :data:`MMIMDB_GENRES` are kept in ``genres`` and left
    out of ``label`` (as DCP).
    """
    root, target, datasets_dir = Path(root), Path(target), Path(datasets_dir)
    _need_dir(root, "MM-IMDb raw root")
    layout, img_dir, lbl_dir = _mmimdb_layout(root)
    splits = NATURAL_DATASETS["mmimdb"][1]
    split_path = _find_side_file(split_file, root, "split.json", "mmimdb_split.json", datasets_dir,
                                 "MM-IMDb split file")
    ids = _split_lists(split_path, splits)
    genre_index = {g: i for i, g in enumerate(MMIMDB_GENRES)}
    unknown: dict[str, int] = {}

    plans: dict[str, _SplitPlan] = {}
    plots_per_split: dict[str, int] = {}
    for split in splits:
        plan = _SplitPlan()
        for mid in tqdm(ids[split], desc=f"mmimdb {split} labels", disable=not progress, leave=False):
            lbl_path, img_path = lbl_dir / f"{mid}.json", img_dir / f"{mid}.jpeg"
            if not lbl_path.is_file():
                raise PrepareError(f"{split_path}: id '{mid}' of split '{split}' has no label file "
                                   f"{lbl_path}")
            if not img_path.is_file():
                raise PrepareError(f"{split_path}: id '{mid}' of split '{split}' has no image {img_path}")
            record = _load_json(lbl_path, "MM-IMDb label file")
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

    meta = _base_metadata("mmimdb", MMIMDB_GENRES, "bce", {
        "root": str(root), "layout": layout, "split_file": str(split_path)})
    return _write_all("mmimdb", target, MMIMDB_SCHEMA, plans, meta, progress, samples=plots_per_split)


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


# --------------------------------------------------------------------------------------------- Food-101
FOOD101_SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("text", pa.list_(pa.string())),
    ("label", pa.int64()),
    ("image_id", pa.string()),
    ("split", pa.string()),
])


def _food101_class_idx(path: Path) -> dict[str, int]:
    data = _load_json(path, "Food-101 class index file")
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
        data = _load_json(text_json, "Food-101 title file")
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
                    datasets_dir: str | Path = DEFAULT_DATASETS_DIR, allow_missing_text: bool = False,
                    progress: bool = True) -> list[Path]:
    """Convert a raw UPMC Food-101 download to ``food101_{train,val,test}.arrow``.

    A file's class is the csv's class column, else its name up to the last ``_`` (``apple_pie_12.jpg``);
    train and val files live under ``images/train``, test files under ``images/test``. A split entry
    without a title is an error unless ``allow_missing_text`` (then it is skipped with a warning, as DCP
    did silently).
    """
    root, target, datasets_dir = Path(root), Path(target), Path(datasets_dir)
    _need_dir(root, "Food-101 raw root")
    for folder in ("train", "test"):
        _need_dir(root / "images" / folder, "Food-101 image")
    splits = NATURAL_DATASETS["food101"][1]
    split_path = _find_side_file(split_file, root, "split.json", "food101_split.json", datasets_dir,
                                 "Food-101 split file")
    class_path = _find_side_file(class_idx_file, root, "class_idx.json", "food101_class_idx.json",
                                 datasets_dir, "Food-101 class index file")
    class_idx = _food101_class_idx(class_path)
    class_names = [c for c, _ in sorted(class_idx.items(), key=lambda kv: kv[1])]
    files = _split_lists(split_path, splits)
    titles, csv_classes, text_source = _food101_titles(root)

    plans: dict[str, _SplitPlan] = {}
    skipped: dict[str, int] = {}
    for split in splits:
        plan = _SplitPlan()
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

    meta = _base_metadata("food101", class_names, "ce", {
        "root": str(root), "split_file": str(split_path), "class_idx_file": str(class_path),
        "text_source": text_source, "skipped_without_text": skipped})
    return _write_all("food101", target, FOOD101_SCHEMA, plans, meta, progress)


# --------------------------------------------------------------------------------------------- Hateful Memes
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
    _need_dir(root, "Hateful Memes raw root")
    base = next((b for b in (root, root / "data") if (b / "train.jsonl").is_file()), None)
    if base is None:
        raise PrepareError(f"{root}: Hateful Memes train.jsonl not found at the root or in data/; found "
                           f"{sorted(p.name for p in root.iterdir())}")
    _need_dir(base / "img", "Hateful Memes image")

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

    plans: dict[str, _SplitPlan] = {}
    for split, path in sources.items():
        plan = _SplitPlan()
        for row in _read_jsonl(path, require_label=True):
            img_path = base / row["img"]
            if not img_path.is_file():
                raise PrepareError(f"{path}:{row['_line']}: image '{row['img']}' not found at {img_path}")
            plan.add(img_path, text=[str(row["text"])], label=int(row["label"]), split=split)
        plans[split] = plan

    meta = _base_metadata("hatememes", HATEMEMES_CLASSES, "ce", {
        "root": str(root), "files": {s: str(p) for s, p in sources.items()}})
    return _write_all("hatememes", target, HATEMEMES_SCHEMA, plans, meta, progress)


# --------------------------------------------------------------------------------------------- dispatch
_PREPARERS: dict[str, Callable[..., list[Path]]] = {
    "mmimdb": prepare_mmimdb,
    "food101": prepare_food101,
    "hateful_memes": prepare_hateful_memes,
}


def canonical_name(dataset: str) -> str:
    """``--dataset`` value -> one of :data:`NATURAL_DATASETS` (accepts ``hatememes`` etc.)."""
    key = dataset.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in NATURAL_DATASETS:
        raise ValueError(f"unknown natural dataset {dataset!r}; expected one of {sorted(NATURAL_DATASETS)}")
    return key


def prepare_natural(dataset: str, root: str | Path, target: str | Path, **kwargs: Any) -> list[Path]:
    """Convert the raw download of ``dataset`` under ``root`` to Arrow files in ``target``.

    Args:
        dataset: ``mmimdb``, ``food101`` or ``hateful_memes`` (``hatememes`` accepted).
        kwargs: passed to the dataset's preparer (``split_file``, ``class_idx_file``, ``datasets_dir``,
            ``allow_missing_text``, ``allow_missing_test``, ``progress``).
    Returns:
        The Arrow files written, in split order.
    """
    return _PREPARERS[canonical_name(dataset)](root, target, **kwargs)
