"""Scene folder -> Arrow (mamol.conversion.remote and datasets/make_arrow.py), on tiny generated scenes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.io

from mamol.conversion.matfile import iter_bands, read_variable, resolve_variable
from mamol.conversion.patches import extract_patches, pad_index
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import NAMINGS, make_houston_sized, write_mat, write_scene
from mamol.data.arrow import column_views, open_arrow, read_metadata, write_table
from mamol.data.formats import METADATA_KEY
from mamol.errors import DataError
from tests.fakes.remote import SMALL_COUNTS, small_scene_dir
from tests.helpers import make_arrow_script, open_split

REPO = Path(__file__).resolve().parents[2]


def _reflect(i: int, n: int) -> int:
    """Symmetric (edge-repeating) reflection of index i into 0..n-1, written out directly."""
    while i < 0 or i >= n:
        i = -i - 1 if i < 0 else 2 * n - 1 - i
    return i


def _direct_patch(cube: np.ndarray, r: int, c: int, p: int = 14) -> np.ndarray:
    """(C, p, p) window of rows r-p//2 .. r+p-1-p//2 by direct indexing with reflection at the borders."""
    h, w, _ = cube.shape
    out = np.empty((cube.shape[2], p, p), dtype=np.float32)
    for i in range(p):
        for j in range(p):
            out[:, i, j] = cube[_reflect(r - p // 2 + i, h), _reflect(c - p // 2 + j, w)]
    return out


def _minmax(raw: np.ndarray) -> np.ndarray:
    cube = raw.reshape(*raw.shape[:2], -1).astype(np.float64)
    lo, hi = cube.min(axis=(0, 1)), cube.max(axis=(0, 1))
    return ((cube - lo) / (hi - lo)).astype(np.float32)


# ------------------------------------------------------------------------------------------- patches
@pytest.mark.parametrize("p", [14, 5, 1])
def test_patches_match_direct_slices_at_borders(p: int) -> None:
    rng = np.random.default_rng(0)
    cube = rng.random((9, 11, 3)).astype(np.float32)
    padded = cube[np.ix_(pad_index(9, p), pad_index(11, p))]  # as read_padded pads each band
    assert padded.shape == (9 + p - 1, 11 + p - 1, 3) and padded.flags.c_contiguous
    pixels = [(0, 0), (0, 10), (8, 0), (8, 10), (1, 5), (4, 4), (7, 9)]
    rows, cols = np.array([r for r, _ in pixels]), np.array([c for _, c in pixels])
    patches = extract_patches(padded, rows, cols, p)
    assert patches.shape == (len(pixels), 3, p, p)
    for k, (r, c) in enumerate(pixels):
        np.testing.assert_array_equal(patches[k], _direct_patch(cube, r, c, p))
        np.testing.assert_array_equal(patches[k][:, p // 2, p // 2], cube[r, c])  # the pixel sits at (P//2, P//2)


# ------------------------------------------------------------------------------------------- unchanged output
def _content_sha256(path: Path) -> str:
    """SHA-256 of an Arrow file's schema, metadata (less the .mat files' byte sizes), batches and values."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    meta = json.loads(reader.schema.metadata[METADATA_KEY])
    for source in meta["source"].values():
        del source["bytes"]  # depends on the scipy / h5py version that wrote the .mat file
    del meta["conversion_id"]  # a digest of the metadata above, source bytes included
    digest = hashlib.sha256(reader.schema.remove_metadata().to_string().encode())
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for i in range(reader.num_record_batches):  # batch boundaries are part of the file
        batch = reader.get_batch(i)
        digest.update(str(batch.num_rows).encode())
        for column in batch.columns:
            values = column.flatten() if pa.types.is_fixed_size_list(column.type) else column
            digest.update(values.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


# Produced by the converter before it read cubes band by band (commit bbfc6e2): small_scene_dir(tmp_path,
# version=VERSION, modalities=("hsi", "lidar", "sar")), then prepare_remote("synthetic", root, out,
# normalize=NORMALIZE, **SMALL_COUNTS), then _content_sha256 of each file. The files themselves were also
# identical byte for byte, as were those of the Houston-sized scene (benchmarks/bench_arrow.py).
REFERENCE_SHA256 = {
    ("5", "minmax"): {
        "train": "3bbff9d976767144afaa231a413a323ed148e19a01ac1ed4ac65920ab28c2f1b",
        "val": "aa983b00c3c9d3a70cc1e312b344bc411893621027cf30a68e4d451db196068b",
        "test": "ce7dfad5099fd12ccff0998ed3dc85f537afd59fd5462e3e7c7fb921409e7477",
        "scene": "c78b2cf483b68536b08dffed6f453e7b38976be6ee5868f5e464b83e5bf7b1eb",
    },
    ("5", "zscore"): {
        "train": "4a1692dd911f10056c12e2d1ff3ceef1c299906b3af590babd6e0fae31f966e6",
        "val": "49fbd47b554cd044adea89f70b461559b2f2c9353c4fc8df3fb95d5362ca6b1d",
        "test": "957ba028b3f049010ef61c4a16d497beede246a8014d618c728f02a176af2898",
        "scene": "d0cab0b2a7342b4331dff3a49b6c87b036b5944d82c07a8f19d0d5e4a66bd2b0",
    },
    ("7.3", "minmax"): {
        "train": "cd2306384a2d6cd66fa286ce67dfac16a6df5c4c5d56b7f9df0c74f8679d04f9",
        "val": "cfa28a3c854cf0e9f44d0430160b629f48aaeb3d2d177de4c6fb0e7eeff8a228",
        "test": "a06778ce4a86f3ba3a8b707c896b59b5d136c75a5931e45fd16930a0258f636c",
        "scene": "b287ee4f3fc8ac7b9aa86b9889bf69862c98f0307c9402e5d0c0452a53180476",
    },
    ("7.3", "zscore"): {
        "train": "19a7eb64d4a0a39709e8429980f780b8a079770b923c36d0e2a6f29a9d299ec3",
        "val": "4441b4beefe88165b90789aa3c81f310156a7e721e523b0b55011877ad813d7a",
        "test": "9fc145607d65836b2f7d0c01b0f4002192d26424ca5ef65cc4163116ca3cb82b",
        "scene": "d27d3398dbe6dd78d1d3eebe3c4488ff0da2e10db606b0071956b1e8b367d768",
    },
}


@pytest.mark.parametrize(("version", "normalize"), sorted(REFERENCE_SHA256))
def test_output_unchanged(tmp_path, version: str, normalize: str) -> None:
    root, _ = small_scene_dir(tmp_path, version=version, modalities=("hsi", "lidar", "sar"))
    out = prepare_remote("synthetic", root, tmp_path / "arrow", normalize=normalize, **SMALL_COUNTS)
    assert {split: _content_sha256(path) for split, path in out.items()} == REFERENCE_SHA256[version, normalize]


def test_compressed_v5_converts_like_uncompressed(tmp_path) -> None:
    _, scene = small_scene_dir(tmp_path, modalities=("hsi", "lidar", "sar"))
    root = tmp_path / "compressed"
    for role, array in [*scene.data.items(), ("label", scene.labels)]:
        file_name, key = NAMINGS["official"][role]
        root.mkdir(exist_ok=True)
        scipy.io.savemat(str(root / file_name), {key: array}, do_compression=True)
    out = prepare_remote("synthetic", root, tmp_path / "arrow", normalize="zscore", **SMALL_COUNTS)
    assert {split: _content_sha256(path) for split, path in out.items()} == REFERENCE_SHA256["5", "zscore"]


@pytest.mark.parametrize("layout", ["v5", "v5-compressed", "v7.3"])
@pytest.mark.parametrize("array", [
    np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4),
    np.arange(6, dtype=np.int16).reshape(2, 3) - 3,
    np.linspace(0, 1, 30).reshape(3, 5, 2),
])
def test_bands_are_the_slices_of_the_whole_array(tmp_path, layout: str, array: np.ndarray) -> None:
    path = tmp_path / "x.mat"
    if layout == "v7.3":
        write_mat(path, "x", array, "7.3")
    else:
        scipy.io.savemat(str(path), {"other": np.ones(3), "x": array}, do_compression=layout == "v5-compressed")
    var = resolve_variable(path, ["x"], "test array")
    whole = read_variable(var)
    bands = list(iter_bands(var))
    expected = [whole] if whole.ndim == 2 else [whole[..., c] for c in range(whole.shape[2])]
    assert len(bands) == len(expected)
    for band, want in zip(bands, expected):
        assert band.dtype == want.dtype and band.flags.writeable
        np.testing.assert_array_equal(band, want)


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("version", ["5", "7.3"])
@pytest.mark.parametrize("naming", sorted(NAMINGS))
@pytest.mark.parametrize("modalities", [("hsi", "lidar"), ("hsi", "lidar", "sar")])
def test_roundtrip_every_convention(tmp_path, naming: str, version: str, modalities: tuple[str, ...]) -> None:
    root, scene = small_scene_dir(tmp_path, naming, version, modalities=modalities)
    out = prepare_remote("synthetic", root, tmp_path / "arrow", **SMALL_COUNTS)
    assert sorted(out) == ["scene", "test", "train", "val"]
    meta = read_metadata(out["train"])
    assert meta["modalities"] == list(modalities)
    assert {m: meta["bands"][m] for m in modalities} == {m: {"hsi": 5, "lidar": 1, "sar": 4}[m] for m in modalities}
    assert {m: meta["source"][m]["key"] for m in modalities} == {m: NAMINGS[naming][m][1] for m in modalities}
    assert meta["source"]["hsi"]["mat_version"] == version and meta["source"]["hsi"]["bytes"] > 0
    assert meta["class_names"] == ["class_1", "class_2", "class_3", "class_4"]
    table = open_arrow(out["test"])
    assert table.num_rows == 40
    rows, cols = table.column("row").to_numpy(), table.column("col").to_numpy()
    labels = table.column("label").to_numpy()
    np.testing.assert_array_equal(labels, scene.labels[rows, cols].astype(np.int64) - 1)
    for m in modalities:
        (view,) = column_views(table, m, (meta["bands"][m], 14, 14))
        cube = _minmax(scene.data[m])
        for k in (0, 17, 39):
            np.testing.assert_allclose(view[k], _direct_patch(cube, rows[k], cols[k]), atol=1e-6)


def test_all_pixels_with_borders_and_scene_file(tmp_path) -> None:
    root, scene = small_scene_dir(tmp_path, unlabelled_fraction=0.0, height=12, width=10)
    out = prepare_remote("synthetic", root, tmp_path / "arrow", train_per_class=1, val_per_class=0,
                         test_per_class=-1, progress=False, patch_size=14)
    test = open_arrow(out["test"])
    rows, cols = test.column("row").to_numpy(), test.column("col").to_numpy()
    assert len(rows) == 12 * 10 - 4  # every pixel but the 4 training ones: corners included
    (view,) = column_views(test, "hsi", (5, 14, 14))
    cube = _minmax(scene.data["hsi"])
    for k in np.flatnonzero((rows == 0) | (rows == 11) | (cols == 0) | (cols == 9)):
        np.testing.assert_allclose(view[k], _direct_patch(cube, rows[k], cols[k]), atol=1e-6)
    meta = read_metadata(out["scene"])
    assert meta["split"] == "scene" and meta["padded_shape"] == [25, 23] and meta["pad"] == [7, 6]
    (padded,) = column_views(open_arrow(out["scene"]), "hsi", (23, 5))  # (Hp, Wp, C)
    np.testing.assert_allclose(padded[7:19, 7:17], cube, atol=1e-6)


# ------------------------------------------------------------------------------------------- normalisation
def test_normalisation_ranges(tmp_path) -> None:
    root, scene = small_scene_dir(tmp_path, modalities=("hsi", "lidar", "sar"))
    inner = (slice(7, 27), slice(7, 31))  # unpadded part of the (Hp, Wp) scene
    results = {}
    for method in ("minmax", "zscore", "none"):
        out = prepare_remote("synthetic", root, tmp_path / method, normalize=method, **SMALL_COUNTS)
        meta = read_metadata(out["scene"])
        assert meta["normalize"] == method
        (padded,) = column_views(open_arrow(out["scene"]), "hsi", (37, 5))
        results[method] = padded[inner].reshape(-1, 5)
        if method == "minmax":
            np.testing.assert_allclose(results[method].min(0), 0.0, atol=1e-6)
            np.testing.assert_allclose(results[method].max(0), 1.0, atol=1e-6)
            assert meta["norm_stats"]["hsi"]["min"] == pytest.approx(scene.data["hsi"].min(axis=(0, 1)).tolist())
        elif method == "zscore":
            np.testing.assert_allclose(results[method].mean(0), 0.0, atol=1e-4)
            np.testing.assert_allclose(results[method].std(0), 1.0, atol=1e-3)
        else:
            np.testing.assert_array_equal(results[method], scene.data["hsi"].reshape(-1, 5))
    with pytest.raises(ValueError, match="normalize must be one of"):
        prepare_remote("synthetic", root, tmp_path / "bad", normalize="l2", **SMALL_COUNTS)


def test_modality_subset(tmp_path) -> None:
    root, _ = small_scene_dir(tmp_path, modalities=("hsi", "lidar", "sar"))
    out = prepare_remote("synthetic", root, tmp_path / "arrow", modalities=["sar", "HSI"], **SMALL_COUNTS)
    assert read_metadata(out["train"])["modalities"] == ["hsi", "sar"]
    with pytest.raises(ValueError, match=r"modalities \['msi'\] requested but only"):
        prepare_remote("synthetic", root, tmp_path / "arrow", modalities=["msi"], **SMALL_COUNTS)


# ------------------------------------------------------------------------------------------- bad input
def test_no_known_key_and_several_variables(tmp_path) -> None:
    root, scene = small_scene_dir(tmp_path)
    scipy.io.savemat(root / "LiDAR.mat", {"a": scene.data["lidar"], "b": scene.data["lidar"]})
    with pytest.raises(ValueError, match=r"LiDAR.mat: none of the known keys .* for lidar found and several "
                                         r"candidate variables \['a', 'b'\]"):
        prepare_remote("synthetic", root, tmp_path / "out", **SMALL_COUNTS)


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_sizes_differ(tmp_path, version: str) -> None:
    root, scene = small_scene_dir(tmp_path, version=version)
    write_mat(root / "LiDAR.mat", "LiDAR", scene.data["lidar"][:, :-1], version)
    with pytest.raises(ValueError, match=r"modalities have different H×W: HSI.mat:HSI 20×24, LiDAR.mat:LiDAR 20×23"):
        prepare_remote("synthetic", root, tmp_path / "out", **SMALL_COUNTS)
    root, scene = small_scene_dir(tmp_path / "b", version=version)
    write_mat(root / "All_label.mat", "All_label", scene.labels[:-2], version)
    with pytest.raises(ValueError, match=r"label raster All_label.mat:All_label has shape 18×24, expected 20×24"):
        prepare_remote("synthetic", root, tmp_path / "out", **SMALL_COUNTS)


@pytest.mark.parametrize(
    ("dataset", "change", "match"),
    [
        ("trento", lambda y: np.where(y == 1, 7, y).astype(np.uint8),
         r"All_label.mat:All_label: labels must lie in 0..6 \(0 = unlabelled\), found \d+ pixels with values \[7\]"),
        ("synthetic", lambda y: y.astype(np.int16) - 1, r"labels must lie in 0..32767.*values \[-1\]"),
        ("synthetic", lambda y: y + np.where(y == 2, 0.5, 0.0),
         r"labels must be integers 0..K, found \d+ non-integer values \(e.g. 2.5\)"),
    ],
)
def test_bad_labels(tmp_path, dataset: str, change, match: str) -> None:
    root, scene = small_scene_dir(tmp_path)
    write_mat(root / "All_label.mat", "All_label", change(scene.labels))
    with pytest.raises(ValueError, match=match):
        prepare_remote(dataset, root, tmp_path / "out", **SMALL_COUNTS)


def test_nan_refused_or_filled(tmp_path, caplog) -> None:
    root, scene = small_scene_dir(tmp_path, version="7.3")
    hsi = scene.data["hsi"].copy()
    hsi[0, 0, 1] = np.nan
    hsi[3, 4, 2] = np.inf
    hsi[5, 5, 2] = np.nan
    write_mat(root / "HSI.mat", "HSI", hsi, "7.3")
    with pytest.raises(ValueError, match=r"HSI.mat: variable 'HSI' holds 3 non-finite values \(2 NaN, 1 Inf\) "
                                         r"in bands \[1, 2\].*--nan fill"):
        prepare_remote("synthetic", root, tmp_path / "out", **SMALL_COUNTS)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.arrow"))
    with caplog.at_level(logging.WARNING, logger="mamol.conversion.normalise"):
        out = prepare_remote("synthetic", root, tmp_path / "out", nan="fill", **SMALL_COUNTS)
    assert "variable 'HSI': filled 3 NaN/Inf values" in caplog.text
    meta = read_metadata(out["scene"])
    assert meta["nan_filled"] == {"hsi": 0, "lidar": 0} | {"hsi": 3}
    (padded,) = column_views(open_arrow(out["scene"]), "hsi", (37, 5))
    assert np.isfinite(padded).all()
    band = scene.data["hsi"][..., 1].astype(np.float64)
    rest = band.ravel()[1:]
    expected = (np.delete(band.ravel(), 0).mean() - rest.min()) / (rest.max() - rest.min())
    assert padded[7, 7, 1] == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_converts_known_folders_and_reports_errors(tmp_path, monkeypatch, capsys) -> None:
    cli = make_arrow_script()
    _, scene = small_scene_dir(tmp_path, n_classes=6)
    write_scene(scene, tmp_path / "data_trento", "official", "5")
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["-q", "--train-per-class", "3", "--val-per-class", "2", "--test-per-class", "4"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.glob("*.arrow")) == [
        "trento_scene.arrow", "trento_test.arrow", "trento_train.arrow", "trento_val.arrow"]
    assert "trento train: trento_train.arrow" in capsys.readouterr().out
    rc = cli.main(["-q", "--dataset", "augsburg"])
    assert rc == 2 and "data_augsburg does not exist" in capsys.readouterr().err
    rc = cli.main(["-q", "--dataset", "trento", "--no-scene", "--target", "out2", "--train-per-class", "1000"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: class 1 ('Apple trees')" in err
    rc = cli.main(["-q", "--dataset", "trento", "--no-scene", "--target", "out3", "--train-per-class", "2",
                   "--val-per-class", "1", "--test-per-class", "1"])
    assert rc == 0 and not (tmp_path / "out3" / "trento_scene.arrow").exists()
    assert (tmp_path / "out3" / "trento_train.arrow").is_file()


def test_cli_without_scene_folders(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert make_arrow_script().main(["-q"]) == 2
    assert "none of data_2013/, data_trento/, data_augsburg/, data_muufl/, data_houston2018/, data_berlin/ found" \
        in capsys.readouterr().err


@pytest.mark.heavy
def test_houston_sized_conversion(tmp_path) -> None:
    """A Houston-sized scene (349×1905×144) converts with the default 100/50/300 split."""
    make_houston_sized(tmp_path / "data_2013")
    out = prepare_remote("houston2013", tmp_path / "data_2013", tmp_path / "arrow", progress=False)
    meta = read_metadata(out["test"])
    assert meta["bands"] == {"hsi": 144, "lidar": 1} and meta["scene_shape"] == [349, 1905]
    assert meta["counts"]["test"] == [300] * 15 and open_arrow(out["train"]).num_rows == 1500


def test_two_conversions_into_one_folder_at_once_leave_only_complete_files(tmp_path) -> None:
    root, _ = small_scene_dir(tmp_path)
    target = tmp_path / "out"
    with ThreadPoolExecutor(2) as pool:
        written = list(pool.map(lambda seed: prepare_remote("synthetic", root, target, seed=seed, **SMALL_COUNTS),
                                (1, 2)))
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in written[0].values())  # no temp files
    for path in target.iterdir():
        table, meta = open_arrow(path), read_metadata(path)
        assert table.num_rows == meta["num_rows"] and meta["split_seed"] in (1, 2)  # one whole conversion's file


def _killed_after_renames(monkeypatch, target: Path, renames: int) -> None:
    """os.replace into ``target`` stops the process (as a kill would) after ``renames`` files were put in place."""
    real, done = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).parent.resolve() == target.resolve():
            if len(done) == renames:
                raise KeyboardInterrupt
            done.append(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_splits_of_two_conversions_are_refused_and_leftovers_cleaned(tmp_path, monkeypatch) -> None:
    """A conversion into a folder holding another one, killed after two of its four renames, leaves train/val of
    seed 1 beside test/scene of seed 0: refused at load, naming the files and their conversion ids."""
    root, _ = small_scene_dir(tmp_path)
    target = tmp_path / "arrow"
    prepare_remote("synthetic", root, target, seed=0, **SMALL_COUNTS)
    with monkeypatch.context() as patch:
        _killed_after_renames(patch, target, 2)
        with pytest.raises(KeyboardInterrupt):
            prepare_remote("synthetic", root, target, seed=1, **SMALL_COUNTS)
    seeds = {p.name: read_metadata(p)["split_seed"] for p in target.glob("*.arrow")}
    assert sorted(seeds.values()) == [0, 0, 1, 1]  # the mixed folder the kill left
    assert sorted(p.name for p in target.iterdir()) == sorted(seeds)  # and nothing else: no temporary files
    for split in ("train", "test"):
        with pytest.raises(DataError, match=r"different conversions: .*synthetic_train\.arrow.*synthetic_test\.arrow"):
            open_split(target, "synthetic", split, missing_table_root=str(tmp_path / "tables"))
    # A conversion killed by SIGKILL leaves its staging folder; the next conversion removes it.
    stale = target / f".synthetic.converting-{socket.gethostname()}-999999999-abc"
    stale.mkdir()
    (stale / "synthetic_train.arrow").write_bytes(b"partial")
    again = prepare_remote("synthetic", root, target, seed=1, **SMALL_COUNTS)
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in again.values())
    assert len({read_metadata(p)["conversion_id"] for p in again.values()}) == 1
    assert open_split(target, "synthetic", "test", missing_table_root=str(tmp_path / "tables")).metadata[
        "split_seed"] == 1


def test_files_converted_before_conversion_ids_load_with_a_warning(tmp_path, caplog) -> None:
    root, _ = small_scene_dir(tmp_path)
    target = tmp_path / "arrow"
    for path in prepare_remote("synthetic", root, target, **SMALL_COUNTS).values():
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        meta = json.loads(table.schema.metadata[METADATA_KEY])
        del meta["conversion_id"]
        write_table(path, table.replace_schema_metadata(None), meta)
    with caplog.at_level(logging.WARNING):
        open_split(target, "synthetic", "val", missing_table_root=str(tmp_path / "tables"))
    assert "no conversion id" in caplog.text
