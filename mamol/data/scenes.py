"""The known remote-sensing scenes: one :class:`SceneSpec` each (folder name, class names).

A light description both sides read: the catalogue (:mod:`mamol.data.catalogue`) derives a dataset entry from
each known scene, and the converter (:mod:`mamol.conversion`) names a known scene's classes and finds its
folder. A new known scene is one entry in :data:`KNOWN_SCENES`; any other scene converts too, with classes
named ``class_1 .. class_K``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["KNOWN_SCENES", "SceneSpec", "class_names_for"]


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


def class_names_for(dataset: str, num_classes: int) -> tuple[str, ...]:
    """Class names of a known scene (SPEC §3.1), else ``class_1 .. class_K`` (logged)."""
    if dataset in KNOWN_SCENES:
        return KNOWN_SCENES[dataset].class_names
    logger.info("dataset %r is not a known scene: naming its %d classes class_1..class_%d",
                dataset, num_classes, num_classes)
    return tuple(f"class_{k}" for k in range(1, num_classes + 1))
