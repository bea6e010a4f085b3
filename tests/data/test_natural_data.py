"""Image–text datasets (mamol.data.natural): samples, missing codes and fills, collate, task info."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import open_clip
import pyarrow as pa
import pytest
import torch
from PIL import Image

from mamol.conversion.food101 import prepare_food101
from mamol.conversion.hateful_memes import prepare_hateful_memes
from mamol.conversion.mmimdb import prepare_mmimdb
from mamol.data import catalogue
from mamol.data.arrow import open_arrow
from mamol.data.food101 import Food101Dataset
from mamol.data.mmimdb import MMIMDB_GENRES
from mamol.data.natural import NaturalArrowDataset, clip_image_transform, clip_tokenizer
from mamol.tasks import TaskInfo
from tests.fakes.natural import make_food101_raw, make_hateful_memes_raw, make_mmimdb_raw
from tests.helpers import open_split, run_settings


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Raw downloads of the three datasets and their Arrow files in one data_root."""
    root = tmp_path_factory.mktemp("natural")
    raws = {
        "mmimdb": make_mmimdb_raw(root / "raw_mmimdb", counts=(6, 2, 3), seed=0),
        "food101": make_food101_raw(root / "raw_food", counts=(5, 3, 2), seed=0),
        "hatememes": make_hateful_memes_raw(root / "raw_hm", counts=(10, 2, 3), seed=0),
    }
    prepare_mmimdb(raws["mmimdb"].root, root / "arrow", progress=False)
    prepare_food101(raws["food101"].root, root / "arrow", progress=False)
    prepare_hateful_memes(raws["hatememes"].root, root / "arrow", progress=False)
    return {"root": root, "data_root": root / "arrow", "raw": raws}


def _open(data: dict, tmp_path: Path, name: str, split: str, ratio: float = 0.0, kind: str = "both",
          data_root: Path | None = None, **updates) -> NaturalArrowDataset:
    """A split as a run serves it, every split at ``ratio`` / ``kind``; tables under ``tmp_path``."""
    return open_split(data_root or data["data_root"], name, split, missing_ratio=ratio, missing_type=kind,
                      missing_table_root=str(tmp_path / "tables"), vit="ViT-B/16", **updates)


def _info(data: dict, name: str, data_root: Path | None = None, **updates) -> TaskInfo:
    root = data_root or data["data_root"]
    entry = catalogue.entry(name, root)
    s = run_settings(root, f"task_finetune_{name}", datasets=[name], **updates)
    return entry.dataset.task_info(entry, s.data)


