"""TaskInfo, the registry of dataset classes, and the LightningDataModule that serves them."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskInfo:
    """What a model and the metrics need to know about one dataset (read from Arrow metadata)."""

    name: str  # "houston2013", "synthetic", "mmimdb", ...
    kind: str  # "remote" | "natural"
    modalities: tuple[str, ...]  # code order of the missing-type bitmask; natural: ("text", "image")
    bands: dict[str, int]  # remote: channels per modality; natural: {}
    num_classes: int  # head outputs
    class_names: tuple[str, ...]
    loss: str  # "ce" | "bce"
    patch_size: int  # remote patch side (14); natural 0
    metadata: dict = field(default_factory=dict, compare=False)  # everything stored with the Arrow data


REMOTE_DATASET = "mamol.data.remote:RemoteDataset"
REGISTRY: dict[str, str] = {
    "houston2013": REMOTE_DATASET,
    "trento": REMOTE_DATASET,
    "augsburg": REMOTE_DATASET,
    "mmimdb": "mamol.data.natural:MMIMDbDataset",
    "food101": "mamol.data.natural:Food101Dataset",
    "hatememes": "mamol.data.natural:HatefulMemesDataset",
}
"""Dataset name -> "module:Class" (imported lazily). Other names: remote if ``<name>_train.arrow`` is remote."""

ALIASES: dict[str, str] = {"hateful_memes": "hatememes", "houston": "houston2013"}


def canonical_name(name: str) -> str:
    """Registry name for a user-facing dataset name (``hateful_memes`` -> ``hatememes``)."""
    low = name.strip().lower()
    return ALIASES.get(low, low)


def _import(target: str) -> type:
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def dataset_class(name: str, data_root: str | Path) -> type:
    """The dataset class serving ``name``: from :data:`REGISTRY`, else remote when its train file is remote.

    Raises FileNotFoundError listing the expected files when ``data_root`` holds no Arrow data for ``name``.
    """
    name = canonical_name(name)
    if name in REGISTRY:
        return _import(REGISTRY[name])
    from mamol.data.arrow import read_metadata

    train = Path(data_root) / f"{name}_train.arrow"
    if not train.is_file():
        from mamol.data.base import missing_arrow_error

        raise missing_arrow_error(Path(data_root), name, [f"{name}_{s}.arrow" for s in ("train", "val", "test")])
    kind = read_metadata(train).get("kind")
    if kind != "remote":
        raise ValueError(
            f"dataset {name!r} is not registered and {train} is not a remote scene file "
            f"(metadata kind={kind!r}, expected 'remote'); known datasets: {sorted(REGISTRY)}"
        )
    return _import(REMOTE_DATASET)


SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
                 None: SPLITS}


class TaskBatchSampler(Sampler[list[int]]):
    """Batches of indices into a ConcatDataset of several tasks; every batch comes from one task.

    Within each task the order is shuffled (seeded by ``seed`` and the epoch, see :meth:`set_epoch`), then
    the batches of all tasks are shuffled together. Under torch.distributed each rank takes every
    ``world_size``-th batch (the batch list is padded by repeating its start so all ranks get as many).
    """

    def __init__(self, sizes: list[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_replicas: int | None = None, rank: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sizes, self.batch_size, self.shuffle = list(sizes), batch_size, shuffle
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle differently for each epoch."""
        self.epoch = epoch

    def _replicas(self) -> tuple[int, int]:
        if self.num_replicas is not None:
            return self.num_replicas, self.rank or 0
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches: list[list[int]] = []
        start = 0
        for size in self.sizes:
            order = rng.permutation(size) if self.shuffle else np.arange(size)
            for b in range(0, size, self.batch_size):
                chunk = order[b:b + self.batch_size]
                if self.drop_last and len(chunk) < self.batch_size:
                    continue
                batches.append((chunk + start).tolist())
            start += size
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        batches = self._batches()
        world, rank = self._replicas()
        if world > 1 and batches:
            total = -(-len(batches) // world) * world
            batches = (batches * (total // len(batches) + 1))[:total]
            batches = batches[rank::world]
        return iter(batches)

    def __len__(self) -> int:
        world, _ = self._replicas()
        n = sum((s // self.batch_size) if self.drop_last else -(-s // self.batch_size) for s in self.sizes)
        return -(-n // world)


class TaskCollate:
    """Collate a one-task batch with that task's dataset collate (picklable for worker processes)."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self.collates = {ds.name: ds.collate for ds in datasets}

    def __call__(self, samples: list[dict]) -> dict:
        return self.collates[samples[0]["task"]](samples)


class MaMOLDataModule(pl.LightningDataModule):
    """Serves the datasets named in ``cfg["datasets"]``; ``infos`` is ready right after construction.

    train: shuffled; with several datasets, batches never mix tasks (:class:`TaskBatchSampler`).
    val/test: in order; one DataLoader, or a list with one per dataset when there are several.

    Under DDP the datamodule splits the data across ranks itself (the Trainer runs with
    ``use_distributed_sampler=False``): training shuffles with a seeded ``DistributedSampler``, and
    evaluation gives every sample to exactly one rank (no padding repeats), so metrics gathered across ranks
    count each sample once.
    """

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.cfg = cfg
        names = cfg.get("datasets")
        names = [names] if isinstance(names, str) else list(names or [])
        if not names:
            raise ValueError("cfg['datasets'] is empty; name at least one dataset, e.g. ['houston2013']")
        if cfg.get("data_root") is None:
            raise ValueError("cfg['data_root'] is None; set data_root to the folder holding the Arrow files")
        self.names = [canonical_name(n) for n in names]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"cfg['datasets'] names a dataset twice: {names}")
        self.data_root = Path(cfg["data_root"])
        self.classes = {n: dataset_class(n, self.data_root) for n in self.names}
        self.infos: list[TaskInfo] = [self.classes[n].task_info(cfg, n) for n in self.names]
        self.batch_size = int(cfg.get("per_gpu_batchsize") or cfg.get("batch_size") or 1)
        self.num_workers = int(cfg.get("num_workers", 0))
        self.pin_memory = torch.cuda.is_available() and cfg.get("num_gpus", 1) != 0
        self.datasets: dict[str, list[Dataset]] = {}

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of the splits ``stage`` needs (once each)."""
        for split in _STAGE_SPLITS.get(stage, SPLITS):
            if split not in self.datasets:
                self.datasets[split] = [self.classes[n](self.cfg, n, split) for n in self.names]

    def _datasets(self, split: str) -> list[Dataset]:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self.datasets[split]

    def _loader(self, dataset: Dataset, shuffle: bool, **kwargs) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            **({"batch_size": self.batch_size, "shuffle": shuffle} | kwargs if "batch_sampler" not in kwargs
               else kwargs),
        )

    def replicas(self) -> tuple[int, int]:
        """(world size, global rank) of the attached Trainer; (1, 0) without one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def train_dataloader(self) -> DataLoader:
        datasets = self._datasets("train")
        world, rank = self.replicas()
        seed = int(self.cfg.get("seed", 0))
        if len(datasets) == 1:
            if world == 1:
                return self._loader(datasets[0], shuffle=True, collate_fn=datasets[0].collate)
            sampler = DistributedSampler(datasets[0], num_replicas=world, rank=rank, shuffle=True, seed=seed)
            return self._loader(datasets[0], shuffle=False, sampler=sampler, collate_fn=datasets[0].collate)
        batches = TaskBatchSampler([len(d) for d in datasets], self.batch_size, shuffle=True, seed=seed,
                                   num_replicas=world, rank=rank)
        return self._loader(ConcatDataset(datasets), shuffle=False, batch_sampler=batches,
                            collate_fn=TaskCollate(datasets))

    def _eval_loaders(self, split: str) -> DataLoader | list[DataLoader]:
        world, rank = self.replicas()
        loaders = []
        for d in self._datasets(split):
            sampler = None if world == 1 else UnrepeatedDistributedSampler(d, num_replicas=world, rank=rank,
                                                                           shuffle=False)
            loaders.append(self._loader(d, shuffle=False, sampler=sampler, collate_fn=d.collate))
        return loaders[0] if len(loaders) == 1 else loaders

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("test")

    def scene_dataloader(self, name: str, missing_type: int = 0, labelled_only: bool = False) -> DataLoader:
        """Every pixel of remote scene ``name`` (row-major) for full-scene maps, windows cut on the fly."""
        from mamol.data.remote import SceneWindows

        scene = SceneWindows.from_config(self.cfg, canonical_name(name), missing_type, labelled_only)
        return self._loader(scene, shuffle=False, collate_fn=scene.collate)
