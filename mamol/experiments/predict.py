"""A checkpoint's model, loaded once, predicting loaders on the run's device and precision.

:class:`Predictor` loads ``load_path`` into the run's model (:meth:`MaMOLModule.load_weights`, which refuses
a checkpoint made for other data, another method or another backbone) and runs Lightning's predict loop on
one device with the run's precision (the same autocast ``test_only`` evaluates under). Each call returns the
logits of every sample in loader order with the batch fields asked for (labels, pixel positions, ...).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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

    def reset(self, keys: Sequence[str], progress: Any, each: Callable[[Tensor, dict[str, Tensor]], None] | None = None
              ) -> None:
        self.keys, self.progress, self.each = tuple(keys), progress, each
        self.logits: list[Tensor] = []
        self.batches = 0
        self.fields: dict[str, list[Tensor]] = {k: [] for k in self.keys}

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = outputs.detach().float().cpu()  # (B, K)
        fields = {key: batch[key].detach().cpu() for key in self.keys}
        if self.each is not None:  # handed on, not kept
            self.each(logits, fields)
            self.batches += 1
        else:
            self.logits.append(logits)
            for key in self.keys:
                self.fields[key].append(fields[key])
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

    def predict(self, loader: DataLoader, keys: Sequence[str] = (), progress: Any = None,
                each: Callable[[Tensor, dict[str, Tensor]], None] | None = None
                ) -> tuple[Tensor, dict[str, Tensor]] | None:
        """Logits (N, K) of every sample of ``loader`` in order, and the batch fields ``keys`` concatenated.

        ``progress`` (a tqdm bar, optional) advances by each batch's size. With ``each``, every batch's logits
        (B, K) and fields go to ``each(logits, fields)`` in loader order and nothing is kept (memory bounded by
        the batch, whatever the loader's length); then it returns None.
        """
        self._collector.reset(keys, progress, each)
        self.trainer.predict(self.module, dataloaders=loader, return_predictions=False)
        c = self._collector
        if not c.logits and not c.batches:
            raise ValueError("the loader yielded no batch")
        if each is not None:
            return None
        return torch.cat(c.logits), {k: torch.cat(v) for k, v in c.fields.items()}
