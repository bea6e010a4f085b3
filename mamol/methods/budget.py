"""Matched parameter budgets (``budget`` key): scale a method until it trains as many parameters as another.

``budget="matched"`` sets the chosen method's capacity key (``Options.CAPACITY``: ``lora_rank``, ``adapter_rank``,
``prompt_length``, ...) so that what it trains is within :data:`TOLERANCE` (±5 %) of what MaMOL trains on the
same data (kind, bands, classes, modalities, backbone); ``budget="lora"`` does the same towards plain LoRA's
count (MaMOL scaled down). The reference is built from the same config with its own method.
``budget="default"`` leaves every size as configured.

What is matched is the method's share: the model's trainable parameters (what ``test_results.json`` and the
reports print) minus ``linear_probe``'s on the same data, the part every method trains alike (tokenizers and
head; on image–text data also ``ln_post``, ``proj``, ``ln_final``). Matching the shares within 5 % matches the
totals within 5 % too, and it is not satisfied merely because a large shared part (the tiny test backbone's
tokenizers) dwarfs the methods.

The count depends only on shapes, so each candidate is built on PyTorch's ``meta`` device (no memory, no
initialisation, ~0.1 s for ViT-B/16) and counted exactly as :func:`mamol.models.method.trainable_parameters` counts the
run's model. Counts grow with the capacity key (tested for every registered method), so the solver doubles the
value until the count reaches the target, bisects, and keeps the closer of the two values around the target
(the smaller on a tie); values are multiples of ``Options.capacity_step()`` (3 for DCP's prompt thirds).
A method without a capacity key (``linear_probe``) and a best count outside the tolerance are refused, by name:
MaMOL's output projection and router alone outweigh LoRA's updates on every CLIP here, so ``budget="lora"``
refuses ``method=mamol`` at the paper's sizes (docs/rivals.md).

:func:`settle` runs where the data's shapes are first known (``mamol.train.run``, the evaluation commands, the
planner's measured steps): the settled ``MethodSettings`` records the choice (``capacity``), so ``config.json``
and ``test_results.json`` carry the value and the budget.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mamol.errors import ConfigError
from mamol.methods import build_model, method_class
from mamol.models.method import trainable_parameters
from mamol.settings import BackboneSettings, MethodSettings, ModelSettings, RunSettings, from_config, resolve_model
from mamol.tasks import TaskInfo

REFERENCES = {"matched": "mamol", "lora": "lora"}
"""Budget -> the method whose trainable-parameter count (at its configured sizes) the run's method matches."""
TOLERANCE = 0.05
"""Largest relative difference of the method's share from the reference's a settled budget may leave."""
SHARED = "linear_probe"
"""The method that trains only what every method shares: its count is subtracted before matching."""
MAX_CAPACITY = 4096
"""Largest capacity value the solver tries (beyond it a rank or prompt length exceeds any CLIP width)."""


def count(backbone: BackboneSettings, model: ModelSettings, method: MethodSettings, infos: Sequence[TaskInfo]) -> int:
    """Trainable parameters of the model :func:`mamol.methods.build_model` makes, built on the meta device: the
    same shapes without memory or initialisation (and without reading ``clip_weights``)."""
    shapes = dataclasses.replace(backbone, clip_weights=None, random_init=True)
    with torch.device("meta"):
        built = build_model(shapes, model, dataclasses.replace(method, budget="default", capacity=None), infos)
    return trainable_parameters(built)


def closest(counts: Callable[[int], int], target: int, step: int, largest: int = MAX_CAPACITY) -> int:
    """The multiple of ``step`` (``step`` ≤ value ≤ ``largest``) whose non-decreasing ``counts(value)`` is closest to
    ``target``; the smaller value on a tie. About 2·log2(value / step) calls of ``counts``."""
    high = 1  # in units of step
    while counts(high * step) < target and (high * 2) * step <= largest:
        high *= 2
    low = high // 2  # counts(low * step) < target, or low = 0 (no value below)
    if counts(high * step) >= target:
        while high - low > 1:
            mid = (low + high) // 2
            if counts(mid * step) >= target:
                high = mid
            else:
                low = mid
    candidates = [k for k in (low, high) if k >= 1]
    return step * min(candidates, key=lambda k: (abs(counts(k * step) - target), k))


def settle(cfg: Mapping[str, Any], kind: str, backbone: BackboneSettings, model: ModelSettings,
           method: MethodSettings, infos: Sequence[TaskInfo]) -> MethodSettings:
    """``method`` with its capacity key set for its ``budget`` on the data ``infos`` and ``capacity`` recording
    the choice; unchanged under ``budget="default"`` or when already settled. ConfigError naming the method, the
    key, the best value and both counts when no value comes within :data:`TOLERANCE`."""
    if method.budget == "default" or method.capacity is not None:
        return method
    reference = REFERENCES[method.budget]
    key = type(method.options).CAPACITY
    if key is None:
        raise ConfigError(f"budget={method.budget!r}: method={method.name} has no capacity key to scale (its "
                          f"Options.CAPACITY is None: it trains only what every method shares); use budget='default'")
    infos = list(infos)

    def total(name: str, options: Any) -> int:
        return count(backbone, model, MethodSettings(name=name, options=options), infos)

    floor = total(SHARED, method_class(SHARED).Options())
    options_class = method_class(reference).Options
    target = total(reference, from_config(options_class, cfg, defaults=options_class.paper_defaults(kind)))
    seen: dict[int, int] = {}

    def counts(value: int) -> int:  # the method's share at this capacity
        if value not in seen:
            options = dataclasses.replace(method.options, **{key: value})
            if hasattr(options, "check"):
                options.check()
            seen[value] = total(method.name, options) - floor
        return seen[value]

    if method.name == reference:
        value = getattr(method.options, key)  # the reference itself: its own sizes match by definition
    else:
        value = closest(counts, target - floor, method.options.capacity_step())
    found = counts(value) + floor
    if abs(found - target) > TOLERANCE * (target - floor):
        raise ConfigError(
            f"budget={method.budget!r}: method={method.name} cannot come within {TOLERANCE:.0%} of {reference}'s "
            f"trainable parameters by its capacity key {key}: the closest, {key}={value}, trains {found:,} against "
            f"{reference}'s {target:,} (beyond the {floor:,} every method trains: {found - floor:,} against "
            f"{target - floor:,}, {(found - target) / (target - floor):+.1%}); the method's other keys fix more than "
            f"that (use budget='default', or change them)")
    record = {"key": key, "value": value, "configured": getattr(method.options, key), "parameters": found,
              "reference": reference, "reference_parameters": target, "shared_parameters": floor}
    return dataclasses.replace(method, options=dataclasses.replace(method.options, **{key: value}), capacity=record)


def settle_run(s: RunSettings, infos: Sequence[TaskInfo]) -> RunSettings:
    """The run's settings with its budget settled on the data ``infos`` (unchanged under ``budget="default"``)."""
    method = settle(s.config, s.kind, s.backbone, s.model, s.method, infos)
    return s if method is s.method else dataclasses.replace(s, method=method)


def model_for(cfg: Mapping[str, Any], infos: Sequence[TaskInfo]) -> nn.Module:
    """The model a run with config ``cfg`` builds for ``infos``: resolved settings, settled budget, built."""
    infos = list(infos)
    kind = infos[0].kind
    backbone, model, method = resolve_model(cfg, kind, method_class(cfg["method"]).Options)
    return build_model(backbone, model, settle(cfg, kind, backbone, model, method, infos), infos)
