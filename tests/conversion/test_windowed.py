"""Large scenes read in windows (mamol.conversion.windowed): the very Arrow files of the in-memory path, with a
reading pass whose memory is a window, not the cube."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mamol.conversion import remote, windowed
from mamol.conversion.readers import resolve
from mamol.conversion.remote import prepare_remote, read_padded
from mamol.conversion.synthetic import add_split_rasters, generate_scene, write_raster, write_scene
from mamol.errors import DataError
from tests.fakes.remote import SMALL_COUNTS

PARAMS = {"height": 20, "width": 24, "hsi_bands": 5, "n_classes": 4, "seed": 0}


def _tif_scene(folder: Path, nodata: bool = False) -> Path:
    """The small scene as GeoTIFFs (HSI, LiDAR, SAR, labels, TR/TS); with ``nodata``, HSI holds nodata pixels."""
    scene = add_split_rasters(generate_scene(modalities=("hsi", "lidar", "sar"), **PARAMS))
    write_scene(scene, folder, fmt="tif")
    if nodata:
        hsi = scene.data["hsi"].copy()
        hsi[3, 4, :] = -9999.0  # a whole pixel
        hsi[0, :5, 2] = -9999.0  # the first row of one band: the edge the padding mirrors
        write_raster(folder / "HSI.tif", hsi, nodata=-9999.0)
    return folder


def _batches(path: Path) -> int:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).num_record_batches


@pytest.mark.parametrize(("normalize", "split", "nan", "nodata"), [
    ("minmax", "random", "refuse", False), ("zscore", "fixed", "fill", True), ("none", "random", "fill", True)])
def test_windows_write_the_files_of_the_in_memory_path(tmp_path, monkeypatch, normalize, split, nan, nodata):
    """Byte for byte the same files (statistics, padded edges, patches, scene rows, metadata, conversion id), with
    windows of one to a few rows and record batches of a few rows, so every boundary is crossed."""
    root = _tif_scene(tmp_path / "raw", nodata)
    monkeypatch.setattr(remote, "BATCH_BYTES", 3000)  # a few patches per split batch, 2 scene rows per batch
    counts = SMALL_COUNTS if split == "random" else {"val_per_class": 2, "progress": False}
    options = {"normalize": normalize, "split": split, "nan": nan, **counts}
    memory = prepare_remote("synthetic", root, tmp_path / "memory", windowed=False, **options)
    for rows in (1, 3):
        monkeypatch.setattr(windowed, "WINDOW_BYTES", rows * PARAMS["width"] * PARAMS["hsi_bands"] * 4)
        out = prepare_remote("synthetic", root, tmp_path / f"windows_{rows}", windowed=True, **options)
        assert out.keys() == memory.keys() == {"train", "val", "test", "scene"}
        for part, path in memory.items():
            assert out[part].read_bytes() == path.read_bytes(), (rows, part)
        assert sorted(p.name for p in (tmp_path / f"windows_{rows}").iterdir()) == sorted(p.name for p in out.values())
    assert _batches(memory["scene"]) > 5 and _batches(memory["test"]) > 5


def test_the_path_is_chosen_by_size_or_by_the_flag(tmp_path, monkeypatch, caplog):
    root = _tif_scene(tmp_path / "raw")
    caplog.set_level(logging.INFO, logger="mamol.conversion.windowed")
    prepare_remote("synthetic", root, tmp_path / "small", **SMALL_COUNTS)
    assert "read in windows" not in caplog.text  # small: in memory by default
    monkeypatch.setattr(windowed, "WINDOWED_ABOVE", 0)
    prepare_remote("synthetic", root, tmp_path / "large", **SMALL_COUNTS)
    assert [r.getMessage().split(":")[0] for r in caplog.records if "read in windows" in r.getMessage()] == [
        "HSI.tif", "LiDAR.tif", "SAR.tif"]
    assert (tmp_path / "large" / "synthetic_scene.arrow").read_bytes() == (
        tmp_path / "small" / "synthetic_scene.arrow").read_bytes()

    # A .mat scene cannot be read in windows: asked for, it says so and reads in memory.
    write_scene(add_split_rasters(generate_scene(**PARAMS)), tmp_path / "mat")
    caplog.clear()
    prepare_remote("synthetic", tmp_path / "mat", tmp_path / "from_mat", windowed=True, **SMALL_COUNTS)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == windowed.__name__]
    assert warned == [f"{stem}.mat:{stem}: read in memory (0.0 GiB padded), not in windows: a .mat file is read "
                      f"whole" for stem in ("HSI", "LiDAR")]
    with pytest.raises(DataError, match="HSI.mat:HSI: cannot be read in windows: a .mat file is read whole"):
        windowed.read_padded(resolve(tmp_path / "mat" / "HSI.mat", "hsi"), 7, "minmax", "refuse", tmp_path)


def test_refused_nan_in_windows_writes_nothing(tmp_path):
    root = _tif_scene(tmp_path / "raw", nodata=True)
    with pytest.raises(DataError, match=r"HSI.tif holds 10 non-finite values \(10 NaN, 0 Inf\) in bands "
                                        r"\[0, 1, 2, 3, 4\]; fix the file or convert with --nan fill"):
        prepare_remote("synthetic", root, tmp_path / "out", windowed=True, **SMALL_COUNTS)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_reading_pass_holds_a_window_not_the_cube(tmp_path, monkeypatch):
    """numpy's allocations (traced by tracemalloc) while one modality is read: the in-memory path holds the padded
    cube; in windows, the peak is a band plus a window, a small part of it."""
    scene = generate_scene(height=64, width=96, hsi_bands=64, n_classes=4, seed=0)
    write_raster(tmp_path / "HSI.tif", scene.data["hsi"])
    var = resolve(tmp_path / "HSI.tif", "hsi")
    cube = windowed.padded_bytes(var, 14)  # (64 + 13) x (96 + 13) x 64 x 4 = 2.1 MB
    monkeypatch.setattr(windowed, "WINDOW_BYTES", cube // 32)
    peaks = {}
    for name, read in (("memory", lambda: read_padded(var, 14, "zscore", "refuse")),
                       ("windows", lambda: windowed.read_padded(var, 14, "zscore", "refuse", tmp_path / "scratch"))):
        tracemalloc.start()
        padded, stats, _ = read()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if name == "memory":
            expected = padded, stats
        else:
            np.testing.assert_array_equal(padded.rows(0, padded.shape[0]), expected[0])
            assert stats == expected[1]
    assert peaks["memory"] >= cube
    assert peaks["windows"] < cube / 4, peaks
    assert [p.name for p in (tmp_path / "scratch").iterdir()] == []  # the cube's file has no name
