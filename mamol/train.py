"""Turn a resolved config dict into a datamodule, a module and a trainer; then fit or test.

``run(cfg)`` is what ``run.py`` calls. A run folder ``<log_dir>/<exp_name>/version_<n>/`` receives
``config.json`` (resolved config and library versions), ``metrics.csv`` (Lightning's CSV logger),
``checkpoints/{best-*.ckpt,last.ckpt}`` and, after testing, ``test_results.json``.
"""
from __future__ import annotations

import logging
import os
import platform
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.strategies import DDPStrategy

from mamol import __version__, settings
from mamol.data import catalogue
from mamol.data.datamodule import MaMOLDataModule
from mamol.experiments import tracking
from mamol.files import write_json
from mamol.methods import method_class
from mamol.module import MaMOLModule
from mamol.settings import RunSettings

log = logging.getLogger(__name__)

# The frozen backbone stays in eval mode on purpose (it has no dropout, and nothing of it trains); small
# scenes have fewer batches per epoch than the logging interval, which only means one log line per epoch.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging",
                        category=UserWarning)


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


class LastCheckpoint(pl.Callback):
    """Writes ``checkpoints/last.ckpt`` at the end of every training epoch, atomically.

    Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last`` only when it has just saved a top-k
    checkpoint, i.e. after a validation: with ``check_val_every_n_epoch=20`` an interrupted run would lose up
    to 19 epochs. The end of an epoch comes after that epoch's validation, so the file also carries the best
    score and path of the best-checkpoint callback.
    """

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.last_model_path = ""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp)  # every rank takes part; the global-zero rank writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self.last_model_path = str(self.path)


def build_trainer(s: RunSettings, run_dir: Path, logger: Logger | list[Logger] | bool
                  ) -> tuple[pl.Trainer, ModelCheckpoint, LastCheckpoint]:
    """The Trainer, the best-on-``val/the_metric`` checkpoint callback and the ``last.ckpt`` one."""
    hw, optim = s.hardware, s.optim
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:03d}-step{step}", monitor="val/the_metric",
        mode="max", save_top_k=1, auto_insert_metric_name=False)
    last = LastCheckpoint(run_dir / "checkpoints")
    callbacks: list[pl.Callback] = [best, last]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    val_check = optim.val_check_interval if optim.val_check_interval <= 1.0 else int(optim.val_check_interval)
    strategy: str | DDPStrategy = hw.strategy
    if strategy == "ddp":
        # Unused parameters: a batch without some modality leaves its expert without gradient. No buffer
        # broadcast: the model's buffers are constants, and ranks may run one evaluation batch more or less.
        strategy = DDPStrategy(find_unused_parameters=True, broadcast_buffers=False)
    trainer = pl.Trainer(
        accelerator=hw.accelerator, devices=hw.devices, num_nodes=hw.num_nodes, strategy=strategy,
        precision=hw.precision, max_epochs=optim.max_epoch, max_steps=optim.max_steps or -1,
        accumulate_grad_batches=hw.accumulate, gradient_clip_val=optim.grad_clip or None,
        val_check_interval=val_check, check_val_every_n_epoch=optim.check_val_every_n_epoch,
        fast_dev_run=s.run.fast_dev_run, logger=logger, callbacks=callbacks,
        log_every_n_steps=10, num_sanity_val_steps=0, default_root_dir=str(run_dir),
        use_distributed_sampler=False,  # the datamodule splits data across ranks (exact evaluation)
        enable_model_summary=True, enable_progress_bar=True,
    )
    return trainer, best, last


def summarise(results: dict[str, float], class_names: list[list[str]], setting: str) -> str:
    """A readable summary of test metrics (x100): headline metrics first, then per-class accuracies by name."""
    headline = {k: v for k, v in results.items() if "/acc_" not in k and not k.endswith("the_metric")}
    per_class = {k: v for k, v in results.items() if "/acc_" in k}
    lines = [f"Test results ({setting}):"]
    for key in sorted(headline, key=lambda k: (k.rsplit("/", 1)[-1] not in ("OA", "AA", "kappa"), k)):
        lines.append(f"  {key.removeprefix('test/'):<30s} {100 * headline[key]:7.2f}")
    names = class_names[0] if len(class_names) == 1 else []
    for key, value in per_class.items():
        index = int(key.rsplit("acc_", 1)[1])
        label = names[index] if index < len(names) else key.removeprefix("test/")
        lines.append(f"  accuracy of {label:<18s} {100 * value:7.2f}")
    return "\n".join(lines)


