"""What the prompt methods (``mmp``, ``dcp``) share: prompt tokens inside a frozen tower, and their removal.

A prompt method runs a tower's blocks itself (:func:`run_prompted`): before block i it may put prompt
tokens in front of the sequence (MMP prepends new ones at each prompted block, DCP replaces part of the
previous block's); block i then runs on (N, P_i + L, D). The P prompt positions are cut off again before
returning, so the host pools its class token (image tower) or end-of-text token (text tower) at the
original positions, and every block after the prompted ones still pays for the longer sequence.

The text tower is causal. Prompts come first, so its mask is extended the way DCP's CLIP text encoder
builds it, causal over the whole sequence (:func:`extend_mask`): a prompt attends to the prompts before it,
every text token to all prompts and, as before, to the text tokens up to itself.

Streams: image–text data has one tower per modality, so each tower has its own prompts. Remote data runs
every modality through one shared encoder; the methods keep the two-tower structure by giving each
modality its own prompts ("stream"), chosen per row by ``Rows.modality``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.models.method import Rows


def pattern_count(n_modalities: int) -> int:
    """Missing-type codes a dataset can have: 0 .. 2^M - 2 (all modalities missing never occurs)."""
    return 2 ** n_modalities - 1


def resolve_depth(depth: int | None, blocks: int, key: str = "prompt_depth") -> int:
    """Prompted blocks of a ``blocks``-deep tower: ``None`` = the first half (the references' 6 of 12)."""
    if depth is None:
        return blocks // 2
    if not 0 <= depth <= blocks:
        raise ConfigError(f"{key}={depth}: a {blocks}-block tower can take prompts in 0..{blocks} blocks "
                          f"({key}=None for the first half)")
    return depth


def tower_streams(kind: str, tower: str, modalities: tuple[str, ...]) -> tuple[int, ...]:
    """Modality indices (dataset order) whose rows ``tower`` encodes: all of them on the shared remote encoder,
    the tower's own modality on image–text data."""
    if kind == "remote":
        return tuple(range(len(modalities)))
    if tower not in modalities:
        raise ValueError(f"tower {tower!r} is not one of the modalities {modalities}")
    return (modalities.index(tower),)


def stream_of(kind: str, rows: Rows) -> Tensor:
    """Each row's stream among its tower's streams (N,): its modality on remote data, 0 in a single-modality tower."""
    return rows.modality if kind == "remote" else torch.zeros_like(rows.modality)


def check_tower(transformer: nn.Module) -> None:
    """Prompts need open_clip's batch-first blocks (rows = samples)."""
    if not getattr(transformer, "batch_first", False):
        raise ValueError("prompt methods need a batch-first open_clip Transformer (rows = samples)")


def extend_mask(mask: Tensor | None, prefix: int) -> Tensor | None:
    """An additive (L, L) attention mask extended to ``prefix`` prompt tokens in front -> (P + L, P + L).

    Prompt j attends to prompts 0..j and to no text token; every text token attends to all prompts; text
    tokens among themselves keep ``mask``. For CLIP's causal mask this is the causal mask of length P + L.
    """
    if mask is None or prefix == 0:
        return mask
    if mask.dtype == torch.bool or mask.ndim != 2:
        raise ValueError(f"extend_mask takes an additive float (L, L) mask, found {mask.dtype} {tuple(mask.shape)}")
    length = mask.shape[-1]
    full = torch.full((prefix + length, prefix + length), float("-inf"), dtype=mask.dtype, device=mask.device)
    full = full.triu(1)  # causal: -inf above the diagonal, 0 on and below it
    full[prefix:, prefix:] = mask
    return full


def run_prompted(transformer: nn.Module, x: Tensor, insert: Callable[[int, Tensor], Tensor],
                 attn_mask: Tensor | None = None,
                 around: Callable[[int], AbstractContextManager[None]] | None = None) -> Tensor:
    """Run ``transformer``'s blocks on x (N, L, D) with prompts; returns (N, L, D) at the original positions.

    Before block i, ``x = insert(i, x)`` may put prompt tokens in front (they stay in front); block i runs inside
    ``around(i)`` if given (e.g. key/value prefixes of the attention), with ``attn_mask`` extended to the prompts.
    """
    length = x.shape[1]
    masks: dict[int, Tensor | None] = {}
    for i, block in enumerate(transformer.resblocks):
        x = insert(i, x)  # (N, P_i + L, D)
        prefix = x.shape[1] - length
        if prefix not in masks:
            masks[prefix] = extend_mask(attn_mask, prefix)
        with around(i) if around is not None else contextlib.nullcontext():
            x = block(x, attn_mask=masks[prefix])
    return x[:, x.shape[1] - length:]  # prompts removed
