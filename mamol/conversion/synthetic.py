"""Synthetic remote-sensing scenes in the official folder layout (for tests, the demo and benchmarks).

A scene is a Voronoi mosaic of spatially coherent regions, each of one class (or unlabelled). Every class is
a pair (spectrum group, height level): classes of one spectrum group differ only by height (LiDAR), classes
of one height level differ only by spectrum (HSI). So neither modality alone separates all classes and
dropping one measurably hurts, while both together do. Optional SAR (roughness, tied to the height level and
the spectrum group's parity) and MSI (HSI averaged into a few broad bands) add partly redundant views.

Values look like raw sensor data (HSI in digital numbers ~0..4000, heights in metres), so normalisation
matters. Files are written as MATLAB v5 (scipy) or v7.3 (HDF5 with MATLAB's 512-byte header, h5py) in one
of the naming conventions the converter accepts (:data:`NAMINGS`), or as georeferenced GeoTIFF / ENVI rasters
of the same stems (:func:`write_raster`, ``write_scene(..., fmt="tif" | "envi")``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import rasterio
import scipy.io
from rasterio.transform import Affine
from scipy.spatial import cKDTree

from mamol.data.formats import MODALITY_ORDER
from mamol.data.scenes import KNOWN_SCENES

logger = logging.getLogger(__name__)

# role -> (file name, variable key) for each naming convention of SPEC §3.1.
NAMINGS: dict[str, dict[str, tuple[str, str]]] = {
    "official": {
        "hsi": ("HSI.mat", "HSI"), "lidar": ("LiDAR.mat", "LiDAR"), "sar": ("SAR.mat", "SAR"),
        "msi": ("MSI.mat", "MSI"), "label": ("All_label.mat", "All_label"),
        "train": ("TRLabel.mat", "TRLabel"), "test": ("TSLabel.mat", "TSLabel"),
    },
    "release": {
        "hsi": ("HSI_data.mat", "HSI_data"), "lidar": ("LiDAR_data.mat", "LiDAR_data"),
        "sar": ("SAR_data.mat", "SAR_data"), "msi": ("data_MS_HR.mat", "data_MS_HR"),
        "label": ("All_Label.mat", "All_Label"),
        "train": ("TrainImage.mat", "TrainImage"), "test": ("TestImage.mat", "TestImage"),
    },
    "community": {
        "hsi": ("data_HS_LR.mat", "data_HS_LR"), "lidar": ("data_DSM.mat", "data_DSM"),
        "sar": ("data_SAR_HR.mat", "data_SAR_HR"), "msi": ("data_MS_HR.mat", "data_MS_HR"),
        "label": ("All_label.mat", "All_label"),
        "train": ("TRLabel.mat", "TRLabel"), "test": ("TSLabel.mat", "TSLabel"),
    },
    # Official file names holding variables with other known keys (key chosen independently of the file name).
    "mixed_keys": {
        "hsi": ("HSI.mat", "data_HS_LR"), "lidar": ("LiDAR.mat", "data_DSM"), "sar": ("SAR.mat", "data_SAR_HR"),
        "msi": ("MSI.mat", "data_MS_HR"), "label": ("All_label.mat", "All_Label"),
        "train": ("TRLabel.mat", "TrainImage"), "test": ("TSLabel.mat", "TestImage"),
    },
    # Official file names, each holding one variable under an unknown name (picked as the single variable).
    "unknown_keys": {
        "hsi": ("HSI.mat", "cube"), "lidar": ("LiDAR.mat", "dsm_m"), "sar": ("SAR.mat", "x"),
        "msi": ("MSI.mat", "x"), "label": ("All_label.mat", "gt"),
        "train": ("TRLabel.mat", "tr"), "test": ("TSLabel.mat", "ts"),
    },
}

_V73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, written by mamol.conversion.synthetic, HDF5 schema 1.00 ."
_MATLAB_CLASS = {"float32": "single", "float64": "double", "uint8": "uint8", "uint16": "uint16",
                 "int16": "int16", "int32": "int32", "int64": "int64", "uint32": "uint32"}


@dataclass
class SyntheticScene:
    """Arrays of a generated scene: ``data[m]`` is H×W (1 band) or H×W×C; ``labels`` H×W, 0 = unlabelled."""

    data: dict[str, np.ndarray]
    labels: np.ndarray  # (H, W) uint8, 0 = unlabelled, 1..K classes
    spectrum_group: np.ndarray  # (K,) spectrum group of each class
    height_level: np.ndarray  # (K,) height level of each class
    split_rasters: dict[str, np.ndarray] = field(default_factory=dict)  # "train"/"test" -> (H, W)


def write_mat(path: str | os.PathLike, key: str, array: np.ndarray, version: str = "5") -> Path:
    """Write one variable to a .mat file: v5 via scipy, v7.3 as HDF5 (column-major, MATLAB header) via h5py."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if version == "5":
        scipy.io.savemat(str(path), {key: array}, do_compression=False)
    elif version == "7.3":
        with h5py.File(path, "w", userblock_size=512) as fh:
            ds = fh.create_dataset(key, data=np.ascontiguousarray(array.T))  # MATLAB is column-major
            ds.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS.get(array.dtype.name, "double"))
        with path.open("r+b") as fh:  # MATLAB's 128-byte header inside the HDF5 user block
            fh.write(_V73_HEADER.ljust(116, b" ")[:116] + b"\x00" * 8 + b"\x00\x02" + b"IM")
    else:
        raise ValueError(f"mat version must be '5' or '7.3', got {version!r}")
    return path


