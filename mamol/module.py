"""The Lightning module: loss, metrics, optimiser and what goes into checkpoints, for any method.

The model (a method inside its host, :func:`mamol.methods.build_model`) answers ``forward(batch)``,
``no_weight_decay()``, ``head_parameters()`` and ``aux_loss()``; checkpoint contents and checks live in
:mod:`mamol.checkpoint`.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamol import checkpoint
from mamol.errors import CheckpointError
from mamol.methods import build_model
from mamol.metrics import TaskMetrics, predicted_labels, warn_undefined
from mamol.optim import build_optimizer
from mamol.predictions import PredictionRecorder, TaskPredictions
from mamol.settings import RunSettings
from mamol.tasks import TaskInfo

log = logging.getLogger(__name__)


class MaMOLModule(pl.LightningModule):
    """Trains and evaluates the model of a run on one or more tasks (batches never mix tasks)."""

    def __init__(self, settings: RunSettings, infos: list[TaskInfo]) -> None:
        super().__init__()
        self.settings = settings
        self.infos = list(infos)
        self.info_of = {info.name: info for info in self.infos}
        self.save_hyperparameters({"settings": settings.to_dict(),
                                   "infos": [dataclasses.asdict(i) for i in self.infos]})
        self.model = build_model(settings.backbone, settings.model, settings.method, self.infos)
        self.metrics = nn.ModuleDict({f"{stage}_{info.name}": TaskMetrics(info.task_type, info.num_classes)
                                      for stage in ("val", "test") for info in self.infos})
        self.test_results: dict[str, Any] = {}
        # Each test sample's decision (all ranks' shares), saved as test_predictions.npz for paired tests.
        self.test_predictions: dict[str, TaskPredictions] = {}
        self._recorder = PredictionRecorder()
        # Output-changing options of the last loaded checkpoint that differ from this run's (allow_option_change).
        self.option_changes: dict[str, dict[str, Any]] = {}
        self._options = checkpoint.output_options(settings.method.options, settings.missing.fill)
        # Checkpoints omit the frozen backbone (rebuilt from clip_weights); see on_load_checkpoint.
        self.strict_loading = False
        self._fingerprint = checkpoint.fingerprint(self.model)

    # ------------------------------------------------------------------ forward and loss
    def task_of(self, batch: dict) -> TaskInfo:
        """The task of a batch (a batch holds one task; a run on one dataset may leave ``task`` out)."""
        return self.info_of[batch["task"]] if "task" in batch else self.infos[0]

    def forward(self, batch: dict) -> Tensor:
        return self.model(batch)

    @staticmethod
    def loss(logits: Tensor, labels: Tensor, info: TaskInfo) -> Tensor:
        if info.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.cross_entropy(logits.float(), labels.long())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        info = self.task_of(batch)
        logits = self(batch)
        loss = self.settings.data.loss_weights[info.name] * self.loss(logits, batch["label"], info)
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        aux = self.model.aux_loss()
        if aux is not None:
            self.log("train/aux_loss", aux, batch_size=logits.shape[0])
            loss = loss + aux
        return loss

    def _prefix(self, stage: str, info: TaskInfo) -> str:
        """``<stage>/`` for one task, ``<stage>/<task>/`` for several."""
        return f"{stage}/" if len(self.infos) == 1 else f"{stage}/{info.name}/"

    def _eval_step(self, stage: str, batch: dict) -> None:
        info = self.task_of(batch)
        logits = self(batch)
        self.log(self._prefix(stage, info) + "loss", self.loss(logits, batch["label"], info),
                 batch_size=logits.shape[0], add_dataloader_idx=False, sync_dist=True)
        self.metrics[f"{stage}_{info.name}"].update(logits, batch["label"])
        if stage == "test":
            self._recorder.add(info.name, batch["index"], batch["label"], predicted_labels(logits, info.task_type),
                               batch["missing_type"])

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch)

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        """Log ``<stage>/<metric>`` (``<stage>/<task>/<metric>`` with several tasks) and ``<stage>/the_metric``.

        Values are x100 in logs and files alike (OA 97.75, not 0.9775); an undefined metric is NaN, with a
        warning naming the split and why, and a NaN ``val/the_metric`` never selects a checkpoint.
        """
        results: dict[str, float] = {}
        the_metrics = []
        for info in self.infos:
            metrics = self.metrics[f"{stage}_{info.name}"]
            if not metrics.updated:
                continue
            values = {key: 100.0 * torch.as_tensor(v, dtype=torch.float64) for key, v in metrics.compute().items()}
            warn_undefined(f"{stage}/{info.name}", metrics.undefined)
            metrics.reset()
            prefix = self._prefix(stage, info)
            for key, value in values.items():
                if key == "the_metric":
                    continue
                self.log(prefix + key, value, sync_dist=False)
                results[prefix + key] = float(value)
            the_metrics.append(values["the_metric"])
        if the_metrics:
            the_metric = torch.stack(the_metrics).mean()
            self.log(f"{stage}/the_metric", the_metric, prog_bar=True)
            results[f"{stage}/the_metric"] = float(the_metric)
        return results

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._recorder.reset()

    def on_test_epoch_end(self) -> None:
        self.test_results = self._eval_epoch_end("test")
        self.test_predictions = self._recorder.gathered()  # every rank takes part
        self._recorder.reset()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict:
        """AdamW groups declared by the model, and the per-step warm-up/decay schedule."""
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        optimizer, scheduler = build_optimizer(self.model, self.settings.optim, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def _check(self, meta: dict | None, source: str) -> None:
        checkpoint.check_compatible(meta, self.infos, self.settings.method.name, self.settings.backbone,
                                    self._fingerprint, source)
        changes = checkpoint.option_changes(meta, self._options)
        checkpoint.check_options(changes, self.settings.run.allow_option_change, source)
        self.option_changes = changes

    def on_save_checkpoint(self, ckpt: dict) -> None:
        keep_frozen = self.settings.backbone.random_init
        ckpt["state_dict"] = checkpoint.trim(ckpt["state_dict"], self.model, keep_frozen)
        ckpt[checkpoint.SECTION] = checkpoint.section(self.infos, self.settings.method.name, self.settings.backbone,
                                                      self._fingerprint, self._options, ckpt["state_dict"])

    def on_load_checkpoint(self, ckpt: dict) -> None:
        """Resuming (``resume_from``): upgrade an older format in place, refuse a mismatched checkpoint."""
        source = f"resume_from={str(self.settings.run.resume_from)!r}"
        checkpoint.verify(ckpt, source)
        checkpoint.upgrade(ckpt)
        self._check(ckpt.get(checkpoint.SECTION), source)
        checkpoint.check_state(ckpt["state_dict"], self.state_dict(), checkpoint.trainable_keys(self.model), source,
                               self.describe())

    def check_resumable(self, path: str | Path) -> dict:
        """Refuse a ``resume_from`` file that cannot be read or was made for other data, method or backbone;
        returns the checkpoint read."""
        source = f"resume_from={str(path)!r}"
        ckpt = checkpoint.read(path, source)
        if "state_dict" not in ckpt or "optimizer_states" not in ckpt:
            raise CheckpointError(f"{source} is not a Lightning training checkpoint (no optimizer state): "
                                             f"resume from checkpoints/last.ckpt of a run, or pass it as load_path")
        self._check(ckpt.get(checkpoint.SECTION), source)
        checkpoint.check_state(ckpt["state_dict"], self.state_dict(), checkpoint.trainable_keys(self.model), source,
                               self.describe())
        return ckpt

    def describe(self) -> str:
        return f"{'; '.join(i.describe() for i in self.infos)}, method={self.settings.method.name!r}, " \
               f"vit={self.settings.backbone.vit!r}"

    def load_weights(self, path: str | Path) -> None:
        """Load ``load_path``: a Lightning ``.ckpt`` or a plain state dict, with or without a ``model.`` prefix."""
        source = f"load_path={str(path)!r}"
        obj = checkpoint.read(path, source)
        self._check(obj.get(checkpoint.SECTION), source)
        state = checkpoint.state_of(obj, source)
        own = self.state_dict()
        checkpoint.check_state(state, own, checkpoint.trainable_keys(self.model), source, self.describe())
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            log.warning("%s: %d tensors not used by this model, e.g. %s", source, len(unexpected), unexpected[:3])
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        log.info("loaded %d tensors from %s", len(set(state) & set(own)), path)
