"""Scene folder of .mat files -> ``<scene>_{train,val,test}.arrow`` + ``<scene>_scene.arrow`` (SPEC §3.1).

Steps: find the files of each role (modalities, label raster, optional TR/TS split rasters) in any of the
accepted naming conventions; check sizes and label values; draw disjoint seeded per-class samples; per
modality read, check for NaN/Inf, normalise per band and pad symmetrically; then write

* ``<scene>_<split>.arrow``: one row per sampled pixel: per modality a float32 patch (C, P, P) flattened as
  a fixed-size list, ``label`` (0..K-1), ``row``, ``col``;
* ``<scene>_scene.arrow``: the padded, normalised scene, one Arrow row per padded image row (per modality a
  fixed-size list of Wp*C float32 values in (Wp, C) order; ``label`` Wp int16 raw labels, 0 = unlabelled),
  from which whole-scene windows are cut on the fly.

Each file carries the same metadata JSON (modalities, bands, class names, normalisation and its statistics,
split parameters and counts, source files with keys and sizes). No torch import here: the converter stays
light. Files are written atomically.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view
from tqdm.auto import tqdm

from mamol.data.arrow import fixed_list_array, write_arrow
from mamol.data.matfile import MatVariable, read_variable, resolve_variable

logger = logging.getLogger(__name__)

FORMAT = "mamol-remote"
FORMAT_VERSION = 1
MODALITY_ORDER = ("hsi", "lidar", "sar", "msi")
"""Canonical order of remote modalities: the missing-type code order follows it."""
SPLITS = ("train", "val", "test")
NORMALIZATIONS = ("minmax", "zscore", "none")
NAN_POLICIES = ("refuse", "fill")
BATCH_BYTES = 32 * 2**20  # target size of one written record batch


@dataclass(frozen=True)
class SceneSpec:
    """A known scene: its folder name in ``datasets/`` and its class names (label 1..K on disk)."""

    folder: str
    class_names: tuple[str, ...]


KNOWN_SCENES: dict[str, SceneSpec] = {
    "houston2013": SceneSpec("data_2013", (
        "Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water", "Residential",
        "Commercial", "Road", "Highway", "Railway", "Parking Lot 1", "Parking Lot 2", "Tennis Court",
        "Running Track")),
    "trento": SceneSpec("data_trento", ("Apple trees", "Buildings", "Ground", "Woods", "Vineyard", "Roads")),
    "augsburg": SceneSpec("data_augsburg", (
        "Forest", "Residential area", "Industrial area", "Low plants", "Allotment", "Commercial area",
        "Water")),
}

# role -> accepted file stems (compared lower-case) and known variable keys (first match wins).
ROLE_FILES: dict[str, tuple[str, ...]] = {
    "hsi": ("hsi", "hsi_data", "data_hs_lr", "hs"),
    "lidar": ("lidar", "lidar_data", "data_dsm", "dsm"),
    "sar": ("sar", "sar_data", "data_sar_hr"),
    "msi": ("msi", "msi_data", "data_ms_hr", "ms"),
    "label": ("all_label",),
    "train": ("trlabel", "trainimage"),
    "test": ("tslabel", "testimage"),
}
ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "hsi": ("HSI", "HSI_data", "data_HS_LR", "HS"),
    "lidar": ("LiDAR", "LiDAR_data", "data_DSM", "DSM"),
    "sar": ("SAR", "SAR_data", "data_SAR_HR"),
    "msi": ("MSI", "MSI_data", "data_MS_HR", "MS"),
    "label": ("All_label", "All_Label"),
    "train": ("TRLabel", "TrainImage"),
    "test": ("TSLabel", "TestImage"),
}
_EXAMPLE_FILES = {role: ", ".join(f"{k}.mat" for k in keys[:3]) for role, keys in ROLE_KEYS.items()}


def class_names_for(dataset: str, num_classes: int) -> tuple[str, ...]:
    """Class names of a known scene (SPEC §3.1), else ``class_1 .. class_K`` (logged)."""
    if dataset in KNOWN_SCENES:
        return KNOWN_SCENES[dataset].class_names
    logger.info("dataset %r is not a known scene: naming its %d classes class_1..class_%d",
                dataset, num_classes, num_classes)
    return tuple(f"class_{k}" for k in range(1, num_classes + 1))


def find_scene_files(root: str | os.PathLike) -> dict[str, Path]:
    """Role ('hsi', 'lidar', 'sar', 'msi', 'label', 'train', 'test') -> .mat file found in ``root``.

    Needs HSI, the label raster and at least one more modality; errors list what was expected and found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"scene folder {root} does not exist (expected a folder of .mat files)")
    mats = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".mat")
    found: dict[str, list[Path]] = {}
    for path in mats:
        role = next((r for r, stems in ROLE_FILES.items() if path.stem.lower() in stems), None)
        if role is None:
            logger.info("%s: not a known scene file name, ignored", path)
            continue
        found.setdefault(role, []).append(path)
    for role, paths in found.items():
        if len(paths) > 1:
            raise ValueError(
                f"{root}: several files for {role}: {[p.name for p in paths]}; keep exactly one of them"
            )
    files = {role: paths[0] for role, paths in found.items()}
    names = [p.name for p in mats] or ["no .mat files"]
    for role in ("hsi", "label"):
        if role not in files:
            raise FileNotFoundError(
                f"{root}: no {role if role != 'label' else 'label raster'} file; expected one of "
                f"{_EXAMPLE_FILES[role]} (any case); found {', '.join(names)}"
            )
    if not any(m in files for m in MODALITY_ORDER[1:]):
        raise FileNotFoundError(
            f"{root}: only HSI found; expected a second modality file (LiDAR.mat / data_DSM.mat, SAR.mat, "
            f"MSI.mat / data_MS_HR.mat, ...); found {', '.join(names)}"
        )
    return files


