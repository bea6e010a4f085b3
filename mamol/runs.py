"""Where a run's records go: its training loggers, new run folders, its config record, and the facts a report needs.

* Every run or command folder receives ``config.json``: the config as given, the resolved settings and the
  library versions (:func:`write_run_record`, the one writer of that record).

* ``logger="csv"`` writes Lightning's ``metrics.csv`` into the run folder (as always; a resumed run keeps the rows of
  the state it resumes from and appends to them, :class:`HistoryCSVLogger`); ``logger="tensorboard"``
  also writes TensorBoard event files into the same folder (Lightning's ``TensorBoardLogger``), so
  ``tensorboard --logdir <log_dir>`` shows the curves while a run trains.
* Commands that evaluate rather than train (``evaluate_grid``, ``predict_map``, ``report``) get a run folder
  numbered like a training run's: ``<log_dir>/<exp_name>/version_<n>/`` (:func:`new_run_folder`).
* ``train/loss`` and the learning rate are written from the first optimiser step (:class:`LogFromFirstStep`);
  a run whose output is not a terminal prints one plain line per epoch instead of a progress bar
  (:class:`EpochLines`).
* :class:`RunClock` and :func:`run_facts` give what ``test_results.json`` records for reports: trainable
  parameters, wall and CPU time of fitting and testing (``wall_time_s``, ``cpu_time_s``), each task's modalities.
* A run's identity is its whole config except :data:`RESULT_NEUTRAL_KEYS` (:func:`identity`): a sweep refuses to
  continue under another one, and a report never pools runs of different identities into one cell.
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import resource
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import nn

from mamol import __version__
from mamol.files import atomic_write, storage_errors, write_json
from mamol.models.method import trainable_parameters
from mamol.settings import RunSettings
from mamol.tasks import TaskInfo, data_notes


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    out = {"python": platform.python_version()}
    for name in ("torch", "open_clip_torch", "pytorch-lightning", "torchmetrics", "pyarrow", "numpy", "mamol"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "mamol":
                out[name] = __version__
    return out


RESULT_NEUTRAL_KEYS = frozenset({
    "exp_name", "log_dir", "debug", "logger",  # names and where files go, tracebacks, curve format
    "num_workers", "num_gpus", "num_processes", "num_nodes", "per_gpu_batchsize",  # hardware layout: the same
    # effective batch and sample order on any layout (reliability.md: 2 x 16 reaches 1 x 32's weights)
    "missing_table_root",  # where missing tables are stored; a table carries the parameters it was drawn with
    "skip_missing", "sparse_experts",  # exact speed-ups
    "report_dirs", "report_reference", "map_pixels", "map_missing",  # other commands' inputs
    "report_settings", "report_label",  # which tables a report shows and how it labels them
    "sweep_new", "allow_option_change",  # what to do on a mismatch; the values compared are in the config
    # where and how a sweep's runs are launched (a run's numbers do not depend on it; cpu_threads: tests/experiments)
    "launcher", "max_parallel", "cpu_threads", "slurm_partition", "slurm_account", "slurm_time", "slurm_cpus_per_run",
    "slurm_mem_gb", "slurm_array_parallelism", "slurm_extra", "sweep_wait",
    "dry_run", "plan_step_seconds", "plan_measure_batch",  # sweep dry runs
    "observer_resources",  # what Sacred's observers store
})
"""Config keys that do not change a run's results: left out of its identity (sweeps, reports)."""


