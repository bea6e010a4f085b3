"""How a scene folder's files are found: which file holds which role, under which variable key.

A scene folder holds one file per *role*: a modality (``hsi``, ``lidar``, ``sar``, ``msi``), the label
raster (``label``) and, optionally, the TR/TS split rasters (``train``, ``test``). Each role is recognised
by its file stem in any of the accepted naming conventions (SPEC §3.1: ``HSI.mat``, ``HSI_data.mat``,
``data_HS_LR.mat``, ...; :data:`ROLE_FILES`) and read under the first known variable key the file holds
(:data:`ROLE_KEYS`). Instead of a ``.mat`` file, a role may be a GeoTIFF (``HSI.tif``) or an ENVI raster
(``HSI.img`` with its header ``HSI.hdr``) under the same stem (:data:`RASTER_SUFFIXES`,
:mod:`mamol.conversion.rasters`); a folder may mix formats, one file per role.

The known scenes themselves (folder names, class names) are described in :mod:`mamol.data.scenes`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mamol.data.formats import MODALITY_ORDER
from mamol.data.scenes import KNOWN_SCENES
from mamol.errors import DataError, MissingFileError

logger = logging.getLogger(__name__)

__all__ = ["RASTER_SUFFIXES", "ROLE_FILES", "ROLE_KEYS", "SCENE_SUFFIXES", "default_scene_jobs", "find_scene_files"]

RASTER_SUFFIXES = (".tif", ".tiff", ".img")
"""Raster files a scene folder may hold instead of .mat (an ENVI ``.img`` needs its ``.hdr`` beside it)."""
SCENE_SUFFIXES = (".mat", *RASTER_SUFFIXES)


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
# role -> "HSI.mat, HSI_data.mat, data_HS_LR.mat": the file names error messages suggest.
_EXAMPLE_FILES = {role: ", ".join(f"{k}.mat" for k in keys[:3]) for role, keys in ROLE_KEYS.items()}
_FORMATS = "(any case; or .tif, or ENVI .img + .hdr, instead of .mat)"


_ALL_STEMS = {stem for stems in ROLE_FILES.values() for stem in stems}


def find_scene_files(root: str | os.PathLike) -> dict[str, Path]:
    """Role ('hsi', 'lidar', 'sar', 'msi', 'label', 'train', 'test') -> file found in ``root`` (.mat, .tif or
    ENVI .img).

    Needs HSI, the label raster and at least one more modality; errors list what was expected and found. An ENVI
    header without its ``.img`` data file (or the reverse) is refused by name.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"scene folder {root} does not exist (expected a folder of .mat / .tif / ENVI files)")
    entries = sorted(p for p in root.iterdir() if p.is_file())
    for header in (p for p in entries if p.suffix.lower() == ".hdr" and p.stem.lower() in _ALL_STEMS):
        if not any(p.stem == header.stem and p.suffix.lower() == ".img" for p in entries):
            raise MissingFileError(f"{header}: ENVI header without its data file {header.stem}.img")
    mats = [p for p in entries if p.suffix.lower() in SCENE_SUFFIXES]
    found: dict[str, list[Path]] = {}
    for path in mats:
        role = next((r for r, stems in ROLE_FILES.items() if path.stem.lower() in stems), None)
        if role is None:
            logger.info("%s: not a known scene file name, ignored", path)
            continue
        found.setdefault(role, []).append(path)
    for role, paths in found.items():
        if len(paths) > 1:
            raise DataError(
                f"{root}: several files for {role}: {[p.name for p in paths]}; keep exactly one of them"
            )
    files = {role: paths[0] for role, paths in found.items()}
    names = [p.name for p in mats] or ["no scene files"]
    for role in ("hsi", "label"):
        if role not in files:
            raise MissingFileError(
                f"{root}: no {role if role != 'label' else 'label raster'} file; expected one of "
                f"{_EXAMPLE_FILES[role]} {_FORMATS}; found {', '.join(names)}"
            )
    if not any(m in files for m in MODALITY_ORDER[1:]):
        raise MissingFileError(
            f"{root}: only HSI found; expected a second modality file (LiDAR.mat / data_DSM.mat, SAR.mat, "
            f"MSI.mat / data_MS_HR.mat, ...); found {', '.join(names)}"
        )
    return files


def default_scene_jobs(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """(dataset, scene folder) for each known scene folder (``data_2013`` ...) present in ``folder``."""
    folder = Path(folder)
    return [(name, folder / spec.folder) for name, spec in KNOWN_SCENES.items() if (folder / spec.folder).is_dir()]
