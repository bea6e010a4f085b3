"""MaMOL for remote sensing (SPEC §5.2, §5.4): per-modality tokenizers, one shared frozen CLIP image encoder
with MaMOL adapters, concatenated per-modality features with missing slices zeroed, linear head.

A missing modality's feature is zeroed and the encoder passes of different rows do not interact, so its
encoder pass contributes nothing to the logits or gradients: with ``skip_missing=True`` (default) only the
present (sample, modality) pairs of a batch are tokenized and encoded, all in one batched encoder call.
``skip_missing=False`` encodes everything and zeroes afterwards (the reference the tests compare to).
The optional load-balancing term (``load_balance_weight`` > 0) is computed over the rows actually encoded,
so it is the one quantity that differs between the two settings.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamol.missing import present_mask
from mamol.models.adapter import (AdapterContext, PatternEmbedding, attach_adapters, balance_loss,
                                  config_value)
from mamol.models.backbone import build_clip
from mamol.models.tokenizers import ModalityTokenizer

if TYPE_CHECKING:  # the data package is not needed to build a model
    from mamol.data.datamodule import TaskInfo

REMOTE_DEFAULTS = dict(adapter_rank=8, num_dynamic_experts=2, top_k=1, num_shared_experts=1, pattern_dim=8,
                       adapter_scale=1.0, sparse_experts=True)
"""Adapter sizes used when a config key is absent or None (the paper's remote settings)."""


def linear_head(in_features: int, num_classes: int, std: float) -> nn.Linear:
    """Linear head, weight N(0, std²), bias 0."""
    head = nn.Linear(in_features, num_classes)
    nn.init.normal_(head.weight, std=std)
    nn.init.zeros_(head.bias)
    return head


def check_vision_tower(visual: nn.Module, vit: str) -> None:
    """The encoder code below assumes an OpenAI-style ViT: class-token pooling, ln_post then proj."""
    if (getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok"
            or getattr(visual, "final_ln_after_pool", False) or getattr(visual, "proj", None) is None):
        raise ValueError(f"vit={vit!r}: MaMOL needs a CLIP ViT with class-token pooling and a projection")


class RemoteMaMOL(nn.Module):
    """MaMOL classifier for a remote-sensing scene described by a ``TaskInfo`` (2 or 3+ modalities).

    Trainable: tokenizers, adapters, pattern embedding, head. Frozen: the CLIP image encoder.
    """

    def __init__(self, cfg: dict, info: TaskInfo) -> None:
        super().__init__()
        self.modalities: tuple[str, ...] = tuple(info.modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"dataset {info.name!r}: MaMOL needs >= 2 modalities, found {self.modalities}")
        lacking = [m for m in self.modalities if m not in info.bands]
        if lacking:
            raise ValueError(f"dataset {info.name!r}: no band count for modalities {lacking} "
                             f"(metadata bands={info.bands})")
        vit = cfg.get("vit") or "ViT-B/16"
        clip = build_clip(vit, cfg.get("clip_weights"), bool(cfg.get("clip_random_init", False)))
        self.visual = clip.visual  # the text tower is not used for remote data and is dropped
        check_vision_tower(self.visual, vit)
        del clip
        width = self.visual.transformer.width
        depth = len(self.visual.transformer.resblocks)
        self.embed_dim = self.visual.output_dim
        self.skip_missing = bool(config_value(cfg, "skip_missing", True))
        self.load_balance_weight = float(cfg.get("load_balance_weight") or 0.0)

        self.context: AdapterContext
        self.context, _ = attach_adapters(self.visual.transformer, cfg, "adapter_layers",
                                          range(depth // 2, depth), len(self.modalities), REMOTE_DEFAULTS)
        self.pattern = PatternEmbedding(len(self.modalities), int(config_value(cfg, "pattern_dim", 8)))
        hidden = int(config_value(cfg, "tokenizer_dim", 256))
        self.tokenizers = nn.ModuleDict({m: ModalityTokenizer(int(info.bands[m]), width, hidden)
                                         for m in self.modalities})
        self.head = linear_head(len(self.modalities) * self.embed_dim, int(info.num_classes),
                                float(config_value(cfg, "head_init_std", 0.02)))

    # ---------------------------------------------------------------- encoder
    def positional_embedding(self, grid: tuple[int, int]) -> Tensor:
        """Frozen positional table for a (h, w) token grid plus the class token: (1 + h*w, D).

        Bicubically interpolated from CLIP's grid when the patch grid differs (e.g. a 14×14 patch on a ViT-B/32).
        """
        table = self.visual.positional_embedding  # (1 + G*G, D)
        h, w = grid
        if table.shape[0] == h * w + 1:
            return table
        g = math.isqrt(table.shape[0] - 1)
        if g * g != table.shape[0] - 1:
            raise ValueError(f"cannot interpolate a non-square positional table of {table.shape[0] - 1} positions")
        square = table[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, G, G)
        resized = F.interpolate(square, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([table[:1], resized.permute(0, 2, 3, 1).reshape(h * w, -1)])

    def encode(self, tokens: Tensor, grid: tuple[int, int], pattern: Tensor, presence: Tensor) -> Tensor:
        """Frozen CLIP image encoder with adapters on tokenized patches.

        tokens (N, h*w, D); pattern (N, p) and presence (N, M) describe each row's sample. Returns (N, embed).
        """
        v = self.visual
        cls = v.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)  # (N, 1, D)
        x = torch.cat([cls, tokens], dim=1) + self.positional_embedding(grid).to(tokens.dtype)  # (N, L, D)
        x = v.ln_pre(x)
        with self.context.rows(pattern, presence.to(tokens.dtype)):
            x = v.transformer(x)  # (N, L, D)
        return v.ln_post(x[:, 0]) @ v.proj  # (N, embed)

    # ---------------------------------------------------------------- forward
    def _inputs(self, batch: dict) -> tuple[Tensor, tuple[int, int]]:
        """Validated missing codes (B,) and the common patch grid of the batch."""
        missing = batch["missing_type"]
        grids = set()
        for m in self.modalities:
            if m not in batch:
                raise KeyError(f"batch has no {m!r} tensor; the model expects modalities {self.modalities}")
            x = batch[m]
            expected = self.tokenizers[m].in_channels
            if x.ndim != 4 or x.shape[1] != expected or x.shape[0] != missing.shape[0]:
                raise ValueError(f"batch[{m!r}] has shape {tuple(x.shape)}; expected ({missing.shape[0]}, "
                                 f"{expected}, P, P) (bands from the dataset metadata)")
            grids.add(tuple(x.shape[-2:]))
        if len(grids) != 1:
            raise ValueError(f"modalities of one batch must share the patch size, found {sorted(grids)}")
        return missing, grids.pop()

    def features(self, batch: dict) -> Tensor:
        """Per-modality features (B, M, embed), zero where the modality is missing."""
        missing, grid = self._inputs(batch)
        n_mod = len(self.modalities)
        present = present_mask(missing, n_mod)  # (B, M) bool
        pattern = self.pattern(missing)  # (B, p)
        batch_size = missing.shape[0]
        if not self.skip_missing:
            tokens = torch.cat([self.tokenizers[m](batch[m]) for m in self.modalities])  # (M*B, L, D)
            out = self.encode(tokens, grid, pattern.repeat(n_mod, 1), present.repeat(n_mod, 1))  # (M*B, E)
            out = out.reshape(n_mod, batch_size, -1).transpose(0, 1)  # (B, M, E)
            return torch.where(present.unsqueeze(-1), out, torch.zeros_like(out))
        rows, slots, tokens = [], [], []
        for j, m in enumerate(self.modalities):
            idx = present[:, j].nonzero().squeeze(1)  # (n_j,) samples where modality j is present
            if idx.numel() == 0:
                continue
            tokens.append(self.tokenizers[m](batch[m].index_select(0, idx)))  # (n_j, L, D)
            rows.append(idx)
            slots.append(torch.full_like(idx, j))
        row, slot = torch.cat(rows), torch.cat(slots)  # (R,), R = number of present (sample, modality) pairs
        out = self.encode(torch.cat(tokens), grid, pattern[row], present[row])  # (R, E), one encoder call
        feats = out.new_zeros(batch_size, n_mod, out.shape[-1])
        return feats.index_put((row, slot), out)  # (B, M, E)

    def forward(self, batch: dict) -> Tensor:
        """Logits (B, num_classes) from ``batch[m]`` (B, C_m, P, P) for each modality and ``batch["missing_type"]``."""
        return self.head(self.features(batch).flatten(1))

    def aux_loss(self) -> Tensor | None:
        """``load_balance_weight`` × load-balancing term of the last training forward (None when off)."""
        return balance_loss(self, self.load_balance_weight)
