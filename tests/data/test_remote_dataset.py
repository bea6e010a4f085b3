"""RemoteDataset and SceneWindows (mamol.data.remote) on a tiny converted scene."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import generate_scene, write_scene
from mamol.data.arrow import ArrowFileError, column_views, open_arrow
from mamol.data.remote import RemoteDataset, SceneWindows, select_modalities
from mamol.errors import ConfigError
from tests.helpers import open_split, run_settings

H, W, BANDS = 16, 20, 5


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, object]:
    """A 3-modality scene converted to Arrow: (data_root, generated scene)."""
    tmp = tmp_path_factory.mktemp("remote")
    scene = generate_scene(height=H, width=W, hsi_bands=BANDS, n_classes=4, modalities=("hsi", "lidar", "sar"),
                           sar_bands=2, seed=0)
    write_scene(scene, tmp / "raw")
    prepare_remote("synthetic", tmp / "raw", tmp / "arrow", train_per_class=6, val_per_class=3,
                   test_per_class=8, progress=False)
    return tmp / "arrow", scene


def _open(root: Path, tmp_path: Path, split: str, **updates) -> RemoteDataset:
    """A split with nothing missing unless ``updates`` say otherwise; tables under ``tmp_path``."""
    updates = {"missing_ratio": 0.0, "missing_table_root": str(tmp_path / "tables"), **updates}
    return open_split(root, "synthetic", split, **updates)


def test_sample_keys_shapes_and_values(converted, tmp_path) -> None:
    root, _ = converted
    ds = _open(root, tmp_path, "train")
    assert len(ds) == 24 and ds.modalities == ("hsi", "lidar")
    assert ds.info.bands == {"hsi": BANDS, "lidar": 1} and ds.info.num_classes == 4 and ds.info.patch_size == 14
    sample = ds[5]
    assert set(sample) == {"hsi", "lidar", "label", "row", "col", "missing_type", "index", "task"}
    assert sample["hsi"].shape == (BANDS, 14, 14) and sample["hsi"].dtype == torch.float32
    assert sample["lidar"].shape == (1, 14, 14)
    for key in ("label", "row", "col", "missing_type", "index"):
        assert sample[key].dtype == torch.int64 and sample[key].ndim == 0
    assert sample["task"] == "synthetic" and int(sample["index"]) == 5 and int(sample["missing_type"]) == 0
    table = open_arrow(root / "synthetic_train.arrow")
    (view,) = column_views(table, "hsi", (BANDS, 14, 14))
    np.testing.assert_array_equal(sample["hsi"].numpy(), view[5])
    assert int(sample["row"]) == table.column("row")[5].as_py()
    sample["hsi"] += 1  # a sample owns its data: the mapped file is untouched
    np.testing.assert_array_equal(ds[5]["hsi"].numpy(), view[5])


def test_modality_selection(converted, tmp_path) -> None:
    root, _ = converted
    assert select_modalities(["hsi", "sar"], None) == ("hsi", "sar")
    assert select_modalities(["hsi", "lidar", "sar"], None) == ("hsi", "lidar")
    assert select_modalities(["hsi", "lidar", "sar"], ["SAR", "hs"]) == ("hsi", "sar")
    assert select_modalities(["hsi", "lidar"], "hsi,DSM") == ("hsi", "lidar")
    ds = _open(root, tmp_path, "val", modalities=["sar", "lidar", "hsi"])
    assert ds.modalities == ("hsi", "lidar", "sar") and set(ds[0]) >= {"hsi", "lidar", "sar"}
    assert ds[0]["sar"].shape == (2, 14, 14)
    with pytest.raises(ValueError, match=r"modalities=\['hsi', 'msi'\].*stores \['hsi', 'lidar', 'sar'\]"):
        _open(root, tmp_path, "train", modalities=["hsi", "msi"])
    with pytest.raises(ConfigError, match=r"modalities=\['hsi'\]; the models need at least two"):
        _open(root, tmp_path, "train", modalities=["hsi"])


@pytest.mark.parametrize("fill", ["ones", "zeros"])
def test_missing_fill_and_table(converted, tmp_path, fill: str) -> None:
    root, _ = converted
    cfg = dict(missing_fill=fill, missing_ratio={"train": 1.0, "val": 0.0, "test": 0.0},
               missing_type={"train": "HS", "val": "both", "test": "both"})
    ds = _open(root, tmp_path, "train", **cfg)
    assert len(list((tmp_path / "tables").glob("synthetic_train_missing_hsi_10_*.pt"))) == 1
    sample = ds[3]
    assert int(sample["missing_type"]) == 1
    assert torch.equal(sample["hsi"], torch.full((BANDS, 14, 14), 1.0 if fill == "ones" else 0.0))
    assert not torch.equal(sample["lidar"], torch.full((1, 14, 14), 1.0))
    with pytest.raises(ValueError, match="missing_fill='nan': expected 'ones' or 'zeros'"):
        _open(root, tmp_path, "train", missing_fill="nan")


def test_three_modality_codes_and_overrides(converted, tmp_path) -> None:
    root, _ = converted
    cfg = dict(modalities=["hsi", "lidar", "sar"],
               missing_ratio={"train": 0.5, "val": 0.0, "test": 0.0},
               missing_type={"train": "HS_SAR_Lidar", "val": "hsi", "test": "hsi"},
               test_ratio=1.0, test_type="SAR")
    train = _open(root, tmp_path, "train", **cfg)
    assert int((train.missing_table > 0).sum()) == 12 and int(train.missing_table.max()) <= 6
    for split in ("val", "test"):  # test_ratio / test_type override val and test
        ds = _open(root, tmp_path, split, **cfg)
        assert (ds.missing.type, ds.missing.ratio) == ("SAR", 1.0)
        assert bool((ds.missing_table == 4).all())
        sample = ds[0]
        assert torch.equal(sample["sar"], torch.ones(2, 14, 14)) and int(sample["missing_type"]) == 4


def test_simulate_missing_only_in_training(converted, tmp_path) -> None:
    root, _ = converted
    cfg = dict(simulate_missing=True)
    train = _open(root, tmp_path, "train", **cfg)
    codes = {int(train[i]["missing_type"]) for i in range(len(train)) for _ in range(3)}
    assert codes == {0, 1, 2}  # DCP's redraw: complete stays possible
    val = _open(root, tmp_path, "val", **cfg)
    assert {int(val[i]["missing_type"]) for i in range(len(val))} == {0}


def test_pickle_and_workers(converted, tmp_path) -> None:
    root, _ = converted
    ds = _open(root, tmp_path, "test")
    ds[0]  # open in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._table is None and clone._views is None  # the mapped data never travels
    torch.testing.assert_close(clone[7]["hsi"], ds[7]["hsi"])
    serial = [b["hsi"] for b in DataLoader(ds, batch_size=8, collate_fn=ds.collate)]
    parallel = [b["hsi"] for b in DataLoader(ds, batch_size=8, collate_fn=ds.collate, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel)) and len(serial) == 4


def test_collate(converted, tmp_path) -> None:
    root, _ = converted
    ds = _open(root, tmp_path, "val")
    batch = ds.collate([ds[i] for i in range(4)])
    assert batch["hsi"].shape == (4, BANDS, 14, 14) and batch["label"].shape == (4,)
    assert batch["task"] == "synthetic"
    other = dict(ds[0], task="other")
    with pytest.raises(ValueError, match="mixes tasks"):
        ds.collate([ds[1], other])


def test_corrupt_or_mismatched_files(converted, tmp_path) -> None:
    root, scene = converted
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    data = (bad / "synthetic_val.arrow").read_bytes()
    (bad / "synthetic_val.arrow").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArrowFileError, match=r"synthetic_val\.arrow is not a readable Arrow IPC file"):
        _open(bad, tmp_path, "val")
    # A split of another conversion (here with other settings) is refused.
    write_scene(scene, tmp_path / "raw")
    other = prepare_remote("synthetic", tmp_path / "raw", tmp_path / "other", normalize="zscore",
                           train_per_class=6, val_per_class=3, test_per_class=8, progress=False)
    shutil.copy(other["test"], bad / "synthetic_test.arrow")
    with pytest.raises(ValueError, match=r"different conversions: .*synthetic_test\.arrow \([0-9a-f]{16}\)"):
        _open(bad, tmp_path, "test")


def test_scene_windows(converted, tmp_path) -> None:
    root, scene = converted
    s = run_settings(root, datasets=["synthetic"])
    windows = SceneWindows.from_settings(s.data, s.missing.fill, "synthetic")
    assert len(windows) == H * W and windows.modalities == ("hsi", "lidar")
    test = _open(root, tmp_path, "test")
    for i in (0, 5, len(test) - 1):
        sample = test[i]
        r, c = int(sample["row"]), int(sample["col"])
        window = windows[r * W + c]
        assert (int(window["row"]), int(window["col"])) == (r, c)
        assert torch.equal(window["hsi"], sample["hsi"]) and torch.equal(window["lidar"], sample["lidar"])
        assert int(window["label"]) == int(sample["label"])
    corner = windows[H * W - 1]
    assert (int(corner["row"]), int(corner["col"])) == (H - 1, W - 1)
    labels = np.array([int(windows[i]["label"]) for i in range(len(windows))]).reshape(H, W)
    np.testing.assert_array_equal(labels, scene.labels.astype(int) - 1)  # -1 = unlabelled
    labelled = SceneWindows(root / "synthetic_scene.arrow", labelled_only=True)
    assert len(labelled) == int((scene.labels > 0).sum())
    assert all(int(labelled[i]["label"]) >= 0 for i in range(0, len(labelled), 17))
    missing = SceneWindows(root / "synthetic_scene.arrow", ["hsi", "sar"], missing_type=2, missing_fill="zeros")
    assert torch.equal(missing[3]["sar"], torch.zeros(2, 14, 14)) and int(missing[3]["missing_type"]) == 2
    batch = windows.collate([windows[i] for i in range(3)])
    assert batch["hsi"].shape == (3, BANDS, 14, 14)
    clone = pickle.loads(pickle.dumps(windows))
    assert clone._windows is None and torch.equal(clone[10]["hsi"], windows[10]["hsi"])
    with pytest.raises(ValueError, match="missing_type 3 is not a code for 2 modalities"):
        SceneWindows(root / "synthetic_scene.arrow", missing_type=3)
    with pytest.raises(ValueError, match="holds split 'train', expected a scene file"):
        SceneWindows(root / "synthetic_train.arrow")
    with pytest.raises(FileNotFoundError, match="expected synthetic_scene.arrow"):
        SceneWindows.from_settings(dataclasses.replace(s.data, root=tmp_path), "ones", "synthetic")


def test_scene_batches_equal_single_windows(converted, tmp_path) -> None:
    """The batched path (one gather per modality) gives what the per-pixel path collates, in any order."""
    root, scene = converted
    s = run_settings(root, datasets=["synthetic"], modalities=["hsi", "lidar", "sar"])
    rng = np.random.default_rng(0)
    for missing_type, labelled in ((0, False), (1, True), (6, False)):
        windows = SceneWindows.from_settings(s.data, "zeros", "synthetic", missing_type, labelled)
        indices = rng.choice(len(windows), size=37, replace=False)
        batch = windows.batch(indices)
        singles = windows.collate([windows[int(i)] for i in indices])
        assert batch.keys() == singles.keys()
        for key, value in singles.items():
            assert value == batch[key] if key == "task" else torch.equal(value, batch[key]), key
        loaded = next(iter(DataLoader(windows, batch_size=37, collate_fn=windows.collate)))  # through __getitems__
        assert torch.equal(loaded["hsi"], windows.batch(range(37))["hsi"]) and loaded["hsi"].shape[0] == 37
    in_worker = next(iter(DataLoader(windows, batch_size=37, collate_fn=windows.collate, num_workers=1)))
    assert all(torch.equal(in_worker[m], windows.batch(range(37))[m]) for m in ("hsi", "lidar", "sar"))
    assert torch.equal(batch["sar"], torch.zeros(37, 2, 14, 14))  # code 6: LiDAR and SAR missing, zeros fill
    with pytest.raises(IndexError, match=f"index {H * W} out of range"):
        windows.batch([0, H * W])
    labels = SceneWindows.from_settings(s.data, "ones", "synthetic").label_raster()
    np.testing.assert_array_equal(labels, scene.labels.astype(int) - 1)


@pytest.mark.parametrize("fill", ["ones", "zeros"])
def test_scene_batches_hold_no_zero_stride_tensor(converted, fill: str) -> None:
    """A DataLoader pins batches on the GPU path; pinning an expanded (zero-stride) tensor copies or fails
    depending on the torch version, so a missing modality's fill is a real (B, C, P, P) tensor."""
    root, _ = converted
    s = run_settings(root, datasets=["synthetic"], modalities=["hsi", "lidar", "sar"])
    windows = SceneWindows.from_settings(s.data, fill, "synthetic", missing_type=6)  # LiDAR and SAR missing
    batch = windows.batch(range(5))
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            assert 0 not in value.stride(), f"{key}: stride {value.stride()}"
