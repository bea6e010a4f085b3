"""Tiny remote scene folders for the converter tests: a generated scene written as .mat files."""
from __future__ import annotations

from pathlib import Path

from mamol.conversion.synthetic import SyntheticScene, generate_scene, write_scene

SMALL_COUNTS = {"train_per_class": 5, "val_per_class": 3, "test_per_class": 10, "progress": False}
"""prepare_remote keywords that fit the small scenes: 5 / 3 / 10 pixels per class, no progress bar."""


def small_scene_dir(
    parent: Path, naming: str = "official", version: str = "5", **kwargs
) -> tuple[Path, SyntheticScene]:
    """Write a 20×24 scene (5 HSI bands, 4 classes; ``kwargs`` override) under ``parent``; (folder, scene)."""
    params = {"height": 20, "width": 24, "hsi_bands": 5, "n_classes": 4, "seed": 0} | kwargs
    scene = generate_scene(**params)
    root = parent / f"scene_{naming}_{version}"
    write_scene(scene, root, naming, version)
    return root, scene
