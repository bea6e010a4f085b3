"""A checkpoint's model, loaded once, predicting loaders on the run's device and precision.

:class:`Predictor` loads ``load_path`` into the run's model (:meth:`MaMOLModule.load_weights`, which refuses
a checkpoint made for other data, another method or another backbone) and runs Lightning's predict loop on
one device with the run's precision (the same autocast ``test_only`` evaluates under). Each call returns the
logits of every sample in loader order with the batch fields asked for (labels, pixel positions, ...).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from mamol.data import catalogue
from mamol.errors import ConfigError
from mamol.module import MaMOLModule
from mamol.settings import RunSettings
from mamol.tasks import TaskInfo

log = logging.getLogger(__name__)


def task_infos(s: RunSettings) -> list[TaskInfo]:
    """The task descriptions of the run's datasets (from the Arrow metadata, as the datamodule builds them)."""
    entries = [catalogue.entry(name, s.data.root) for name in s.data.datasets]
    return [e.dataset.task_info(e, s.data) for e in entries]


class _Collector(pl.Callback):
    """Keeps each predicted batch's logits and the batch fields asked for; advances a progress bar."""

    def __init__(self) -> None:
        self.reset((), None)

    def reset(self, keys: Sequence[str], progress: Any) -> None:
        self.keys, self.progress = tuple(keys), progress
        self.logits: list[Tensor] = []
        self.fields: dict[str, list[Tensor]] = {k: [] for k in self.keys}

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self.logits.append(outputs.detach().float().cpu())  # (B, K)
        for key in self.keys:
            self.fields[key].append(batch[key].detach().cpu())
        if self.progress is not None:
            self.progress.update(outputs.shape[0])


class Predictor:
    """The model of a run with the weights of ``load_path``, ready to predict on one device.

    Args:
        s: the run's settings (``load_path`` required).
        infos: the run's task descriptions (:func:`task_infos`).
        command: the command's name, for the error when ``load_path`` is empty.
    """

    def __init__(self, s: RunSettings, infos: Sequence[TaskInfo], command: str) -> None:
        if s.run.load_path is None:
            raise ConfigError(f"{command} evaluates a checkpoint: set load_path=<.ckpt or .pt of a trained run>")
        self.settings, self.infos = s, list(infos)
        self.module = MaMOLModule(s, self.infos)
        self.module.load_weights(s.run.load_path)  # refuses a missing file or a mismatched checkpoint
        self.module.eval()
        self._collector = _Collector()
        hw = s.hardware
        if hw.devices * hw.num_nodes > 1:
            log.info("%s predicts on one device (the run asks for %d)", command, hw.devices * hw.num_nodes)
        self.trainer = pl.Trainer(
            accelerator=hw.accelerator, devices=1, num_nodes=1, precision=hw.precision, logger=False,
            callbacks=[self._collector], enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, use_distributed_sampler=False, inference_mode=True)

    def predict(self, loader: DataLoader, keys: Sequence[str] = (), progress: Any = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits (N, K) of every sample of ``loader`` in order, and the batch fields ``keys`` concatenated.

        ``progress`` (a tqdm bar, optional) advances by each batch's size.
        """
        self._collector.reset(keys, progress)
        self.trainer.predict(self.module, dataloaders=loader, return_predictions=False)
        c = self._collector
        if not c.logits:
            raise ValueError("the loader yielded no batch")
        return torch.cat(c.logits), {k: torch.cat(v) for k, v in c.fields.items()}
