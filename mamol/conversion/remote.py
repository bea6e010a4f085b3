"""Scene folder of .mat files -> ``<scene>_{train,val,test}.arrow`` + ``<scene>_scene.arrow`` (SPEC §3.1).

Steps: find the files of each role (modalities, label raster, optional TR/TS split rasters) in any of the
accepted naming conventions (:mod:`mamol.conversion.layout`); check sizes and label values; draw disjoint
seeded per-class samples (:mod:`mamol.conversion.splits`); per modality read, check for NaN/Inf, normalise per
band (:mod:`mamol.conversion.normalise`) and pad symmetrically (:mod:`mamol.conversion.patches`); then write

* ``<scene>_<split>.arrow``: one row per sampled pixel: per modality a float32 patch (C, P, P) flattened as
  a fixed-size list, ``label`` (0..K-1), ``row``, ``col``;
* ``<scene>_scene.arrow``: the padded, normalised scene, one Arrow row per padded image row (per modality a
  fixed-size list of Wp*C float32 values in (Wp, C) order; ``label`` Wp int16 raw labels, 0 = unlabelled),
  from which whole-scene windows are cut on the fly.

Each file carries the same metadata JSON (modalities, bands, class names, normalisation and its statistics,
split parameters and counts, source files with keys and sizes) and one conversion id; the files are written
into a staging folder and put in place together (:mod:`mamol.conversion.writing`). No torch import here: the
converter stays light.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from mamol.conversion import windowed as windowed_read
from mamol.conversion.layout import _EXAMPLE_FILES, find_scene_files
from mamol.conversion.normalise import BandNormaliser
from mamol.conversion.patches import pad_index
from mamol.conversion.rasters import RasterVariable, align
from mamol.conversion.readers import Variable, bands, describe, read_array, resolve
from mamol.conversion.splits import SPLIT_METHODS, draw_split, fixed_split, release_split, warn_about_sizes
from mamol.conversion.writing import conversion_id, staged
from mamol.data.arrow import fixed_list_array, write_arrow
from mamol.data.formats import (
    CONVERSION_KEY,
    MODALITY_ORDER,
    NAN_POLICIES,
    NORMALIZATIONS,
    REMOTE_FORMAT,
    REMOTE_FORMAT_VERSION,
)
from mamol.data.scenes import KNOWN_SCENES, class_names_for
from mamol.errors import DataError, MissingFileError
from mamol.tasks import SPLITS

logger = logging.getLogger(__name__)

__all__ = ["BATCH_BYTES", "check_labels", "check_sizes", "human_bytes", "prepare_remote", "read_padded"]

BATCH_BYTES = 32 * 2**20  # target size of one written record batch


def _hw(var: Variable) -> tuple[int, int]:
    if len(var.shape) not in (2, 3):
        raise DataError(f"{var.label}: expected an H×W or H×W×C array, found shape {var.shape}")
    return var.shape[0], var.shape[1]


def check_sizes(modalities: dict[str, Variable], label: Variable,
                extra: Sequence[Variable] = ()) -> tuple[int, int]:
    """Common H×W of all modalities, the label raster and split rasters; ValueError naming the odd one out."""
    shapes = {m: _hw(v) for m, v in modalities.items()}
    first = next(iter(modalities))
    h, w = shapes[first]
    for hw in shapes.values():
        if hw != (h, w):
            listing = ", ".join(f"{modalities[k].label} {a}×{b}" for k, (a, b) in shapes.items())
            raise DataError(
                f"modalities have different H×W: {listing}; all must cover the same scene (resample them, or "
                f"leave one out with --modalities)"
            )
    for var in (label, *extra):
        shape = var.shape[:2] if len(var.shape) == 3 and var.shape[2] == 1 else var.shape
        if tuple(shape) != (h, w):
            raise DataError(
                f"label raster {var.label} has shape {'×'.join(map(str, var.shape))}, expected {h}×{w} "
                f"like {modalities[first].label}"
            )
    return h, w


def check_labels(raster: np.ndarray, var: Variable, num_classes: int | None) -> np.ndarray:
    """Validate a label raster (integers 0..K, 0 = unlabelled) and return it as int16 (H, W)."""
    raster = np.asarray(raster)
    if raster.ndim == 3 and raster.shape[2] == 1:
        raster = raster[..., 0]
    if raster.dtype.kind == "f":
        bad = ~np.isfinite(raster) | (raster != np.round(raster))
        if bad.any():
            example = raster[bad].flat[0].item()
            raise DataError(
                f"{var.label}: labels must be integers 0..K, found {int(bad.sum())} non-integer values "
                f"(e.g. {example!r})"
            )
    elif raster.dtype.kind not in "iub":
        raise DataError(f"{var.label}: labels must be integers 0..K, found dtype {raster.dtype}")
    high = int(num_classes) if num_classes is not None else 32767
    out_of_range = (raster < 0) | (raster > high)
    if out_of_range.any():
        values = np.unique(raster[out_of_range])[:5].tolist()
        raise DataError(
            f"{var.label}: labels must lie in 0..{high} (0 = unlabelled), found {int(out_of_range.sum())} "
            f"pixels with values {values}"
        )
    return raster.astype(np.int16, order="C")  # C order: its rows ravel without a copy


def read_padded(var: Variable, patch_size: int, normalize: str, nan: str) -> tuple[np.ndarray, dict, int]:
    """Read ``var`` band by band, normalised, into its padded scene; (padded (Hp, Wp, C), statistics, filled).

    The padded float32 scene is the only full-size array: each band is read, checked, normalised and copied
    into it before the next is read (:class:`~mamol.conversion.normalise.BandNormaliser`,
    :func:`~mamol.conversion.readers.bands`).
    """
    height, width = _hw(var)
    rows, cols = pad_index(height, patch_size), pad_index(width, patch_size)
    n_bands = var.shape[2] if len(var.shape) == 3 else 1
    padded = np.empty((len(rows), len(cols), n_bands), dtype=np.float32)  # (Hp, Wp, C)
    normaliser = BandNormaliser(var, normalize, nan)
    for c, band in enumerate(bands(var)):  # (H, W) each
        padded[..., c] = normaliser(_as_float32(band, var))[np.ix_(rows, cols)]
    stats, filled = normaliser.finish()
    return padded, stats, filled


def _as_float32(band: np.ndarray, var: Variable) -> np.ndarray:
    """A freshly read numeric band -> float32, ours to normalise in place (no copy if already float32)."""
    if band.dtype.kind not in "biuf":
        raise DataError(f"{var.label}: expected a numeric array, found dtype {band.dtype}")
    if band.dtype == np.float32 and band.flags.writeable:
        return band
    return band.astype(np.float32)


def _check_known_bands(name: str, mods: dict[str, Variable]) -> None:
    """Warn when a known scene's modality has another band count than published (a subset, another release?)."""
    expected = KNOWN_SCENES[name].bands if name in KNOWN_SCENES else {}
    for m, var in mods.items():
        found = var.shape[2] if len(var.shape) == 3 else 1
        if m in expected and found != expected[m]:
            logger.warning("%s: %d bands, but %s's %s has %d as published; converting what the file holds",
                           var.label, found, name, m, expected[m])


