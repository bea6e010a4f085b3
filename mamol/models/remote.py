"""The remote-sensing host (SPEC §5.2, §5.4): per-modality tokenizers, one shared frozen CLIP image encoder
run by the method, concatenated per-modality features with the missing slices zeroed, a linear head.

A missing modality's feature is zeroed and the encoder passes of different rows do not interact, so its
encoder pass contributes nothing to the logits or gradients: with ``skip_missing=True`` (default) only the
present (sample, modality) pairs of a batch are tokenized and encoded, all in one batched encoder call.
``skip_missing=False`` encodes everything and zeroes afterwards (the reference the tests compare to).
A method that ``encodes_missing`` (``flex_moe``) fills a missing modality's tokens itself: every pair is then
encoded and no slice is zeroed, whatever ``skip_missing`` says.
An auxiliary term of the method (e.g. MaMOL's optional load balancing) is computed over the rows actually
encoded, so it is the one quantity that differs between the two settings.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamol.missing import present_mask, present_rows
from mamol.models.backbone import build_clip
from mamol.models.heads import check_vision_tower, linear_head
from mamol.models.lora import open_attentions
from mamol.models.method import Host, Method, Rows
from mamol.models.tokenizers import ModalityTokenizer
from mamol.settings import BackboneSettings, ModelSettings
from mamol.tasks import TaskInfo


class RemoteModel(Host):
    """Classifier for one remote-sensing scene described by a ``TaskInfo`` (2 or 3+ modalities).

    Trainable: tokenizers, head, and what the method adds (with ``method.trains_pooling``: also ``ln_post`` and
    ``proj``). Frozen: the CLIP image encoder.
    """

    def __init__(self, backbone: BackboneSettings, settings: ModelSettings, info: TaskInfo, method: Method) -> None:
        super().__init__()
        self.modalities: tuple[str, ...] = tuple(info.modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"dataset {info.name!r}: the models need >= 2 modalities, found {self.modalities}")
        lacking = [m for m in self.modalities if m not in info.bands]
        if lacking:
            raise ValueError(f"dataset {info.name!r}: no band count for modalities {lacking} "
                             f"(metadata bands={info.bands})")
        clip = build_clip(backbone.vit, backbone.clip_weights, backbone.random_init)
        self.visual = clip.visual  # the text tower is not used for remote data and is dropped
        check_vision_tower(self.visual, backbone.vit)
        del clip
        open_attentions(self.visual.transformer)  # exact and faster than nn.MultiheadAttention (mamol.bench)
        width = self.visual.transformer.width
        self.embed_dim = self.visual.output_dim
        self.skip_missing = settings.skip_missing
        self.method = method
        method.attach("image", self.visual.transformer)
        if method.trains_pooling:  # e.g. the MaMOL release's DCP (dcp_variant="release")
            self.visual.ln_post.requires_grad_(True)
            self.visual.proj.requires_grad_(True)
        self.tokenizers = nn.ModuleDict({m: ModalityTokenizer(int(info.bands[m]), width, settings.tokenizer_dim)
                                         for m in self.modalities})
        self.head = linear_head(len(self.modalities) * self.embed_dim, int(info.num_classes), settings.head_init_std)

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

    def encode(self, tokens: Tensor, grid: tuple[int, int], rows: Rows) -> Tensor:
        """Frozen CLIP image encoder, blocks run by the method, on tokenized patches (N, h*w, D) -> (N, embed)."""
        v = self.visual
        cls = v.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)  # (N, 1, D)
        tokens = self.method.fill_tokens("image", tokens, rows)  # (N, h*w, D)
        x = torch.cat([cls, tokens], dim=1) + self.positional_embedding(grid).to(tokens.dtype)  # (N, L, D)
        x = self.method.run_blocks("image", v.transformer, v.ln_pre(x), rows)  # (N, L, D)
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
        self.method.begin_forward()
        missing, grid = self._inputs(batch)
        n_mod = len(self.modalities)
        present = present_mask(missing, n_mod)  # (B, M) bool
        batch_size = missing.shape[0]
        if not self.skip_missing or self.method.encodes_missing:
            tokens = torch.cat([self.tokenizers[m](batch[m]) for m in self.modalities])  # (M*B, L, D)
            slots = torch.arange(n_mod, device=missing.device).repeat_interleave(batch_size)  # (M*B,)
            rows = Rows(missing.repeat(n_mod), present.repeat(n_mod, 1), slots)
            out = self.encode(tokens, grid, rows).reshape(n_mod, batch_size, -1).transpose(0, 1)  # (B, M, E)
            if self.method.encodes_missing:  # the method filled the missing passes: their features count
                return out
            return torch.where(present.unsqueeze(-1), out, torch.zeros_like(out))
        samples, slots, tokens = [], [], []
        for j, (m, idx) in enumerate(zip(self.modalities, present_rows(present))):  # idx (n_j,): j present
            if idx.numel() == 0:
                continue
            tokens.append(self.tokenizers[m](batch[m].index_select(0, idx)))  # (n_j, L, D)
            samples.append(idx)
            slots.append(torch.full_like(idx, j))
        sample, slot = torch.cat(samples), torch.cat(slots)  # (R,), R = present (sample, modality) pairs
        rows = Rows(missing[sample], present[sample], slot)
        out = self.encode(torch.cat(tokens), grid, rows)  # (R, E), one encoder call for every present pair
        feats = out.new_zeros(batch_size, n_mod, out.shape[-1])
        return feats.index_put((sample, slot), out)  # (B, M, E)

    def forward(self, batch: dict) -> Tensor:
        """Logits (B, num_classes) from ``batch[m]`` (B, C_m, P, P) for each modality and ``batch["missing_type"]``."""
        return self.head(self.features(batch).flatten(1))

    # ---------------------------------------------------------------- what the training loop asks
    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())