def raw_image(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        return clip_image_transform(224)(img.convert("RGB"))


# ------------------------------------------------------------------------------------------- samples
def test_mmimdb_one_sample_per_plot(data: dict, tmp_path: Path) -> None:
    raw = data["raw"]["mmimdb"]
    ds = _open(data, tmp_path, "mmimdb", "train")
    assert len(ds) == raw.samples["train"] > raw.rows["train"]
    expected = []  # (id, plot) in file order
    for mid in raw.ids["train"]:
        record = json.loads((raw.root / "labels" / f"{mid}.json").read_text())
        expected += [(mid, p, record["genres"]) for p in record["plot"]]
    for i, (_mid, plot, genres) in enumerate(expected):
        sample = ds[i]
        assert sample["text"] == plot
        assert sample["label"].dtype == torch.float32 and sample["label"].shape == (23,)
        assert {MMIMDB_GENRES[j] for j in sample["label"].nonzero().flatten().tolist()} == \
            {g for g in genres if g in MMIMDB_GENRES}
        assert sample["task"] == "mmimdb" and int(sample["index"]) == i and int(sample["missing_type"]) == 0
    assert torch.equal(ds[0]["image"], raw_image(raw.root / "images" / f"{expected[0][0]}.jpeg"))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_mmimdb_missing_table_is_per_movie(data: dict, tmp_path: Path) -> None:
    """As DCP: one table entry per Arrow row (movie); all plots of a movie share its code."""
    ds = _open(data, tmp_path, "mmimdb", "train", ratio=0.7)
    rows = data["raw"]["mmimdb"].rows["train"]
    assert ds.missing_table.shape == (rows,)
    codes: dict[int, set] = {}
    for i in range(len(ds)):
        row, _ = ds.row_of(i)
        codes.setdefault(row, set()).add(int(ds[i]["missing_type"]))
    assert all(len(c) == 1 for c in codes.values()) and len(codes) == rows
    assert [next(iter(codes[r])) for r in range(rows)] == ds.missing_table.tolist()


def test_image_transform_is_clip_eval() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8))
    out = clip_image_transform(224)(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    ref = open_clip.image_transform(224, is_train=False)  # open_clip's own eval transform (OpenAI mean/std)
    assert torch.allclose(out, ref(img))


def test_food101_and_hatememes_splits(data: dict, tmp_path: Path) -> None:
    raw = data["raw"]["food101"]
    food = _open(data, tmp_path, "food101", "val")
    assert food.path.name == "food101_val.arrow" and len(food) == raw.rows["val"]
    class_idx = json.loads((raw.root / "class_idx.json").read_text())
    name = raw.ids["val"][0]
    sample = food[0]
    assert sample["label"].dtype == torch.int64 and int(sample["label"]) == class_idx[name.rsplit("_", 1)[0]]
    assert sample["text"] == json.loads((raw.root / "text.json").read_text())[name]
    assert torch.equal(sample["image"], raw_image(raw.root / "images/train" / name.rsplit("_", 1)[0] / name))

    hate = _open(data, tmp_path, "hatememes", "val")
    assert hate.path.name == "hatememes_dev.arrow" and len(hate) == data["raw"]["hatememes"].rows["dev"]
    assert int(hate[1]["label"]) in (0, 1) and hate[1]["task"] == "hatememes"


# ------------------------------------------------------------------------------------------- missing
@pytest.mark.parametrize("kind,code", [("text", 1), ("image", 2)])
def test_substitution_per_code(data: dict, tmp_path: Path, kind: str, code: int) -> None:
    cfg = dict(ratio=1.0, kind=kind)
    full = _open(data, tmp_path / "full", "hatememes", "test")
    ds = _open(data, tmp_path, "hatememes", "test", **cfg)
    assert ds.missing_table.tolist() == [code] * len(ds)
    for i in range(len(ds)):
        sample, ref = ds[i], full[i]
        assert int(sample["missing_type"]) == code
        assert torch.equal(sample["label"], ref["label"])
        if code == 1:
            assert sample["text"] == "" and ref["text"] != ""
            assert torch.equal(sample["image"], ref["image"])
        else:
            assert torch.equal(sample["image"], torch.ones(3, 224, 224))
            assert sample["text"] == ref["text"] != ""


def test_zeros_fill(data: dict, tmp_path: Path) -> None:
    ds = _open(data, tmp_path, "food101", "test", ratio=1.0, kind="image", missing_fill="zeros")
    assert torch.equal(ds[0]["image"], torch.zeros(3, 224, 224))


def test_both_counts_and_test_overrides(data: dict, tmp_path: Path) -> None:
    ds = _open(data, tmp_path, "hatememes", "train", ratio=0.7)
    n = len(ds)  # 10: floor(0.7*10)=7 missing, floor(0.5*7)=3 image, 4 text
    assert torch.bincount(ds.missing_table, minlength=3).tolist() == [3, 4, 3]
    cfg = dict(ratio=0.0, test_ratio=1.0, test_type="image")
    assert set(_open(data, tmp_path, "hatememes", "test", **cfg).missing_table.tolist()) == {2}
    assert set(_open(data, tmp_path, "hatememes", "train", **cfg).missing_table.tolist()) == {0}
    assert n == 10


# ------------------------------------------------------------------------------------------- collate
def test_collate_shapes_and_tokens(data: dict, tmp_path: Path) -> None:
    ds = _open(data, tmp_path, "mmimdb", "test", ratio=0.7)
    samples = [ds[i] for i in range(len(ds))]
    batch = ds.collate(samples)
    b = len(samples)
    assert batch["image"].shape == (b, 3, 224, 224) and batch["image"].dtype == torch.float32
    assert batch["text_ids"].shape == (b, 77) and batch["text_ids"].dtype == torch.int64
    assert batch["label"].shape == (b, 23) and batch["missing_type"].shape == (b,)
    assert batch["task"] == "mmimdb" and batch["text"] == [s["text"] for s in samples]
    tok = open_clip.get_tokenizer("ViT-B-16")
    assert torch.equal(batch["text_ids"], tok(batch["text"]))
    sot, eot = tok.sot_token_id, tok.eot_token_id
    for ids, code in zip(batch["text_ids"], batch["missing_type"].tolist()):
        if code == 1:  # missing text: "" -> [sot, eot, 0, ...]
            assert ids[:2].tolist() == [sot, eot] and not ids[2:].any()


def test_tokenizer_truncates_long_text() -> None:
    ids = clip_tokenizer("ViT-B/16", 77)(["word " * 200, "short"])
    assert ids.shape == (2, 77) and ids[0, -1] == ids[1].max()  # truncated text still ends with eot
    tiny = clip_tokenizer("tiny", 77)(["word " * 200])
    assert torch.equal(tiny, ids[:1])


def test_dataloader_with_collate(data: dict, tmp_path: Path) -> None:
    ds = _open(data, tmp_path, "food101", "train", ratio=0.5, kind="text")
    ds[0]  # open the table in this process; pickling must not carry it
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._table is None and clone._images is None
    loader = torch.utils.data.DataLoader(clone, batch_size=4, collate_fn=clone.collate, num_workers=1)
    batches = list(loader)
    assert sum(len(b["text"]) for b in batches) == len(ds)
    assert batches[0]["text_ids"].shape == (4, 77) and batches[0]["label"].shape == (4,)


# ------------------------------------------------------------------------------------------- task info
def test_task_info(data: dict, tmp_path: Path) -> None:
    info = _info(data, "mmimdb")
    assert (info.kind, info.modalities, info.num_classes, info.loss) == ("natural", ("text", "image"), 23, "bce")
    assert info.task_type == "multilabel"
    assert info.class_names == MMIMDB_GENRES and info.bands == {} and info.patch_size == 0
    food = _info(data, "food101")
    assert (food.num_classes, food.loss, len(food.class_names)) == (101, "ce", 101)
    hate = _info(data, "hatememes")
    assert (hate.num_classes, hate.loss, hate.class_names) == (2, "ce", ("not_hateful", "hateful"))
    assert (food.task_type, hate.task_type) == ("multiclass", "binary")
    with pytest.raises(ValueError, match="food101_class_num=10 .* 101 classes"):
        _info(data, "food101", food101_class_num=10)


def test_reads_dcp_made_files_without_metadata(data: dict, tmp_path: Path) -> None:
    """Arrow files written by DCP/MMP (pandas metadata only; hateful-memes text possibly a plain string)."""
    root = tmp_path / "dcp"
    root.mkdir()
    for split in ("train", "dev", "test"):
        table = open_arrow(data["data_root"] / f"hatememes_{split}.arrow")
        text = pa.array([t[0] for t in table.column("text").to_pylist()])
        plain = pa.table({"image": table.column("image"), "text": text, "label": table.column("label"),
                          "split": table.column("split")})
        with pa.OSFile(str(root / f"hatememes_{split}.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, plain.schema) as writer:
            writer.write_table(plain)
    info = _info(data, "hatememes", data_root=root)
    assert info.num_classes == 2 and info.metadata == {}
    ours = _open(data, tmp_path / "ours", "hatememes", "test")
    theirs = _open(data, tmp_path, "hatememes", "test", data_root=root)
    assert theirs[0]["text"] == ours[0]["text"] and torch.equal(theirs[0]["image"], ours[0]["image"])
    assert Food101Dataset.default_class_names()[0] == "frozen_yogurt"  # MMP/DCP index order
