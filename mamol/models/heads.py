"""The classification head (SPEC §5.4) and the vision-tower check every host runs."""
from __future__ import annotations

from torch import nn


def linear_head(in_features: int, num_classes: int, std: float) -> nn.Linear:
    """Linear head, weight N(0, std²), bias 0."""
    head = nn.Linear(in_features, num_classes)
    nn.init.normal_(head.weight, std=std)
    nn.init.zeros_(head.bias)
    return head


def check_vision_tower(visual: nn.Module, vit: str) -> None:
    """The hosts assume an OpenAI-style ViT: class-token pooling, ln_post then proj, no patch dropout."""
    if (getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok"
            or getattr(visual, "final_ln_after_pool", False) or getattr(visual, "proj", None) is None
            or not isinstance(getattr(visual, "patch_dropout", nn.Identity()), nn.Identity)):
        raise ValueError(f"vit={vit!r}: the models here need a CLIP ViT with class-token pooling and a projection")
