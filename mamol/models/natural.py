"""The image–text host (SPEC §5.3–§5.4, the DCP protocol): CLIP's image and text towers, each run by the
method, image then text features concatenated with the missing half zeroed, one linear head per task.

Trainable: the heads, CLIP's visual ``ln_post``, visual ``proj`` and text ``ln_final`` (SPEC §5.4), and
what the method adds. Everything else is frozen, including ``text_projection``.

Missing codes follow the image–text code order ``("text", "image")``: 0 complete, 1 text missing, 2 image
missing; ``Rows.present`` columns follow it too. A missing tower's pass is skipped (``skip_missing=True``),
which is exact because its features are zeroed. A method that ``encodes_missing`` (``flex_moe``) fills a
missing modality's tokens itself: both towers then run on every row and no half is zeroed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mamol.data.formats import NATURAL_MODALITIES
from mamol.missing import present_mask, present_rows
from mamol.models.backbone import build_clip
from mamol.models.heads import check_vision_tower, linear_head
from mamol.models.lora import open_attentions
from mamol.models.method import Host, Method, Rows
from mamol.settings import BackboneSettings, ModelSettings
from mamol.tasks import TaskInfo


class NaturalModel(Host):
    """Classifier for one or more image–text tasks (a ``TaskInfo`` each; one head per task name)."""

    def __init__(self, backbone: BackboneSettings, settings: ModelSettings, infos: Sequence[TaskInfo],
                 method: Method) -> None:
        super().__init__()
        infos = list(infos)
        if not infos:
            raise ValueError("NaturalModel needs at least one TaskInfo")
        for info in infos:
            if tuple(info.modalities) != NATURAL_MODALITIES:
                raise ValueError(f"dataset {info.name!r}: image-text code order must be {NATURAL_MODALITIES}, "
                                 f"found {tuple(info.modalities)}")
        self.clip = build_clip(backbone.vit, backbone.clip_weights, backbone.random_init)
        check_vision_tower(self.clip.visual, backbone.vit)
        for tower in (self.clip.visual.transformer, self.clip.transformer):
            open_attentions(tower)  # exact and faster than nn.MultiheadAttention (mamol.bench)
        self.text_col, self.image_col = NATURAL_MODALITIES.index("text"), NATURAL_MODALITIES.index("image")
        self.skip_missing = settings.skip_missing
        self.method = method
        method.attach("image", self.clip.visual.transformer)
        method.attach("text", self.clip.transformer)

        for module in (self.clip.visual.ln_post, self.clip.ln_final):
            module.requires_grad_(True)
        self.clip.visual.proj.requires_grad_(True)

        self.embed_dim = self.clip.visual.output_dim
        self.heads = nn.ModuleDict({info.name: linear_head(2 * self.embed_dim, int(info.num_classes),
                                                           settings.head_init_std) for info in infos})

    # ---------------------------------------------------------------- towers (open_clip's steps, blocks by the method)
    def encode_image(self, image: Tensor, rows: Rows) -> Tensor:
        """(N, 3, H, W) -> (N, E): patch embedding, class token, positions, ln_pre, blocks, ln_post, proj."""
        v = self.clip.visual
        x = self.method.fill_tokens("image", v.conv1(image).flatten(2).transpose(1, 2), rows)  # (N, g*g, D)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))  # (N, L, D)
        x = self.method.run_blocks("image", v.transformer, x, rows)
        return v.ln_post(x[:, 0]) @ v.proj

    def encode_text(self, text_ids: Tensor, rows: Rows) -> Tensor:
        """(N, 77) token ids -> (N, E): embeddings, causal blocks, ln_final at the end-of-text token, projection."""
        clip = self.clip
        x = self.method.fill_tokens("text", clip.token_embedding(text_ids), rows)  # (N, 77, D)
        x = x + clip.positional_embedding
        x = self.method.run_blocks("text", clip.transformer, x, rows, attn_mask=clip.attn_mask)
        x = clip.ln_final(x[torch.arange(x.shape[0], device=x.device), text_ids.argmax(dim=-1)])  # (N, D)
        return x @ clip.text_projection

    def _tower(self, encode: Callable[[Tensor, Rows], Tensor], inputs: Tensor, column: int, codes: Tensor,
               present: Tensor, idx: Tensor | None) -> Tensor:
        """Features (B, E) of the tower of modality ``column``, zero where it is missing (rows not computed);
        idx (n,): the rows where it is present (None: every row is encoded)."""
        keep = present[:, column]  # (B,)
        modality = torch.full_like(codes, column)
        if idx is None:
            out = encode(inputs, Rows(codes, present, modality))  # (B, E)
            if self.method.encodes_missing:  # the method filled the missing rows: their features count
                return out
            return torch.where(keep.unsqueeze(-1), out, torch.zeros_like(out))
        if idx.numel() == 0:
            return present.new_zeros(keep.shape[0], self.embed_dim, dtype=self.clip.visual.proj.dtype)
        out = encode(inputs.index_select(0, idx), Rows(codes[idx], present[idx], modality[idx]))  # (n, E)
        return out.new_zeros(keep.shape[0], out.shape[-1]).index_copy(0, idx, out)  # (B, E)

    def features(self, batch: dict) -> Tensor:
        """Image then text features (B, 2E), each zero where that modality is missing."""
        self.method.begin_forward()  # a tower skipped below leaves no term of an earlier forward
        missing = batch["missing_type"]
        image, text_ids = batch["image"], batch["text_ids"]
        if image.shape[0] != missing.shape[0] or text_ids.shape[0] != missing.shape[0]:
            raise ValueError(f"batch sizes differ: image {tuple(image.shape)}, text_ids {tuple(text_ids.shape)}, "
                             f"missing_type {tuple(missing.shape)}")
        present = present_mask(missing, len(NATURAL_MODALITIES))  # (B, 2) bool, code order (text, image)
        skip = self.skip_missing and not self.method.encodes_missing
        rows = present_rows(present) if skip else [None] * len(NATURAL_MODALITIES)  # one host read
        img = self._tower(self.encode_image, image, self.image_col, missing, present, rows[self.image_col])
        txt = self._tower(self.encode_text, text_ids, self.text_col, missing, present, rows[self.text_col])
        return torch.cat([img, txt], dim=1)  # (B, 2E)

    def forward(self, batch: dict) -> Tensor:
        """Logits (B, classes of the batch's task) from ``image``, ``text_ids``, ``missing_type`` and ``task``."""
        task = batch.get("task")
        if task is None and len(self.heads) == 1:
            task = next(iter(self.heads))
        if task not in self.heads:
            raise KeyError(f"batch task {task!r} has no head; the model was built for {list(self.heads)}")
        return self.heads[task](self.features(batch))

    # ---------------------------------------------------------------- what the training loop asks
    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())