def _scene_stem(dataset: str) -> str:
    name = dataset.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name):
        raise DataError(f"dataset name {dataset!r}: use lower-case letters, digits and '_' (it names the files)")
    return name


def prepare_remote(
    dataset: str,
    root: str | os.PathLike,
    target: str | os.PathLike,
    *,
    modalities: Sequence[str] | None = None,
    patch_size: int = 14,
    normalize: str = "minmax",
    split: str = "random",
    train_per_class: int = 100,
    val_per_class: int = 50,
    test_per_class: int = 300,
    seed: int = 0,
    nan: str = "refuse",
    write_scene: bool = True,
    progress: bool = True,
    strict_counts: bool = False,
    resample: bool = False,
    windowed: bool | None = None,
) -> dict[str, Path]:
    """Convert the scene folder ``root`` into Arrow files in ``target``; returns {split or 'scene': path}.

    ``modalities`` None stores every modality found. ``split`` is ``random`` (disjoint seeded per-class
    counts, -1 = all remaining), ``fixed`` (TR/TS rasters; val carved from TR) or ``release`` (the release's
    independent train and test draws; the overlap is recorded as ``overlap`` in the metadata). ``nan`` is ``refuse`` or
    ``fill`` (band mean, with a warning). A class with fewer pixels than train + val + test asks for gives
    its test split what remains (with a warning) unless ``strict_counts``; metadata ``counts`` are exact.
    GeoTIFF / ENVI rasters must lie on the first modality's grid unless ``resample`` (then they are reprojected
    onto it, :func:`mamol.conversion.rasters.align`); the first modality's CRS and transform are kept in the
    metadata (``georeference``). ``windowed`` reads raster modalities in windows (True), in memory (False) or in
    windows when their padded cube is large (None; :mod:`mamol.conversion.windowed`): the files are the same.
    """
    name = _scene_stem(dataset)
    if normalize not in NORMALIZATIONS:
        raise DataError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if nan not in NAN_POLICIES:
        raise DataError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
    if split not in SPLIT_METHODS:
        raise DataError(f"split must be one of {SPLIT_METHODS}, got {split!r}")
    if patch_size < 1:
        raise DataError(f"patch_size must be >= 1, got {patch_size}")
    files = find_scene_files(root)
    present = [m for m in MODALITY_ORDER if m in files]
    if modalities is not None:
        wanted = [m.lower() for m in modalities]
        absent = [m for m in wanted if m not in present]
        if absent:
            raise DataError(f"{root}: modalities {absent} requested but only {present} found")
        present = [m for m in MODALITY_ORDER if m in wanted]
    if split == "fixed" and not ("train" in files and "test" in files):
        raise MissingFileError(
            f"{root}: split='fixed' needs TR/TS rasters ({_EXAMPLE_FILES['train']} and "
            f"{_EXAMPLE_FILES['test']}); found {sorted(p.name for p in files.values())}"
        )

    # Cheap pass: resolve every variable and check grids and sizes before reading any cube.
    roles = [*present, "label", *(("train", "test") if split == "fixed" else ())]
    variables = align({role: resolve(files[role], role) for role in roles}, resample)
    mods = {m: variables[m] for m in present}
    label_var = variables["label"]
    split_vars = {r: variables[r] for r in ("train", "test") if r in variables}
    height, width = check_sizes(mods, label_var, tuple(split_vars.values()))
    _check_known_bands(name, mods)

    known_k = len(KNOWN_SCENES[name].class_names) if name in KNOWN_SCENES else None
    labels = check_labels(read_array(label_var), label_var, known_k)
    num_classes = known_k if known_k is not None else int(labels.max())
    if num_classes < 1:
        raise DataError(f"{label_var.label}: holds no labelled pixels (all 0)")
    class_names = class_names_for(name, num_classes)
    per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    if split == "fixed":
        tr = check_labels(read_array(split_vars["train"]), split_vars["train"], num_classes)
        ts = check_labels(read_array(split_vars["test"]), split_vars["test"], num_classes)
        pixels = fixed_split(tr, ts, class_names, val_per_class, seed)  # labels from the TR/TS rasters
        split_labels = {"train": tr.ravel(), "val": tr.ravel(), "test": ts.ravel()}  # views
        per_class = {"val": val_per_class}  # train and test come from the rasters: only this count was used
    elif split == "release":
        pixels, overlap = release_split(labels, class_names, per_class, seed)
        split_labels = {s: labels.ravel() for s in SPLITS}  # views
    else:
        pixels = draw_split(labels, class_names, per_class, seed, strict=strict_counts)
        split_labels = {s: labels.ravel() for s in SPLITS}  # views

    counts = {s: np.bincount(split_labels[s][pixels[s]] - 1, minlength=num_classes).tolist() for s in SPLITS}
    warn_about_sizes(counts, class_names)

    padded: dict[str, np.ndarray | windowed_read.PaddedCube] = {}
    n_bands: dict[str, int] = {}
    stats: dict[str, dict] = {}
    filled: dict[str, int] = {}
    for m in tqdm(present, desc=f"{name}: reading", disable=not progress, unit="modality"):
        if windowed_read.chosen(mods[m], patch_size, windowed):  # the same values, on disk
            padded[m], stats[m], filled[m] = windowed_read.read_padded(mods[m], patch_size, normalize, nan, target)
        else:
            padded[m], stats[m], filled[m] = read_padded(mods[m], patch_size, normalize, nan)  # (Hp, Wp, C)
        n_bands[m] = int(padded[m].shape[2])

    source = {role: describe(v) for role, v in [*mods.items(), ("label", label_var), *split_vars.items()]}
    before = patch_size // 2
    meta = {
        "format": REMOTE_FORMAT, "format_version": REMOTE_FORMAT_VERSION, "kind": "remote", "dataset": name,
        "modalities": present, "bands": n_bands, "class_names": list(class_names), "num_classes": num_classes,
        "patch_size": patch_size, "pad": [before, patch_size - 1 - before], "pad_mode": "symmetric",
        "scene_shape": [height, width], "normalize": normalize, "norm_stats": stats,
        "split_method": split, "split_seed": seed, "per_class": per_class,
        "counts": counts,
        "nan_policy": nan, "nan_filled": filled, "source": source,
        "columns": {m: [n_bands[m], patch_size, patch_size] for m in present},
    }
    first = mods[present[0]]
    if split == "release":  # test pixels that are also training pixels (mamol.tasks.data_notes reports them)
        meta["overlap"], meta["overlap_per_class"] = sum(overlap), overlap
    if isinstance(first, RasterVariable) and first.grid.crs is not None:
        meta["georeference"] = first.grid.as_metadata()  # of the unpadded scene: pixel (0, 0) is its top left
    meta[CONVERSION_KEY] = conversion_id(meta, *(np.ascontiguousarray(pixels[s]).tobytes() for s in SPLITS))
    target = Path(target)
    out: dict[str, Path] = {}
    total = sum(len(p) for p in pixels.values())
    # One unit: every file is written into a staging folder first, then all are renamed into place.
    with staged(target, name) as staging, tqdm(total=total, desc=f"{name}: patches", disable=not progress,
                                               unit="px") as bar:
        for s in SPLITS:
            schema, batches = _split_batches(padded, pixels[s], split_labels[s], width, patch_size, bar)
            write_arrow(staging / f"{name}_{s}.arrow", schema, batches,
                        {**meta, "split": s, "num_rows": int(len(pixels[s]))})
            out[s] = target / f"{name}_{s}.arrow"
        if write_scene:
            _write_scene(staging / f"{name}_scene.arrow", padded, labels, patch_size, {**meta, "split": "scene"})
            out["scene"] = target / f"{name}_scene.arrow"
    logger.info("%s: wrote %s (train/val/test = %s samples)", name, ", ".join(str(p) for p in out.values()),
                "/".join(str(len(pixels[s])) for s in SPLITS))
    return out