RASTER_FORMATS: dict[str, tuple[str, str]] = {"tif": ("GTiff", ".tif"), "envi": ("ENVI", ".img")}
"""``write_scene`` format -> (GDAL driver, file suffix); ``mat`` is the MATLAB default."""
SCENE_CRS = "EPSG:32615"
"""CRS of synthetic rasters (UTM zone 15N, where Houston lies)."""
SCENE_ORIGIN = (271000.0, 3290000.0)
"""Top-left corner (x, y) of synthetic rasters in :data:`SCENE_CRS`, metres."""


def raster_transform(pixel: float = 1.0, origin: tuple[float, float] = SCENE_ORIGIN) -> Affine:
    """North-up transform of square ``pixel``-metre pixels from ``origin`` (the top-left corner)."""
    return Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])


def write_raster(path: str | os.PathLike, array: np.ndarray, driver: str = "GTiff", crs: str | None = SCENE_CRS,
                 transform: Affine | None = None, nodata: float | None = None) -> Path:
    """Write an H×W or H×W×C array as a raster (rasterio's bands are (C, H, W)); ENVI also writes ``.hdr``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cube = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)  # (C, H, W)
    profile = {"driver": driver, "height": cube.shape[1], "width": cube.shape[2], "count": cube.shape[0],
               "dtype": cube.dtype.name, "crs": crs, "transform": transform or raster_transform(), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(cube)
    return path


def _class_factors(n_classes: int, n_heights: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(n_classes)
    return k // n_heights, k % n_heights  # (spectrum group, height level) pairs are unique per class


def _smooth_spectra(rng: np.random.Generator, n: int, bands: int) -> np.ndarray:
    """(n, bands) distinct smooth spectra in digital numbers (a baseline plus a few Gaussian bumps)."""
    x = np.linspace(0.0, 1.0, bands)
    spectra = np.empty((n, bands))
    for i in range(n):
        curve = 0.25 + 0.1 * rng.random()
        for _ in range(3):
            centre, width, amp = rng.random(), 0.08 + 0.2 * rng.random(), 0.2 + 0.5 * rng.random()
            curve = curve + amp * np.exp(-0.5 * ((x - centre) / width) ** 2)
        spectra[i] = curve
    return 1000.0 + 2500.0 * spectra / spectra.max()


def generate_scene(
    height: int = 40,
    width: int = 50,
    hsi_bands: int = 16,
    n_classes: int = 6,
    modalities: Sequence[str] = ("hsi", "lidar"),
    sar_bands: int = 4,
    msi_bands: int = 4,
    lidar_bands: int = 1,
    n_heights: int = 2,
    regions_per_class: int = 3,
    unlabelled_fraction: float = 0.15,
    noise: float = 0.04,
    seed: int = 0,
    dtype: str = "float32",
) -> SyntheticScene:
    """Generate a scene's arrays (see the module docstring). ``modalities`` must include 'hsi'."""
    modalities = tuple(modalities)
    unknown = set(modalities) - {"hsi", "lidar", "sar", "msi"}
    if "hsi" not in modalities or unknown:
        raise ValueError(f"modalities must include 'hsi' and come from hsi/lidar/sar/msi, got {modalities}")
    if n_classes < 2 or not 1 <= n_heights <= n_classes:
        raise ValueError(f"need n_classes >= 2 and 1 <= n_heights <= n_classes, got {n_classes}, {n_heights}")
    rng = np.random.default_rng(seed)
    spectrum_group, height_level = _class_factors(n_classes, n_heights)

    # Regions: Voronoi cells of random centres; the first n_classes cells cover every class once.
    n_regions = max(n_classes * regions_per_class, n_classes + 1)
    n_unlabelled = int(round(unlabelled_fraction * n_regions))
    region_class = np.concatenate(
        [np.arange(n_classes), rng.integers(0, n_classes, n_regions - n_classes)]
    )  # class 0..K-1 per region
    region_label = region_class + 1
    if n_unlabelled:
        region_label[n_classes + rng.permutation(n_regions - n_classes)[:n_unlabelled]] = 0
    centres = rng.random((n_regions, 2)) * (height, width)
    rows, cols = np.mgrid[0:height, 0:width]
    _, nearest = cKDTree(centres).query(np.stack([rows.ravel(), cols.ravel()], axis=1))
    region = nearest.reshape(height, width).astype(np.int32)  # (H, W) region id
    labels = region_label[region].astype(np.uint8)  # (H, W)
    cls_map = region_class[region]  # (H, W) class of every pixel (also under unlabelled cells)
    gain = (1.0 + 0.03 * rng.standard_normal(n_regions))[region].astype(np.float32)  # per-region brightness

    data: dict[str, np.ndarray] = {}
    n_groups = int(spectrum_group.max()) + 1
    spectra = _smooth_spectra(rng, n_groups, hsi_bands).astype(np.float32)  # (G, C)
    hsi = spectra[spectrum_group[cls_map]]  # (H, W, C)
    hsi *= gain[..., None]
    for c in range(hsi_bands):  # band by band: no second full-size temporary
        hsi[..., c] += (noise * 2500.0) * rng.standard_normal((height, width), dtype=np.float32)
    data["hsi"] = hsi.astype(dtype, copy=False)
    levels = np.linspace(0.0, 24.0, n_heights).astype(np.float32)  # metres above ground
    if "lidar" in modalities:
        lidar = levels[height_level[cls_map]] + 1.5 + 1.2 * rng.standard_normal((height, width), dtype=np.float32)
        if lidar_bands > 1:  # more returns (MUUFL: first and last): each a little lower than the one before
            lidar = np.stack([lidar - 0.5 * b + 0.2 * rng.standard_normal((height, width), dtype=np.float32)
                              for b in range(lidar_bands)], axis=-1)  # (H, W, L)
        data["lidar"] = lidar.astype(dtype, copy=False)  # (H, W), or (H, W, L) with lidar_bands > 1
    if "sar" in modalities:
        rough = (height_level[cls_map] + 0.5 * (spectrum_group[cls_map] % 2)).astype(np.float32)
        sar = np.stack(
            [(0.2 + 0.1 * b) * rough - 15.0 + 0.3 * rng.standard_normal((height, width), dtype=np.float32)
             for b in range(sar_bands)], axis=-1)
        data["sar"] = sar.astype(dtype, copy=False)  # (H, W, S) in dB-like units
    if "msi" in modalities:
        groups = np.array_split(np.arange(hsi_bands), msi_bands)
        msi = np.stack([hsi[..., g].mean(axis=-1) for g in groups], axis=-1)
        msi += (noise * 1000.0) * rng.standard_normal(msi.shape, dtype=np.float32)
        data["msi"] = msi.astype(dtype, copy=False)  # (H, W, M)
    ordered = {m: data[m] for m in modalities}
    return SyntheticScene(ordered, labels, spectrum_group, height_level)


