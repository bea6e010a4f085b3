"""Maps as GeoTIFF (mamol.experiments.geotiff): a GIS reads the scene's CRS and transform, the class codes, the
colour table of the PNG maps, the class names and the nodata code back."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS

from mamol.conversion import remote
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import SCENE_CRS, generate_scene, raster_transform, write_scene
from mamol.data.arrow import read_metadata
from mamol.errors import DataError
from mamol.experiments.geotiff import write_map_geotiff
from mamol.experiments.plots import map_figure_size, palette
from tests.experiments.conftest import BANDS
from tests.helpers import run_command

GEO = {"crs": CRS.from_string(SCENE_CRS).to_wkt(), "transform": list(raster_transform(0.5))[:6], "height": 5,
       "width": 7}


def test_a_map_reads_back_from_its_geotiff(tmp_path):
    prediction = np.arange(35, dtype=np.int16).reshape(5, 7) % 4 - 1  # -1 = not predicted
    names = ["grass", "road", "water"]
    path = write_map_geotiff(prediction, names, GEO, tmp_path / "map.tif")
    with rasterio.open(path) as src:
        assert src.crs == CRS.from_string(SCENE_CRS) and tuple(src.transform)[:6] == tuple(GEO["transform"])
        assert (src.count, src.dtypes, src.nodata) == (1, ("uint8",), 0)
        codes = src.read(1)
        np.testing.assert_array_equal(codes, np.where(prediction >= 0, prediction + 1, 0))
        np.testing.assert_array_equal(src.read_masks(1) > 0, prediction >= 0)
        colours = src.colormap(1)
        assert colours[0] == (0, 0, 0, 0)
        for k, rgb in enumerate(palette(3)):
            assert colours[k + 1] == (*(int(round(c * 255)) for c in rgb), 255)
        assert [src.tags(1)[f"CLASS_{k}"] for k in (1, 2, 3)] == names
        assert json.loads(src.tags()["class_names"]) == names
        assert src.descriptions[0].startswith("class code: 1..3")
    assert [p.name for p in tmp_path.iterdir()] == ["map.tif"]  # atomic: no temporary file left

    many = [f"c{k}" for k in range(300)]  # more classes than a byte holds
    big = write_map_geotiff(np.full((5, 7), 299, dtype=np.int16), many, GEO, tmp_path / "many.tif")
    with rasterio.open(big) as src:
        assert src.dtypes == ("uint16",) and int(src.read(1).max()) == 300
    with pytest.raises(DataError, match=r"odd.tif: the map is 5×6, the scene's georeference describes 5×7 pixels"):
        write_map_geotiff(np.zeros((5, 6), dtype=np.int16), names, GEO, tmp_path / "odd.tif")
    assert not (tmp_path / "odd.tif").exists()


def test_predict_map_of_a_georeferenced_scene_writes_geotiffs(trained, tmp_path, monkeypatch):
    """A scene converted from GeoTIFFs: each map also as GeoTIFF on the scene's grid, equal to the .npy map; the
    same scene converted into many small record batches gives the same maps."""
    scene = generate_scene(height=12, width=16, hsi_bands=BANDS, n_classes=4, n_heights=2, regions_per_class=2,
                           seed=3)
    write_scene(scene, tmp_path / "raw", fmt="tif")
    counts = {"train_per_class": 4, "val_per_class": 2, "test_per_class": 6, "progress": False}
    prepare_remote("synthetic", tmp_path / "raw", tmp_path / "one", **counts)
    monkeypatch.setattr(remote, "BATCH_BYTES", 3000)  # scene rows in record batches of 2
    prepare_remote("synthetic", tmp_path / "raw", tmp_path / "many", **counts)
    geo = read_metadata(tmp_path / "one" / "synthetic_scene.arrow")["georeference"]
    maps = {}
    for name in ("one", "many"):
        common = trained.updates(data_root=str(tmp_path / name), log_dir=str(tmp_path / "runs"),
                                 missing_table_root=str(tmp_path / "tables"), load_path=trained.checkpoint)
        folder = run_command("predict_map", "remote", **{**common, "exp_name": name, "map_pixels": "all",
                                                         "map_missing": ["none", "lidar"]})
        for setting in ("complete", "no_lidar"):
            prediction = np.load(folder / f"map_{setting}.npy")
            maps[name, setting] = prediction
            with rasterio.open(folder / f"map_{setting}.tif") as src:
                assert src.crs == CRS.from_wkt(geo["crs"]) and tuple(src.transform)[:6] == tuple(geo["transform"])
                np.testing.assert_array_equal(src.read(1), prediction + 1)
                assert src.nodata == 0 and len(src.tags(1)) == 4
            with Image.open(folder / f"map_{setting}.png") as image:  # the PNG has room for map coordinates
                assert image.size == map_figure_size(12, 16, 4, coordinates=True).size
    for setting in ("complete", "no_lidar"):
        np.testing.assert_array_equal(maps["many", setting], maps["one", setting])
