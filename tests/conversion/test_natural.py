"""Raw image–text layouts -> Arrow on tiny generated downloads: the converters and datasets/make_arrow.py.

MM-IMDb (mamol.conversion.mmimdb), Food-101 (mamol.conversion.food101) and Hateful Memes
(mamol.conversion.hateful_memes), on the shared checks and streaming writes of mamol.conversion.natural.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from mamol.conversion.converters import NATURAL_CONVERTERS, converter
from mamol.conversion.food101 import prepare_food101
from mamol.conversion.hateful_memes import prepare_hateful_memes
from mamol.conversion.mmimdb import prepare_mmimdb
from mamol.conversion.natural import PrepareError
from mamol.data import catalogue
from mamol.data.arrow import open_arrow, read_metadata
from mamol.data.food101 import FOOD101_CLASSES
from mamol.data.formats import SHIPPED_DIR
from mamol.data.mmimdb import MMIMDB_GENRES
from mamol.errors import DataError
from tests.fakes.natural import make_food101_raw, make_hateful_memes_raw, make_mmimdb_raw
from tests.helpers import make_arrow_script, open_split

MMIMDB_COLUMNS = {"image": pa.binary(), "plots": pa.list_(pa.string()), "label": pa.list_(pa.int64()),
                  "genres": pa.list_(pa.string()), "image_id": pa.string(), "split": pa.string()}
FOOD_COLUMNS = {"image": pa.binary(), "text": pa.list_(pa.string()), "label": pa.int64(),
                "image_id": pa.string(), "split": pa.string()}
HATE_COLUMNS = {"image": pa.binary(), "text": pa.list_(pa.string()), "label": pa.int64(), "split": pa.string()}


def _schema(table: pa.Table) -> dict:
    return {f.name: f.type for f in table.schema}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------- MM-IMDb
@pytest.mark.parametrize("layout", ["dcp", "official"])
def test_mmimdb_round_trip(tmp_path: Path, layout: str) -> None:
    raw = make_mmimdb_raw(tmp_path / "raw", layout=layout, seed=1)
    out = prepare_mmimdb(raw.root, tmp_path / "arrow", progress=False)
    assert [p.name for p in out] == ["mmimdb_train.arrow", "mmimdb_dev.arrow", "mmimdb_test.arrow"]
    lbl_dir = raw.root / ("labels" if layout == "dcp" else "dataset")
    img_dir = raw.root / ("images" if layout == "dcp" else "dataset")
    for path, split in zip(out, ("train", "dev", "test")):
        table = open_arrow(path)
        assert _schema(table) == MMIMDB_COLUMNS
        assert table.num_rows == raw.rows[split]
        assert table.column("image_id").to_pylist() == raw.ids[split]
        assert set(table.column("split").to_pylist()) == {split}
        for row in table.to_pylist():
            record = json.loads((lbl_dir / f"{row['image_id']}.json").read_text())
            assert row["plots"] == record["plot"]
            assert row["genres"] == record["genres"]
            assert len(row["label"]) == 23
            assert [MMIMDB_GENRES[i] for i, v in enumerate(row["label"]) if v] == \
                [g for g in MMIMDB_GENRES if g in record["genres"]]
            assert row["image"] == (img_dir / f"{row['image_id']}.jpeg").read_bytes()
        meta = read_metadata(path)
        assert meta["class_names"] == list(MMIMDB_GENRES) and meta["num_classes"] == 23
        assert meta["loss"] == "bce" and meta["kind"] == "natural" and meta["source"]["layout"] == layout
        assert meta["num_rows"] == raw.rows[split] and meta["samples"] == raw.samples[split]


def test_mmimdb_genre_order_is_spec_order() -> None:
    assert MMIMDB_GENRES[:5] == ("Drama", "Comedy", "Romance", "Thriller", "Crime")
    assert MMIMDB_GENRES[-3:] == ("Sport", "Short", "Film-Noir") and len(set(MMIMDB_GENRES)) == 23


def test_mmimdb_split_file_from_datasets_dir(tmp_path: Path) -> None:
    raw = make_mmimdb_raw(tmp_path / "raw", counts=(2, 1, 1))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (raw.root / "split.json").rename(shipped / "mmimdb_split.json")
    out = prepare_mmimdb(raw.root, tmp_path / "arrow", datasets_dir=shipped, progress=False)
    assert read_metadata(out[0])["source"]["split_file"] == str(shipped / "mmimdb_split.json")
    with pytest.raises(PrepareError, match="mmimdb_split.json"):
        prepare_mmimdb(raw.root, tmp_path / "arrow2", datasets_dir=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------- Food-101
@pytest.mark.parametrize("text_source", ["json", "csv"])
def test_food101_round_trip(tmp_path: Path, text_source: str) -> None:
    raw = make_food101_raw(tmp_path / "raw", text_source=text_source, seed=2)
    out = prepare_food101(raw.root, tmp_path / "arrow", progress=False)
    assert [p.name for p in out] == ["food101_train.arrow", "food101_val.arrow", "food101_test.arrow"]
    class_idx = json.loads((raw.root / "class_idx.json").read_text())
    if text_source == "json":
        titles = json.loads((raw.root / "text.json").read_text())
    else:
        titles = {}
        for name in ("train_titles.csv", "test_titles.csv"):
            with open(raw.root / "texts" / name, newline="") as fp:
                titles.update({r[0]: r[1] for r in csv.reader(fp)})
    for path, split in zip(out, ("train", "val", "test")):
        table = open_arrow(path)
        assert _schema(table) == FOOD_COLUMNS
        assert table.column("image_id").to_pylist() == raw.ids[split]
        folder = "test" if split == "test" else "train"  # val images live under train
        for row in table.to_pylist():
            cls = row["image_id"].rsplit("_", 1)[0]
            assert row["label"] == class_idx[cls]
            assert row["text"] == [titles[row["image_id"]]] and "," in row["text"][0]
            assert row["image"] == (raw.root / "images" / folder / cls / row["image_id"]).read_bytes()
        meta = read_metadata(path)
        assert meta["num_classes"] == 101 and meta["loss"] == "ce" and meta["num_rows"] == raw.rows[split]
        names = meta["class_names"]
        assert all(names[i] == c for c, i in class_idx.items())


def test_food101_side_files_from_datasets_dir(tmp_path: Path) -> None:
    """No split.json / class_idx.json in the raw root: found in datasets/ (class_idx: the shipped file)."""
    raw = make_food101_raw(tmp_path / "raw", write_split=False, write_class_idx=False, seed=3)
    split = {s: raw.ids[s] for s in ("train", "val", "test")}
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "food101_split.json").write_text(json.dumps(split))
    (shipped / "food101_class_idx.json").write_text((SHIPPED_DIR / "food101_class_idx.json").read_text())
    out = prepare_food101(raw.root, tmp_path / "arrow", datasets_dir=shipped, progress=False)
    meta = read_metadata(out[0])
    assert meta["source"]["class_idx_file"] == str(shipped / "food101_class_idx.json")
    assert open_arrow(out[1]).num_rows == len(raw.ids["val"])


def test_shipped_food101_class_idx_is_a_permutation_of_the_101_classes() -> None:
    class_idx = json.loads((SHIPPED_DIR / "food101_class_idx.json").read_text())
    assert sorted(class_idx) == sorted(FOOD101_CLASSES) and len(class_idx) == 101
    assert sorted(class_idx.values()) == list(range(101))
    assert list(FOOD101_CLASSES) == sorted(FOOD101_CLASSES)


def test_food101_missing_title(tmp_path: Path) -> None:
    raw = make_food101_raw(tmp_path / "raw", text_source="json")
    titles = json.loads((raw.root / "text.json").read_text())
    victim = raw.ids["val"][0]
    del titles[victim]
    (raw.root / "text.json").write_text(json.dumps(titles))
    with pytest.raises(PrepareError, match=rf"'{victim}'.*no title"):
        prepare_food101(raw.root, tmp_path / "arrow", progress=False)
    out = prepare_food101(raw.root, tmp_path / "arrow", allow_missing_text=True, progress=False)
    assert open_arrow(out[1]).num_rows == len(raw.ids["val"]) - 1


# ------------------------------------------------------------------------------------------- Hateful Memes
@pytest.mark.parametrize("nested,dev_name", [(False, "dev_seen"), (True, "dev")])
def test_hateful_memes_round_trip(tmp_path: Path, nested: bool, dev_name: str) -> None:
    raw = make_hateful_memes_raw(tmp_path / "raw", nested=nested, dev_name=dev_name, seed=4)
    out = prepare_hateful_memes(raw.root, tmp_path / "arrow", progress=False)
    assert [p.name for p in out] == ["hatememes_train.arrow", "hatememes_dev.arrow", "hatememes_test.arrow"]
    base = raw.root / "data" if nested else raw.root
    for path, split, stem in zip(out, ("train", "dev", "test"), ("train", dev_name, "test_seen")):
        table = open_arrow(path)
        assert _schema(table) == HATE_COLUMNS
        rows = [json.loads(line) for line in (base / f"{stem}.jsonl").read_text().splitlines()]
        assert table.num_rows == len(rows) == raw.rows[split]
        assert table.column("label").to_pylist() == [r["label"] for r in rows]
        assert table.column("text").to_pylist() == [[r["text"]] for r in rows]
        assert table.column("image")[0].as_py() == (base / rows[0]["img"]).read_bytes()
        meta = read_metadata(path)
        assert meta["class_names"] == ["not_hateful", "hateful"]
        assert meta["source"]["files"][split].endswith(f"{stem}.jsonl")


def test_hateful_memes_unlabelled_test_is_refused(tmp_path: Path) -> None:
    raw = make_hateful_memes_raw(tmp_path / "raw", test_name="test", unlabelled_test=True)
    with pytest.raises(PrepareError, match="test_seen.jsonl"):
        prepare_hateful_memes(raw.root, tmp_path / "arrow", progress=False)
    out = prepare_hateful_memes(raw.root, tmp_path / "arrow", allow_missing_test=True, progress=False)
    assert [p.name for p in out] == ["hatememes_train.arrow", "hatememes_dev.arrow"]


def test_hateful_memes_labelled_test_jsonl_is_accepted(tmp_path: Path) -> None:
    raw = make_hateful_memes_raw(tmp_path / "raw", test_name="test", counts=(2, 1, 2))
    out = prepare_hateful_memes(raw.root, tmp_path / "arrow", progress=False)
    assert open_arrow(out[2]).num_rows == 2


def test_hateful_memes_split_of_one_class_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = make_hateful_memes_raw(tmp_path / "raw", counts=(6, 3, 3), seed=1)
    dev = raw.root / "dev_seen.jsonl"
    rows = [dict(json.loads(line), label=0) for line in dev.read_text().splitlines()]
    dev.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with caplog.at_level(logging.WARNING):
        prepare_hateful_memes(raw.root, tmp_path / "arrow", progress=False)
    assert "every meme of the dev split is not_hateful: AUROC (the selection metric) is undefined" in caplog.text
    assert caplog.text.count("AUROC") == 1  # the other splits hold both classes


# ------------------------------------------------------------------------------------------- bad input
def test_unknown_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A name the catalogue does not know is a custom remote scene: a folder of images is refused as one."""
    make_food101_raw(tmp_path / "raw", counts=(1, 1, 1))
    assert make_arrow_script().main(["--dataset", "imagenet", "--root", str(tmp_path / "raw"), "--target",
                               str(tmp_path / "out"), "-q"]) == 2
    assert "raw: no hsi file; expected one of HSI.mat" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prepare", [prepare_mmimdb, prepare_food101, prepare_hateful_memes],
                         ids=["mmimdb", "food101", "hateful_memes"])
