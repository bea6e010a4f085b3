"""MaMOL for image–text data (SPEC §5.3–§5.4, the DCP protocol): CLIP's image and text towers, each with MaMOL
adapters in its last blocks and its own missing-pattern embedding, image then text features concatenated
with the missing half zeroed, one linear head per task.

Trainable: adapters, the two pattern embeddings, the heads, and CLIP's visual ``ln_post``, visual ``proj``
and text ``ln_final`` (SPEC §5.4). Everything else is frozen, including ``text_projection``.

Missing codes follow the natural code order ``("text", "image")``: 0 complete, 1 text missing, 2 image
missing. The modality-specific experts of both towers are indexed in that code order. A missing tower's
pass is skipped (``skip_missing=True``), which is exact because its features are zeroed.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mamol.missing import present_mask
from mamol.models.adapter import (AdapterContext, PatternEmbedding, attach_adapters, balance_loss,
                                  config_value)
from mamol.models.backbone import build_clip
from mamol.models.remote import check_vision_tower, linear_head

if TYPE_CHECKING:  # the data package is not needed to build a model
    from mamol.data.datamodule import TaskInfo

NATURAL_DEFAULTS = dict(adapter_rank=16, num_dynamic_experts=4, top_k=2, num_shared_experts=1, pattern_dim=8,
                        adapter_scale=0.2, sparse_experts=True)
"""Adapter sizes used when a config key is absent or None (the paper's image–text settings)."""

CODE_ORDER = ("text", "image")


class NaturalMaMOL(nn.Module):
    """MaMOL classifier for one or more image–text tasks (``TaskInfo`` each; one head per task name)."""

    def __init__(self, cfg: dict, infos: Sequence[TaskInfo]) -> None:
        super().__init__()
        infos = list(infos)
        if not infos:
            raise ValueError("NaturalMaMOL needs at least one TaskInfo")
        for info in infos:
            if tuple(info.modalities) != CODE_ORDER:
                raise ValueError(f"dataset {info.name!r}: image-text code order must be {CODE_ORDER}, "
                                 f"found {tuple(info.modalities)}")
        vit = cfg.get("vit") or "ViT-B/16"
        self.clip = build_clip(vit, cfg.get("clip_weights"), bool(cfg.get("clip_random_init", False)))
        check_vision_tower(self.clip.visual, vit)
        self.text_col, self.image_col = CODE_ORDER.index("text"), CODE_ORDER.index("image")
        self.skip_missing = bool(config_value(cfg, "skip_missing", True))
        self.load_balance_weight = float(cfg.get("load_balance_weight") or 0.0)
        n_mod = len(CODE_ORDER)

        image_blocks = self.clip.visual.transformer
        text_blocks = self.clip.transformer
        self.image_context: AdapterContext
        self.text_context: AdapterContext
        self.image_context, _ = attach_adapters(image_blocks, cfg, "adapter_layers",
                                                range(len(image_blocks.resblocks) - 2, len(image_blocks.resblocks)),
                                                n_mod, NATURAL_DEFAULTS)
        self.text_context, _ = attach_adapters(text_blocks, cfg, "adapter_layers_text",
                                               range(len(text_blocks.resblocks) - 2, len(text_blocks.resblocks)),
                                               n_mod, NATURAL_DEFAULTS)
        pattern_dim = int(config_value(cfg, "pattern_dim", NATURAL_DEFAULTS["pattern_dim"]))
        self.image_pattern = PatternEmbedding(n_mod, pattern_dim)
        self.text_pattern = PatternEmbedding(n_mod, pattern_dim)

        for module in (self.clip.visual.ln_post, self.clip.ln_final):
            module.requires_grad_(True)
        self.clip.visual.proj.requires_grad_(True)

        self.embed_dim = self.clip.visual.output_dim
        std = float(config_value(cfg, "head_init_std", 0.02))
        self.heads = nn.ModuleDict({info.name: linear_head(2 * self.embed_dim, int(info.num_classes), std)
                                    for info in infos})

    # ---------------------------------------------------------------- towers
    def encode_image(self, image: Tensor, pattern: Tensor, presence: Tensor) -> Tensor:
        """open_clip's ``encode_image`` with the image adapters conditioned per row: (N, 3, H, W) -> (N, E)."""
        with self.image_context.rows(pattern, presence.to(pattern.dtype)):
            return self.clip.encode_image(image)

    def encode_text(self, text_ids: Tensor, pattern: Tensor, presence: Tensor) -> Tensor:
        """open_clip's ``encode_text`` with the text adapters conditioned per row: (N, 77) -> (N, E)."""
        with self.text_context.rows(pattern, presence.to(pattern.dtype)):
            return self.clip.encode_text(text_ids)

    def _tower(self, encode, inputs: Tensor, keep: Tensor, pattern: Tensor, present: Tensor) -> Tensor:
        """Features (B, E) of one tower, zero where ``keep`` (B,) is False; skipped rows are not computed."""
        if not self.skip_missing:
            out = encode(inputs, pattern, present)  # (B, E)
            return torch.where(keep.unsqueeze(-1), out, torch.zeros_like(out))
        idx = keep.nonzero().squeeze(1)  # (n,)
        if idx.numel() == 0:
            return pattern.new_zeros(keep.shape[0], self.embed_dim)
        out = encode(inputs.index_select(0, idx), pattern[idx], present[idx])  # (n, E)
        return out.new_zeros(keep.shape[0], out.shape[-1]).index_copy(0, idx, out)  # (B, E)

    def features(self, batch: dict) -> Tensor:
        """Image then text features (B, 2E), each zero where that modality is missing."""
        missing = batch["missing_type"]
        image, text_ids = batch["image"], batch["text_ids"]
        if image.shape[0] != missing.shape[0] or text_ids.shape[0] != missing.shape[0]:
            raise ValueError(f"batch sizes differ: image {tuple(image.shape)}, text_ids {tuple(text_ids.shape)}, "
                             f"missing_type {tuple(missing.shape)}")
        present = present_mask(missing, len(CODE_ORDER))  # (B, 2) bool, code order (text, image)
        img = self._tower(self.encode_image, image, present[:, self.image_col], self.image_pattern(missing), present)
        txt = self._tower(self.encode_text, text_ids, present[:, self.text_col], self.text_pattern(missing), present)
        return torch.cat([img, txt], dim=1)  # (B, 2E)

    def head_for(self, batch: dict) -> nn.Linear:
        """The head of ``batch["task"]`` (a str, or a list of one repeated str); the only head if absent."""
        task = batch.get("task")
        if isinstance(task, (list, tuple)):
            names = set(task)
            if len(names) != 1:
                raise ValueError(f"a batch mixes tasks {sorted(names)}; batches must hold one task")
            task = names.pop()
        if task is None:
            if len(self.heads) != 1:
                raise KeyError(f"batch has no 'task' key and the model has several heads {list(self.heads)}")
            return next(iter(self.heads.values()))
        if task not in self.heads:
            raise KeyError(f"batch task {task!r} has no head; the model was built for {list(self.heads)}")
        return self.heads[task]

    def forward(self, batch: dict) -> Tensor:
        """Logits (B, num_classes of the batch's task) from ``image``, ``text_ids``, ``missing_type``, ``task``."""
        return self.head_for(batch)(self.features(batch))

    def aux_loss(self) -> Tensor | None:
        """``load_balance_weight`` × load-balancing term of the last training forward (None when off)."""
        return balance_loss(self, self.load_balance_weight)
