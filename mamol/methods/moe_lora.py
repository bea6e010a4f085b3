"""MoE-LoRA: the usual token-routed mixture of LoRA experts beside the frozen MLP, blind to missing modalities.

Per adapted block, for a token z (D) after ``ln_2`` (the block becomes ``out = h + MLP(z) + Δ(z)``):

    g = softmax(W_g z)                                  linear router over E experts, on the token only
    topk:  Δ = scale · Σ_{e ∈ top-k(g)} g_e · (z A_e) B_e        gates not renormalised (as MaMOL)
    soft:  Δ = scale · Σ_e g_e · (z A_e) B_e                     dense mixture of every expert
    + scale · Σ_s (z A_s) B_s                           shared experts, always on (num_shared_experts > 0)

with A (D, r), B (r, D), both N(0, 0.02²) like MaMOL's experts, W_g (E, D) without bias. Unlike MaMOL there
is no missing-pattern embedding, no modality expert and no output projection: the paradigm the paper's
dual routing is compared with. Sizes are MaMOL's keys so the comparison holds them equal (``adapter_rank``,
``num_dynamic_experts`` = E, ``top_k``, ``adapter_scale``, ``adapter_layers`` / ``adapter_layers_text``, per
data kind as in MaMOL's paper values); ``num_shared_experts`` is 0 unless set (the shared-plus-routed
paradigm). The expert sums are the tested functions of :mod:`mamol.models.adapter`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.methods.options import PAPER, ExpertOptions, key
from mamol.models.adapter import (
    balance_loss,
    clear_aux_loss,
    gated_lora,
    inject_adapters,
    topk_lora,
    weighted_aux_loss,
)
from mamol.models.method import Method


@dataclass(frozen=True)
class MoELoRAOptions(ExpertOptions):
    """MoE-LoRA's config keys: MaMOL's expert sizes (without shared experts unless set) plus the router."""

    CAPACITY: ClassVar[str | None] = "adapter_rank"

    moe_router: Literal["topk", "soft", "sparse"] = key(
        "topk", 'moe_lora: "topk" (each token\'s top_k experts; sparse dispatch on the CPU, the equal dense masked '
                'formula elsewhere), "sparse" (top_k with real sparse dispatch on every device: each expert runs on '
                'its routed tokens only, at a host read per block on a GPU) or "soft" (softmax mixture of all)')

    @staticmethod
    def paper_defaults(kind: str) -> dict:
        """MaMOL's sizes for the data kind, without shared experts (the plain routed paradigm)."""
        return {**PAPER[kind], "num_shared_experts": 0}

    def check(self) -> None:
        """Each error names the keys."""
        if self.num_dynamic_experts < 1 or self.adapter_rank < 1 or self.num_shared_experts < 0:
            raise ConfigError(f"moe_lora needs num_dynamic_experts >= 1, adapter_rank >= 1, num_shared_experts >= 0;"
                              f" found {self.num_dynamic_experts}, {self.adapter_rank}, {self.num_shared_experts}")
        if self.moe_router in ("topk", "sparse") and not 1 <= self.top_k <= self.num_dynamic_experts:
            raise ConfigError(f"top_k={self.top_k} must be between 1 and num_dynamic_experts="
                              f"{self.num_dynamic_experts}")
        if self.load_balance_weight < 0 or (self.moe_router == "soft" and self.load_balance_weight > 0):
            raise ConfigError(f"load_balance_weight={self.load_balance_weight}: must be >= 0, and 0 with "
                              f"moe_router='soft' (every expert takes every token; there is nothing to balance)")


class MoELoRALayer(nn.Module):
    """Δ(z) of one block: routed (top-k or soft) LoRA experts plus optional shared ones."""

    def __init__(self, dim: int, rank: int, num_experts: int, top_k: int, num_shared: int, router: str,
                 scale: float, sparse: bool, init_std: float = 0.02) -> None:
        super().__init__()
        self.dim, self.top_k, self.router_kind, self.scale, self.sparse = dim, top_k, router, float(scale), sparse
        self.A = nn.Parameter(torch.randn(num_experts, dim, rank) * init_std)  # (E, D, r)
        self.B = nn.Parameter(torch.randn(num_experts, rank, dim) * init_std)  # (E, r, D)
        self.shared_A = nn.Parameter(torch.randn(num_shared, dim, rank) * init_std)  # (S, D, r)
        self.shared_B = nn.Parameter(torch.randn(num_shared, rank, dim) * init_std)  # (S, r, D)
        self.router = nn.Linear(dim, num_experts, bias=False)  # W_g
        self.balance = False  # compute the load-balancing statistic in training (top-k router)
        self.aux_loss: Tensor | None = None

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, rank={self.A.shape[-1]}, experts={self.A.shape[0]}, router={self.router_kind}"
                f"{f' top-{self.top_k}' if self.router_kind != 'soft' else ''}, shared={self.shared_A.shape[0]}, "
                f"scale={self.scale}")

    def forward(self, z: Tensor) -> Tensor:
        """Δ for tokens z (N, L, D) -> (N, L, D)."""
        probs = self.router(z).softmax(dim=-1)  # (N, L, E)
        self.aux_loss = None
        if self.router_kind == "soft":
            mix = gated_lora(z, self.A, self.B, probs)
        else:
            gate_val, gate_idx = probs.topk(self.top_k, dim=-1)  # (N, L, k)
            mix = topk_lora(z, self.A, self.B, gate_val, gate_idx, sparse=self.sparse or self.router_kind == "sparse",
                            anywhere=self.router_kind == "sparse")
            if self.balance and self.training:
                self.aux_loss = balance_loss(probs, gate_idx)
        if self.shared_A.shape[0]:
            mix = mix + gated_lora(z, self.shared_A, self.shared_B, z.new_ones(1, 1, self.shared_A.shape[0]))
        return self.scale * mix


class MoELoRA(Method):
    """MoE-LoRA layers beside the frozen MLP of the chosen blocks of each tower; rows are not conditioned."""

    name: ClassVar[str] = "moe_lora"
    title: ClassVar[str] = "MoE-LoRA"
    Options: ClassVar[type] = MoELoRAOptions

    def __init__(self, options: MoELoRAOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        self.layers: list[MoELoRALayer] = []  # live inside the towers' blocks; a plain list, not registered twice

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: MoELoRAOptions = self.options
        blocks = o.blocks(tower, transformer, self.kind)

        def make() -> MoELoRALayer:
            layer = MoELoRALayer(transformer.width, o.adapter_rank, o.num_dynamic_experts, o.top_k,
                                 o.num_shared_experts, o.moe_router, o.adapter_scale, o.sparse_experts)
            layer.balance = o.load_balance_weight > 0
            return layer

        self.layers += inject_adapters(transformer, blocks, make, context=None)

    def begin_forward(self) -> None:
        clear_aux_loss(self.layers)

    def aux_loss(self) -> Tensor | None:
        """``load_balance_weight`` × mean load-balancing term of the layers (last training forward)."""
        return weighted_aux_loss(self.layers, self.options.load_balance_weight)
