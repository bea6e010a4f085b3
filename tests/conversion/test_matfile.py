"""Reading .mat files (mamol.conversion.matfile): v5 and v7.3, axis order, key resolution, bad files."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import scipy.io

from mamol.conversion.matfile import list_variables, mat_version, read_mat, resolve_variable
from mamol.conversion.synthetic import write_mat

CUBE = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)  # H×W×C, distinct values catch axis swaps


@pytest.mark.parametrize("version", ["5", "7.3"])
@pytest.mark.parametrize("array", [CUBE, CUBE[..., 0], np.arange(20, dtype=np.uint8).reshape(4, 5)])
def test_roundtrip_keeps_matlab_axis_order(tmp_path, version: str, array: np.ndarray) -> None:
    path = write_mat(tmp_path / "x.mat", "HSI", array, version)
    assert mat_version(path) == version
    assert list_variables(path) == {"HSI": array.shape}
    data, var = read_mat(path, ["HSI"], "hsi")
    assert var.key == "HSI" and var.shape == array.shape and var.version == version
    np.testing.assert_array_equal(data, array)


def test_v73_stored_column_major(tmp_path) -> None:
    path = write_mat(tmp_path / "x.mat", "HSI", CUBE, "7.3")
    with h5py.File(path, "r") as fh:
        assert fh["HSI"].shape == (3, 5, 4)  # what MATLAB writes: axes reversed on the HDF5 side
    assert path.read_bytes()[:10] == b"MATLAB 7.3"


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_key_resolution(tmp_path, version: str, caplog) -> None:
    path = tmp_path / "a.mat"
    if version == "5":
        scipy.io.savemat(path, {"All_Label": np.ones((2, 2)), "other": np.zeros(3)})
    else:
        with h5py.File(path, "w") as fh:
            fh["All_Label"] = np.ones((2, 2))
            fh["other"] = np.zeros(3)
    # A known key wins over other variables; exact spelling first, then any case.
    assert resolve_variable(path, ["All_label", "All_Label"], "labels").key == "All_Label"
    assert resolve_variable(path, ["all_label"], "labels").key == "All_Label"
    with caplog.at_level(logging.INFO, logger="mamol.conversion.matfile"):
        resolve_variable(path, ["All_Label"], "labels")
    assert "using key 'All_Label'" in caplog.text
    with pytest.raises(ValueError, match=r"a\.mat: none of the known keys \['HSI'\] for hsi found and several "
                                         r"candidate variables \['All_Label', 'other'\]"):
        resolve_variable(path, ["HSI"], "hsi")


def test_single_unknown_variable_is_used(tmp_path, caplog) -> None:
    path = write_mat(tmp_path / "HSI.mat", "cube", CUBE)
    with caplog.at_level(logging.INFO, logger="mamol.conversion.matfile"):
        data, var = read_mat(path, ["HSI"], "hsi")
    assert var.key == "cube" and "using its only variable 'cube'" in caplog.text
    np.testing.assert_array_equal(data, CUBE)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.mat does not exist"):
        read_mat(tmp_path / "nope.mat", ["HSI"], "hsi")
    text = tmp_path / "text.mat"
    text.write_text("hello, not MATLAB")
    with pytest.raises(ValueError, match="text.mat is not a readable MATLAB .mat file"):
        read_mat(text, ["HSI"], "hsi")
    good = write_mat(tmp_path / "good.mat", "HSI", np.ones((30, 40, 8), np.float32))
    cut = tmp_path / "cut.mat"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="cut.mat"):
        read_mat(cut, ["HSI"], "hsi")
    empty = tmp_path / "empty.mat"
    scipy.io.savemat(empty, {})
    with pytest.raises(ValueError, match="empty.mat: holds no variables"):
        read_mat(empty, ["HSI"], "hsi")
