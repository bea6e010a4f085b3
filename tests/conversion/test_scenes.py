"""Known scenes (mamol.data.scenes) and finding a scene folder's files by role (mamol.conversion.layout)."""

from __future__ import annotations

import logging

import pytest

from mamol.conversion.layout import find_scene_files
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import write_mat
from mamol.data.arrow import read_metadata
from mamol.data.scenes import KNOWN_SCENES
from tests.fakes.remote import SMALL_COUNTS, small_scene_dir


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