def add_split_rasters(scene: SyntheticScene, train_fraction: float = 0.4, seed: int = 0) -> SyntheticScene:
    """Add disjoint TR/TS rasters (labels 1..K, 0 elsewhere): ``train_fraction`` of each class's pixels train."""
    rng = np.random.default_rng(seed)
    train = np.zeros_like(scene.labels)
    test = np.zeros_like(scene.labels)
    flat = scene.labels.ravel()
    for k in np.unique(flat[flat > 0]):
        idx = rng.permutation(np.flatnonzero(flat == k))
        n_train = max(1, int(math.floor(train_fraction * len(idx))))
        train.ravel()[idx[:n_train]] = k
        test.ravel()[idx[n_train:]] = k
    scene.split_rasters = {"train": train, "test": test}
    return scene


def write_scene(
    scene: SyntheticScene, out_dir: str | os.PathLike, naming: str = "official", mat_version: str = "5",
    fmt: str = "mat", finer: dict[str, int] | None = None,
) -> dict[str, Path]:
    """Write ``scene`` as one file per modality + labels (+ TR/TS rasters) under ``out_dir``: .mat (``fmt="mat"``)
    or GeoTIFF / ENVI rasters of the same stems (``fmt="tif"`` / ``"envi"``, :data:`RASTER_FORMATS`) of 1 m pixels;
    ``finer[role] = n`` writes that role's raster at 1/n m over the same extent (each pixel as n × n pixels), as a
    sensor delivered at a finer resolution (Houston2018's LiDAR)."""
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {sorted(NAMINGS)}, got {naming!r}")
    if fmt != "mat" and fmt not in RASTER_FORMATS:
        raise ValueError(f"fmt must be 'mat' or one of {sorted(RASTER_FORMATS)}, got {fmt!r}")
    names = NAMINGS[naming]
    out = Path(out_dir)
    written: dict[str, Path] = {}
    for role, array in [*scene.data.items(), ("label", scene.labels), *scene.split_rasters.items()]:
        file_name, key = names[role]
        if fmt == "mat":
            written[role] = write_mat(out / file_name, key, array, mat_version)
        else:
            driver, suffix = RASTER_FORMATS[fmt]
            n = (finer or {}).get(role, 1)
            fine = np.repeat(np.repeat(array, n, axis=0), n, axis=1) if n > 1 else array
            written[role] = write_raster((out / file_name).with_suffix(suffix), fine, driver,
                                         transform=raster_transform(1.0 / n))
    logger.info("synthetic scene (%s, %s) written to %s: %s", naming, fmt if fmt != "mat" else f"v{mat_version}",
                out, sorted(written))
    return written