def _hw(var: MatVariable) -> tuple[int, int]:
    if len(var.shape) not in (2, 3):
        raise ValueError(f"{var.label}: expected an H×W or H×W×C array, found shape {var.shape}")
    return var.shape[0], var.shape[1]


def check_sizes(modalities: dict[str, MatVariable], label: MatVariable, extra: Sequence[MatVariable] = ()) -> tuple[int, int]:
    """Common H×W of all modalities, the label raster and split rasters; ValueError naming the odd one out."""
    shapes = {m: _hw(v) for m, v in modalities.items()}
    first = next(iter(modalities))
    h, w = shapes[first]
    for m, hw in shapes.items():
        if hw != (h, w):
            listing = ", ".join(f"{modalities[k].label} {a}×{b}" for k, (a, b) in shapes.items())
            raise ValueError(
                f"modalities have different H×W: {listing}; all must cover the same scene (resample them, or "
                f"leave one out with --modalities)"
            )
    for var in (label, *extra):
        shape = var.shape[:2] if len(var.shape) == 3 and var.shape[2] == 1 else var.shape
        if tuple(shape) != (h, w):
            raise ValueError(
                f"label raster {var.label} has shape {'×'.join(map(str, var.shape))}, expected {h}×{w} "
                f"like {modalities[first].label}"
            )
    return h, w


def check_labels(raster: np.ndarray, var: MatVariable, num_classes: int | None) -> np.ndarray:
    """Validate a label raster (integers 0..K, 0 = unlabelled) and return it as int16 (H, W)."""
    raster = np.asarray(raster)
    if raster.ndim == 3 and raster.shape[2] == 1:
        raster = raster[..., 0]
    if raster.dtype.kind == "f":
        bad = ~np.isfinite(raster) | (raster != np.round(raster))
        if bad.any():
            example = raster[bad].flat[0].item()
            raise ValueError(
                f"{var.label}: labels must be integers 0..K, found {int(bad.sum())} non-integer values "
                f"(e.g. {example!r})"
            )
    elif raster.dtype.kind not in "iub":
        raise ValueError(f"{var.label}: labels must be integers 0..K, found dtype {raster.dtype}")
    high = int(num_classes) if num_classes is not None else 32767
    out_of_range = (raster < 0) | (raster > high)
    if out_of_range.any():
        values = np.unique(raster[out_of_range])[:5].tolist()
        raise ValueError(
            f"{var.label}: labels must lie in 0..{high} (0 = unlabelled), found {int(out_of_range.sum())} "
            f"pixels with values {values}"
        )
    return raster.astype(np.int16)


