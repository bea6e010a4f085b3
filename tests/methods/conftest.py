"""Fixtures of the method tests: a three-modality scene (HSI + LiDAR + SAR), converted once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import convert_scene


@pytest.fixture(scope="session")
def remote3_root(tmp_path_factory) -> Path:
    """A 48 x 64 scene with HSI (8 bands), LiDAR and SAR (2 bands), 4 classes, converted to Arrow."""
    return convert_scene(tmp_path_factory.mktemp("remote3_scene"), "arrow", hsi_bands=8,
                         modalities=("hsi", "lidar", "sar"))