def make_synthetic_scene(
    out_dir: str | os.PathLike,
    naming: str = "official",
    mat_version: str = "5",
    split_rasters: bool = False,
    **kwargs,
) -> SyntheticScene:
    """Generate (``generate_scene(**kwargs)``) and write a scene folder; returns the arrays."""
    scene = generate_scene(**kwargs)
    if split_rasters:
        add_split_rasters(scene, seed=kwargs.get("seed", 0))
    write_scene(scene, out_dir, naming, mat_version)
    return scene


def make_known_scene(name: str, out_dir: str | os.PathLike, fmt: str = "mat", height: int = 40, width: int = 48,
                     seed: int = 0, finer: dict[str, int] | None = None) -> SyntheticScene:
    """A small scene shaped like the known scene ``name``: its modalities, published band counts and class count
    (:data:`mamol.data.scenes.KNOWN_SCENES`), ``height`` × ``width`` pixels, written to ``out_dir``."""
    spec = KNOWN_SCENES[name]
    modalities = tuple(m for m in MODALITY_ORDER if m in spec.bands)
    scene = generate_scene(height, width, hsi_bands=spec.bands["hsi"], n_classes=len(spec.class_names),
                           modalities=modalities, sar_bands=spec.bands.get("sar", 4),
                           msi_bands=spec.bands.get("msi", 4), lidar_bands=spec.bands.get("lidar", 1),
                           regions_per_class=2, seed=seed)
    write_scene(scene, out_dir, fmt=fmt, finer=finer)
    return scene


HOUSTON_SIZE = {"height": 349, "width": 1905, "hsi_bands": 144, "n_classes": 15}
"""Houston2013's scene size, HSI band count and class count (for benchmarks)."""


def make_houston_sized(out_dir: str | os.PathLike, seed: int = 0, mat_version: str = "5") -> SyntheticScene:
    """A Houston2013-sized scene (349×1905, 144 HSI bands + LiDAR, 15 classes, float32) in ``out_dir``."""
    return make_synthetic_scene(
        out_dir, mat_version=mat_version, modalities=("hsi", "lidar"), n_heights=3,
        regions_per_class=6, seed=seed, **HOUSTON_SIZE,
    )
