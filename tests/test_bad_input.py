"""A seeded corpus of bad inputs, generated here (nothing committed): every case must end in ONE project error
(``mamol.errors.MamolError``) that names the file or the key, and leave no partial output.

Families: raw ``.mat`` scene files (truncated, bytes flipped in their headers, wrong shapes and dtypes, bad
labels), converted Arrow splits (truncated, a column dropped, metadata disagreeing with the data, labels out of
range), missing-table files (corrupt, made for another split size), checkpoints (truncated, flipped, made for
another task or method, not a state dict) and config values (wrong types, misspelled keys and named configs).
Corruption inside a data payload that leaves every structure intact (a flipped bit in a float) cannot be
detected without checksums; the corpus flips bytes where the formats can tell.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import config
from mamol import cli
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import write_mat
from mamol.data.arrow import open_arrow, read_metadata, write_table
from mamol.errors import MamolError
from mamol.experiments.grid import GridOptions
from mamol.experiments.launch import LaunchOptions
from mamol.experiments.maps import MapOptions
from mamol.experiments.report import ReportOptions, TableOptions
from mamol.experiments.sweep import SweepOptions
from mamol.methods import METHODS
from mamol.missing import MissingSetting, load_or_make_missing_table
from mamol.module import MaMOLModule
from mamol.observers import ObserverOptions
from mamol.plans import DryRunOptions
from mamol.settings import from_config
from tests.fakes.remote import SMALL_COUNTS, small_scene_dir
from tests.helpers import open_split, remote_info, run_settings, save_checkpoint, tiny_config, tiny_module

RNG = np.random.default_rng(20261129)

Case = Callable[[Path], str]  # builds the bad input under a folder, runs what reads it; returns what the error names


def _convert(root: Path, target: Path) -> None:
    prepare_remote("synthetic", root, target, **SMALL_COUNTS)


# ------------------------------------------------------------------------------------------- raw .mat files
def _mat_case(change: Callable[[Path], None], file: str = "HSI.mat", version: str = "5") -> Case:
    def case(tmp: Path) -> str:
        root, _ = small_scene_dir(tmp, version=version)
        change(root / file)
        _convert(root, tmp / "out")
        return file
    case.file = file  # what the error must name
    return case


def _truncate(fraction: float) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
    return change


def _flip(offset: int) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    return change


def _rewrite(key: str, array: np.ndarray | object) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        path.unlink()
        write_mat(path, key, array) if isinstance(array, np.ndarray) else path.write_bytes(array)
    return change


MAT_CASES: dict[str, Case] = {
    **{f"mat-truncated-{f}": _mat_case(_truncate(f)) for f in (0.0, 0.05, 0.3, 0.6, 0.95)},
    **{f"mat-label-truncated-{f}": _mat_case(_truncate(f), "All_label.mat") for f in (0.1, 0.9)},
    **{f"mat73-truncated-{f}": _mat_case(_truncate(f), version="7.3") for f in (0.01, 0.5, 0.9)},
    # Flipped: the endian mark, the variable's tag, array flags, dimensions, name tag and data tag. (Flips in
    # padding, in the name's letters or in the values themselves leave a readable file.)
    **{f"mat-flipped-{o}": _mat_case(_flip(o)) for o in (126, 128, 132, 140, 152, 160, 176, 184, 188)},
    "mat-1d-cube": _mat_case(_rewrite("HSI", np.arange(480, dtype=np.float32))),
    "mat-4d-cube": _mat_case(_rewrite("HSI", np.zeros((20, 24, 5, 2), np.float32))),
    "mat-other-size": _mat_case(_rewrite("HSI", np.zeros((21, 24, 5), np.float32))),
    "mat-text": _mat_case(_rewrite("HSI", np.array(["not", "a", "cube"]))),
    "mat-complex": _mat_case(_rewrite("HSI", np.zeros((20, 24, 5), np.complex64))),
    "mat-nan": _mat_case(_rewrite("HSI", np.full((20, 24, 5), np.nan, np.float32))),
    "mat-two-variables": _mat_case(lambda p: (p.unlink(), __import__("scipy.io").io.savemat(
        str(p), {"a": np.zeros((20, 24, 5)), "b": np.zeros((20, 24, 5))}))),
    "mat-empty-file": _mat_case(_rewrite("HSI", b"")),
    "mat-not-mat": _mat_case(_rewrite("HSI", b"hello, I am not a MATLAB file" * 20)),
    "label-fractional": _mat_case(_rewrite("All_label", np.full((20, 24), 1.5)), "All_label.mat"),
    "label-negative": _mat_case(_rewrite("All_label", -np.ones((20, 24), np.int16)), "All_label.mat"),
    "label-all-zero": _mat_case(_rewrite("All_label", np.zeros((20, 24), np.int16)), "All_label.mat"),
    "label-other-size": _mat_case(_rewrite("All_label", np.ones((20, 25), np.int16)), "All_label.mat"),
    "label-3d": _mat_case(_rewrite("All_label", np.ones((20, 24, 2), np.int16)), "All_label.mat"),
    "lidar-other-size": _mat_case(_rewrite("LiDAR", np.zeros((19, 24), np.float32)), "LiDAR.mat"),
}


# ------------------------------------------------------------------------------------------- Arrow splits
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad_arrow")
    root, _ = small_scene_dir(tmp)
    _convert(root, tmp / "arrow")
    return tmp / "arrow"


def _arrow_case(change: Callable[[Path], None], split: str = "val", file_split: str | None = None) -> Case:
    """Change ``<scene>_<file_split>.arrow`` of a copy of the converted scene, then open ``split`` as a run does."""
    def case(tmp: Path, source: Path) -> str:
        root = tmp / "arrow"
        shutil.copytree(source, root)
        name = f"synthetic_{file_split or split}.arrow"
        change(root / name)
        dataset = _open(root, tmp, split)
        dataset[0]
        return name
    return case


def _open(root: Path, tmp: Path, split: str):
    return open_split(root, "synthetic", split, missing_table_root=str(tmp / "tables"))


def _rewrite_table(edit: Callable[[pa.Table, dict], tuple[pa.Table, dict]]) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        table, meta = open_arrow(path), read_metadata(path)
        table, meta = edit(table.replace_schema_metadata(None), meta)
        write_table(path, table, meta)
    return change


def _labels(value: int) -> Callable[[pa.Table, dict], tuple[pa.Table, dict]]:
    def edit(table: pa.Table, meta: dict) -> tuple[pa.Table, dict]:
        labels = table.column("label").to_numpy().copy()
        labels[0] = value
        return table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels)), meta
    return edit


ARROW_CASES = {
    **{f"arrow-truncated-{s}-{f}": _arrow_case(_truncate(f), s) for s in ("train", "val", "test")
       for f in (0.0, 0.02, 0.5, 0.98)},
    # Flipped in the footer (its magic, its length, the schema): pyarrow reads a file from its end, so a flip in
    # the leading magic or in the values leaves a readable file.
    **{f"arrow-flipped-{s}-{-o}": _arrow_case(_flip(o), s) for s in ("val", "test") for o in (-1, -5, -8, -16, -33)},
    **{f"arrow-column-dropped-{c}": _arrow_case(_rewrite_table(lambda t, m, c=c: (t.drop_columns([c]), m)))
       for c in ("hsi", "lidar", "label", "row")},
    "arrow-bands-disagree": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "bands": {**m["bands"], "hsi": 6}}))),
    "arrow-rows-disagree": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "num_rows": m["num_rows"] + 1}))),
    "arrow-format-version": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "format_version": 99}))),
    "arrow-not-remote": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "kind": "natural"}))),
    "arrow-patch-size-disagrees": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "patch_size": 12}))),
    "arrow-other-conversion": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "conversion_id": "0" * 16}))),
    "arrow-one-file-without-id": _arrow_case(_rewrite_table(lambda t, m: (t, {**{k: v for k, v in m.items()
                                                                            if k != "conversion_id"},
                                                                         "split_seed": 7}))),
    "arrow-classes-disagree": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "class_names": ["x"] * 4}))),
    **{f"arrow-label-{v}": _arrow_case(_rewrite_table(_labels(v))) for v in (-1, 4, 99)},
    "arrow-train-metadata-broken": _arrow_case(_rewrite_table(lambda t, m: (t, {"kind": "remote"})), "val", "train"),
    "arrow-train-metadata-no-bands": _arrow_case(_rewrite_table(lambda t, m: (t, {k: v for k, v in m.items()
                                                                                  if k != "bands"})), "val", "train"),
    "arrow-train-metadata-classes-text": _arrow_case(_rewrite_table(lambda t, m: (t, {**m, "num_classes": "four"})),
                                                     "val", "train"),
}


def _natural_case(name: str, file: str, edit: Callable[[pa.Table], pa.Table]) -> Callable:
    def case(tmp: Path, source: Path) -> str:
        root = tmp / "arrow"
        shutil.copytree(source, root)
        path = root / file
        table, meta = open_arrow(path), read_metadata(path)
        write_table(path, edit(table.replace_schema_metadata(None)), meta)
        open_split(root, name, "val", missing_table_root=str(tmp / "tables"))[0]
        return file
    return case


def _set_column(column: str, values: list) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.set_column(t.schema.get_field_index(column), column, pa.array(values))


NATURAL_CASES = {
    "food101-label-out-of-range": _natural_case("food101", "food101_val.arrow", lambda t: _set_column(
        "label", [500] * t.num_rows)(t)),
    "hatememes-label-2": _natural_case("hatememes", "hatememes_dev.arrow", lambda t: _set_column(
        "label", [2] * t.num_rows)(t)),
    "hatememes-no-image-column": _natural_case("hatememes", "hatememes_dev.arrow", lambda t: t.drop_columns(["image"])),
    "mmimdb-short-label": _natural_case("mmimdb", "mmimdb_dev.arrow", lambda t: _set_column(
        "label", [[1, 0, 1]] * t.num_rows)(t)),
    "mmimdb-label-not-binary": _natural_case("mmimdb", "mmimdb_dev.arrow", lambda t: _set_column(
        "label", [[2] * 23] * t.num_rows)(t)),
}


# ------------------------------------------------------------------------------------------- missing tables
def _table_case(change: Callable[[Path], None]) -> Case:
    def case(tmp: Path) -> str:
        setting = MissingSetting(0.7, "both", 0.5, 0.0, 0)
        load_or_make_missing_table(tmp, "s_train", 50, ("hsi", "lidar"), setting, key="k")
        path = next(tmp.glob("s_train_missing_*.pt"))
        change(path)
        load_or_make_missing_table(tmp, "s_train", 50, ("hsi", "lidar"), setting, "refuse", key="k")
        return path.name
    return case


def _saved(obj: object) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


TABLE_CASES = {
    **{f"table-truncated-{f}": _table_case(_truncate(f)) for f in (0.0, 0.2, 0.8)},
    **{f"table-flipped-{o}": _table_case(_flip(o)) for o in (0, 1, 2, 3)},
    "table-other-length": _table_case(_saved({"table": torch.zeros(40, dtype=torch.long), "params": {}})),
    "table-not-a-table": _table_case(_saved([1, 2, 3])),
    "table-2d": _table_case(_saved({"table": torch.zeros(50, 2), "params": {}})),
    "table-bad-codes": _table_case(lambda p: torch.save({**torch.load(p), "table": torch.full((50,), 3)}, p)),
}


# ------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def module_and_checkpoint(tmp_path_factory) -> tuple[Callable[..., MaMOLModule], Path]:
    tmp = tmp_path_factory.mktemp("bad_ckpt")

    def build(_info: dict | None = None, **updates) -> MaMOLModule:
        return tiny_module(tmp, remote_info(**(_info or {})), **updates)

    return build, save_checkpoint(build(), tmp / "good.ckpt")


def _ckpt_case(change: Callable[[Path], None], **updates) -> Callable:
    def case(tmp: Path, build: Callable[..., MaMOLModule], good: Path) -> str:
        path = tmp / "bad.ckpt"
        shutil.copy(good, path)
        change(path)
        build(**updates).load_weights(path)
        return "bad.ckpt"
    return case


def _edited_ckpt(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        ckpt = torch.load(path, weights_only=True)
        edit(ckpt)
        torch.save(ckpt, path)
    return change


CKPT_CASES = {
    **{f"ckpt-truncated-{f}": _ckpt_case(_truncate(f)) for f in (0.0, 0.01, 0.5, 0.99)},
    # Flipped: the zip signature and first entry's header, the central directory and its end record.
    **{f"ckpt-flipped-{o}": _ckpt_case(_flip(o)) for o in (0, 2, 27, 29, -20, -25)},
    "ckpt-other-bands": _ckpt_case(lambda p: None, _info={"bands": (7, 1)}),
    "ckpt-other-classes": _ckpt_case(lambda p: None, _info={"classes": 9}),
    "ckpt-other-modalities": _ckpt_case(lambda p: None, _info={"modalities": ("hsi", "sar"), "bands": (12, 1)}),
    "ckpt-other-method": _ckpt_case(_edited_ckpt(lambda c: c["mamol"].update(method="lora"))),
    "ckpt-other-rank": _ckpt_case(lambda p: None, adapter_rank=4),
    "ckpt-other-top-k": _ckpt_case(lambda p: None, top_k=2),
    "ckpt-other-gate": _ckpt_case(lambda p: None, modality_gate="threshold"),
    "ckpt-value-changed": _ckpt_case(_edited_ckpt(lambda c: c["state_dict"]["model.head.weight"].add_(1.0))),
    "ckpt-list": _ckpt_case(_saved([1, 2])),
    "ckpt-no-tensors": _ckpt_case(_saved({"state_dict": {"a": 1}})),
    "ckpt-tensor-missing": _ckpt_case(_edited_ckpt(lambda c: c["state_dict"].pop("model.head.weight"))),
}


# ------------------------------------------------------------------------------------------- config values
def _ill_typed(value: object) -> object:
    """A value of another type than ``value``, as a command line could give it."""
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, (int, float)):
        return "ten"
    if isinstance(value, str):
        return 5
    if isinstance(value, (list, dict)):
        return 3.5
    return {"unexpected": "dict"}


# Keys whose every value is accepted (free text or consumed before the run) are not typed.
_UNTYPED = {"exp_name", "prompt_type", "debug", "optim_type", "data_root", "datasets", "log_dir", "missing_type"}
_DEFAULTS = config.defaults("remote")
CONFIG_CASES = {f"config-type-{k}": k for k, v in sorted(_DEFAULTS.items()) if k not in _UNTYPED and v is not None}


def _typo(key: str) -> str:
    i = int(RNG.integers(1, len(key) - 1))
    return key[:i] + key[i + 1:] if RNG.random() < 0.5 else key[:i] + key[i + 1] + key[i] + key[i + 2:]


TYPO_CASES = {f"config-typo-{k}": k for k in sorted(_DEFAULTS) if len(k) > 5}


# ------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", sorted(MAT_CASES))
def test_bad_mat_files(tmp_path, name):
    with pytest.raises(MamolError) as err:
        MAT_CASES[name](tmp_path)
    assert MAT_CASES[name].file in str(err.value), err.value
    assert not list((tmp_path / "out").glob("*"))  # no partial output (globbing an absent folder finds nothing)


@pytest.mark.parametrize("name", sorted(ARROW_CASES))
def test_bad_arrow_files(tmp_path, converted, name):
    with pytest.raises(MamolError) as err:
        ARROW_CASES[name](tmp_path, converted)
    split = "train" if name.endswith("train-metadata-broken") or "-train-" in name else \
        ("test" if "-test-" in name else "val")
    assert f"synthetic_{split}.arrow" in str(err.value), err.value


@pytest.mark.parametrize("name", sorted(NATURAL_CASES))
def test_bad_image_text_files(tmp_path, natural_root, name):
    with pytest.raises(MamolError) as err:
        NATURAL_CASES[name](tmp_path, natural_root)
    assert name.split("-")[0] in str(err.value)


@pytest.mark.parametrize("name", sorted(TABLE_CASES))
def test_bad_missing_tables(tmp_path, name):
    with pytest.raises(MamolError, match=r"s_train_missing_both_07_k\.pt"):
        TABLE_CASES[name](tmp_path)


@pytest.mark.parametrize("name", sorted(CKPT_CASES))
def test_bad_checkpoints(tmp_path, module_and_checkpoint, name):
    build, good = module_and_checkpoint
    with pytest.raises(MamolError, match=r"load_path='.*bad\.ckpt'"):
        CKPT_CASES[name](tmp_path, build, good)


COMMAND_OPTIONS = (GridOptions, SweepOptions, ReportOptions, TableOptions, MapOptions, LaunchOptions, DryRunOptions,
                   ObserverOptions)
"""Options the experiment commands type themselves (the run settings do not read their keys)."""


def _keys(options: type) -> set[str]:
    return {f.metadata.get("key", f.name) for f in dataclasses.fields(options)}


def _read(tmp_path: Path, key: str, value: object) -> None:
    """Type ``key=value`` as whatever reads that key: a command's options, a method's (with that method), else
    the run settings."""
    for options in COMMAND_OPTIONS:
        if key in _keys(options):
            from_config(options, tiny_config(**{key: value}))
            return
    method = next((name for name, cls in METHODS.items() if key in _keys(cls.Options)), "mamol")
    run_settings(tmp_path, "remote", datasets=["houston2013"], **{"method": method, key: value})


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_ill_typed_config_values(tmp_path, name):
    key = CONFIG_CASES[name]
    with pytest.raises(MamolError, match=rf"\b{key}\b"):
        _read(tmp_path, key, _ill_typed(_DEFAULTS[key]))


@pytest.mark.parametrize("name", sorted(TYPO_CASES))
def test_misspelled_keys_get_the_closest_key(name):
    key = TYPO_CASES[name]
    typo = _typo(key)
    if typo in _DEFAULTS:
        pytest.skip(f"the typo {typo!r} is itself a key")
    with pytest.raises(MamolError, match=rf"unknown config key '{typo}'; did you mean '{key}'"):
        cli.check_names({typo: 1}, [], set(_DEFAULTS), set(config.ex.named_configs))


def test_the_corpus_is_large():
    sizes = list(map(len, (MAT_CASES, ARROW_CASES, NATURAL_CASES, TABLE_CASES, CKPT_CASES, CONFIG_CASES, TYPO_CASES)))
    assert sum(sizes) >= 100 and all(sizes), sizes  # every family generates cases
