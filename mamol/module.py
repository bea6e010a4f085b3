"""The Lightning module: loss, optimiser groups, schedule, metrics and checkpoint contents.

Checkpoints hold the trainable tensors only (adapters, embeddings, tokenizers, heads, ...) plus what is needed
to refuse a mismatched one: the task descriptions and a fingerprint of the frozen backbone. When the backbone
was randomly initialised (``clip_random_init=True``) it cannot be rebuilt from a file, so it is saved too.
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

from mamol.data.datamodule import TaskInfo
from mamol.metrics import TaskMetrics
from mamol.settings import lr_lambda

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "mamol"  # our section of a Lightning checkpoint


class CheckpointMismatch(ValueError):
    """A checkpoint that was made for another dataset, model or backbone."""


def _build_model(cfg: dict, infos: list[TaskInfo]) -> nn.Module:
    kinds = {info.kind for info in infos}
    if len(kinds) != 1:
        raise ValueError(f"datasets={[i.name for i in infos]} mixes remote and natural tasks; train them separately")
    if infos[0].kind == "remote":
        if len(infos) != 1:
            raise ValueError(f"datasets={[i.name for i in infos]}: a remote run trains on one scene at a time")
        from mamol.models.remote import RemoteMaMOL

        return RemoteMaMOL(cfg, infos[0])
    from mamol.models.natural import NaturalMaMOL

    return NaturalMaMOL(cfg, infos)


def _public(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _describe(info: dict) -> str:
    return (f"{info['name']}: modalities {list(info['modalities'])}, bands {info['bands']}, "
            f"{info['num_classes']} classes")


class MaMOLModule(pl.LightningModule):
    """Wraps ``RemoteMaMOL`` or ``NaturalMaMOL`` for training and evaluation."""

    def __init__(self, cfg: dict, infos: list[TaskInfo | dict]) -> None:
        super().__init__()
        self.infos = [i if isinstance(i, TaskInfo) else TaskInfo(**i) for i in infos]
        self.cfg = cfg
        self.save_hyperparameters({"cfg": _public(cfg), "infos": [dataclasses.asdict(i) for i in self.infos]})
        self.model = _build_model(cfg, self.infos)
        self.task_weight = {i.name: float(cfg.get("loss_names", {}).get(i.name, 1.0)) for i in self.infos}
        self.metrics = nn.ModuleDict({
            f"{stage}_{info.name}": TaskMetrics(info.kind, info.name, info.num_classes)
            for stage in ("val", "test") for info in self.infos
        })
        self.test_results: dict[str, Any] = {}
        # Checkpoints omit the frozen backbone (rebuilt from clip_weights); see on_load_checkpoint.
        self.strict_loading = False
        self._fingerprint = self.backbone_fingerprint()

    # ------------------------------------------------------------------ forward and loss
    def _task(self, batch: dict) -> TaskInfo:
        name = batch.get("task", self.infos[0].name)
        if isinstance(name, (list, tuple)):
            name = name[0]
        return next(i for i in self.infos if i.name == name)

    def forward(self, batch: dict) -> Tensor:
        return self.model(batch)

    def _loss(self, logits: Tensor, batch: dict, info: TaskInfo) -> Tensor:
        labels = batch["label"]
        if info.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.cross_entropy(logits.float(), labels.long())

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        info = self._task(batch)
        logits = self(batch)
        loss = self.task_weight[info.name] * self._loss(logits, batch, info)
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        aux = self.model.aux_loss() if hasattr(self.model, "aux_loss") else None
        if aux is not None:
            self.log("train/aux_loss", aux, batch_size=logits.shape[0])
            loss = loss + aux
        return loss

    def _prefix(self, stage: str, info: TaskInfo) -> str:
        """``<stage>/`` for one task, ``<stage>/<task>/`` for several."""
        return f"{stage}/" if len(self.infos) == 1 else f"{stage}/{info.name}/"

    def _eval_step(self, stage: str, batch: dict) -> None:
        info = self._task(batch)
        logits = self(batch)
        self.log(self._prefix(stage, info) + "loss", self._loss(logits, batch, info), batch_size=logits.shape[0],
                 add_dataloader_idx=False, sync_dist=True)
        self.metrics[f"{stage}_{info.name}"].update(logits, batch["label"])

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch)

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        """Log ``<stage>/<metric>`` (``<stage>/<task>/<metric>`` with several tasks) and ``<stage>/the_metric``."""
        results: dict[str, float] = {}
        the_metrics = []
        for info in self.infos:
            metrics = self.metrics[f"{stage}_{info.name}"]
            if not metrics.updated:
                continue
            values = metrics.compute()
            metrics.reset()
            prefix = self._prefix(stage, info)
            for key, value in values.items():
                if key == "the_metric":
                    continue
                self.log(prefix + key, value, sync_dist=False)
                results[prefix + key] = float(value)
            the_metrics.append(values["the_metric"])
        if the_metrics:
            the_metric = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in the_metrics]).mean()
            self.log(f"{stage}/the_metric", the_metric, prog_bar=True)
            results[f"{stage}/the_metric"] = float(the_metric)
        return results

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._eval_epoch_end("test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict:
        """AdamW; no decay on biases, norms, 1-d tensors and the pattern embedding; head(s) at ``lr_mult`` x lr."""
        cfg = self.cfg
        lr, wd, lr_mult = float(cfg["learning_rate"]), float(cfg["weight_decay"]), float(cfg.get("lr_mult", 1))
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            parts = name.split(".")
            no_decay = (param.ndim < 2 or name.endswith(".bias") or "pattern" in name
                        or any("norm" in p or p.startswith("ln") for p in parts))
            is_head = any(p in ("head", "heads") for p in parts)
            groups.setdefault((no_decay, is_head), []).append(param)
        param_groups = [
            {"params": params, "weight_decay": 0.0 if no_decay else wd, "lr": lr * (lr_mult if is_head else 1.0)}
            for (no_decay, is_head), params in sorted(groups.items())
        ]
        optimizer = torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup_cfg = float(cfg.get("warmup_steps", 0) or 0)
        warmup = int(warmup_cfg * total) if warmup_cfg < 1 else int(warmup_cfg)
        end_ratio = float(cfg.get("end_lr", 0)) / lr if lr > 0 else 0.0
        decay = cfg.get("decay_power", 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_lambda(step, total, warmup, decay, end_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def backbone_fingerprint(self) -> float:
        """A cheap checksum of the frozen weights, to refuse checkpoints trained on another backbone."""
        with torch.no_grad():
            return float(sum(p.detach().double().sum() for p in self.model.parameters() if not p.requires_grad))

    def trainable_keys(self) -> set[str]:
        return {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep_frozen = bool(self.cfg.get("clip_random_init"))
        trainable = self.trainable_keys()
        state = checkpoint["state_dict"]
        buffers = {f"model.{n}" for n, _ in self.model.named_buffers()}
        if not keep_frozen:
            checkpoint["state_dict"] = {k: v for k, v in state.items() if k in trainable or k in buffers
                                        or not k.startswith("model.")}
        checkpoint[CHECKPOINT_KEY] = {
            "infos": [dataclasses.asdict(i) for i in self.infos],
            "backbone": {"vit": self.cfg.get("vit"), "clip_weights": self.cfg.get("clip_weights"),
                         "random_init": keep_frozen, "fingerprint": self._fingerprint},
            "frozen_included": keep_frozen,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.check_compatible(checkpoint, source="resume_from")

    def check_compatible(self, checkpoint: dict, source: str) -> None:
        """Refuse a checkpoint made for other data or another backbone, with a message saying which."""
        meta = checkpoint.get(CHECKPOINT_KEY)
        if meta is None:
            return
        ours = [dataclasses.asdict(i) for i in self.infos]
        fields = ("name", "modalities", "bands", "num_classes")
        if [[m[f] for f in fields[1:]] for m in meta["infos"]] != [[o[f] for f in fields[1:]] for o in ours]:
            raise CheckpointMismatch(
                f"{source}: the checkpoint was made for {'; '.join(_describe(m) for m in meta['infos'])}, "
                f"but this run's data is {'; '.join(_describe(o) for o in ours)}. Use a checkpoint trained on "
                f"this dataset (and the same `modalities`).")
        backbone = meta.get("backbone", {})
        if not meta.get("frozen_included") and backbone.get("fingerprint") is not None:
            if backbone.get("vit") != self.cfg.get("vit"):
                raise CheckpointMismatch(f"{source}: the checkpoint was trained with vit={backbone.get('vit')!r}, "
                                         f"this run builds vit={self.cfg.get('vit')!r}")
            if abs(backbone["fingerprint"] - self._fingerprint) > 1e-6 * max(1.0, abs(self._fingerprint)):
                raise CheckpointMismatch(
                    f"{source}: the checkpoint was trained on other frozen CLIP weights "
                    f"(clip_weights={backbone.get('clip_weights')!r}); this run loaded "
                    f"clip_weights={self.cfg.get('clip_weights')!r}. Pass the same clip_weights.")

    def load_weights(self, path: str | Path) -> None:
        """Load ``load_path``: a Lightning ``.ckpt`` or a plain state dict, with or without a ``model.`` prefix."""
        path = Path(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is reported with the file name
            raise CheckpointMismatch(f"load_path={str(path)!r} is not a readable PyTorch checkpoint: {err}") from err
        if not isinstance(obj, dict):
            raise CheckpointMismatch(f"load_path={str(path)!r}: expected a checkpoint dict, found {type(obj).__name__}")
        self.check_compatible(obj, source=f"load_path={str(path)!r}")
        state = obj.get("state_dict", obj)
        if not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointMismatch(f"load_path={str(path)!r}: no state dict found (keys: {sorted(obj)[:8]})")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        if not any(k.startswith("model.") for k in state):
            state = {f"model.{k}": v for k, v in state.items()}
        own = self.state_dict()
        shape_errors = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
                        for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing = sorted(self.trainable_keys() - set(state))
        if shape_errors or missing:
            detail = "; ".join(shape_errors[:5]) if shape_errors else f"missing trainable tensors {missing[:5]}"
            raise CheckpointMismatch(
                f"load_path={str(path)!r} does not fit this model ({_describe(dataclasses.asdict(self.infos[0]))}, "
                f"vit={self.cfg.get('vit')!r}): {detail}"
                f"{' ...' if len(shape_errors) > 5 or len(missing) > 5 else ''}")
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            log.warning("load_path=%s: %d tensors not used by this model, e.g. %s", path, len(unexpected),
                        unexpected[:3])
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        log.info("loaded %d tensors from %s", len(set(state) & set(own)), path)
