"""Synthetic scene generator (mamol.conversion.synthetic): layout, determinism, complementary modalities."""

from __future__ import annotations

import numpy as np
import pytest

from mamol.conversion.matfile import read_mat
from mamol.conversion.synthetic import NAMINGS, generate_scene, make_synthetic_scene


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(labels))
    train, test = idx[: len(idx) // 2], idx[len(idx) // 2 :]
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-6
    z = (features - mu) / sd
    centroids = np.stack([z[train][labels[train] == k].mean(0) for k in range(n_classes)])
    pred = ((z[test][:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((pred == labels[test]).mean())


def test_shapes_classes_and_determinism() -> None:
    a = generate_scene(height=30, width=40, hsi_bands=8, n_classes=5, modalities=("hsi", "lidar", "sar", "msi"),
                       sar_bands=2, msi_bands=3, seed=1)
    b = generate_scene(height=30, width=40, hsi_bands=8, n_classes=5, modalities=("hsi", "lidar", "sar", "msi"),
                       sar_bands=2, msi_bands=3, seed=1)
    c = generate_scene(height=30, width=40, hsi_bands=8, n_classes=5, seed=2)
    assert {k: v.shape for k, v in a.data.items()} == {
        "hsi": (30, 40, 8), "lidar": (30, 40), "sar": (30, 40, 2), "msi": (30, 40, 3)}
    assert set(np.unique(a.labels)) == {0, 1, 2, 3, 4, 5}  # every class present, plus unlabelled
    assert all(np.array_equal(a.data[k], b.data[k]) for k in a.data)
    assert not np.array_equal(a.data["hsi"], c.data["hsi"])


@pytest.mark.parametrize("seed", [0, 1])
def test_modalities_are_complementary(seed: int) -> None:
    scene = generate_scene(height=40, width=50, n_classes=6, seed=seed)
    mask = scene.labels.ravel() > 0
    y = scene.labels.ravel()[mask].astype(int) - 1
    hsi = scene.data["hsi"].reshape(-1, 16)[mask]
    lidar = scene.data["lidar"].reshape(-1, 1)[mask]
    acc = {
        "hsi": _nearest_centroid_accuracy(hsi, y, 6),
        "lidar": _nearest_centroid_accuracy(lidar, y, 6),
        "both": _nearest_centroid_accuracy(np.concatenate([hsi, lidar], 1), y, 6),
    }
    assert acc["both"] > 0.9
    assert acc["both"] > acc["hsi"] + 0.15 and acc["both"] > acc["lidar"] + 0.15, acc


@pytest.mark.parametrize("naming", sorted(NAMINGS))
def test_written_layout(tmp_path, naming: str) -> None:
    scene = make_synthetic_scene(tmp_path, naming=naming, split_rasters=True, height=12, width=15, hsi_bands=4,
                                 n_classes=3, modalities=("hsi", "lidar", "sar"))
    for role in ("hsi", "lidar", "sar", "label", "train", "test"):
        file_name, key = NAMINGS[naming][role]
        assert (tmp_path / file_name).is_file()
        data, var = read_mat(tmp_path / file_name, [key], role)
        assert var.key == key
    tr, ts = scene.split_rasters["train"], scene.split_rasters["test"]
    assert not ((tr > 0) & (ts > 0)).any()
    np.testing.assert_array_equal(np.maximum(tr, ts), scene.labels)