def _split_batches(
    padded: dict[str, np.ndarray], flat: np.ndarray, raw_labels: np.ndarray, width: int, patch_size: int,
    bar: tqdm,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Schema and record batches (bounded size) of one split's patches."""
    row_bytes = sum(p.shape[2] for p in padded.values()) * patch_size * patch_size * 4
    per_batch = max(1, BATCH_BYTES // row_bytes)
    fields = [pa.field(m, pa.list_(pa.float32(), p.shape[2] * patch_size * patch_size)) for m, p in padded.items()]
    fields += [pa.field(c, pa.int64()) for c in ("label", "row", "col")]
    schema = pa.schema(fields)

    def batch(idx: np.ndarray) -> pa.RecordBatch:
        rows, cols = idx // width, idx % width
        arrays = [fixed_list_array(windowed_read.cut_patches(p, rows, cols, patch_size)) for p in padded.values()]
        arrays += [pa.array(raw_labels[idx].astype(np.int64) - 1), pa.array(rows), pa.array(cols)]
        bar.update(len(idx))
        return pa.record_batch(arrays, schema=schema)

    # A batch is built only once the previous one is written and released: one batch in memory at a time.
    return schema, (batch(flat[start:start + per_batch]) for start in range(0, len(flat), per_batch))


def _write_scene(path: Path, padded: dict[str, np.ndarray], labels: np.ndarray, patch_size: int, meta: dict) -> Path:
    """One Arrow row per padded image row, in record batches of about :data:`BATCH_BYTES` (zero-copy slices of
    the padded cubes, or rows read from a cube on disk), so a large scene is written, and read back, a block of
    rows at a time."""
    hp, wp = next(iter(padded.values())).shape[:2]
    before = patch_size // 2
    label_rows = np.zeros((hp, wp), dtype=np.int16)
    label_rows[before:before + labels.shape[0], before:before + labels.shape[1]] = labels
    widths = {m: wp * p.shape[2] for m, p in padded.items()}
    schema = pa.schema([*(pa.field(m, pa.list_(pa.float32(), n)) for m, n in widths.items()),
                        pa.field("label", pa.list_(pa.int16(), wp))])
    step = max(1, BATCH_BYTES // (4 * sum(widths.values()) + 2 * wp))

    def batch(start: int) -> pa.RecordBatch:
        arrays = [fixed_list_array(windowed_read.padded_rows(p, start, start + step).reshape(-1, widths[m]))
                  for m, p in padded.items()]
        return pa.record_batch([*arrays, fixed_list_array(label_rows[start:start + step])], schema=schema)

    return write_arrow(path, schema, (batch(start) for start in range(0, hp, step)),
                       {**meta, "num_rows": hp, "padded_shape": [hp, wp]})


def human_bytes(n: float) -> str:
    """'1.2 GiB'-style size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"
