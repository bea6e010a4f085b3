"""The known remote-sensing scenes: one :class:`SceneSpec` each (folder name, class names, bands, default split).

A light description both sides read: the catalogue (:mod:`mamol.data.catalogue`) derives a dataset entry from
each known scene, and the converter (:mod:`mamol.conversion`) names a known scene's classes and finds its
folder. A new known scene is one entry in :data:`KNOWN_SCENES`; any other scene converts too, with classes
named ``class_1 .. class_K``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["KNOWN_SCENES", "SceneSpec", "class_names_for", "default_split"]


@dataclass(frozen=True)
class SceneSpec:
    """A known scene: its folder name in ``datasets/``, its class names (label 1..K on disk), the band count of
    each modality as published (a modality not listed: taken from the file) and its default ``--split``."""

    folder: str
    class_names: tuple[str, ...]
    bands: dict[str, int]
    split: str = "random"


KNOWN_SCENES: dict[str, SceneSpec] = {
    "houston2013": SceneSpec("data_2013", (
        "Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water", "Residential",
        "Commercial", "Road", "Highway", "Railway", "Parking Lot 1", "Parking Lot 2", "Tennis Court",
        "Running Track"), {"hsi": 144, "lidar": 1}),
    "trento": SceneSpec("data_trento", ("Apple trees", "Buildings", "Ground", "Woods", "Vineyard", "Roads"),
                        {"hsi": 63, "lidar": 1}),
    "augsburg": SceneSpec("data_augsburg", (
        "Forest", "Residential area", "Industrial area", "Low plants", "Allotment", "Commercial area",
        "Water"), {"hsi": 180, "lidar": 1, "sar": 4}),
    # MUUFL Gulfport: HSI 64 bands, LiDAR as 2 rasters (first and last return elevation) in one 2-band file.
    "muufl": SceneSpec("data_muufl", (
        "Trees", "Mostly grass", "Mixed ground surface", "Dirt and sand", "Road", "Water", "Building shadow",
        "Building", "Sidewalk", "Yellow curb", "Cloth panels"), {"hsi": 64, "lidar": 2}),
    # GRSS Data Fusion Contest 2018 (Houston University): HSI 48 bands at 1 m, LiDAR DSM at 0.5 m (convert with
    # --resample to put it on the HSI's grid).
    "houston2018": SceneSpec("data_houston2018", (
        "Healthy grass", "Stressed grass", "Artificial turf", "Evergreen trees", "Deciduous trees", "Bare earth",
        "Water", "Residential buildings", "Non-residential buildings", "Roads", "Sidewalks", "Crosswalks",
        "Major thoroughfares", "Highways", "Railways", "Paved parking lots", "Unpaved parking lots", "Cars",
        "Trains", "Stadium seats"), {"hsi": 48, "lidar": 1}),
    "berlin": SceneSpec("data_berlin", (
        "Forest", "Residential area", "Industrial area", "Low plants", "Soil", "Allotment", "Commercial area",
        "Water"), {"hsi": 244, "sar": 4}),
}


def class_names_for(dataset: str, num_classes: int) -> tuple[str, ...]:
    """Class names of a known scene (SPEC §3.1), else ``class_1 .. class_K`` (logged)."""
    if dataset in KNOWN_SCENES:
        return KNOWN_SCENES[dataset].class_names
    logger.info("dataset %r is not a known scene: naming its %d classes class_1..class_%d",
                dataset, num_classes, num_classes)
    return tuple(f"class_{k}" for k in range(1, num_classes + 1))


def default_split(dataset: str) -> str:
    """The ``--split`` a scene converts with when none is given: the known scene's, else ``random``."""
    return KNOWN_SCENES[dataset].split if dataset in KNOWN_SCENES else "random"
