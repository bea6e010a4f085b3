"""Scene folders of GeoTIFF / ENVI rasters (mamol.conversion.rasters): the same Arrow columns as .mat, the
georeference in the metadata, grids that disagree refused by name, ``--resample``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from mamol.conversion.layout import find_scene_files
from mamol.conversion.rasters import align
from mamol.conversion.readers import read_array, resolve
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import (
    SCENE_CRS,
    add_split_rasters,
    generate_scene,
    raster_transform,
    write_raster,
    write_scene,
)
from mamol.data.arrow import open_arrow, read_metadata
from tests.fakes.remote import SMALL_COUNTS
from tests.helpers import make_arrow_script

PARAMS = {"height": 20, "width": 24, "hsi_bands": 5, "n_classes": 4, "seed": 0}


def _scene(modalities=("hsi", "lidar", "sar")):
    return add_split_rasters(generate_scene(modalities=modalities, **PARAMS))


@pytest.mark.parametrize("split", ["random", "fixed"])
def test_geotiff_and_envi_convert_to_the_columns_of_mat(tmp_path: Path, split: str) -> None:
    """The same scene as .mat, GeoTIFF and ENVI gives the same Arrow tables, column for column, in every file;
    the rasters' CRS and transform are kept in the metadata."""
    scene = _scene()
    out = {}
    for fmt in ("mat", "tif", "envi"):
        write_scene(scene, tmp_path / fmt, fmt=fmt)
        out[fmt] = prepare_remote("synthetic", tmp_path / fmt, tmp_path / f"arrow_{fmt}", split=split,
                                  **({"val_per_class": 2, "progress": False} if split == "fixed" else SMALL_COUNTS))
    stems = ("HSI", "LiDAR", "SAR", "All_label", "TRLabel", "TSLabel")
    assert sorted(p.name for p in (tmp_path / "envi").iterdir()) == sorted(
        f"{stem}.{ext}" for stem in stems for ext in ("hdr", "img"))
    for part in ("train", "val", "test", "scene"):
        mat = open_arrow(out["mat"][part])
        for fmt in ("tif", "envi"):
            table = open_arrow(out[fmt][part])
            assert table.schema.remove_metadata() == mat.schema.remove_metadata()
            for column in mat.column_names:
                assert table.column(column).equals(mat.column(column)), (fmt, part, column)
    assert mat.num_rows > 0 and set(mat.column_names) == {"hsi", "lidar", "sar", "label"}
    geo = {fmt: read_metadata(out[fmt]["train"]).get("georeference") for fmt in ("mat", "tif", "envi")}
    assert geo["mat"] is None and geo["tif"] == geo["envi"]
    assert rasterio.crs.CRS.from_wkt(geo["tif"]["crs"]) == rasterio.crs.CRS.from_string(SCENE_CRS)
    assert tuple(geo["tif"]["transform"]) == tuple(raster_transform())[:6]
    assert (geo["tif"]["height"], geo["tif"]["width"]) == (20, 24)
    meta = read_metadata(out["envi"]["scene"])
    assert meta["georeference"] == geo["envi"] and meta["source"]["hsi"]["format"] == "ENVI"
    assert meta["source"]["hsi"]["shape"] == [20, 24, 5]


def test_a_folder_may_mix_formats(tmp_path: Path) -> None:
    scene = _scene(("hsi", "lidar"))
    write_scene(scene, tmp_path / "mix", fmt="tif")
    (tmp_path / "mix" / "All_label.tif").unlink()
    write_scene(scene, tmp_path / "mat")
    shutil.copy(tmp_path / "mat" / "All_label.mat", tmp_path / "mix" / "All_label.mat")
    files = find_scene_files(tmp_path / "mix")
    assert files["hsi"].name == "HSI.tif" and files["label"].name == "All_label.mat"
    out = prepare_remote("synthetic", tmp_path / "mix", tmp_path / "arrow", **SMALL_COUNTS)
    ref = prepare_remote("synthetic", tmp_path / "mat", tmp_path / "arrow_mat", **SMALL_COUNTS)
    assert open_arrow(out["train"]).column("hsi").equals(open_arrow(ref["train"]).column("hsi"))


def _other_crs(root: Path) -> str:
    scene_lidar = read_array(resolve(root / "LiDAR.tif", "lidar"))
    (root / "LiDAR.tif").unlink()
    write_raster(root / "LiDAR.tif", scene_lidar, crs="EPSG:26915")
    return "LiDAR.tif: CRS EPSG:26915, expected EPSG:32615 like HSI.tif"


def _other_transform(root: Path) -> str:
    lidar = read_array(resolve(root / "LiDAR.tif", "lidar"))
    (root / "LiDAR.tif").unlink()
    write_raster(root / "LiDAR.tif", lidar, transform=raster_transform(origin=(271010.0, 3290000.0)))
    return "LiDAR.tif: transform (pixel 1×-1, origin 271010, 3.29e+06), expected (pixel 1×-1, origin 271000"


def _other_size(root: Path) -> str:
    lidar = read_array(resolve(root / "LiDAR.tif", "lidar"))
    (root / "LiDAR.tif").unlink()
    write_raster(root / "LiDAR.tif", lidar[:-1])
    return "LiDAR.tif: size 19×24, expected 20×24 like HSI.tif"


def _header_without_data(root: Path) -> str:
    (root / "HSI.img").unlink()
    return "HSI.hdr: ENVI header without its data file HSI.img"


def _data_without_header(root: Path) -> str:
    (root / "LiDAR.hdr").unlink()
    return "LiDAR.img: ENVI data file without its header LiDAR.hdr"


