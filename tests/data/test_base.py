"""BaseArrowDataset (mamol.data.base) with a toy image-text style subclass: nothing remote-specific."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from mamol.data.arrow import write_table
from mamol.data.base import BaseArrowDataset, DatasetEntry
from mamol.methods.mamol import MaMOLOptions
from mamol.settings import resolve
from mamol.tasks import MULTICLASS, TaskInfo
from tests.helpers import tiny_config


class ToyDataset(BaseArrowDataset):
    @classmethod
    def build_task_info(cls, entry: DatasetEntry, data, metadata: dict) -> TaskInfo:
        return TaskInfo(entry.name, "natural", MULTICLASS, ("text", "image"), {}, 2, ("a", "b"), 0, metadata)

    def process_state_keys(self) -> tuple[str, ...]:
        return ("_x",)

    def on_open(self, table: pa.Table) -> None:
        self._x = table.column("x").to_numpy()

    def get_sample(self, index: int, missing_type: int) -> dict:
        image = self.fill((3, 2, 2)) if missing_type & 2 else torch.full((3, 2, 2), float(self._x[index]))
        return {"image": image, "text": "" if missing_type & 1 else f"t{index}",
                "label": torch.tensor(int(self._x[index]) % 2)}


def toy_entry(name: str = "toy") -> DatasetEntry:
    return DatasetEntry(name=name, kind="natural", task_type=MULTICLASS, dataset=ToyDataset,
                        split_files={"train": "train", "val": "dev", "test": "test"})


@pytest.fixture()
def cfg(tmp_path) -> dict:
    for split, n in (("train", 40), ("dev", 20), ("test", 30)):
        write_table(tmp_path / f"toy_{split}.arrow", pa.table({"x": np.arange(n)}), {"kind": "natural"})
    return tiny_config(data_root=str(tmp_path), missing_table_root=str(tmp_path / "tables"), loss_names={"toy": 1},
                       missing_ratio=0.5, missing_type={"train": "both", "val": "text", "test": "image"},
                       missing_fill="zeros")


def open_toy(cfg: dict, split: str, name: str = "toy") -> ToyDataset:
    s = resolve(cfg, kind="natural", datasets=(name,), method_options=MaMOLOptions)
    return ToyDataset(toy_entry(name), s.data, s.missing, split)


def test_generic_dataset(cfg, tmp_path) -> None:
    ds = open_toy(cfg, "val")
    assert ds.path.name == "toy_dev.arrow" and len(ds) == 20
    assert len(list((tmp_path / "tables").glob("toy_dev_missing_text_05_*.pt"))) == 1
    assert int((ds.missing_table == 1).sum()) == 10
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (20, 3, 2, 2) and isinstance(batch["text"], list)
    missing_text = batch["missing_type"] == 1
    assert all((t == "") == bool(m) for t, m in zip(batch["text"], missing_text))
    train = open_toy(cfg, "train")
    assert torch.bincount(train.missing_table, minlength=3).tolist() == [20, 10, 10]
    img_missing = [i for i in range(40) if int(train.missing_table[i]) == 2]
    assert torch.equal(train[img_missing[0]]["image"], torch.zeros(3, 2, 2))


def test_overrides_and_settings(cfg) -> None:
    cfg = cfg | {"test_ratio": 1.0, "test_type": "Image"}
    assert (open_toy(cfg, "train").missing.ratio, open_toy(cfg, "train").missing.type) == (0.5, "both")
    for split in ("val", "test"):
        assert (open_toy(cfg, split).missing.ratio, open_toy(cfg, split).missing.type) == (1.0, "Image")
    assert bool((open_toy(cfg, "test").missing_table == 2).all())


def test_refuse_mismatching_table(cfg) -> None:
    open_toy(cfg, "train")
    cfg = cfg | {"both_ratio": 0.2, "missing_table_on_mismatch": "refuse"}
    with pytest.raises(ValueError, match=r"toy_train_missing_both_05_\w{8}\.pt was made with other parameters "
                                         r"\(both_ratio: stored 0\.5, requested 0\.2\)"):
        open_toy(cfg, "train")


def test_bad_split_and_missing_files(cfg, tmp_path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        open_toy(cfg, "dev")
    with pytest.raises(FileNotFoundError, match=r"expected other_train.arrow, other_dev.arrow, other_test.arrow; "
                                                r"found toy_dev.arrow, toy_test.arrow, toy_train.arrow"):
        open_toy(cfg | {"loss_names": {"other": 1}}, "train", "other")
    with pytest.raises(IndexError, match="index 20 out of range for toy_dev.arrow"):
        open_toy(cfg, "val")[20]
