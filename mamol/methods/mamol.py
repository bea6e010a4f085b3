"""MaMOL (SPEC §5.3): a missing-aware mixture of LoRA experts beside the frozen MLP of selected blocks.

Per adapted block, for a token z (D) of a row whose sample has missing pattern t and present modalities π:

    e = W_e · f(t)                                   pattern embedding (p), one per tower
    g = softmax(W2 · GELU(W1 [z ; e]))               router over N_dyn experts, per token
    dyn = Σ_{k ∈ top-k(g)} g_k · (z A_k) B_k          gates not renormalised
    static = Σ_shared (z A_s) B_s + Σ_m π_m (z A_m) B_m
    Δ = scale · (W_o · GELU(dyn + static) + b_o)      block: out = h + MLP(LN2(h)) + Δ

with A (D, r), B (r, D), f(t) a one-hot over the three codes (two modalities) or the missing bits (three).

Ablations (keys of ``method=mamol``; the defaults are the full method): ``use_dynamic_experts=False`` drops
``dyn`` and the router; ``use_shared_experts=False`` and ``use_modality_experts=False`` drop those terms of
``static``; ``router_uses_pattern=False`` routes on the token alone, ``g = softmax(W2 · GELU(W1 z))``;
``modality_gate="threshold"`` replaces the presence π_m by ``[e_m > 0.5]``, the m-th coordinate of the pattern
embedding e (N, p) thresholded (SPEC §7's sentence: the release switched modality experts by a learned
projection, not by presence); ``modality_gate="release"`` is the release's exact indexing, ``[e_{m+1} > 0.5]``
(two modalities: HSI reads coordinate 1, LiDAR coordinate 2 — the one-hot slots of codes 1 and 2; the release
has no three-modality form, so three modalities are refused). The pattern embedding is created only where
something reads it. ``budget`` scales ``adapter_rank`` (``CAPACITY``).
The layer itself is :class:`mamol.models.adapter.MaMOLAdapter`; this file chooses its sizes, puts it into the
towers and conditions it on each row's pattern. Its config keys are :class:`MaMOLOptions`; ``None`` sizes mean
the paper's values for the data kind, stated once in :data:`mamol.methods.options.PAPER`: remote 8 / 2 / top-1 /
×1.0 in the last half of the blocks; image–text 16 / 4 / top-2 / ×0.2 in the last two blocks of each tower.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.methods.options import ExpertOptions, key
from mamol.models.adapter import (
    AdapterContext,
    MaMOLAdapter,
    PatternEmbedding,
    clear_aux_loss,
    inject_adapters,
    weighted_aux_loss,
)
from mamol.models.method import Method, Rows

THRESHOLD = 0.5
"""The release's modality gate: modality expert m is on where a coordinate of the pattern embedding exceeds this."""
GATE_OFFSET = {"threshold": 0, "release": 1}
"""Thresholded gates: modality expert m reads coordinate m + offset of the pattern embedding."""


@dataclass(frozen=True)
class MaMOLOptions(ExpertOptions):
    """MaMOL's config keys: the expert sizes (shared with ``moe_lora``), the pattern embedding, and ablations
    (defaults = the full method)."""

    CAPACITY: ClassVar[str | None] = "adapter_rank"

    pattern_dim: int = key(8, "size of the missing-pattern embedding e")
    router_hidden: int | None = key(None, "router hidden width; None = D // 2")
    use_dynamic_experts: bool = key(True, "ablation: False drops the pattern-routed experts and the router")
    use_shared_experts: bool = key(True, "ablation: False drops the shared experts")
    use_modality_experts: bool = key(True, "ablation: False drops the modality-specific experts")
    router_uses_pattern: bool = key(
        True, "ablation: False = the router reads the token alone, not [token ; pattern embedding]")
    modality_gate: Literal["presence", "threshold", "release"] = key(
        "presence", 'modality expert m on: "presence" (the paper), "threshold" (e_m > 0.5, SPEC §7) or "release" '
                    '(the release\'s indexing e_{m+1} > 0.5; two modalities only)')

    def check(self) -> None:
        """Relations between the keys, each error naming them."""
        if self.use_dynamic_experts and not 1 <= self.top_k <= self.num_dynamic_experts:
            raise ConfigError(f"top_k={self.top_k} must be between 1 and num_dynamic_experts="
                              f"{self.num_dynamic_experts}")
        for name in ("adapter_rank", "pattern_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, found {getattr(self, name)}")
        if self.num_shared_experts < 0 or self.load_balance_weight < 0:
            raise ConfigError(f"num_shared_experts ({self.num_shared_experts}) and load_balance_weight "
                              f"({self.load_balance_weight}) must be >= 0")


