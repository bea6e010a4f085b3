"""The LightningDataModule that serves the datasets of a run (from the catalogue), and its task-aware batching."""

from __future__ import annotations

import functools
import logging
import os
import signal

import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from lightning_fabric.utilities.seed import pl_worker_init_function
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler

from mamol.data import catalogue
from mamol.data.remote import SceneWindows
from mamol.settings import DataSettings, MissingSettings
from mamol.tasks import SPLITS, TaskInfo

logger = logging.getLogger(__name__)

_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
                 None: SPLITS}


def worker_init(worker_id: int, rank: int = 0) -> None:
    """Start of a DataLoader worker: it leaves SIGUSR2 to the training process, and is seeded as Lightning seeds
    workers (``seed_everything(workers=True)``; a loader with its own init function would not get Lightning's).

    SLURM signals every process of a job step, workers included, before it pre-empts the job or at its time
    limit (submitit's ``--signal=USR2@90``); a worker killed by it would fail the run instead of letting the
    training process stop at a batch boundary and requeue (:mod:`mamol.experiments.launch`).
    """
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


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
    """Serves the datasets named in ``data.datasets``; ``infos`` is ready right after construction.

    train: shuffled; with several datasets, batches never mix tasks (:class:`TaskBatchSampler`).
    val/test: in order; one DataLoader, or a list with one per dataset when there are several.

    Under DDP the datamodule splits the data across ranks itself (the Trainer runs with
    ``use_distributed_sampler=False``): training shuffles with a seeded ``DistributedSampler``, and
    evaluation gives every sample to exactly one rank (no padding repeats), so metrics gathered across ranks
    count each sample once.
    """

    def __init__(self, data: DataSettings, missing: MissingSettings, batch_size: int, seed: int,
                 pin_memory: bool = False) -> None:
        super().__init__()
        if len(set(data.datasets)) != len(data.datasets):
            raise ValueError(f"datasets names a dataset twice: {list(data.datasets)}")
        self.data, self.missing = data, missing
        self.entries = [catalogue.entry(name, data.root) for name in data.datasets]
        self.infos: list[TaskInfo] = [e.dataset.task_info(e, data) for e in self.entries]
        self.batch_size, self.seed, self.pin_memory = batch_size, seed, pin_memory
        self.num_workers = data.num_workers
        self.datasets: dict[str, list[Dataset]] = {}

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of the splits ``stage`` needs (once each)."""
        self.open_splits(_STAGE_SPLITS.get(stage, SPLITS))

    def open_splits(self, splits: tuple[str, ...]) -> None:
        """Build the datasets of ``splits`` (once each): opens each Arrow file's metadata and makes or reads its
        missing table, so a missing or broken split is a project error now rather than when it is first read."""
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = [e.dataset(e, self.data, self.missing, split) for e in self.entries]

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
            worker_init_fn=functools.partial(worker_init, rank=self.replicas()[1]) if workers else None,
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
        if len(datasets) == 1:
            # The order of epoch e depends only on (seed, e) (Lightning calls set_epoch), with one process or
            # several: a run resumed at an epoch boundary continues exactly, and N processes x batch b/N see the
            # same samples per step as one process x batch b (rank r takes every N-th sample of the order).
            sampler = DistributedSampler(datasets[0], num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
            return self._loader(datasets[0], shuffle=False, sampler=sampler, collate_fn=datasets[0].collate)
        batches = TaskBatchSampler([len(d) for d in datasets], self.batch_size, shuffle=True, seed=self.seed,
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
        scene = SceneWindows.from_settings(self.data, self.missing.fill, catalogue.canonical_name(name),
                                           missing_type, labelled_only)
        return self._loader(scene, shuffle=False, collate_fn=scene.collate)
