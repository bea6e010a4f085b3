"""Turn a resolved config dict into a datamodule, a module and a trainer; then fit or test.

``run(cfg)`` is what ``run.py`` calls. A run folder ``<log_dir>/<exp_name>/version_<n>/`` receives
``config.json`` (resolved config and library versions), ``metrics.csv`` (Lightning's CSV logger; a resumed run
keeps the history of the state it resumes from and appends to it),
``checkpoints/{best-*.ckpt,last.ckpt}`` and, after testing, ``test_results.json`` with ``test_predictions.npz``
(each test sample's index, label, decision and missing code: :mod:`mamol.predictions`), the confusion matrices
``confusion.{json,csv,png}`` (:mod:`mamol.confusion`), the training curves ``curves.png`` (:mod:`mamol.curves`;
also after a fit without test) and ``console.log``: what the run printed
(:mod:`mamol.console`). Without a terminal (a log file, a SLURM job) the progress bar gives way to one line per
epoch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from mamol import checkpoint, confusion, console, curves, runs, settings
from mamol.data import catalogue
from mamol.data.datamodule import MaMOLDataModule
from mamol.errors import CommandInterrupted, MamolError, StorageError, TrainingInterrupted
from mamol.files import storage_error, write_json
from mamol.locks import held_or_refused
from mamol.methods import method_class
from mamol.methods.budget import settle_run
from mamol.metrics import CLASS_PREFIX, is_class_metric, summary_metrics
from mamol.missing import parse_missing_type
from mamol.module import MaMOLModule
from mamol.predictions import PREDICTIONS_FILE, write_predictions
from mamol.settings import RunSettings

log = logging.getLogger(__name__)

# The frozen backbone stays in eval mode on purpose (it has no dropout, and nothing of it trains); small
# scenes have fewer batches per epoch than the logging interval, and runs.LogFromFirstStep then logs every step.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging",
                        category=UserWarning)
# Evaluation metrics are torchmetrics objects, synchronised across processes when computed: the logged values are
# the same on every rank, so Lightning's advice to reduce them again does not apply.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/", category=UserWarning)
# Lightning suggests `srun` whenever the command exists; SLURM runs are launched by the sweep (submitit), which
# sets up the environment itself, and a run on a login node is deliberate.
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
# Lightning's own use of torch's pytree (pytorch_lightning/utilities/_pytree.py), not ours: nothing to change here.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


class _DropInfo(logging.Filter):
    """Lightning's INFO lines that say nothing about this run: advertising tips, the accelerators it did not
    use (config.json records the devices), and the notes on settings the config states."""

    PREFIXES = ("💡 Tip", "GPU available", "TPU available", "HPU available", "`Trainer(limit_",
                "`Trainer(val_check_interval", "Loading `train_dataloader` to estimate", "`weights_only` was not set")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


for _name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
              "pytorch_lightning.trainer.connectors.checkpoint_connector"):
    logging.getLogger(_name).addFilter(_DropInfo())


class LastCheckpoint(Checkpoint):
    """Writes ``checkpoints/last.ckpt`` before the first epoch and after every training epoch, atomically.

    Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last`` only when it has just saved a top-k
    checkpoint, i.e. after a validation: with ``check_val_every_n_epoch=20`` an interrupted run would lose up
    to 19 epochs. As a :class:`Checkpoint`, Lightning calls it at the end of an epoch after the other
    callbacks and after :class:`BestCheckpoint` (listed before it), which with ``check_val_every_n_epoch=1``
    saves the best checkpoint in that same hook: the file carries the best path and score of the epoch it
    holds, never the previous epoch's. The path is rank 0's (broadcast at setup).
    """

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.last_model_path = ""
        self.epochs_done = 0

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(f".{self.path.name}.tmp")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.path = Path(trainer.strategy.broadcast(str(self.path), src=0))

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        try:
            trainer.save_checkpoint(self._tmp)  # every rank takes part; the global-zero rank writes
            if trainer.is_global_zero:
                os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)  # never leave a partial checkpoint filling the disk
            raise
        self.last_model_path = str(self.path)
        self.epochs_done = trainer.current_epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # a save cut short by a kill
            self._tmp.unlink(missing_ok=True)
        if not self.path.is_file():  # a resumable state before the first epoch: an early stop loses nothing
            self._save(trainer)
        self.epochs_done = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)
        self.epochs_done = trainer.current_epoch + 1


class BestCheckpoint(ModelCheckpoint):
    """The best checkpoint on ``val/the_metric``; an undefined (NaN) score never selects one.

    Resuming, it keeps exactly the best file the resumed state records: a best file written after that
    state (the epoch being redone, cut by a kill before ``last.ckpt`` was rewritten) is removed, and a run
    folder moved since (other ``dirpath``, holding the recorded best file) keeps its record, pointing into the
    new folder.
    """

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is not None and torch.isnan(torch.as_tensor(current)).any():
            return False
        return super().check_monitor_top_k(trainer, current)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old, best = state_dict.get("dirpath"), state_dict.get("best_model_path", "")
        if old and self.dirpath and old != self.dirpath and best and (Path(self.dirpath) / Path(best).name).is_file():
            def moved(path: str) -> str:
                return str(Path(self.dirpath) / Path(path).name) if path and Path(path).parent == Path(old) else path
            state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": moved(
                state_dict.get("best_model_path", "")), "kth_best_model_path": moved(
                state_dict.get("kth_best_model_path", "")), "last_model_path": moved(
                state_dict.get("last_model_path", "")), "best_k_models": {
                moved(k): v for k, v in state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.is_global_zero and self.dirpath and Path(self.dirpath).is_dir():
            recorded = {Path(p).name for p in self.best_k_models}
            for path in Path(self.dirpath).glob("best-*.ckpt"):
                if path.name not in recorded:
                    path.unlink()
                    log.info("removed %s: written after the state resumed from", path)


class StopOnSignal:
    """SIGTERM, SIGINT and SIGUSR2 during ``fit`` stop training at the next batch boundary (all ranks together).

    Lightning stops at a batch boundary on SIGTERM (``SIGTERMException``); here SIGINT (Ctrl-C) and SIGUSR2
    (what SLURM sends a submitit job before pre-empting it or at its time limit) take the same path instead of
    an immediate exit, and the signal is remembered to name it. A second Ctrl-C stops at once. Active only in
    the main thread.
    """

    def __init__(self) -> None:
        self.received: tuple[str, int] | None = None
        self._previous: dict[int, Any] = {}

    def _on_term(self, signum: int, frame: Any) -> None:
        self.received = self.received or ("SIGTERM", signum)

    def _on_int(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = ("SIGINT", signum)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's batch-boundary stop

    def _on_usr2(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = ("SIGUSR2", signum)
            os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in ((signal.SIGTERM, self._on_term), (signal.SIGINT, self._on_int),
                                    (signal.SIGUSR2, self._on_usr2)):
                self._previous[signum] = signal.signal(signum, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


@contextlib.contextmanager
def interruptible(stopped: Callable[[str, int], MamolError]) -> Iterator[None]:
    """SIGTERM / SIGINT / SIGUSR2 inside the block (see :class:`StopOnSignal`) end in ``stopped(signal name, number)``:
    the project error that says where the run stopped and what to do."""
    with StopOnSignal() as stop:
        try:
            yield
        except SIGTERMException as err:
            name, number = stop.received or ("SIGTERM", signal.SIGTERM)
            raise stopped(name, int(number)) from err


def build_trainer(s: RunSettings, run_dir: Path, logger: Logger | list[Logger] | bool
                  ) -> tuple[pl.Trainer, ModelCheckpoint, LastCheckpoint]:
    """The Trainer, the best-on-``val/the_metric`` checkpoint callback and the ``last.ckpt`` one."""
    hw, optim = s.hardware, s.optim
    best = BestCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:03d}-step{step}", monitor="val/the_metric",
        mode="max", save_top_k=1, auto_insert_metric_name=False)
    last = LastCheckpoint(run_dir / "checkpoints")
    callbacks: list[pl.Callback] = [best, last, runs.LogFromFirstStep(every=10)]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))  # after LogFromFirstStep: same hook
    bar = sys.stdout.isatty()  # a bar redrawn with "\r" is unreadable in a file: lines per epoch there
    if not bar:
        callbacks.append(runs.EpochLines())
    val_check = optim.val_check_interval if optim.val_check_interval <= 1.0 else int(optim.val_check_interval)
    strategy: str | DDPStrategy = hw.strategy
    if strategy == "ddp":
        # Unused parameters: a batch without some modality leaves its expert without gradient. No buffer
        # broadcast: the model's buffers are constants, and ranks may run one evaluation batch more or less.
        strategy = DDPStrategy(find_unused_parameters=True, broadcast_buffers=False)
    limit_test = s.run.limit_test if s.run.limit_test <= 1.0 else int(s.run.limit_test)
    trainer = pl.Trainer(
        accelerator=hw.accelerator, devices=hw.devices, num_nodes=hw.num_nodes, strategy=strategy,
        precision=hw.precision, max_epochs=optim.max_epoch, max_steps=optim.max_steps or -1,
        accumulate_grad_batches=hw.accumulate, gradient_clip_val=optim.grad_clip or None,
        val_check_interval=val_check, check_val_every_n_epoch=optim.check_val_every_n_epoch,
        limit_test_batches=limit_test, fast_dev_run=s.run.fast_dev_run, logger=logger, callbacks=callbacks,
        log_every_n_steps=10, num_sanity_val_steps=0, default_root_dir=str(run_dir),
        use_distributed_sampler=False,  # the datamodule splits data across ranks (exact evaluation)
        enable_model_summary=True, enable_progress_bar=bar,
    )
    return trainer, best, last


def run_folder(s: RunSettings) -> tuple[Path, bool]:
    """(run folder, resumed): the run that ``resume_from`` belongs to, or a new ``version_<n>`` folder.

    Rank 0 claims a new folder atomically (two launches at once never share one); other ranks take rank 0's
    folder when the trainer starts (see :class:`LastCheckpoint`), so nothing is computed twice.
    """
    if s.run.resume_from is not None:
        run_dir = s.run.resume_from.resolve().parent.parent
        if s.run.resume_from.parent.name == "checkpoints" and (run_dir / "config.json").is_file():
            return run_dir, True
        log.warning("resume_from=%s is not inside a run folder: the resumed run gets a new folder",
                    s.run.resume_from)
    if rank_zero_only.rank != 0:  # provisional: rank 0's folder is broadcast when the trainer starts
        return runs.next_run_folder(s.run.log_dir, s.run.exp_name), False
    return runs.new_run_folder(s.run.log_dir, s.run.exp_name), False


def _loggers(s: RunSettings, run_dir: Path, keep_before: int | None = None, extra: Sequence[Logger] = ()
             ) -> list[Logger] | bool:
    """The run's loggers writing into ``run_dir`` (CSV, and TensorBoard with ``logger="tensorboard"``), then
    ``extra``; none for a ``fast_dev_run``. ``keep_before``: resuming, the logging step of the state resumed from,
    whose earlier rows of ``metrics.csv`` are kept."""
    if s.run.fast_dev_run:
        return False
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    csv = runs.HistoryCSVLogger(save_dir=str(run_dir.parent.parent), name=run_dir.parent.name, version=run_dir.name,
                                keep_before=keep_before)
    return [*runs.training_loggers(s.run.logger, csv), *extra]


def _abandon(run_dir: Path, err: BaseException) -> None:
    """After a failure: remove the run folder if nothing of value is in it, else mark it failed."""
    checkpoints = list((run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").is_dir() else []
    if not checkpoints:
        shutil.rmtree(run_dir, ignore_errors=True)
        log.info("removed the run folder %s of the failed run", run_dir)
        return
    try:
        write_json(run_dir / "failed.json", {"error": f"{type(err).__name__}: {err}",
                                             "checkpoints": sorted(str(p) for p in checkpoints)})
    except StorageError as cannot:  # the disk that stopped the run may not take this record either
        log.warning("%s; the run folder %s keeps its checkpoints", cannot, run_dir)


def summarise(results: dict[str, float], class_names: list[list[str]], setting: str) -> str:
    """A readable summary of test metrics (already x100): headline metrics first, then per-class accuracies."""
    names = sorted(results, key=lambda k: (k.rsplit("/", 1)[-1] not in ("OA", "AA", "kappa"), k))
    per_class = class_names[0] if len(class_names) == 1 else []
    rows = [(key, results[key]) for key in summary_metrics(names, names[0])]
    for key, value in ((k, v) for k, v in results.items() if is_class_metric(k)):
        index = int(key.rsplit(CLASS_PREFIX, 1)[1])
        rows.append((f"accuracy of {per_class[index] if index < len(per_class) else key}", value))
    width = max([30, *(len(label) for label, _ in rows)])  # long class names keep the values in one column
    return "\n".join([f"Test results ({setting}):", *(f"  {label:<{width}s} {value:7.2f}" for label, value in rows)])


def missing_report(s: RunSettings, modalities: Sequence[str], split: str = "test") -> dict[str, Any]:
    """The missing-modality setting a split is evaluated under, as written to ``test_results.json``: the type in
    its canonical spelling (``test_type=HS`` is written ``hsi``; ``config.json`` keeps the config as given)."""
    m = s.missing.split(split)
    return {"missing_ratio": m.ratio, "missing_type": parse_missing_type(m.type, modalities),
            "both_ratio": m.both_ratio, "missing_ratio_2": m.ratio_2, "missing_fill": s.missing.fill,
            "missing_seed": m.seed}


def resolve_settings(config: Mapping[str, Any], evaluation: bool = False, elsewhere: bool = False) -> RunSettings:
    """The typed settings of a Sacred config: the catalogue names the datasets and their kind, the method
    registry gives the method's options class, and :func:`mamol.settings.resolve` checks everything
    (``evaluation``: for a command that only evaluates, without the training-only checks; ``elsewhere``: the
    run will train on another machine, a SLURM node, so this one's GPU count is not checked)."""
    cfg = dict(config)
    datasets = catalogue.canonical_names(cfg.get("datasets"))
    kind = catalogue.kind_of(datasets, cfg.get("data_root"))
    gpus = None
    if elsewhere:
        gpus = max(settings.coerce("num_gpus", cfg["num_gpus"], int), torch.cuda.device_count())
    return settings.resolve(cfg, kind=kind, datasets=datasets, method_options=method_class(cfg["method"]).Options,
                            evaluation=evaluation, cuda_devices=gpus)


def warn_never_validates(s: RunSettings) -> None:
    """One warning line when training ends before its first validation (the ``remote`` config validates every
    20 epochs): no best checkpoint is chosen and the final weights are tested. Left as asked, not changed:
    ``config.json`` records what was run, and the test is the same (one validation, at the end, would pick the
    final weights)."""
    optim = s.optim
    if s.run.test_only or s.run.fast_dev_run or optim.max_epoch >= optim.check_val_every_n_epoch:
        return
    log.warning("max_epoch=%d < check_val_every_n_epoch=%d: this run never validates (no val/the_metric, no best "
                "checkpoint; the final weights are tested); set check_val_every_n_epoch=%d to validate at the end",
                optim.max_epoch, optim.check_val_every_n_epoch, optim.max_epoch)


@console.recorded
def run(config: Mapping[str, Any], loggers: Sequence[Logger] = ()) -> dict:
    """Fit (then test the best checkpoint) or, with ``test_only``, test ``load_path``.

    Returns the test report (as written to ``test_results.json``) plus ``summary``, a readable text, and
    ``run_dir``. Only rank 0 writes the run's files; every rank returns the same report. ``loggers``: Lightning
    loggers that receive what the run logs besides its own (the Sacred run's, :mod:`mamol.observers`).
    """
    s = resolve_settings(config)
    warn_never_validates(s)
    # Quietly: config.json records the seed, and an input error found while building (e.g. no CLIP weights)
    # stays the only line on stderr.
    pl.seed_everything(s.run.seed, workers=True, verbose=False)

    datamodule = MaMOLDataModule(s.data, s.missing, s.hardware.per_device_batch, s.run.seed,
                                 pin_memory=s.hardware.accelerator == "gpu" and torch.cuda.is_available())
    s = settle_run(s, datamodule.infos)  # budget=matched/lora: the capacity for these shapes, kept in config.json
    module = MaMOLModule(s, datamodule.infos)
    if s.run.load_path:
        module.load_weights(s.run.load_path)
    # Every split the run will read, before any folder or training: a missing or broken test split is not
    # found only after the whole fit.
    needed = ("train", "val") * (not s.run.test_only) + ("test",) * (s.run.test_only or s.run.test_after_fit)
    datamodule.open_splits(needed)
    keep_before = None
    if s.run.resume_from:  # refuse a broken or mismatched file now, by name (Lightning reads it inside fit)
        keep_before = checkpoint.logged_steps(module.check_resumable(s.run.resume_from))

    run_dir, resumed = run_folder(s)
    if rank_zero_only.rank == 0:  # appended to when resumed
        console.save_to(run_dir)
    # One process at a time continues a run folder (new folders are claimed atomically by run_folder).
    lock = (held_or_refused(run_dir / ".run.lock", f"run folder {run_dir}") if resumed and rank_zero_only.rank == 0
            else contextlib.nullcontext())
    with lock:
        try:  # from here on, a failure removes the new folder (or marks it failed once it holds checkpoints)
            trainer, best, last = build_trainer(s, run_dir, _loggers(s, run_dir, keep_before if resumed else None,
                                                                    loggers))
            clock = runs.RunClock()  # wall time of fit and test, recorded for reports
            trainer.callbacks.append(clock)
            if trainer.is_global_zero:
                name = f"config_resumed_{int(time.time())}.json" if resumed else "config.json"
                runs.write_run_record(run_dir, s, name)
                log.info("run folder: %s%s", run_dir, " (resumed)" if resumed else "")
            report = _fit_and_test(s, trainer, best, last, clock, module, datamodule)
        except TrainingInterrupted:
            raise
        except BaseException as err:
            if rank_zero_only.rank == 0 and not resumed:
                _abandon(run_dir, err)
            converted = storage_error(err, f"the run folder {run_dir}") if isinstance(err, OSError) else None
            if converted is None:
                raise
            raise converted from err
        run_dir = last.path.parent.parent  # rank 0's folder on every rank
        if resumed and trainer.is_global_zero:  # the failure an earlier attempt recorded is over
            (run_dir / "failed.json").unlink(missing_ok=True)
        report["run_dir"] = str(run_dir)
        trained = trainer.is_global_zero and not s.run.test_only and (run_dir / curves.METRICS_FILE).is_file()
        if "metrics" not in report:
            if trained:
                curves.write_curves(run_dir)
            report["summary"] = f"Training finished (test_after_fit=False): best checkpoint {report['checkpoint']}"
            return report
        if trainer.is_global_zero:
            # The predictions first: a test_results.json (what marks a run finished) names a file that exists.
            write_predictions(run_dir / PREDICTIONS_FILE, module.test_predictions)
            report["confusion"] = confusion.write_run_confusion(run_dir, module.test_predictions, report["class_names"])
            if trained:  # loss, validation metric and learning rate over the steps, from metrics.csv
                curves.write_curves(run_dir)
                report["curves"] = curves.CURVES_FILE
            write_json(run_dir / "test_results.json", {k: v for k, v in report.items() if k != "run_dir"})
            where = f"written to {run_dir / 'test_results.json'}"
        else:
            where = f"rank {trainer.global_rank}: the results are written by rank 0 to {run_dir / 'test_results.json'}"
        text = summarise(report["metrics"], [list(i.class_names) for i in datamodule.infos], s.missing.test.describe())
        report["summary"] = f"{text}\n{where}"
        return report


def _fit_and_test(s: RunSettings, trainer: pl.Trainer, best: ModelCheckpoint, last: LastCheckpoint,
                  clock: runs.RunClock, module: MaMOLModule, datamodule: MaMOLDataModule) -> dict[str, Any]:
    """Fit (unless ``test_only``), then test the best checkpoint (unless ``test_after_fit=False``)."""
    tested_path = str(s.run.load_path) if s.run.load_path else None
    if not s.run.test_only:
        with interruptible(lambda name, number: TrainingInterrupted(
                name, number, str(last.path), f"during epoch {trainer.current_epoch + 1} (step {trainer.global_step}):"
                f" last.ckpt holds the state after epoch {last.epochs_done} and the interrupted epoch will be redone")):
            trainer.fit(module, datamodule=datamodule, ckpt_path=s.run.resume_from)
        if best.best_model_path and not s.run.fast_dev_run:
            module.load_weights(best.best_model_path)
            tested_path = best.best_model_path
        else:  # no validation happened: test the final weights
            tested_path = last.last_model_path or None
        if not s.run.test_after_fit:
            return {"checkpoint": tested_path, "method": s.method.name}
        # The fit is over and last.ckpt records its best checkpoint: a run stopped now resumes without training
        # and tests that checkpoint (resume_from of a finished fit skips straight to the test).
        with interruptible(lambda name, number: TrainingInterrupted(
                name, number, str(last.path), f"during the test of the best checkpoint {tested_path}: training had "
                f"finished and last.ckpt records that checkpoint; resuming trains nothing and tests it")):
            trainer.test(module, datamodule=datamodule, verbose=False)
    else:  # test_only: nothing to resume; the run folder holds no result yet and is removed
        with interruptible(lambda name, number: CommandInterrupted(
                name, number, f"while testing {tested_path}: nothing was written; run it again")):
            trainer.test(module, datamodule=datamodule, verbose=False)
    return {
        "tasks": [i.name for i in datamodule.infos],
        "metrics": {k.removeprefix("test/"): round(v, 4) for k, v in module.test_results.items()},
        "missing": missing_report(s, datamodule.infos[0].modalities),
        "limit_test": s.run.limit_test,
        "checkpoint": tested_path,
        "method": s.method.name,
        # options of the tested checkpoint this evaluation changed (allow_option_change=True); {} = none
        "option_changes": module.option_changes,
        "class_names": {i.name: list(i.class_names) for i in datamodule.infos},
        "predictions": PREDICTIONS_FILE,  # each test sample's decision, written beside this file
        # per task: class names, support and precision / recall / F1 x 100 from those decisions
        "per_class": confusion.per_class_scores(module.test_predictions,
                                                {i.name: i.class_names for i in datamodule.infos}),
        "dataset": {i.name: i.metadata for i in datamodule.infos},
        **runs.run_record(s),  # config, settings, versions
        **runs.run_facts(module.model, datamodule.infos, clock),  # parameters, wall time, modalities
    }
