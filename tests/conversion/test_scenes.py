"""Known scenes (mamol.data.scenes) and finding a scene folder's files by role (mamol.conversion.layout)."""

from __future__ import annotations

import logging

import pytest

from mamol.conversion.layout import find_scene_files
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import make_known_scene, write_mat
from mamol.data import catalogue
from mamol.data.arrow import read_metadata
from mamol.data.scenes import KNOWN_SCENES
from tests.fakes.remote import SMALL_COUNTS, small_scene_dir
from tests.helpers import make_arrow_script, run_experiment, short_run


def test_known_scene_class_names_and_custom_note(tmp_path, caplog) -> None:
    root, _ = small_scene_dir(tmp_path, n_classes=6)
    out = prepare_remote("trento", root, tmp_path / "arrow", **SMALL_COUNTS)
    assert read_metadata(out["train"])["class_names"] == list(KNOWN_SCENES["trento"].class_names)
    assert out["train"].name == "trento_train.arrow"
    with caplog.at_level(logging.INFO, logger="mamol.data.scenes"):
        prepare_remote("my_scene", root, tmp_path / "arrow", **SMALL_COUNTS)
    assert "naming its 6 classes class_1..class_6" in caplog.text
    with pytest.raises(ValueError, match="dataset name 'my scene!'"):
        prepare_remote("my scene!", root, tmp_path / "arrow", **SMALL_COUNTS)


def test_missing_folder_and_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="scene folder .*nowhere does not exist"):
        prepare_remote("synthetic", tmp_path / "nowhere", tmp_path / "out", **SMALL_COUNTS)
    root, _ = small_scene_dir(tmp_path)
    (root / "HSI.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"no hsi file; expected one of HSI.mat, HSI_data.mat, "
                                                r"data_HS_LR.mat .*found All_label.mat, LiDAR.mat"):
        prepare_remote("synthetic", root, tmp_path / "out", **SMALL_COUNTS)
    root, _ = small_scene_dir(tmp_path, naming="release")
    (root / "All_Label.mat").unlink()
    with pytest.raises(FileNotFoundError, match="no label raster file; expected one of All_label.mat"):
        find_scene_files(root)
    root, _ = small_scene_dir(tmp_path, naming="community")
    (root / "data_DSM.mat").unlink()
    with pytest.raises(FileNotFoundError, match="only HSI found; expected a second modality"):
        find_scene_files(root)


def test_several_files_for_one_role(tmp_path) -> None:
    root, scene = small_scene_dir(tmp_path)
    write_mat(root / "HSI_data.mat", "HSI_data", scene.data["hsi"])
    with pytest.raises(ValueError, match=r"several files for hsi: \['HSI.mat', 'HSI_data.mat'\]"):
        prepare_remote("synthetic", root, tmp_path / "out", **SMALL_COUNTS)


NEW_SCENES = {  # name -> (fixture format, finer rasters, extra CLI options)
    "muufl": ("mat", None, []),
    "houston2018": ("tif", {"lidar": 2}, ["--resample"]),  # LiDAR at 0.5 m, HSI at 1 m
    "berlin": ("envi", None, []),
}


@pytest.mark.parametrize("name", sorted(NEW_SCENES))
def test_new_known_scenes_convert_from_their_fixtures(tmp_path, name) -> None:
    """MUUFL, Houston2018 and Berlin: one catalogue entry each; a small fixture shaped like each converts through
    the CLI into their class names and published bands (Houston2018 only with --resample)."""
    fmt, finer, options = NEW_SCENES[name]
    spec = KNOWN_SCENES[name]
    root = tmp_path / spec.folder
    make_known_scene(name, root, fmt=fmt, finer=finer)
    args = ["--dataset", name, "--root", str(root), "--target", str(tmp_path / "arrow"), "-q",
            "--train-per-class", "3", "--val-per-class", "2", "--test-per-class", "5", *options]
    assert make_arrow_script().main(args) == 0
    meta = read_metadata(tmp_path / "arrow" / f"{name}_train.arrow")
    assert meta["class_names"] == list(spec.class_names) and meta["num_classes"] == len(spec.class_names)
    assert meta["bands"] == spec.bands and meta["modalities"] == [m for m in ("hsi", "lidar", "sar") if m in spec.bands]
    assert meta["split_method"] == spec.split == "random"
    assert all(meta["counts"]["train"][k] == 3 for k in range(len(spec.class_names)))
    assert catalogue.entry(name, None).kind == "remote"
    if options:
        assert make_arrow_script().main(args[:-1] + ["--target", str(tmp_path / "refused")]) == 2
    expected = {"muufl": (64, 2, 11), "houston2018": (48, 1, 20), "berlin": (244, 4, 8)}[name]
    assert (spec.bands["hsi"], spec.bands.get("lidar", spec.bands.get("sar")), len(spec.class_names)) == expected


def test_berlin_trains_on_hsi_and_sar(tmp_path) -> None:
    """A new scene needs no code: Berlin's HSI + SAR reach the datamodule and the model, and a short run tests."""
    make_known_scene("berlin", tmp_path / "raw", height=24, width=30)
    prepare_remote("berlin", tmp_path / "raw", tmp_path / "arrow", train_per_class=4, val_per_class=2,
                   test_per_class=4, progress=False)
    results = run_experiment("remote", **short_run(tmp_path / "arrow", tmp_path, datasets=["berlin"]))
    assert results["modalities"] == {"berlin": ["hsi", "sar"]} and results["tasks"] == ["berlin"]
    assert results["class_names"]["berlin"] == list(KNOWN_SCENES["berlin"].class_names)
    assert 0.0 <= results["metrics"]["OA"] <= 100.0 and results["notes"] == []