def _check_count(split: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or value < -1:
        raise ValueError(f"{split}_per_class must be an integer >= 0, or -1 for all remaining; got {value!r}")
    return int(value)


def draw_split(
    labels: np.ndarray,
    class_names: Sequence[str],
    per_class: dict[str, int],
    seed: int,
    strict: bool = False,
) -> dict[str, np.ndarray]:
    """Disjoint seeded per-class samples: split -> sorted flat pixel indices (raster order).

    ``per_class[split]`` pixels of each class go to each split in the order train, val, test; -1 takes all
    that remain. A class too small for its train and val counts is a ValueError naming it and the counts.
    When fewer pixels than ``per_class["test"]`` remain for test (Houston2013's Water has 325 labelled
    pixels, fewer than 100 + 50 + 300), test takes what is left and a warning names the class, unless
    ``strict``, which makes that an error too. A class with no pixel left for test is always an error.
    """
    counts = {s: _check_count(s, per_class.get(s, 0)) for s in SPLITS}
    rng = np.random.default_rng(seed)
    flat = labels.ravel()
    chosen: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for k, name in enumerate(class_names, start=1):
        pixels = rng.permutation(np.flatnonzero(flat == k))
        start = 0
        for split in SPLITS:
            want = counts[split]
            take = len(pixels) - start if want == -1 else want
            left = len(pixels) - start
            if take > left:
                asked = ", ".join(f"{s} {'all' if counts[s] == -1 else counts[s]}" for s in SPLITS)
                if split != "test" or strict or left == 0:
                    raise ValueError(
                        f"class {k} ({name!r}) has {len(pixels)} labelled pixels, fewer than requested ({asked}); "
                        f"lower the per-class counts or pass -1 to take all remaining"
                    )
                logger.warning("class %d (%r) has %d labelled pixels, fewer than requested (%s): its test split "
                               "takes the %d that remain", k, name, len(pixels), asked, left)
                take = left
            chosen[split].append(pixels[start:start + take])
            start += take
    return {s: np.sort(np.concatenate(v)).astype(np.int64) for s, v in chosen.items()}


def fixed_split(
    train_raster: np.ndarray,
    test_raster: np.ndarray,
    class_names: Sequence[str],
    val_per_class: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Split from TR/TS rasters: test = TS pixels, val = ``val_per_class`` seeded TR pixels per class, train = rest."""
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0 with split='fixed' (carved from TR), got {val_per_class}")
    overlap = int(((train_raster > 0) & (test_raster > 0)).sum())
    if overlap:
        logger.warning("TR and TS rasters share %d labelled pixels; they stay in both train and test", overlap)
    rng = np.random.default_rng(seed)
    tr, ts = train_raster.ravel(), test_raster.ravel()
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for k, name in enumerate(class_names, start=1):
        pixels = rng.permutation(np.flatnonzero(tr == k))
        if len(pixels) < val_per_class + 1:
            raise ValueError(
                f"class {k} ({name!r}) has {len(pixels)} pixels in the TR raster, too few for "
                f"{val_per_class} validation pixels plus at least one training pixel; lower val_per_class"
            )
        parts["val"].append(pixels[:val_per_class])
        parts["train"].append(pixels[val_per_class:])
        parts["test"].append(np.flatnonzero(ts == k))
    return {s: np.sort(np.concatenate(v)).astype(np.int64) for s, v in parts.items()}


def check_finite(cube: np.ndarray, var: MatVariable, policy: str = "refuse") -> int:
    """Refuse (ValueError naming file, key and count) or fill with the band mean (warning) any NaN/Inf.

    ``cube`` is H×W×C float and is filled in place. Returns the number of values filled.
    """
    if policy not in NAN_POLICIES:
        raise ValueError(f"nan policy must be one of {NAN_POLICIES}, got {policy!r}")
    total, n_nan, bands = 0, 0, []
    for c in range(cube.shape[2]):
        band = cube[..., c]
        bad = ~np.isfinite(band)
        n_bad = int(bad.sum())
        if not n_bad:
            continue
        total += n_bad
        n_nan += int(np.isnan(band).sum())
        bands.append(c)
        if policy == "fill":
            good = band[~bad]
            band[bad] = good.mean(dtype=np.float64) if good.size else 0.0
    if total and policy == "refuse":
        raise ValueError(
            f"{var.path}: variable {var.key!r} holds {total} non-finite values ({n_nan} NaN, {total - n_nan} "
            f"Inf) in bands {bands[:10]}{'...' if len(bands) > 10 else ''}; fix the file or convert with "
            f"--nan fill (replaces them with the band mean)"
        )
    if total:
        logger.warning("%s: filled %d NaN/Inf values of variable %r (bands %s) with the band mean",
                       var.path, total, var.key, bands[:10])
    return total


def normalize_cube(cube: np.ndarray, method: str, what: str = "") -> dict[str, list[float]]:
    """Normalise an H×W×C float32 cube per band in place; returns the statistics used (JSON-able).

    ``minmax``: (x - min) / (max - min) in [0, 1] (a constant band becomes 0); ``zscore``: (x - mean) / std
    (std 0 -> 1); ``none``: unchanged.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {method!r}")
    if method == "none":
        return {}
    n_bands = cube.shape[2]
    first, second = np.empty(n_bands), np.empty(n_bands)
    for c in range(n_bands):  # band by band: no full-size temporaries
        band = cube[..., c]
        if method == "minmax":
            first[c], second[c] = band.min(), band.max()
        else:
            first[c], second[c] = band.mean(dtype=np.float64), band.std(dtype=np.float64)
    if method == "minmax":
        span = second - first
        constant = np.flatnonzero(span == 0)
        if constant.size:
            logger.warning("%s: %d constant band(s) %s normalise to 0", what, constant.size, constant[:10].tolist())
        scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0)
        stats = {"min": first.tolist(), "max": second.tolist()}
    else:
        scale = 1.0 / np.where(second > 0, second, 1.0)
        stats = {"mean": first.tolist(), "std": second.tolist()}
    cube -= first.astype(np.float32)
    cube *= scale.astype(np.float32)
    return stats


def pad_scene(cube: np.ndarray, patch_size: int) -> np.ndarray:
    """Symmetric padding (edge repeated) by (P//2, P-1-P//2): C-contiguous (H+P-1, W+P-1, C) float32.

    Built row by row from index maps, so the only full-size allocation is the output.
    """
    before, after = patch_size // 2, patch_size - 1 - patch_size // 2
    h, w, c = cube.shape
    rows = np.pad(np.arange(h), (before, after), mode="symmetric")  # padded row -> source row
    cols = np.pad(np.arange(w), (before, after), mode="symmetric")
    out = np.empty((h + before + after, w + before + after, c), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i] = cube[r][cols]
    return out


def extract_patches(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch_size: int) -> np.ndarray:
    """(n, C, P, P) windows of a padded (Hp, Wp, C) scene: pixel (r, c) sits at (P//2, P//2)."""
    windows = sliding_window_view(padded, (patch_size, patch_size), axis=(0, 1))  # (H, W, C, P, P) view
    return windows[rows, cols]


def _as_cube(array: np.ndarray, var: MatVariable) -> np.ndarray:
    """Freshly read H×W or H×W×C numeric array -> H×W×C float32 (may be Fortran-ordered; no copy if float32)."""
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{var.label}: expected a numeric array, found dtype {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype == np.float32 and array.flags.writeable:
        return array  # freshly read from the file: ours to normalise in place, no copy
    return array.astype(np.float32)


def _scene_stem(dataset: str) -> str:
    name = dataset.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name):
        raise ValueError(f"dataset name {dataset!r}: use lower-case letters, digits and '_' (it names the files)")
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
) -> dict[str, Path]:
    """Convert the scene folder ``root`` into Arrow files in ``target``; returns {split or 'scene': path}.

    ``modalities`` None stores every modality found. ``split`` is ``random`` (disjoint seeded per-class
    counts, -1 = all remaining) or ``fixed`` (TR/TS rasters; val carved from TR). ``nan`` is ``refuse`` or
    ``fill`` (band mean, with a warning). A class with fewer pixels than train + val + test asks for gives
    its test split what remains (with a warning) unless ``strict_counts``; metadata ``counts`` are exact.
    """
    name = _scene_stem(dataset)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
    if split not in ("random", "fixed"):
        raise ValueError(f"split must be 'random' or 'fixed', got {split!r}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    files = find_scene_files(root)
    present = [m for m in MODALITY_ORDER if m in files]
    if modalities is not None:
        wanted = [m.lower() for m in modalities]
        absent = [m for m in wanted if m not in present]
        if absent:
            raise ValueError(f"{root}: modalities {absent} requested but only {present} found")
        present = [m for m in MODALITY_ORDER if m in wanted]
    if split == "fixed" and not ("train" in files and "test" in files):
        raise FileNotFoundError(
            f"{root}: split='fixed' needs TR/TS rasters ({_EXAMPLE_FILES['train']} and "
            f"{_EXAMPLE_FILES['test']}); found {sorted(p.name for p in files.values())}"
        )

    # Cheap pass: resolve every variable and check sizes before reading any cube.
    mods = {m: resolve_variable(files[m], ROLE_KEYS[m], m) for m in present}
    label_var = resolve_variable(files["label"], ROLE_KEYS["label"], "label raster")
    split_vars = {r: resolve_variable(files[r], ROLE_KEYS[r], f"{r} split raster")
                  for r in ("train", "test") if split == "fixed"}
    height, width = check_sizes(mods, label_var, tuple(split_vars.values()))

    known_k = len(KNOWN_SCENES[name].class_names) if name in KNOWN_SCENES else None
    labels = check_labels(read_variable(label_var), label_var, known_k)
    num_classes = known_k if known_k is not None else int(labels.max())
    if num_classes < 1:
        raise ValueError(f"{label_var.label}: holds no labelled pixels (all 0)")
    class_names = class_names_for(name, num_classes)
    per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    if split == "fixed":
        tr = check_labels(read_variable(split_vars["train"]), split_vars["train"], num_classes)
        ts = check_labels(read_variable(split_vars["test"]), split_vars["test"], num_classes)
        pixels = fixed_split(tr, ts, class_names, val_per_class, seed)  # labels from the TR/TS rasters
        split_labels = {"train": tr.ravel(), "val": tr.ravel(), "test": ts.ravel()}
        logger.info("split='fixed': train/test pixels from the TR/TS rasters; per-class train/test counts ignored")
    else:
        pixels = draw_split(labels, class_names, per_class, seed, strict=strict_counts)
        split_labels = {s: labels.ravel() for s in SPLITS}

    padded: dict[str, np.ndarray] = {}
    bands: dict[str, int] = {}
    stats: dict[str, dict] = {}
    filled: dict[str, int] = {}
    for m in tqdm(present, desc=f"{name}: reading", disable=not progress, unit="modality"):
        var = mods[m]
        cube = _as_cube(read_variable(var), var)  # (H, W, C)
        filled[m] = check_finite(cube, var, nan)
        stats[m] = normalize_cube(cube, normalize, var.label)
        bands[m] = int(cube.shape[2])
        padded[m] = pad_scene(cube, patch_size)  # (Hp, Wp, C)
        del cube

    source = {
        role: {"file": v.path.name, "key": v.key, "bytes": v.path.stat().st_size,
               "shape": list(v.shape), "mat_version": v.version}
        for role, v in [*mods.items(), ("label", label_var), *split_vars.items()]
    }
    before = patch_size // 2
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "remote", "dataset": name,
        "modalities": present, "bands": bands, "class_names": list(class_names), "num_classes": num_classes,
        "patch_size": patch_size, "pad": [before, patch_size - 1 - before], "pad_mode": "symmetric",
        "scene_shape": [height, width], "normalize": normalize, "norm_stats": stats,
        "split_method": split, "split_seed": seed, "per_class": per_class,
        "counts": {s: np.bincount(split_labels[s][pixels[s]] - 1, minlength=num_classes).tolist() for s in SPLITS},
        "nan_policy": nan, "nan_filled": filled, "source": source,
        "columns": {m: [bands[m], patch_size, patch_size] for m in present},
    }
    target = Path(target)
    out: dict[str, Path] = {}
    total = sum(len(p) for p in pixels.values())
    with tqdm(total=total, desc=f"{name}: patches", disable=not progress, unit="px") as bar:
        for s in SPLITS:
            schema, batches = _split_batches(padded, pixels[s], split_labels[s], width, patch_size, bar)
            out[s] = write_arrow(target / f"{name}_{s}.arrow", schema, batches,
                                 {**meta, "split": s, "num_rows": int(len(pixels[s]))})
    if write_scene:
        out["scene"] = _write_scene(target / f"{name}_scene.arrow", padded, labels, patch_size,
                                    {**meta, "split": "scene"})
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

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(flat), per_batch):
            idx = flat[start:start + per_batch]
            rows, cols = idx // width, idx % width
            arrays = [fixed_list_array(extract_patches(p, rows, cols, patch_size)) for p in padded.values()]
            arrays += [pa.array(raw_labels[idx].astype(np.int64) - 1), pa.array(rows), pa.array(cols)]
            bar.update(len(idx))
            yield pa.record_batch(arrays, schema=schema)

    return schema, batches()


