"""The split protocol (mamol.conversion.splits): disjoint seeded per-class draws and TR/TS rasters."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from mamol.conversion.remote import prepare_remote
from mamol.conversion.splits import draw_split, release_split, warn_about_sizes
from mamol.conversion.synthetic import add_split_rasters, generate_scene, write_scene
from mamol.data.arrow import open_arrow, read_metadata
from mamol.tasks import RELEASE_OVERLAP_NOTE, REMOTE, TaskInfo, data_notes
from tests.fakes.remote import SMALL_COUNTS, small_scene_dir


def test_split_disjoint_counts_and_determinism(tmp_path) -> None:
    root, scene = small_scene_dir(tmp_path)
    a = prepare_remote("synthetic", root, tmp_path / "a", seed=3, **SMALL_COUNTS)
    b = prepare_remote("synthetic", root, tmp_path / "b", seed=3, **SMALL_COUNTS)
    c = prepare_remote("synthetic", root, tmp_path / "c", seed=4, **SMALL_COUNTS)
    pixels = {}
    for split, per_class in (("train", 5), ("val", 3), ("test", 10)):
        table = open_arrow(a[split])
        pixels[split] = set(zip(table.column("row").to_pylist(), table.column("col").to_pylist()))
        assert np.bincount(table.column("label").to_numpy(), minlength=4).tolist() == [per_class] * 4
        assert read_metadata(a[split])["counts"][split] == [per_class] * 4
        assert a[split].read_bytes() == b[split].read_bytes()  # same seed: identical files
        assert a[split].read_bytes() != c[split].read_bytes()  # other seed: other draw
    assert open_arrow(a["scene"]).equals(open_arrow(c["scene"]))  # scene data does not depend on the split seed
    assert not pixels["train"] & pixels["val"] and not pixels["train"] & pixels["test"]
    assert not pixels["val"] & pixels["test"]
    assert len(pixels["train"]) == 20 and len(pixels["test"]) == 40


def test_draw_split_all_remaining() -> None:
    labels = np.array([[1, 1, 1, 2], [2, 2, 0, 1]])
    out = draw_split(labels, ["a", "b"], {"train": 1, "val": 1, "test": -1}, seed=0)
    assert sum(len(v) for v in out.values()) == 7
    assert len(out["test"]) == 3
    with pytest.raises(ValueError, match=r"class 2 \('b'\) has 3 labelled pixels, fewer than requested "
                                         r"\(train 2, val 2, test all\).*-1"):
        draw_split(labels, ["a", "b"], {"train": 2, "val": 2, "test": -1}, seed=0)
    with pytest.raises(ValueError, match="test_per_class must be an integer >= 0"):
        draw_split(labels, ["a", "b"], {"train": 1, "val": 1, "test": -2}, seed=0)


def test_fixed_split_from_rasters(tmp_path) -> None:
    scene = generate_scene(height=20, width=24, hsi_bands=5, n_classes=4, seed=0)
    add_split_rasters(scene, train_fraction=0.5)
    root = tmp_path / "fixed"
    write_scene(scene, root, "official", "5")
    out = prepare_remote("synthetic", root, tmp_path / "arrow", split="fixed", val_per_class=2, progress=False)
    tr, ts = scene.split_rasters["train"], scene.split_rasters["test"]
    test = open_arrow(out["test"])
    assert test.num_rows == int((ts > 0).sum())
    train, val = open_arrow(out["train"]), open_arrow(out["val"])
    assert np.bincount(val.column("label").to_numpy(), minlength=4).tolist() == [2] * 4
    assert train.num_rows + val.num_rows == int((tr > 0).sum())
    rows, cols = train.column("row").to_numpy(), train.column("col").to_numpy()
    assert (tr[rows, cols] > 0).all() and (ts[rows, cols] == 0).all()
    assert read_metadata(out["train"])["split_method"] == "fixed"
    # No TR/TS rasters: clear error.
    plain, _ = small_scene_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="split='fixed' needs TR/TS rasters"):
        prepare_remote("synthetic", plain, tmp_path / "x", split="fixed", progress=False)


def test_class_with_too_few_pixels(tmp_path, caplog) -> None:
    root, scene = small_scene_dir(tmp_path)
    sizes = np.bincount(scene.labels.ravel(), minlength=5)[1:]
    k = int(sizes.argmin()) + 1
    assert (np.sort(sizes)[1] > sizes.min())  # a unique smallest class
    message = (rf"class {k} \('class_{k}'\) has {sizes.min()} labelled pixels, fewer than requested "
               rf"\(train 1, val 0, test {sizes.min()}\)")
    with pytest.raises(ValueError, match=message):  # strict: a short test split is an error too
        prepare_remote("synthetic", root, tmp_path / "out", train_per_class=1, val_per_class=0,
                       test_per_class=int(sizes.min()), progress=False, strict_counts=True)
    with caplog.at_level("WARNING"):  # default: test takes what remains, and says so
        out = prepare_remote("synthetic", root, tmp_path / "out", train_per_class=1, val_per_class=0,
                             test_per_class=int(sizes.min()), progress=False)
    assert re.search(message + ": its test split takes the " + str(sizes.min() - 1), caplog.text)
    counts = read_metadata(out["test"])["counts"]["test"]
    assert counts[k - 1] == sizes.min() - 1 and all(c == sizes.min() for i, c in enumerate(counts) if i != k - 1)
    with pytest.raises(ValueError, match=rf"class {k} .* fewer than requested \(train {sizes.min()}, val 1"):
        prepare_remote("synthetic", root, tmp_path / "out", train_per_class=int(sizes.min()), val_per_class=1,
                       test_per_class=1, progress=False)  # train + val never shrink
    out = prepare_remote("synthetic", root, tmp_path / "out", train_per_class=5, val_per_class=5,
                         test_per_class=-1, progress=False)
    assert read_metadata(out["test"])["counts"]["test"] == (sizes - 10).tolist()


def test_fixed_split_keeps_half_of_each_class_for_training_and_says_so(tmp_path, caplog) -> None:
    scene = generate_scene(height=20, width=24, hsi_bands=5, n_classes=4, seed=0)
    add_split_rasters(scene, train_fraction=0.5)
    root = tmp_path / "fixed"
    write_scene(scene, root, "official", "5")
    tr = scene.split_rasters["train"]
    per_class = np.bincount(tr.ravel(), minlength=5)[1:]
    ask = int(per_class.max())  # more than half of every class
    with caplog.at_level(logging.INFO, logger="mamol.conversion.splits"):
        out = prepare_remote("synthetic", root, tmp_path / "arrow", split="fixed", val_per_class=ask, progress=False)
    val = np.bincount(open_arrow(out["val"]).column("label").to_numpy(), minlength=4)
    train = np.bincount(open_arrow(out["train"]).column("label").to_numpy(), minlength=4)
    assert val.tolist() == (per_class // 2).tolist() and (train >= val).all()
    assert f"class 1 ('class_1'): {per_class[0]} TR pixels -> {per_class[0] - per_class[0] // 2} train" in caplog.text
    assert "validation takes at most half of a class's TR pixels" in caplog.text
    meta = read_metadata(out["train"])
    assert meta["per_class"] == {"val": ask}  # only what was used; train/test come from the rasters
    assert meta["counts"]["val"] == val.tolist()


def test_split_size_warnings() -> None:
    names = ["a", "b"]
    assert warn_about_sizes({"train": [50, 50], "val": [10, 10], "test": [30, 30]}, names) == []
    empty = warn_about_sizes({"train": [50, 50], "val": [0, 0], "test": [30, 30]}, names)
    assert len(empty) == 1 and "validation split is empty" in empty[0] and "--val-per-class 25" in empty[0]
    tiny = warn_about_sizes({"train": [50, 50], "val": [1, 2], "test": [30, 30]}, names)
    assert len(tiny) == 1 and "validation split is tiny (3 samples for 2 classes)" in tiny[0]
    small = warn_about_sizes({"train": [50, 50], "val": [20, 20], "test": [10, 5]}, names)
    assert len(small) == 1 and "test split (15 samples) is smaller than validation (40)" in small[0]


def test_empty_validation_is_warned_by_the_converter(tmp_path, caplog) -> None:
    root, _ = small_scene_dir(tmp_path)
    with caplog.at_level(logging.WARNING):
        prepare_remote("synthetic", root, tmp_path / "out", **{**SMALL_COUNTS, "val_per_class": 0})
    assert caplog.text.count("validation split is empty") == 1


def test_release_split_draws_train_and_test_independently_and_counts_the_overlap(caplog) -> None:
    """--split release: per class, train and test are independent seeded draws from all labelled pixels (capped
    at the class size); validation avoids train; the overlap is counted per class, logged and returned."""
    labels = np.zeros((30, 40), np.uint8)
    labels[:10] = 1  # 400 pixels
    labels[10:12] = 2  # 80 pixels: smaller than both draws
    with caplog.at_level(logging.WARNING, logger="mamol.conversion.splits"):
        pixels, overlap = release_split(labels, ["a", "b"], {"train": 100, "val": 20, "test": 300}, seed=5)
    flat = labels.ravel()
    for split, want in (("train", (100, 80)), ("test", (300, 80))):
        assert np.bincount(flat[pixels[split]], minlength=3)[1:].tolist() == list(want)
        assert len(np.unique(pixels[split])) == len(pixels[split])
    assert overlap == [int(np.intersect1d(pixels["train"][flat[pixels["train"]] == k],
                                          pixels["test"][flat[pixels["test"]] == k]).size) for k in (1, 2)]
    assert overlap[1] == 80 and 0 < overlap[0] < 100  # all of class b is in both; a overlaps by chance (~75)
    assert not np.intersect1d(pixels["val"], pixels["train"]).size
    assert np.bincount(flat[pixels["val"]], minlength=3)[1:].tolist() == [20, 0]  # b has nothing left
    assert f"{sum(overlap)} of 380 test pixels are also training pixels" in caplog.text
    assert "fewer labelled pixels than a draw give all of them: 'b' (80)" in caplog.text
    again, _ = release_split(labels, ["a", "b"], {"train": 100, "val": 20, "test": 300}, seed=5)
    assert all(np.array_equal(again[s], pixels[s]) for s in pixels)


def test_release_split_is_marked_in_the_metadata_and_the_results(tmp_path) -> None:
    root, _ = small_scene_dir(tmp_path)
    out = prepare_remote("synthetic", root, tmp_path / "arrow", split="release", train_per_class=20,
                         val_per_class=5, test_per_class=40, progress=False)
    meta = read_metadata(out["test"])
    train, test = (open_arrow(out[s]).select(["row", "col"]).to_pylist() for s in ("train", "test"))
    shared = {tuple(p.values()) for p in train} & {tuple(p.values()) for p in test}
    assert meta["split_method"] == "release" and meta["overlap"] == len(shared) > 0
    assert sum(meta["overlap_per_class"]) == meta["overlap"]
    info = TaskInfo("synthetic", "remote", REMOTE, ("hsi", "lidar"), {}, 4, ("a", "b", "c", "d"), 14, meta)
    (note,) = data_notes([info])
    assert note == (f"synthetic: {RELEASE_OVERLAP_NOTE}: {meta['overlap']} of {sum(meta['counts']['test'])} test "
                    f"pixels are also training pixels")
    assert data_notes([TaskInfo("s", "remote", REMOTE, ("hsi",), {}, 2, ("a", "b"), 14,
                                read_metadata(prepare_remote("synthetic", root, tmp_path / "r", **SMALL_COUNTS)
                                              ["train"]))]) == []
