"""Optimiser and learning-rate schedule (SPEC §6): AdamW groups and linear warm-up then decay."""
from __future__ import annotations

import math

import torch
from torch import nn

from mamol.settings import OptimSettings


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


def parameter_groups(model: nn.Module, optim: OptimSettings) -> list[dict]:
    """AdamW groups of the trainable parameters of ``model``.

    No weight decay on tensors of fewer than 2 dimensions (biases, norms) and on what the model declares in
    ``no_weight_decay()``; the parameters of ``head_parameters()`` run at ``lr_mult`` x the learning rate.
    """
    no_decay = {id(p) for p in model.no_weight_decay()}
    heads = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            key = (param.ndim < 2 or id(param) in no_decay, id(param) in heads)
            groups.setdefault(key, []).append(param)
    return [{"params": params, "weight_decay": 0.0 if skip_decay else optim.weight_decay,
             "lr": optim.learning_rate * (optim.lr_mult if is_head else 1.0)}
            for (skip_decay, is_head), params in sorted(groups.items())]


def build_optimizer(model: nn.Module, optim: OptimSettings, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (β = (0.9, 0.98), eps 1e-8) and its per-step schedule over ``total_steps`` optimiser steps."""
    optimizer = torch.optim.AdamW(parameter_groups(model, optim), lr=optim.learning_rate, betas=(0.9, 0.98), eps=1e-8)
    warmup = int(optim.warmup_steps * total_steps) if optim.warmup_steps < 1 else int(optim.warmup_steps)
    end_ratio = optim.end_lr / optim.learning_rate if optim.learning_rate > 0 else 0.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_lambda(step, total_steps, warmup, optim.decay_power, end_ratio))
    return optimizer, scheduler
