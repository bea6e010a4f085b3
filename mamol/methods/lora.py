"""Plain LoRA (Hu et al., ICLR 2022) on the frozen CLIP blocks MaMOL adapts: no routing, no missing pattern.

Every adapted weight W (D_out, D_in) of a chosen block gets one low-rank update:

    y = W x + b + (α / r) · B A drop(x),  A (r, D_in), B (D_out, r), B = 0 at the start

``lora_targets`` names the adapted weights: ``"q"``, ``"k"``, ``"v"`` (the rows of open_clip's packed
``in_proj_weight``, D -> D each), ``"o"`` (the attention's ``out_proj``, D -> D) and ``"mlp"`` (``c_fc``,
D -> 4D, and ``c_proj``, 4D -> D). The default ``["q", "v"]`` is the paper's choice. The blocks are MaMOL's
(``adapter_layers`` / ``adapter_layers_text``; None = the last half of the image encoder for remote data, the
last two blocks of each tower for image–text data). One update serves every row, whatever its missing pattern
or modality. ``drop`` is dropout of probability ``lora_dropout`` on the update's input in training mode (0, the
default, leaves the update as above). ``budget`` scales ``lora_rank`` (``CAPACITY``). The layers are
:mod:`mamol.models.lora`; :func:`add_updates` places them (``specialists`` places its per-pattern updates with
it, on the same weights).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from mamol.errors import ConfigError
from mamol.methods.options import BlockOptions, key
from mamol.models.lora import PROJECTIONS, LoRALinear, LowRank, open_attention
from mamol.models.method import Method

TARGETS = (*PROJECTIONS, "o", "mlp")
"""What ``lora_targets`` may name."""


@dataclass(frozen=True)
class LoRAOptions(BlockOptions):
    """LoRA's config keys, on MaMOL's blocks (``adapter_layers`` / ``adapter_layers_text``)."""

    CAPACITY: ClassVar[str | None] = "lora_rank"
    lora_rank: int = key(8, "lora: rank r of every low-rank update (the LoRA paper's r = 8)")
    lora_alpha: float = key(8.0, "lora: the update is scaled by lora_alpha / lora_rank (the paper sets alpha = "
                                 "the first r)")
    lora_targets: tuple[str, ...] = key(
        ("q", "v"), 'lora: adapted weights, any of "q", "k", "v", "o" (attention), "mlp" (both MLP layers)')
    lora_dropout: float = key(0.0, "lora: dropout probability on each update's input, in training only (0 = none, "
                                   "the paper's setting here; the official code's lora_dropout)")

    def check(self) -> None:
        """Each error names the key."""
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ConfigError(f"lora_rank must be >= 1 and lora_alpha > 0, found {self.lora_rank} and "
                              f"{self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), found {self.lora_dropout}")
        unknown = [t for t in self.lora_targets if t not in TARGETS]
        if unknown or not self.lora_targets or len(set(self.lora_targets)) != len(self.lora_targets):
            raise ConfigError(f"lora_targets={list(self.lora_targets)}: expected a non-empty list of distinct "
                              f"names from {list(TARGETS)}")


class LoRA(Method):
    """One low-rank update per adapted weight of the chosen blocks of each tower."""

    name: ClassVar[str] = "lora"
    title: ClassVar[str] = "LoRA"
    Options: ClassVar[type] = LoRAOptions

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: LoRAOptions = self.options
        add_updates(transformer, o.blocks(tower, transformer, self.kind), o.lora_targets,
                    lambda d_in, d_out: LowRank(d_in, d_out, o.lora_rank, o.lora_alpha, o.lora_dropout))


def add_updates(transformer: nn.Module, layers: Sequence[int], targets: Sequence[str],
                make: Callable[[int, int], nn.Module]) -> None:
    """Put an update ``make(D_in, D_out)`` beside each weight of ``targets`` (:data:`TARGETS`) in each block of
    ``layers``: q/k/v as deltas of :class:`~mamol.models.lora.OpenAttention`, the attention's output and both MLP
    layers as :class:`LoRALinear`."""
    width = transformer.width
    for i in layers:
        block = transformer.resblocks[i]
        projections = [t for t in targets if t in PROJECTIONS]
        if projections or "o" in targets:
            attention = open_attention(block)
            for name in projections:
                attention.deltas[name] = make(width, width)
            if "o" in targets:
                attention.out_proj = LoRALinear(attention.out_proj, make(width, width))
        if "mlp" in targets:
            c_fc, c_proj = block.mlp.c_fc, block.mlp.c_proj
            block.mlp.c_fc = LoRALinear(c_fc, make(c_fc.in_features, c_fc.out_features))
            block.mlp.c_proj = LoRALinear(c_proj, make(c_proj.in_features, c_proj.out_features))
