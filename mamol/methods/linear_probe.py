"""Linear probe: the frozen CLIP encoder as it is; only what the host trains around it learns.

For a row's tokens x (L, D) the encoder runs unchanged, ``h = Blocks(x)``, and the feature is the host's
pooling, ``f = ln_post(h_cls) · proj`` (image tower) or ``ln_final(h_eot) · text_projection`` (text tower).
What trains: the modality tokenizers and the head (remote data); the head plus CLIP's ``ln_post``, visual
``proj`` and text ``ln_final`` (image–text data, SPEC §5.4). It is the floor every other method is measured
against (``python -m mamol.bench --methods`` reports step times as a ratio to it).
"""
from __future__ import annotations

from typing import ClassVar

from mamol.models.method import Method


class LinearProbe(Method):
    """No trainable part inside the encoder: the base :class:`Method`'s frozen blocks, registered by name."""

    name: ClassVar[str] = "linear_probe"
    title: ClassVar[str] = "Linear probe"