def identity(config: Mapping[str, Any], leave_out: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The config keys that make a run's results, as JSON values (tuples as lists, paths as text), sorted;
    without :data:`RESULT_NEUTRAL_KEYS` and ``leave_out``."""
    kept = {k: v for k, v in config.items() if k not in RESULT_NEUTRAL_KEYS and k not in leave_out}
    return json.loads(json.dumps(kept, default=str, sort_keys=True))


def identity_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs (absent: ``<unset>``), sorted by key."""
    unset = "<unset>"
    return [f"{k}: {old.get(k, unset)!r} -> {new.get(k, unset)!r}" for k in sorted(set(old) | set(new))
            if old.get(k, unset) != new.get(k, unset)]


def run_record(s: RunSettings) -> dict[str, Any]:
    """What a run folder records of how it was made: the config as given, the resolved settings, versions."""
    return {"config": s.config, "settings": s.to_dict(), "versions": versions()}


def write_command_record(folder: Path, command: str, config: Mapping[str, Any]) -> Path:
    """``folder/config.json`` of a command's own folder (a report's, a sweep's): the command, its config as given
    and the library versions, like a run folder's record (which also has the resolved settings)."""
    return write_json(Path(folder) / "config.json", {"command": command, "config": dict(config),
                                                     "versions": versions()})


def write_run_record(folder: Path, s: RunSettings, name: str = "config.json") -> Path:
    """Write :func:`run_record` atomically as ``folder/name``; returns its path."""
    path = Path(folder) / name
    write_json(path, run_record(s))
    return path


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer that starts from the rows of an existing ``metrics.csv`` logged before step
    ``keep_before`` instead of deleting the file."""

    def __init__(self, log_dir: str, keep_before: int) -> None:
        self.keep_before = keep_before
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # called by the base __init__, in place of deleting the file
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("step") and float(r["step"]) < self.keep_before]
        # Only the columns the kept rows use: a key logged only in the dropped rows is not in the history.
        self.metrics_keys = sorted({k for r in rows for k, v in r.items() if k is not None and v != ""})
        if not rows:
            path.unlink()
            return
        with atomic_write(path, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


class HistoryCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing ``metrics.csv``; resuming (``keep_before`` set), it keeps the rows the
    resumed state had logged (step below the checkpoint's logging step) and appends to them, so the file holds
    the whole history once: the rows of an epoch cut short and redone after the resume appear only as redone.
    """

    def __init__(self, *args: Any, keep_before: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_before = keep_before

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = (ExperimentWriter(self.log_dir) if self.keep_before is None
                                else _HistoryWriter(self.log_dir, self.keep_before))
        return self._experiment


def training_loggers(kind: str, csv_logger: CSVLogger) -> list[Logger]:
    """The loggers of a training run: ``csv_logger`` (which names the run folder), plus a TensorBoard logger
    writing into the same folder when ``kind`` (the ``logger`` key, checked by the settings) is
    ``"tensorboard"``."""
    loggers: list[Logger] = [csv_logger]
    if kind == "tensorboard":
        loggers.append(TensorBoardLogger(save_dir=csv_logger.save_dir, name=csv_logger.name,
                                         version=csv_logger.version, default_hp_metric=False))
    return loggers


def next_run_folder(log_dir: str | os.PathLike, exp_name: str) -> Path:
    """The next ``<log_dir>/<exp_name>/version_<n>/`` (not created)."""
    parent = Path(log_dir) / exp_name
    taken = [int(p.name.split("_", 1)[1]) for p in parent.glob("version_*") if p.name.split("_", 1)[1].isdigit()]
    return parent / f"version_{max(taken, default=-1) + 1}"


def new_run_folder(log_dir: str | os.PathLike, exp_name: str) -> Path:
    """Create and return the next ``<log_dir>/<exp_name>/version_<n>/``, claimed atomically: two runs started
    at once never share a folder."""
    with storage_errors(f"log_dir={str(log_dir)!r}"):
        Path(log_dir, exp_name).mkdir(parents=True, exist_ok=True)
        while True:
            folder = next_run_folder(log_dir, exp_name)
            try:
                folder.mkdir()
                return folder
            except FileExistsError:  # another run claimed it first
                continue


def _children_cpu() -> float:
    """User + system CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RunClock(pl.Callback):
    """Wall time and CPU time of ``trainer.fit`` and ``trainer.test`` in seconds (None for a stage that did not run).

    CPU time is this process's (every thread: ``time.process_time``) plus that of its child processes that ended
    within the stage (``getrusage(RUSAGE_CHILDREN)``): the DataLoader workers, which Lightning shuts down before
    the ``teardown`` hook where both clocks stop. Under DDP each rank has its own clock and rank 0's is recorded,
    so the other ranks' CPU time is not counted. Wall time depends on what else the machine runs; CPU time much
    less so (a busy machine stretches the one, not the other).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float | None] = {"fit": None, "test": None}
        self.cpu_seconds: dict[str, float | None] = {"fit": None, "test": None}
        self._started: dict[str, tuple[float, float]] = {}

    @staticmethod
    def _cpu() -> float:
        return time.process_time() + _children_cpu()

    def _start(self, stage: str) -> None:
        self._started[stage] = (time.perf_counter(), self._cpu())

    def _stop(self, stage: str) -> None:
        if stage not in self._started:  # a failure before the stage started
            return
        wall, cpu = self._started.pop(stage)
        self.seconds[stage] = round(time.perf_counter() - wall, 3)
        self.cpu_seconds[stage] = round(self._cpu() - cpu, 3)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("fit")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("test")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage in self.seconds:  # "fit" or "test"
            self._stop(stage)


class LogFromFirstStep(pl.Callback):
    """Writes the training metrics (``train/loss``, the learning rate) at the first optimiser step, then every
    ``every`` steps, or at every step when an epoch has fewer than ``every``.

    Lightning alone writes every ``log_every_n_steps``-th step only, counted from step 1: a short run had no
    ``train/loss`` row at all and a long one had none before step 9. Listed before ``LearningRateMonitor``,
    which asks the same question at the same hook.
    """

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        accumulate = trainer.accumulate_grad_batches
        batches = trainer.num_training_batches
        steps = self.every if math.isinf(batches) else batches // accumulate
        first = trainer.global_step == 0 and (batch_idx + 1) % accumulate == 0  # the batch that makes step 0
        trainer.log_every_n_steps = 1 if first or steps < self.every else self.every


class EpochLines(pl.Callback):
    """One plain line per training epoch, in place of a progress bar when the output is not a terminal (a log
    file, a SLURM job): ``epoch 3/20  step 60  train/loss 0.812  val/the_metric 74.31  lr 9.0e-04  12.4 s``
    (``val/the_metric`` only after an epoch that validated)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._validated = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        self._validated = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", f"step {trainer.global_step}"]
        if "train/loss" in metrics:
            parts.append(f"train/loss {float(metrics['train/loss']):.4f}")
        if self._validated and "val/the_metric" in metrics:
            parts.append(f"val/the_metric {float(metrics['val/the_metric']):.2f}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.1e}")
        parts.append(f"{time.perf_counter() - self._started:.1f} s")
        rank_zero_info("  ".join(parts))  # Lightning's console logger, where its bar would have been


def run_facts(model: nn.Module, infos: Sequence[TaskInfo], clock: RunClock) -> dict[str, Any]:
    """What ``test_results.json`` records for reports beyond the metrics."""
    return {"trainable_parameters": trainable_parameters(model), "wall_time_s": dict(clock.seconds),
            "cpu_time_s": dict(clock.cpu_seconds),
            "modalities": {info.name: list(info.modalities) for info in infos},
            "notes": data_notes(infos)}  # caveats of the data, e.g. a release split's overlapping test pixels