def test_missing_root_folder(tmp_path: Path, prepare) -> None:
    with pytest.raises(PrepareError, match=re.escape(str(tmp_path / "nope")) + ".*folder not found"):
        prepare(tmp_path / "nope", tmp_path / "arrow", progress=False)


def test_missing_layout_folders(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(PrepareError, match=r"images/ \+ labels/.*dataset/"):
        prepare_mmimdb(tmp_path / "raw", tmp_path / "arrow", progress=False)
    raw = make_food101_raw(tmp_path / "food", counts=(1, 1, 1))
    shutil.rmtree(raw.root / "images" / "test")
    with pytest.raises(PrepareError, match=r"images/test: Food-101 image folder not found"):
        prepare_food101(raw.root, tmp_path / "arrow", progress=False)
    with pytest.raises(PrepareError, match="train.jsonl not found"):
        prepare_hateful_memes(tmp_path / "raw", tmp_path / "arrow", progress=False)


def test_missing_image(tmp_path: Path) -> None:
    raw = make_mmimdb_raw(tmp_path / "mm", counts=(2, 1, 1))
    victim = raw.ids["dev"][0]
    (raw.root / "images" / f"{victim}.jpeg").unlink()
    with pytest.raises(PrepareError, match=rf"id '{victim}' of split 'dev' has no image .*{victim}\.jpeg"):
        prepare_mmimdb(raw.root, tmp_path / "a", progress=False)

    raw = make_food101_raw(tmp_path / "food", counts=(2, 1, 1))
    name = raw.ids["test"][0]
    next((raw.root / "images" / "test").rglob(name)).unlink()
    with pytest.raises(PrepareError, match=rf"'{name}' of split 'test' has no image"):
        prepare_food101(raw.root, tmp_path / "b", progress=False)

    raw = make_hateful_memes_raw(tmp_path / "hm", counts=(2, 1, 1))
    (raw.root / "img" / f"{raw.ids['train'][1]}.png").unlink()
    with pytest.raises(PrepareError, match=rf"train.jsonl:2: image 'img/{raw.ids['train'][1]}.png' not found"):
        prepare_hateful_memes(raw.root, tmp_path / "c", progress=False)


def test_missing_split_entry(tmp_path: Path) -> None:
    raw = make_mmimdb_raw(tmp_path / "mm", counts=(2, 1, 1))
    split = json.loads((raw.root / "split.json").read_text())
    del split["dev"]
    (raw.root / "split.json").write_text(json.dumps(split))
    with pytest.raises(PrepareError, match=r"split.json: split key 'dev' missing"):
        prepare_mmimdb(raw.root, tmp_path / "a", progress=False)

    raw = make_mmimdb_raw(tmp_path / "mm2", counts=(2, 1, 1))
    victim = raw.ids["train"][1]
    (raw.root / "labels" / f"{victim}.json").unlink()
    with pytest.raises(PrepareError, match=rf"id '{victim}' of split 'train' has no label file"):
        prepare_mmimdb(raw.root, tmp_path / "b", progress=False)

    raw = make_food101_raw(tmp_path / "food", counts=(1, 1, 1))
    split = json.loads((raw.root / "split.json").read_text())
    split["val"].append("waffles_999.jpg")
    (raw.root / "split.json").write_text(json.dumps(split))
    with pytest.raises(PrepareError, match="'waffles_999.jpg' of split 'val' has no title"):
        prepare_food101(raw.root, tmp_path / "c", progress=False)


def test_missing_label_field(tmp_path: Path) -> None:
    raw = make_mmimdb_raw(tmp_path / "mm", layout="official", counts=(1, 1, 1))
    victim = raw.root / "dataset" / f"{raw.ids['test'][0]}.json"
    record = json.loads(victim.read_text())
    del record["genres"]
    victim.write_text(json.dumps(record))
    with pytest.raises(PrepareError, match=re.escape(f"{victim}: label field 'genres' missing")):
        prepare_mmimdb(raw.root, tmp_path / "a", progress=False)

    raw = make_hateful_memes_raw(tmp_path / "hm", counts=(2, 2, 1))
    dev = raw.root / "dev_seen.jsonl"
    lines = dev.read_text().splitlines()
    row = json.loads(lines[1])
    del row["label"]
    dev.write_text("\n".join([lines[0], json.dumps(row)]) + "\n")
    with pytest.raises(PrepareError, match=r"dev_seen.jsonl:2: field 'label' missing"):
        prepare_hateful_memes(raw.root, tmp_path / "b", progress=False)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_image_named_and_nothing_written(tmp_path: Path, how: str) -> None:
    raw = make_mmimdb_raw(tmp_path / "mm", counts=(3, 1, 1), image_size=64)
    victim = raw.root / "images" / f"{raw.ids['train'][2]}.jpeg"
    if how == "truncated":
        _truncate(victim)
    else:
        victim.write_bytes(b"this is not a jpeg at all")
    target = tmp_path / "arrow"
    with pytest.raises(PrepareError, match=re.escape(f"{victim}: corrupt image")):
        prepare_mmimdb(raw.root, target, progress=False)
    assert not list(target.glob("*")), "a failed conversion must leave no (temporary) file behind"


def test_corrupt_png(tmp_path: Path) -> None:
    raw = make_hateful_memes_raw(tmp_path / "hm", counts=(1, 1, 1))
    victim = raw.root / "img" / f"{raw.ids['test'][0]}.png"
    _truncate(victim)
    with pytest.raises(PrepareError, match=re.escape(f"{victim}: corrupt image")):
        prepare_hateful_memes(raw.root, tmp_path / "arrow", progress=False)


def test_generators_are_seeded(tmp_path: Path) -> None:
    a = make_food101_raw(tmp_path / "a", seed=7)
    b = make_food101_raw(tmp_path / "b", seed=7)
    assert a.ids == b.ids
    assert (a.root / "text.json").read_text() == (b.root / "text.json").read_text()
    name = a.ids["train"][0]
    cls = name.rsplit("_", 1)[0]
    assert (a.root / "images/train" / cls / name).read_bytes() == (b.root / "images/train" / cls / name).read_bytes()


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("dataset,prefix,splits", [
    ("mmimdb", "mmimdb", ("train", "dev", "test")),
    ("food101", "food101", ("train", "val", "test")),
    ("hateful_memes", "hatememes", ("train", "dev", "test")),
])
def test_make_arrow_cli(tmp_path: Path, capsys: pytest.CaptureFixture, dataset: str, prefix: str,
                        splits: tuple[str, ...]) -> None:
    maker = {"mmimdb": make_mmimdb_raw, "food101": make_food101_raw, "hateful_memes": make_hateful_memes_raw}
    raw = maker[dataset](tmp_path / "raw", counts=(2, 1, 1))
    main = make_arrow_script().main
    assert main(["--dataset", dataset, "--root", str(raw.root), "--target", str(tmp_path / "out"), "-q"]) == 0
    for split in splits:
        assert open_arrow(tmp_path / "out" / f"{prefix}_{split}.arrow").num_rows == raw.rows[split]
    assert main(["--dataset", dataset, "--root", str(tmp_path / "absent"), "--target", str(tmp_path / "o2"),
                 "-q"]) == 2
    assert f"{tmp_path / 'absent'}: " in capsys.readouterr().err


def test_every_image_text_dataset_has_its_converter() -> None:
    """The writing side registers one converter per image–text dataset of the catalogue, in its order; any other
    name converts as a remote scene."""
    assert list(NATURAL_CONVERTERS) == [entry.name for entry in catalogue.natural_entries()]
    assert converter("Hateful_Memes").name == "hatememes" and converter("hateful_memes").kind == "natural"
    remote = converter("my_scene")
    assert remote.kind == "remote" and remote.convert.args == ("my_scene",)


def test_make_arrow_cli_natural_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--split-file / --allow-missing-text / --allow-missing-test reach the preparers."""
    main = make_arrow_script().main
    raw = make_food101_raw(tmp_path / "food", counts=(2, 2, 1))
    split_file = tmp_path / "elsewhere" / "my_split.json"
    split_file.parent.mkdir()
    (raw.root / "split.json").rename(split_file)
    titles = json.loads((raw.root / "text.json").read_text())
    del titles[raw.ids["val"][0]]
    (raw.root / "text.json").write_text(json.dumps(titles))
    args = ["--dataset", "food101", "--root", str(raw.root), "--split-file", str(split_file), "-q"]
    assert main(args + ["--target", str(tmp_path / "a")]) == 2
    assert "no title" in capsys.readouterr().err
    assert main(args + ["--target", str(tmp_path / "b"), "--allow-missing-text"]) == 0
    assert open_arrow(tmp_path / "b" / "food101_val.arrow").num_rows == len(raw.ids["val"]) - 1
    assert read_metadata(tmp_path / "b" / "food101_train.arrow")["source"]["split_file"] == str(split_file)

    raw = make_hateful_memes_raw(tmp_path / "hm", test_name="test", unlabelled_test=True, counts=(2, 1, 1))
    args = ["--dataset", "hatememes", "--root", str(raw.root), "--target", str(tmp_path / "c"), "-q"]
    assert main(args) == 2
    assert main(args + ["--allow-missing-test"]) == 0
    assert sorted(p.name for p in (tmp_path / "c").glob("*.arrow")) == ["hatememes_dev.arrow",
                                                                      "hatememes_train.arrow"]


@pytest.mark.parametrize("dataset,flag", [("mmimdb", "--allow-missing-test"), ("hateful_memes", "--split-file"),
                                          ("mmimdb", "--class-idx-file"), ("houston2013", "--allow-missing-text")])
def test_make_arrow_cli_rejects_option_for_other_dataset(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         dataset: str, flag: str) -> None:
    value = [] if flag.startswith("--allow") else [str(tmp_path / "x.json")]
    with pytest.raises(SystemExit) as exc:
        make_arrow_script().main(["--dataset", dataset, "--root", str(tmp_path), flag, *value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and f"--dataset {dataset}" in err
    assert not list(tmp_path.glob("*.arrow"))


def test_splits_of_two_conversions_are_refused(tmp_path: Path, monkeypatch) -> None:
    """A second MM-IMDb conversion into the folder, killed after its first rename: train of the new download
    beside dev/test of the old one is refused when read, naming the files."""
    target = tmp_path / "arrow"
    prepare_mmimdb(make_mmimdb_raw(tmp_path / "raw0", seed=0).root, target, progress=False)
    real, done = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if Path(dst).parent.resolve() == target.resolve():
            if done:
                raise KeyboardInterrupt
            done.append(dst)
        return real(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            prepare_mmimdb(make_mmimdb_raw(tmp_path / "raw1", seed=1, counts=(5, 3, 4)).root, target, progress=False)
    assert sorted(p.name for p in target.iterdir()) == ["mmimdb_dev.arrow", "mmimdb_test.arrow", "mmimdb_train.arrow"]
    with pytest.raises(DataError, match=r"different conversions: .*mmimdb_train\.arrow.*mmimdb_test\.arrow"):
        open_split(target, "mmimdb", "test", missing_table_root=str(tmp_path / "tables"))
