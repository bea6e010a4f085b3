"""BaseArrowDataset (mamol.data.base) with a toy image-text style subclass: nothing remote-specific."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest
import torch

from mamol.data.arrow import write_table
from mamol.data.base import BaseArrowDataset
from mamol.data.datamodule import TaskInfo


class ToyDataset(BaseArrowDataset):
    kind: ClassVar[str] = "natural"
    split_files: ClassVar[dict[str, str]] = {"train": "train", "val": "dev", "test": "test"}

    @classmethod
    def build_task_info(cls, cfg: dict, name: str, metadata: dict) -> TaskInfo:
        return TaskInfo(name, "natural", ("text", "image"), {}, 2, ("a", "b"), "ce", 0, metadata)

    def process_state_keys(self) -> tuple[str, ...]:
        return ("_x",)

    def on_open(self, table: pa.Table) -> None:
        self._x = table.column("x").to_numpy()

    def get_sample(self, index: int, missing_type: int) -> dict:
        image = self.fill((3, 2, 2)) if missing_type & 2 else torch.full((3, 2, 2), float(self._x[index]))
        return {"image": image, "text": "" if missing_type & 1 else f"t{index}",
                "label": torch.tensor(int(self._x[index]) % 2)}


@pytest.fixture()
def cfg(tmp_path) -> dict:
    for split, n in (("train", 40), ("dev", 20), ("test", 30)):
        write_table(tmp_path / f"toy_{split}.arrow", pa.table({"x": np.arange(n)}), {"kind": "natural"})
    return {"data_root": str(tmp_path), "missing_table_root": str(tmp_path / "tables"),
            "missing_ratio": {"train": 0.5, "val": 0.5, "test": 0.5},
            "missing_type": {"train": "both", "val": "text", "test": "image"}, "both_ratio": 0.5,
            "test_ratio": None, "test_type": None, "missing_fill": "zeros"}


def test_generic_dataset(cfg, tmp_path) -> None:
    ds = ToyDataset(cfg, "toy", "val")
    assert ds.path.name == "toy_dev.arrow" and len(ds) == 20
    assert (tmp_path / "tables" / "toy_dev_missing_text_05.pt").is_file()
    assert int((ds.missing_table == 1).sum()) == 10
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (20, 3, 2, 2) and isinstance(batch["text"], list)
    missing_text = batch["missing_type"] == 1
    assert all((t == "") == bool(m) for t, m in zip(batch["text"], missing_text))
    train = ToyDataset(cfg, "toy", "train")
    assert torch.bincount(train.missing_table, minlength=3).tolist() == [20, 10, 10]
    img_missing = [i for i in range(40) if int(train.missing_table[i]) == 2]
    assert torch.equal(train[img_missing[0]]["image"], torch.zeros(3, 2, 2))


def test_overrides_and_settings(cfg) -> None:
    cfg = cfg | {"test_ratio": 1.0, "test_type": "Image"}
    assert ToyDataset.missing_setting(cfg, "train") == (0.5, "both")
    assert ToyDataset.missing_setting(cfg, "val") == (1.0, "Image")
    assert ToyDataset.missing_setting(cfg, "test") == (1.0, "Image")
    assert ToyDataset.missing_setting({}, "train") == (0.0, "none")
    assert bool((ToyDataset(cfg, "toy", "test").missing_table == 2).all())


def test_refuse_mismatching_table(cfg) -> None:
    ToyDataset(cfg, "toy", "train")
    cfg = cfg | {"both_ratio": 0.2, "missing_table_on_mismatch": "refuse"}
    with pytest.raises(ValueError, match=r"toy_train_missing_both_05\.pt was made with other parameters "
                                         r"\(both_ratio: stored 0\.5, requested 0\.2\)"):
        ToyDataset(cfg, "toy", "train")


def test_bad_split_and_missing_files(cfg, tmp_path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        ToyDataset(cfg, "toy", "dev")
    with pytest.raises(FileNotFoundError, match=r"expected other_train.arrow, other_dev.arrow, other_test.arrow; "
                                                r"found toy_dev.arrow, toy_test.arrow, toy_train.arrow"):
        ToyDataset(cfg, "other", "train")
    with pytest.raises(IndexError, match="index 20 out of range for toy_dev.arrow"):
        ToyDataset(cfg, "toy", "val")[20]
