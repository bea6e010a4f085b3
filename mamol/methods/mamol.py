"""MaMOL (SPEC §5.3): a missing-aware mixture of LoRA experts beside the frozen MLP of selected blocks.

Per adapted block, for a token z (D) of a row whose sample has missing pattern t and present modalities π:

    e = W_e · f(t)                                   pattern embedding (p), one per tower
    g = softmax(W2 · GELU(W1 [z ; e]))               router over N_dyn experts, per token
    dyn = Σ_{k ∈ top-k(g)} g_k · (z A_k) B_k          gates not renormalised
    static = Σ_shared (z A_s) B_s + Σ_m π_m (z A_m) B_m
    Δ = scale · (W_o · GELU(dyn + static) + b_o)      block: out = h + MLP(LN2(h)) + Δ

with A (D, r), B (r, D), f(t) a one-hot over the three codes (two modalities) or the missing bits (three).
The layer itself is :class:`mamol.models.adapter.MaMOLAdapter`; this file chooses its sizes, puts it into the
towers and conditions it on each row's pattern. ``None`` sizes mean the paper's values for the data kind,
stated once in :data:`PAPER`: remote 8 / 2 / top-1 / ×1.0 in the last half of the blocks; image–text 16 / 4 /
top-2 / ×0.2 in the last two blocks of each tower.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.models.adapter import AdapterContext, MaMOLAdapter, PatternEmbedding, inject_adapters, resolve_layers
from mamol.models.method import Method, Rows

PAPER: dict[str, dict] = {
    "remote": dict(adapter_rank=8, num_dynamic_experts=2, top_k=1, adapter_scale=1.0),
    "natural": dict(adapter_rank=16, num_dynamic_experts=4, top_k=2, adapter_scale=0.2),
}
"""The paper's adapter sizes per data kind, used for keys left None."""


@dataclass(frozen=True)
class MaMOLOptions:
    """MaMOL's config keys (see ``config.py`` for their meaning)."""

    adapter_layers: tuple[int, ...] | None  # image-tower blocks; None = last half (remote), last two (image-text)
    adapter_layers_text: tuple[int, ...] | None  # text-tower blocks (image-text data); None = the last two
    adapter_rank: int
    num_dynamic_experts: int
    top_k: int
    num_shared_experts: int
    pattern_dim: int
    adapter_scale: float
    router_hidden: int | None  # None = D // 2
    sparse_experts: bool
    load_balance_weight: float

    @staticmethod
    def paper_defaults(kind: str) -> dict:
        return PAPER[kind]

    def check(self) -> None:
        """Relations between the keys, each error naming them."""
        if not 1 <= self.top_k <= self.num_dynamic_experts:
            raise ConfigError(f"top_k={self.top_k} must be between 1 and num_dynamic_experts="
                              f"{self.num_dynamic_experts}")
        for key in ("adapter_rank", "pattern_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, found {getattr(self, key)}")
        if self.num_shared_experts < 0 or self.load_balance_weight < 0:
            raise ConfigError(f"num_shared_experts ({self.num_shared_experts}) and load_balance_weight "
                              f"({self.load_balance_weight}) must be >= 0")


class MaMOL(Method):
    """Missing-aware mixture of LoRA experts: adapters in the chosen blocks of each tower, one pattern
    embedding per tower, conditioned per row on the sample's missing pattern and present modalities."""

    name: ClassVar[str] = "mamol"
    Options: ClassVar[type] = MaMOLOptions

    def __init__(self, options: MaMOLOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        self.patterns = nn.ModuleDict()  # tower -> PatternEmbedding
        self.contexts: dict[str, AdapterContext] = {}
        self.adapters: list[MaMOLAdapter] = []  # live inside the towers' blocks; a plain list, not registered twice

    def default_layers(self, tower: str, depth: int) -> range:
        """The paper's blocks: the last half of the image encoder for remote data, the last two otherwise."""
        return range(depth // 2, depth) if self.kind == "remote" else range(depth - 2, depth)

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: MaMOLOptions = self.options
        key = "adapter_layers_text" if tower == "text" else "adapter_layers"
        depth = len(transformer.resblocks)
        layers = resolve_layers(getattr(o, key), depth, key, self.default_layers(tower, depth))
        width = transformer.width
        context = AdapterContext()

        def make() -> MaMOLAdapter:
            adapter = MaMOLAdapter(width, len(self.modalities), rank=o.adapter_rank, num_dynamic=o.num_dynamic_experts,
                                   top_k=o.top_k, num_shared=o.num_shared_experts, pattern_dim=o.pattern_dim,
                                   router_hidden=o.router_hidden, scale=o.adapter_scale, sparse=o.sparse_experts)
            adapter.balance = o.load_balance_weight > 0
            return adapter

        self.adapters += inject_adapters(transformer, layers, make, context)
        self.contexts[tower] = context
        self.patterns[tower] = PatternEmbedding(len(self.modalities), o.pattern_dim)

    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        pattern = self.patterns[tower](rows.codes)  # (N, p)
        with self.contexts[tower].rows(pattern, rows.present.to(x.dtype)):
            return transformer(x, attn_mask=attn_mask)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        """The pattern embeddings: embedding tables, not decayed (the release decays them; README Decisions)."""
        return self.patterns.parameters()

    def aux_loss(self) -> Tensor | None:
        """``load_balance_weight`` × mean load-balancing term of the adapters (last training forward)."""
        weight = self.options.load_balance_weight
        terms = [a.aux_loss for a in self.adapters if a.aux_loss is not None]
        return weight * torch.stack(terms).mean() if weight > 0 and terms else None
