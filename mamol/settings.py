"""Validation of the run config and the values derived from it, in one place.

Every check names the key to change. ``resolve`` returns a new dict; the derived hardware values live under
``cfg["_derived"]`` so the user's keys keep their meaning.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import torch

from mamol.missing import DEFAULT_MISSING_TABLE_ROOT

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
NATURAL_TASKS = ("mmimdb", "food101", "hatememes")  # loss_names keys; every other dataset is a remote scene


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def hardware(cfg: dict) -> dict[str, Any]:
    """Accelerator, devices, precision, strategy and gradient accumulation for ``cfg``."""
    num_gpus = int(cfg.get("num_gpus", 0) or 0)
    num_nodes = int(cfg.get("num_nodes", 1) or 1)
    _require(num_gpus >= 0, f"num_gpus must be >= 0, found {num_gpus}")
    _require(num_nodes >= 1, f"num_nodes must be >= 1, found {num_nodes}")
    use_gpu = num_gpus > 0 and torch.cuda.is_available()
    if num_gpus > 0 and not use_gpu:
        log.warning("num_gpus=%d but no GPU is available: running on the CPU", num_gpus)
    devices = num_gpus if use_gpu else 1

    precision = str(cfg.get("precision", 32))
    _require(precision in {"16", "32", "bf16", "16-mixed", "bf16-mixed", "32-true"},
             f"precision must be 16, 'bf16' or 32, found {cfg.get('precision')!r}")
    if use_gpu:
        lightning_precision = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true"}.get(precision, precision)
    else:
        # Lightning would turn 16 into bf16 on the CPU; the CPU path is full precision by decision (SPEC §2).
        if precision not in {"32", "32-true"}:
            log.info("precision=%s applies to GPUs only: the CPU run uses 32-bit", precision)
        lightning_precision = "32-true"

    batch_size = int(cfg["batch_size"])
    per_device = int(cfg.get("per_gpu_batchsize") or 0)
    world = devices * num_nodes
    if per_device == 0:
        per_device = max(batch_size // world, 1)
    _require(batch_size >= 1 and per_device >= 1,
             f"batch_size ({batch_size}) and per_gpu_batchsize ({per_device}) must be >= 1")
    accumulate = batch_size // (per_device * world)
    _require(accumulate >= 1,
             f"gradient accumulation = batch_size // (per_gpu_batchsize x devices x num_nodes) = "
             f"{batch_size} // ({per_device} x {devices} x {num_nodes}) = 0: raise batch_size to at least "
             f"{per_device * world}, or lower per_gpu_batchsize / num_gpus / num_nodes")
    if batch_size % (per_device * world):
        log.warning("batch_size=%d is not a multiple of per_gpu_batchsize x devices x nodes = %d: the effective "
                    "batch is %d", batch_size, per_device * world, accumulate * per_device * world)
    strategy = "ddp" if world > 1 else "auto"
    return dict(accelerator="gpu" if use_gpu else "cpu", devices=devices, num_nodes=num_nodes,
                precision=lightning_precision, per_device_batch=per_device, accumulate=accumulate,
                strategy=strategy)


def resolve(config: dict) -> dict:
    """Check ``config`` and return a copy with normalised values and ``_derived`` hardware settings."""
    cfg = copy.deepcopy(dict(config))
    if isinstance(cfg.get("datasets"), str):
        cfg["datasets"] = [cfg["datasets"]]
    _require(bool(cfg.get("datasets")), "datasets must name at least one task, e.g. datasets='[\"houston2013\"]'")
    _require(bool(cfg.get("data_root")), "data_root is empty: set data_root=<folder with the Arrow files>")
    _require(Path(cfg["data_root"]).is_dir(), f"data_root={cfg['data_root']!r} is not a folder")

    for key in ("missing_ratio", "missing_type"):
        value = cfg.get(key)
        if not isinstance(value, dict):  # one value for every split
            cfg[key] = {split: value for split in SPLITS}
        missing_splits = [s for s in SPLITS if s not in cfg[key]]
        _require(not missing_splits, f"{key} must give a value for {list(SPLITS)}, missing {missing_splits}")
    for split, ratio in cfg["missing_ratio"].items():
        _require(0.0 <= float(ratio) <= 1.0, f"missing_ratio['{split}'] must be in [0, 1], found {ratio}")
    if cfg.get("test_ratio") is not None:
        _require(0.0 <= float(cfg["test_ratio"]) <= 1.0, f"test_ratio must be in [0, 1], found {cfg['test_ratio']}")
    _require(0.0 <= float(cfg.get("both_ratio", 0.5)) <= 1.0, f"both_ratio must be in [0, 1], found {cfg.get('both_ratio')}")
    _require(cfg.get("missing_fill", "ones") in ("ones", "zeros"),
             f"missing_fill must be 'ones' or 'zeros', found {cfg.get('missing_fill')!r}")
    if not cfg.get("missing_table_root"):
        cfg["missing_table_root"] = str(DEFAULT_MISSING_TABLE_ROOT)

    loss_names = dict(cfg.get("loss_names") or {})
    weights = {}
    for task in cfg["datasets"]:
        key = task if task in NATURAL_TASKS else "remote"
        weight = float(loss_names.get(key, 1.0 if key == "remote" else 0.0))
        _require(weight > 0, f"loss_names['{key}'] is {weight}: the loss of dataset {task!r} would be off; "
                             f"set loss_names.{key}=1 (or use the task_finetune_{task} named config)")
        weights[task] = weight
    cfg["loss_names"] = weights

    if cfg.get("top_k") is not None and cfg.get("num_dynamic_experts") is not None:
        _require(int(cfg["top_k"]) <= int(cfg["num_dynamic_experts"]),
                 f"top_k={cfg['top_k']} exceeds num_dynamic_experts={cfg['num_dynamic_experts']}")
    if any(task in NATURAL_TASKS for task in cfg["datasets"]):
        # CLIP's text context and input size are fixed by the backbone (MMP used other values).
        _require(1 <= int(cfg.get("max_text_len", 77)) <= 77,
                 f"max_text_len={cfg.get('max_text_len')}: CLIP's text encoder takes at most 77 tokens")
        _require(int(cfg.get("image_size", 224)) == 224,
                 f"image_size={cfg.get('image_size')}: the CLIP ViT backbones here take 224 x 224 images")
    _require(str(cfg.get("optim_type", "adamw")).lower() == "adamw",
             f"optim_type must be 'adamw' (the only optimiser of the method), found {cfg.get('optim_type')!r}")
    warmup = float(cfg.get("warmup_steps", 0) or 0)
    _require(warmup >= 0, f"warmup_steps must be >= 0, found {warmup}")
    decay = cfg.get("decay_power", 1)
    _require(decay == "cosine" or (isinstance(decay, (int, float)) and decay > 0),
             f"decay_power must be a positive number or 'cosine', found {decay!r}")
    if cfg.get("test_only"):
        _require(bool(cfg.get("load_path")), "test_only=True needs load_path=<checkpoint to evaluate>")
    for key in ("load_path", "resume_from"):
        if cfg.get(key):
            _require(Path(cfg[key]).is_file(), f"{key}={cfg[key]!r}: no such file")
    if cfg.get("prompt_type") not in (None, "", "input"):
        log.info("prompt_type=%r is accepted for DCP command lines and has no effect in MaMOL", cfg["prompt_type"])
    cfg["_derived"] = hardware(cfg)
    return cfg


def lr_lambda(step: int, total_steps: int, warmup: int, decay_power: float | str, end_ratio: float) -> float:
    """Learning-rate factor: linear warm-up to 1 over ``warmup`` steps, then decay to ``end_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total_steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    if decay_power == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = (1.0 - progress) ** float(decay_power)
    return end_ratio + (1.0 - end_ratio) * shape