def _fractional_labels(root: Path) -> str:
    labels = read_array(resolve(root / "All_label.tif", "label")).astype(np.float32)
    labels[3, 4] = 1.5
    (root / "All_label.tif").unlink()
    write_raster(root / "All_label.tif", labels)
    return "All_label.tif: labels must be integers 0..K, found 1 non-integer values (e.g. 1.5)"


def _truncated(name: str) -> callable:
    def change(root: Path) -> str:
        path = root / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return name
    return change


BAD_RASTERS = {
    "other-crs": ("tif", _other_crs),
    "other-transform": ("tif", _other_transform),
    "other-size": ("tif", _other_size),
    "envi-header-without-data": ("envi", _header_without_data),
    "envi-data-without-header": ("envi", _data_without_header),
    "label-fractional": ("tif", _fractional_labels),
    "tif-truncated": ("tif", _truncated("HSI.tif")),
    "envi-truncated": ("envi", lambda root: _truncated("HSI.img")(root) + ": 4800 bytes, but its header HSI.hdr "
                       "declares 20×24×5 float32 values (9600 bytes): truncated?"),
}


@pytest.mark.parametrize("name", sorted(BAD_RASTERS))
def test_bad_rasters_end_in_one_error_line_and_write_nothing(tmp_path: Path, capsys, name: str) -> None:
    fmt, change = BAD_RASTERS[name]
    root = tmp_path / "scene"
    write_scene(generate_scene(**PARAMS), root, fmt=fmt)
    expected = change(root)
    target = tmp_path / "arrow"
    rc = make_arrow_script().main(["--dataset", "synthetic", "--root", str(root), "--target", str(target), "-q",
                                   "--train-per-class", "5", "--val-per-class", "3", "--test-per-class", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert expected in err[0], err[0]
    assert not target.exists()


def test_resample_puts_a_finer_raster_onto_the_first_modality_grid(tmp_path: Path, capsys) -> None:
    """Houston2018's case: LiDAR at 0.5 m, HSI at 1 m. Without --resample it is refused; with it, a linear ramp
    comes back exactly in the interior (bilinear), labels exactly (nearest), and the scene converts."""
    scene = generate_scene(**PARAMS)
    root = tmp_path / "scene"
    write_scene(scene, root, fmt="tif")
    rows, cols = np.mgrid[0:40, 0:48].astype(np.float32)
    ramp = 0.25 * (rows + 0.5) + 0.5 * (cols + 0.5)  # value at each 0.5 m pixel centre, in 0.5 m units
    (root / "LiDAR.tif").unlink()
    write_raster(root / "LiDAR.tif", ramp, transform=raster_transform(0.5))
    variables = align({r: resolve(root / f, r) for r, f in (("hsi", "HSI.tif"), ("lidar", "LiDAR.tif"))}, True)
    assert variables["lidar"].shape == (20, 24)
    coarse = read_array(variables["lidar"])
    r1, c1 = np.mgrid[0:20, 0:24].astype(np.float32)
    expected = 0.25 * (2 * r1 + 1) + 0.5 * (2 * c1 + 1)  # the ramp at each 1 m pixel centre
    np.testing.assert_allclose(coarse[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-4)

    write_scene(scene, root, fmt="tif", finer={"lidar": 2, "label": 2})  # each 1 m pixel as 2×2 pixels of 0.5 m
    args = ["--dataset", "synthetic", "--root", str(root), "-q", "--train-per-class", "5", "--val-per-class", "3",
            "--test-per-class", "10"]
    main = make_arrow_script().main
    assert main([*args, "--target", str(tmp_path / "refused")]) == 2
    assert "LiDAR.tif: transform (pixel 0.5×-0.5" in capsys.readouterr().err
    assert main([*args, "--target", str(tmp_path / "arrow"), "--resample"]) == 0
    meta = read_metadata(tmp_path / "arrow" / "synthetic_scene.arrow")
    assert meta["source"]["lidar"]["resampled_from"] == [40, 48] and meta["source"]["lidar"]["shape"] == [20, 24]
    labels = read_array(align({"hsi": resolve(root / "HSI.tif", "hsi"),
                               "label": resolve(root / "All_label.tif", "label")}, True)["label"])
    np.testing.assert_array_equal(labels, scene.labels)
    assert meta["scene_shape"] == [20, 24]


def test_resample_needs_a_georeferenced_first_modality(tmp_path: Path) -> None:
    scene = generate_scene(**PARAMS)
    write_scene(scene, tmp_path / "mat")
    root = tmp_path / "mat"
    (root / "LiDAR.mat").unlink()
    write_raster(root / "LiDAR.tif", scene.data["lidar"], transform=raster_transform(0.5))
    with pytest.raises(ValueError, match=r"HSI.mat:HSI: has no georeference.*--resample cannot put LiDAR.tif"):
        prepare_remote("synthetic", root, tmp_path / "out", resample=True, **SMALL_COUNTS)


def test_nodata_pixels_follow_the_nan_policy(tmp_path: Path) -> None:
    scene = generate_scene(**PARAMS)
    root = tmp_path / "scene"
    write_scene(scene, root, fmt="tif")
    hsi = scene.data["hsi"].copy()
    hsi[2, 3, 1] = -9999.0
    (root / "HSI.tif").unlink()
    write_raster(root / "HSI.tif", hsi, nodata=-9999.0)
    with pytest.raises(ValueError, match=r"HSI.tif holds 1 non-finite values .*--nan fill"):
        prepare_remote("synthetic", root, tmp_path / "out", **SMALL_COUNTS)
    out = prepare_remote("synthetic", root, tmp_path / "out", nan="fill", **SMALL_COUNTS)
    assert read_metadata(out["train"])["nan_filled"]["hsi"] == 1