def _write_scene(path: Path, padded: dict[str, np.ndarray], labels: np.ndarray, patch_size: int, meta: dict) -> Path:
    """One Arrow row per padded image row (zero-copy from the padded cubes), as a single record batch."""
    hp, wp = next(iter(padded.values())).shape[:2]
    before = patch_size // 2
    label_rows = np.zeros((hp, wp), dtype=np.int16)
    label_rows[before:before + labels.shape[0], before:before + labels.shape[1]] = labels
    arrays = {m: fixed_list_array(p.reshape(hp, -1)) for m, p in padded.items()}  # (Hp, Wp*C) rows
    arrays["label"] = fixed_list_array(label_rows)
    batch = pa.record_batch(list(arrays.values()), names=list(arrays))
    return write_arrow(path, batch.schema, [batch], {**meta, "num_rows": hp, "padded_shape": [hp, wp]})


def default_scene_jobs(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """(dataset, scene folder) for each known scene folder (``data_2013`` ...) present in ``folder``."""
    folder = Path(folder)
    return [(name, folder / spec.folder) for name, spec in KNOWN_SCENES.items() if (folder / spec.folder).is_dir()]


def human_bytes(n: float) -> str:
    """'1.2 GiB'-style size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


__all__ = [
    "KNOWN_SCENES", "MODALITY_ORDER", "ROLE_FILES", "ROLE_KEYS", "SceneSpec", "check_finite", "check_labels",
    "check_sizes", "class_names_for", "default_scene_jobs", "draw_split", "extract_patches",
    "find_scene_files", "fixed_split", "normalize_cube", "pad_scene", "prepare_remote",
]
