"""Missing-type codes and missing tables (mamol.missing)."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import pytest
import torch

from mamol import missing
from mamol.errors import ConfigError
from mamol.missing import (
    MissingSetting,
    data_key,
    describe_table,
    load_or_make_missing_table,
    make_missing_table,
    missing_code,
    missing_names,
    missing_table_path,
    parse_missing_type,
    present_mask,
    present_rows,
    simulate_missing,
    valid_codes,
)

TWO = ("hsi", "lidar")
THREE = ("hsi", "lidar", "sar")
NATURAL = ("text", "image")


def setting(ratio: float, kind: str, both_ratio: float = 0.5, ratio_2: float = 0.0, seed: int = 0) -> MissingSetting:
    return MissingSetting(ratio=ratio, type=kind, both_ratio=both_ratio, ratio_2=ratio_2, seed=seed)


def test_codes_and_present_mask() -> None:
    assert missing_code(["hsi"], THREE) == 1
    assert missing_code(["lidar"], THREE) == 2
    assert missing_code(["sar"], THREE) == 4
    assert missing_code(["hsi", "sar"], THREE) == 5
    assert missing_names(6, THREE) == ("lidar", "sar")
    assert missing_code(["image"], NATURAL) == 2
    assert valid_codes(2) == (0, 1, 2)
    mask = present_mask(torch.tensor([0, 1, 2, 3, 5, 6]), 3)
    expected = torch.tensor(
        [[1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.bool
    )
    assert mask.dtype == torch.bool and torch.equal(mask, expected)


@pytest.mark.parametrize(
    ("name", "modalities", "expected"),
    [
        ("HS", TWO, "hsi"),
        ("hsi", TWO, "hsi"),
        ("LiDAR", TWO, "lidar"),
        ("Both", TWO, "both"),
        ("SAR", ("hsi", "sar"), "sar"),
        ("text", NATURAL, "text"),
        ("Image", NATURAL, "image"),
        ("both", NATURAL, "both"),
        ("HS_Lidar", THREE, "hsi_lidar"),
        ("SAR_Lidar", THREE, "sar_lidar"),
        ("HS_SAR", THREE, "hsi_sar"),
        ("HS_SAR_Lidar", THREE, "hsi_lidar_sar"),
        ("none", TWO, "none"),
    ],
)
def test_parse_missing_type(name: str, modalities: tuple[str, ...], expected: str) -> None:
    assert parse_missing_type(name, modalities) == expected


@pytest.mark.parametrize(
    ("name", "modalities", "match"),
    [
        ("sar", TWO, "'sar' is not a modality"),
        ("both", THREE, "needs exactly two modalities"),
        ("HS_Lidar", TWO, "use 'both'"),
        ("text", TWO, "not a modality"),
        ("", TWO, "non-empty"),
        ("hs_hsi", THREE, "twice"),
    ],
)
def test_parse_missing_type_rejects(name: str, modalities: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_missing_type(name, modalities)


def test_both_counts_exact() -> None:
    table = make_missing_table(1000, TWO, setting(0.7, "both", 0.5, seed=3))
    assert table.dtype == torch.int64 and table.shape == (1000,)
    assert describe_table(table, TWO) == {"complete": 300, "hsi": 350, "lidar": 350}


@pytest.mark.parametrize("n", [1, 7, 99, 1000, 1234])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.29, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("both_ratio", [0.0, 0.3, 0.5, 1.0])
def test_both_counts_floor(n: int, ratio: float, both_ratio: float) -> None:
    counts = torch.bincount(make_missing_table(n, NATURAL, setting(ratio, "both", both_ratio)), minlength=3).tolist()
    n_missing = int(np.floor(round(ratio * n, 9)))
    n_second = int(np.floor(round(both_ratio * n_missing, 9)))
    assert counts == [n - n_missing, n_missing - n_second, n_second]


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize(("kind", "code"), [("hsi", 1), ("lidar", 2), ("sar", 4)])
def test_single_counts(ratio: float, kind: str, code: int) -> None:
    table = make_missing_table(500, THREE, setting(ratio, kind, seed=1))
    assert int((table == code).sum()) == int(np.floor(round(ratio * 500, 9)))
    assert set(table.unique().tolist()) <= {0, code}


def test_pair_counts_independent_with_overlap() -> None:
    table = make_missing_table(1000, THREE, setting(0.5, "SAR_Lidar", ratio_2=0.4))
    sar_missing = (table & 4) > 0
    lidar_missing = (table & 2) > 0
    assert int(sar_missing.sum()) == 500 and int(lidar_missing.sum()) == 400
    assert int((sar_missing & lidar_missing).sum()) > 0  # independent draws overlap
    assert int((table & 1).sum()) == 0  # HSI untouched
    assert int((table == 7).sum()) == 0


def test_all_mix_uniform() -> None:
    table = make_missing_table(6000, THREE, setting(0.6, "HS_SAR_Lidar"))
    counts = torch.bincount(table, minlength=8).tolist()
    assert counts[0] == 2400 and counts[7] == 0
    assert all(400 < c < 800 for c in counts[1:7])  # ~600 each


def test_determinism_and_dedicated_rng() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    a = make_missing_table(300, TWO, setting(0.7, "both", seed=5))
    torch.manual_seed(123)
    np.random.seed(123)
    b = make_missing_table(300, TWO, setting(0.7, "both", seed=5))
    c = make_missing_table(300, TWO, setting(0.7, "both", seed=6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_ratios() -> None:
    with pytest.raises(ValueError, match="missing_ratio must be in"):
        make_missing_table(10, TWO, setting(1.5, "both"))
    with pytest.raises(ValueError, match="both_ratio must be in"):
        make_missing_table(10, TWO, setting(0.5, "both", both_ratio=-0.1))


def test_table_path() -> None:
    assert missing_table_path("/r", "houston2013_train", "both", 0.7).as_posix() == (
        "/r/houston2013_train_missing_both_07.pt"
    )
    assert missing_table_path("/r", "mmimdb_dev.arrow", "text", 1.0).name == "mmimdb_dev_missing_text_10.pt"
    assert missing_table_path("/r", "x_test", "hsi", 0.05).name == "x_test_missing_hsi_005.pt"


def test_load_or_make_reuse_regenerate_refuse(tmp_path, caplog) -> None:
    args = dict(n=100, modalities=TWO, setting=setting(0.7, "both"))
    first = load_or_make_missing_table(tmp_path, "s_train", **args)
    path = tmp_path / "s_train_missing_both_07.pt"
    assert path.is_file()
    assert not list(tmp_path.glob(".*.tmp"))
    stored = torch.load(path, weights_only=True)
    assert stored["params"]["both_ratio"] == 0.5 and stored["params"]["n"] == 100
    # Reuse: tamper with the stored table; an identical request returns the stored one, not a fresh draw.
    stored["table"][:] = 0
    torch.save(stored, path)
    assert int(load_or_make_missing_table(tmp_path, "s_train", **args).sum()) == 0
    # Other parameters: refuse names the file and each mismatching parameter.
    with pytest.raises(ValueError, match=r"s_train_missing_both_07\.pt.*both_ratio: stored 0\.5, requested 0\.3"):
        load_or_make_missing_table(tmp_path, "s_train", **{**args, "setting": setting(0.7, "both", 0.3)},
                                   on_mismatch="refuse")
    with pytest.raises(ValueError, match=r"n: stored 100, requested 90"):
        load_or_make_missing_table(tmp_path, "s_train", **{**args, "n": 90}, on_mismatch="refuse")
    # ... or regenerate with a warning.
    with caplog.at_level(logging.WARNING, logger="mamol.missing"):
        again = load_or_make_missing_table(tmp_path, "s_train", **{**args, "n": 90})
    assert "regenerating" in caplog.text and len(again) == 90
    assert torch.load(path, weights_only=True)["params"]["n"] == 90
    assert len(first) == 100


def test_irrelevant_params_do_not_mismatch(tmp_path) -> None:
    load_or_make_missing_table(tmp_path, "s_val", 50, TWO, setting(0.5, "hsi", both_ratio=0.5))
    # both_ratio does not shape an 'hsi' table: no refusal.
    table = load_or_make_missing_table(tmp_path, "s_val", 50, TWO, setting(0.5, "HS", both_ratio=0.9),
                                       on_mismatch="refuse")
    assert int((table == 1).sum()) == 25


def test_corrupt_table_refused_or_regenerated(tmp_path) -> None:
    path = tmp_path / "s_test_missing_both_07.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_or_make_missing_table(tmp_path, "s_test", 20, TWO, setting(0.7, "both"), on_mismatch="refuse")
    table = load_or_make_missing_table(tmp_path, "s_test", 20, TWO, setting(0.7, "both"))
    assert len(table) == 20
    with pytest.raises(ValueError, match="on_mismatch"):
        load_or_make_missing_table(tmp_path, "s_test", 20, TWO, setting(0.7, "both"), on_mismatch="ignore")


def test_unwritable_tables_folder_names_the_key(tmp_path, monkeypatch) -> None:
    (tmp_path / "file").write_text("")
    for root in (tmp_path / "file", tmp_path / "file" / "sub"):  # a file in the way of the folder
        with pytest.raises(ConfigError, match=rf"missing tables folder {root} cannot be written.*missing_table_root="):
            load_or_make_missing_table(root, "s_test", 20, TWO, setting(0.7, "both"))

    def read_only(path, mode):  # what a read-only folder or file system does to the table's write
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(missing, "atomic_write", read_only)
    with pytest.raises(ConfigError, match=r"folder .*tables cannot be written \(PermissionError: Permission denied"):
        load_or_make_missing_table(tmp_path / "tables", "s_test", 20, TWO, setting(0.7, "both"))


@pytest.mark.parametrize("gen", [np.random.default_rng(0), torch.Generator().manual_seed(0)])
def test_simulate_missing(gen) -> None:
    draws = {simulate_missing(3, gen, include_complete=False) for _ in range(300)}
    assert draws == {1, 2, 3, 4, 5, 6}
    draws = {simulate_missing(2, gen) for _ in range(100)}
    assert draws == {0, 1, 2}  # by default complete stays possible, as DCP's redraw


def _draw_in_a_process(root: str, log: str) -> list[int]:
    """Worker: draw a table as a DDP rank would, noting each write in ``log``."""
    from mamol import missing

    save = missing._save_table

    def noted(path, table, params):
        save(path, table, params)
        with open(log, "a") as handle:
            handle.write(f"{path}\n")

    missing._save_table = noted
    table = missing.load_or_make_missing_table(root, "s_train", 5000, TWO, setting(0.7, "both", seed=4), key="k")
    return table.tolist()


def test_processes_drawing_the_same_table_at_once_write_it_once(tmp_path) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        tables = pool.starmap(_draw_in_a_process, [(str(tmp_path), str(tmp_path / "writes.log"))] * 2)
    assert tables[0] == tables[1]
    assert (tmp_path / "writes.log").read_text().count("\n") == 1  # one process drew and wrote, the other read
    assert [p.name for p in tmp_path.glob("*.pt")] == ["s_train_missing_both_07_k.pt"]


def test_tables_of_two_conversions_never_collide(tmp_path, caplog) -> None:
    n = 60
    first = load_or_make_missing_table(tmp_path, "s_test", n, TWO, setting(0.7, "both"),
                                       key=data_key(n, {"split_seed": 0}, 1))
    with caplog.at_level(logging.WARNING, logger="mamol.missing"):
        other = load_or_make_missing_table(tmp_path, "s_test", n, TWO, setting(0.7, "both"),
                                           key=data_key(n, {"split_seed": 1}, 1))
        again = load_or_make_missing_table(tmp_path, "s_test", n, TWO, setting(0.7, "both"),
                                           key=data_key(n, {"split_seed": 0}, 1))
    assert "regenerating" not in caplog.text and len(list(tmp_path.glob("s_test_*.pt"))) == 2
    assert torch.equal(first, again) and torch.equal(first, other)  # same draw, two files: one per conversion
    assert data_key(n, {}, 10) != data_key(n, {}, 11) and data_key(n, {"a": 1}, 10) == data_key(n, {"a": 1}, 99)


def test_present_rows_are_each_modalitys_present_rows_in_order():
    g = torch.Generator().manual_seed(0)
    for present in (torch.rand(37, 3, generator=g) > 0.4, torch.zeros(5, 2, dtype=torch.bool),
                    torch.ones(4, 2, dtype=torch.bool)):
        rows = present_rows(present)
        assert len(rows) == present.shape[1]
        for m, idx in enumerate(rows):
            assert idx.dtype == torch.int64 and torch.equal(idx, present[:, m].nonzero().squeeze(1)), m