class MaMOL(Method):
    """Missing-aware mixture of LoRA experts: adapters in the chosen blocks of each tower, one pattern
    embedding per tower, conditioned per row on the sample's missing pattern and present modalities."""

    name: ClassVar[str] = "mamol"
    title: ClassVar[str] = "MaMOL"
    Options: ClassVar[type] = MaMOLOptions

    def __init__(self, options: MaMOLOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        self.patterns = nn.ModuleDict()  # tower -> PatternEmbedding
        self.contexts: dict[str, AdapterContext] = {}
        self.adapters: list[MaMOLAdapter] = []  # live inside the towers' blocks; a plain list, not registered twice
        o: MaMOLOptions = options
        threshold = o.modality_gate in GATE_OFFSET and o.use_modality_experts
        if threshold and o.modality_gate == "release" and len(self.modalities) != 2:
            raise ConfigError(f"modality_gate='release' is the release's gate for two modalities (coordinate m + 1 of "
                              f"the pattern embedding); this dataset has {len(self.modalities)} "
                              f"({list(self.modalities)}): use modality_gate='threshold' or 'presence'")
        offset = GATE_OFFSET.get(o.modality_gate, 0)
        if threshold and o.pattern_dim < len(self.modalities) + offset:
            raise ConfigError(f"modality_gate={o.modality_gate!r} reads coordinate m + {offset} of the pattern "
                              f"embedding for modality m: pattern_dim={o.pattern_dim} must be >= "
                              f"{len(self.modalities) + offset} for {len(self.modalities)} modalities")
        # The pattern embedding exists only where something reads it: the router, or the threshold gate.
        self.uses_pattern = (o.use_dynamic_experts and o.router_uses_pattern) or threshold

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: MaMOLOptions = self.options
        layers = o.blocks(tower, transformer, self.kind)
        width = transformer.width
        context = AdapterContext()

        def make() -> MaMOLAdapter:
            adapter = MaMOLAdapter(width, len(self.modalities), rank=o.adapter_rank, num_dynamic=o.num_dynamic_experts,
                                   top_k=o.top_k, pattern_dim=o.pattern_dim,
                                   router_hidden=o.router_hidden, scale=o.adapter_scale, sparse=o.sparse_experts,
                                   num_shared=o.num_shared_experts if o.use_shared_experts else 0,
                                   dynamic=o.use_dynamic_experts, modality_experts=o.use_modality_experts,
                                   pattern_router=o.router_uses_pattern)
            adapter.balance = o.load_balance_weight > 0
            return adapter

        self.adapters += inject_adapters(transformer, layers, make, context)
        self.contexts[tower] = context
        if self.uses_pattern:
            self.patterns[tower] = PatternEmbedding(len(self.modalities), o.pattern_dim)

    def gates(self, pattern: Tensor, rows: Rows, dtype: torch.dtype) -> Tensor:
        """Modality-expert gates (N, M): presence, or ``[e_{m + offset} > 0.5]`` on the pattern embedding (threshold:
        offset 0; release: 1)."""
        if self.options.modality_gate in GATE_OFFSET:
            start = GATE_OFFSET[self.options.modality_gate]
            return (pattern[:, start:start + len(self.modalities)] > THRESHOLD).to(dtype)  # (N, M)
        return rows.present.to(dtype)  # (N, M)

    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        if tower in self.patterns:
            pattern = self.patterns[tower](rows.codes)  # (N, p)
        else:
            pattern = x.new_zeros(x.shape[0], 0)  # (N, 0): nothing reads the pattern in this ablation
        with self.contexts[tower].rows(pattern, self.gates(pattern, rows, x.dtype)):
            return transformer(x, attn_mask=attn_mask)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        """The pattern embeddings: embedding tables, not decayed (the release decays them; README Decisions)."""
        return self.patterns.parameters()

    def begin_forward(self) -> None:
        clear_aux_loss(self.adapters)

    def aux_loss(self) -> Tensor | None:
        """``load_balance_weight`` × mean load-balancing term of the adapters (last training forward)."""
        return weighted_aux_loss(self.adapters, self.options.load_balance_weight)
