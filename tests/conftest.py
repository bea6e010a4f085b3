"""Shared fixtures: generated datasets converted once per session, on the CPU, without network."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mamol.conversion.food101 import prepare_food101
from mamol.conversion.hateful_memes import prepare_hateful_memes
from mamol.conversion.mmimdb import prepare_mmimdb
from tests.fakes.natural import make_food101_raw, make_hateful_memes_raw, make_mmimdb_raw
from tests.helpers import convert_scene

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub from a test


@pytest.fixture(scope="session")
def remote_root(tmp_path_factory) -> Path:
    """A 48 x 64 two-modality scene (HSI 8 bands + LiDAR, 4 classes) converted to Arrow: 160 / 80 / 240 samples."""
    return convert_scene(tmp_path_factory.mktemp("remote_scene"), "arrow", hsi_bands=8)


@pytest.fixture(scope="session")
def natural_root(tmp_path_factory) -> Path:
    """Tiny fake MM-IMDb, Food-101 and Hateful Memes downloads converted into one Arrow folder."""
    root = tmp_path_factory.mktemp("natural_runs")
    prepare_mmimdb(make_mmimdb_raw(root / "raw_mmimdb", counts=(6, 3, 4), seed=0).root, root / "arrow",
                   progress=False)
    prepare_food101(make_food101_raw(root / "raw_food", counts=(6, 3, 4), seed=0).root, root / "arrow",
                    progress=False)
    prepare_hateful_memes(make_hateful_memes_raw(root / "raw_hm", counts=(8, 4, 4), seed=0).root, root / "arrow",
                          progress=False)
    return root / "arrow"