def missing_report(s: RunSettings, split: str = "test") -> dict[str, Any]:
    """The missing-modality setting a split is evaluated under, as written to ``test_results.json``."""
    m = s.missing.split(split)
    return {"missing_ratio": m.ratio, "missing_type": m.type, "both_ratio": m.both_ratio,
            "missing_ratio_2": m.ratio_2, "missing_fill": s.missing.fill, "missing_seed": m.seed}


def resolve_settings(config: Mapping[str, Any]) -> RunSettings:
    """The typed settings of a Sacred config: the catalogue names the datasets and their kind, the method
    registry gives the method's options class, and :func:`mamol.settings.resolve` checks everything."""
    cfg = dict(config)
    datasets = catalogue.canonical_names(cfg.get("datasets"))
    kind = catalogue.kind_of(datasets, cfg.get("data_root"))
    return settings.resolve(cfg, kind=kind, datasets=datasets, method_options=method_class(cfg["method"]).Options)


def run(config: Mapping[str, Any]) -> dict:
    """Fit (then test the best checkpoint) or, with ``test_only``, test ``load_path``.

    Returns the test report (as written to ``test_results.json``) plus ``summary``, a readable text.
    """
    s = resolve_settings(config)
    pl.seed_everything(s.run.seed, workers=True)

    datamodule = MaMOLDataModule(s.data, s.missing, s.hardware.per_device_batch, s.run.seed,
                                 pin_memory=s.hardware.accelerator == "gpu" and torch.cuda.is_available())
    module = MaMOLModule(s, datamodule.infos)
    if s.run.load_path:
        module.load_weights(s.run.load_path)

    csv_logger = CSVLogger(save_dir=s.run.log_dir, name=s.run.exp_name)
    run_dir = Path(csv_logger.log_dir)
    loggers = tracking.training_loggers(config, csv_logger)  # CSV; also TensorBoard with logger="tensorboard"
    trainer, best, last = build_trainer(s, run_dir, False if s.run.fast_dev_run else loggers)
    clock = tracking.RunClock()  # wall time of fit and test, recorded for reports
    trainer.callbacks.append(clock)
    if trainer.is_global_zero:
        csv_logger.experiment  # noqa: B018 - creates the run folder before anything else writes into it
        write_json(run_dir / "config.json", {"config": s.config, "settings": s.to_dict(), "versions": versions()})
        log.info("run folder: %s", run_dir)

    tested_path = str(s.run.load_path) if s.run.load_path else None
    if not s.run.test_only:
        trainer.fit(module, datamodule=datamodule, ckpt_path=s.run.resume_from)
        if best.best_model_path and not s.run.fast_dev_run:
            module.load_weights(best.best_model_path)
            tested_path = best.best_model_path
        else:  # no validation happened: test the final weights
            tested_path = last.last_model_path or None
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = dict(module.test_results)
    setting = missing_report(s)
    report: dict[str, Any] = {
        "tasks": [i.name for i in datamodule.infos],
        "metrics": {k.removeprefix("test/"): round(100.0 * v, 4) for k, v in results.items()},
        "missing": setting,
        "checkpoint": tested_path,
        "method": s.method.name,
        "class_names": {i.name: list(i.class_names) for i in datamodule.infos},
        "dataset": {i.name: i.metadata for i in datamodule.infos},
        "config": s.config,
        "settings": s.to_dict(),
        "versions": versions(),
        **tracking.run_facts(module.model, datamodule.infos, clock),  # parameters, wall time, modalities
    }
    if trainer.is_global_zero:
        write_json(run_dir / "test_results.json", report)
    text = summarise(results, [list(i.class_names) for i in datamodule.infos], s.missing.test.describe())
    report["summary"] = f"{text}\nwritten to {run_dir / 'test_results.json'}"
    report["run_dir"] = str(run_dir)
    return report
