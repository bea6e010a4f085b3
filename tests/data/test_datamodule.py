"""MaMOLDataModule, the dataset catalogue and TaskBatchSampler (mamol.data.datamodule, mamol.data.catalogue)."""

from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function

from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import generate_scene, write_scene
from mamol.data import catalogue
from mamol.data.datamodule import MaMOLDataModule, TaskBatchSampler, worker_init
from mamol.data.remote import RemoteDataset
from mamol.errors import ConfigError
from mamol.tasks import TaskInfo
from tests.helpers import run_settings


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Two tiny converted scenes: 'synthetic' (hsi+lidar, 4 classes) and 'trento' (hsi+lidar+sar, 6 classes)."""
    tmp = tmp_path_factory.mktemp("dm")
    for name, classes, modalities, seed in (("synthetic", 4, ("hsi", "lidar"), 0),
                                             ("trento", 6, ("hsi", "lidar", "sar"), 1)):
        scene = generate_scene(height=16, width=20, hsi_bands=4, n_classes=classes, modalities=modalities,
                               sar_bands=2, seed=seed, unlabelled_fraction=0.0)
        write_scene(scene, tmp / name)
        prepare_remote(name, tmp / name, tmp / "arrow", train_per_class=5, val_per_class=2, test_per_class=4,
                       progress=False)
    return tmp / "arrow"


def _datamodule(root: Path, tmp_path: Path, **updates) -> MaMOLDataModule:
    """The datamodule of a run on ``root`` (batches of 6, tables under ``tmp_path``)."""
    s = run_settings(root, **{"datasets": ["synthetic"], "per_gpu_batchsize": 6, "batch_size": 6,
                              "missing_table_root": str(tmp_path / "tables"), **updates})
    return MaMOLDataModule(s.data, s.missing, s.hardware.per_device_batch, s.run.seed)


def test_infos_right_after_init(data_root, tmp_path) -> None:
    dm = _datamodule(data_root, tmp_path, datasets=["synthetic", "trento"])
    assert not dm.datasets and not (tmp_path / "tables").exists()  # cheap: nothing built yet
    syn, trento = dm.infos
    assert isinstance(syn, TaskInfo)
    assert (syn.name, syn.kind, syn.task_type, syn.modalities, syn.bands, syn.num_classes, syn.loss,
            syn.patch_size) == ("synthetic", "remote", "remote", ("hsi", "lidar"), {"hsi": 4, "lidar": 1}, 4, "ce", 14)
    assert trento.class_names[0] == "Apple trees" and trento.num_classes == 6
    assert trento.metadata["modalities"] == ["hsi", "lidar", "sar"]
    assert dm.pin_memory is False


def test_loader_arguments_keep_workers_and_pin_memory(data_root, tmp_path) -> None:
    s = run_settings(data_root, datasets=["synthetic"], per_gpu_batchsize=6, batch_size=6, num_workers=2,
                     missing_table_root=str(tmp_path / "tables"))
    dm = MaMOLDataModule(s.data, s.missing, s.hardware.per_device_batch, s.run.seed, pin_memory=True)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        # workers live for the whole run (not restarted every epoch); pinned memory for CUDA copies
        assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (2, True, True)
    s = run_settings(data_root, datasets=["synthetic"], per_gpu_batchsize=6, batch_size=6, num_workers=0,
                     missing_table_root=str(tmp_path / "tables"))
    loader = MaMOLDataModule(s.data, s.missing, 6, 0).train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (0, False, False)


def test_loaders_shuffle_train_only(data_root, tmp_path) -> None:
    dm = _datamodule(data_root, tmp_path)
    dm.setup("fit")
    torch.manual_seed(0)
    train = [b["index"] for b in dm.train_dataloader()]
    assert sorted(torch.cat(train).tolist()) == list(range(20))
    assert torch.cat(train).tolist() != list(range(20))
    # The order depends on (seed, epoch) only, not on the global random state: what makes resuming exact.
    torch.manual_seed(123)
    fresh = _datamodule(data_root, tmp_path)
    fresh.setup("fit")
    assert torch.equal(torch.cat([b["index"] for b in fresh.train_dataloader()]), torch.cat(train))
    loader = fresh.train_dataloader()
    loader.sampler.set_epoch(1)
    assert not torch.equal(torch.cat([b["index"] for b in loader]), torch.cat(train))
    val = dm.val_dataloader()
    batches = list(val)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(8))
    assert batches[0]["hsi"].shape == (6, 4, 14, 14) and batches[0]["task"] == "synthetic"
    assert dm.test_dataloader().dataset.split == "test"
    assert len(list((tmp_path / "tables").glob("synthetic_val_missing_both_07_*.pt"))) == 1


def test_several_datasets_never_mix(data_root, tmp_path) -> None:
    dm = _datamodule(data_root, tmp_path, datasets=["synthetic", "trento"])
    dm.setup("fit")
    tasks, sizes = [], {"synthetic": 0, "trento": 0}
    for batch in dm.train_dataloader():
        tasks.append(batch["task"])
        sizes[batch["task"]] += len(batch["label"])
        assert batch["hsi"].shape[1:] == (4, 14, 14)
    assert sizes == {"synthetic": 20, "trento": 30}
    assert set(tasks) == {"synthetic", "trento"}
    vals = dm.val_dataloader()
    assert isinstance(vals, list) and [v.dataset.name for v in vals] == ["synthetic", "trento"]


def test_task_batch_sampler() -> None:
    sampler = TaskBatchSampler([5, 7], batch_size=3, shuffle=True, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    assert all(max(b) < 5 or min(b) >= 5 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(12))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    ranks = [list(TaskBatchSampler([5, 7], 3, True, 1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert list(TaskBatchSampler([4], 3, shuffle=False, drop_last=True)) == [[0, 1, 2]]


def test_missing_arrow_files_listed(data_root, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no Arrow data for dataset 'houston2013' in data_root .*: "
                                                r"expected houston2013_train.arrow, houston2013_val.arrow, "
                                                r"houston2013_test.arrow; found synthetic_scene.arrow"):
        _datamodule(data_root, tmp_path, datasets=["houston2013"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected myscene_train.arrow, .*; found no .arrow files"):
        _datamodule(empty, tmp_path, datasets=["myscene"])
    with pytest.raises(ConfigError, match="data_root=.*absent' is not a folder"):
        _datamodule(tmp_path / "absent", tmp_path, datasets=["trento"])
    with pytest.raises(ConfigError, match="datasets=\\[\\]: name at least one dataset"):
        _datamodule(data_root, tmp_path, datasets=[])


def test_catalogue(data_root) -> None:
    assert catalogue.entry("synthetic", data_root).dataset is RemoteDataset  # not catalogued: remote by metadata
    assert catalogue.entry("Trento", data_root).dataset is RemoteDataset
    assert catalogue.canonical_names(["hateful_memes", "Houston"]) == ("hatememes", "houston2013")
    hate = catalogue.entry("hatememes", None)
    assert (hate.kind, hate.task_type, hate.arrow_stem("val")) == ("natural", "binary", "hatememes_dev")
    assert catalogue.kind_of(["synthetic", "trento"], data_root) == "remote"
    with pytest.raises(ConfigError, match="mixes remote scenes and image-text tasks"):
        catalogue.kind_of(["synthetic", "mmimdb"], data_root)
    with pytest.raises(ConfigError, match="names a dataset twice"):
        catalogue.canonical_names(["hatememes", "hateful_memes"])


def test_scene_dataloader(data_root, tmp_path) -> None:
    dm = _datamodule(data_root, tmp_path)
    loader = dm.scene_dataloader("synthetic", missing_type=1)
    assert len(loader.dataset) == 16 * 20
    batch = next(iter(loader))
    assert torch.equal(batch["hsi"], torch.ones(6, 4, 14, 14)) and batch["missing_type"].tolist() == [1] * 6


@pytest.mark.parametrize("world", [3])  # 16 val and 8 test samples: uneven over 3 ranks
def test_ranks_split_the_data_and_evaluate_each_sample_once(data_root, tmp_path, world) -> None:
    """Under DDP each evaluation sample goes to exactly one rank (no padding repeats that would skew metrics)."""
    from types import SimpleNamespace

    seen = {"train": [], "val": [], "test": []}
    for rank in range(world):
        dm = _datamodule(data_root, tmp_path)
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        dm.setup("fit")
        dm.setup("test")
        for split, loader in (("train", dm.train_dataloader()), ("val", dm.val_dataloader()),
                              ("test", dm.test_dataloader())):
            seen[split].append(torch.cat([b["index"] for b in loader]).tolist())
    n_val, n_test = len(dm.datasets["val"][0]), len(dm.datasets["test"][0])
    assert n_test % world and n_val % world, "the splits must not divide evenly, else padding would not show"
    for split, n in (("val", n_val), ("test", n_test)):
        assert sorted(sum(seen[split], [])) == list(range(n))  # every sample once, on one rank
    train = [set(indices) for indices in seen["train"]]
    assert set().union(*train) == set(range(20))  # the ranks' shuffled shares cover the training set


def test_loader_workers_outlive_the_signal_slurm_sends_before_preempting(data_root, tmp_path) -> None:
    """SIGUSR2 reaches every process of a SLURM job step: a DataLoader worker ignores it (the training process
    stops at a batch boundary and requeues), where by default it would die and fail the run."""
    s = run_settings(data_root, datasets=["synthetic"], per_gpu_batchsize=6, batch_size=6, num_workers=1,
                     missing_table_root=str(tmp_path / "tables"))
    dm = MaMOLDataModule(s.data, s.missing, s.hardware.per_device_batch, s.run.seed)
    loader = dm.val_dataloader()
    first = [b["index"] for b in loader]
    (worker,) = loader._iterator._workers  # persistent: the same worker serves the next pass
    os.kill(worker.pid, signal.SIGUSR2)
    time.sleep(0.5)
    assert worker.is_alive()
    assert torch.equal(torch.cat([b["index"] for b in loader]), torch.cat(first))


class _Draws(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(1)


def test_loader_workers_are_seeded_as_lightning_seeds_them(monkeypatch) -> None:
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    torch.manual_seed(7)
    ours = list(torch.utils.data.DataLoader(_Draws(), batch_size=2, num_workers=2,
                                            worker_init_fn=functools.partial(worker_init, rank=1)))
    torch.manual_seed(7)
    lightning = list(torch.utils.data.DataLoader(_Draws(), batch_size=2, num_workers=2,
                                                 worker_init_fn=functools.partial(pl_worker_init_function, rank=1)))
    torch.manual_seed(7)
    unseeded = list(torch.utils.data.DataLoader(_Draws(), batch_size=2, num_workers=2))
    assert all(torch.equal(a, b) for a, b in zip(ours, lightning))
    assert not all(torch.equal(a, b) for a, b in zip(ours, unseeded))
