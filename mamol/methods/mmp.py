"""MMP: missing-aware prompts (Lee et al., "Multimodal Prompting with Missing Modalities", CVPR 2023).

One set of learnable prompts per missing pattern t, per stream s and per prompted block i < N:
P[s, t, i] (P, D_s). The frozen encoder is left as it is; only the tokens it sees change.

* ``prompt_type="input"`` (the reference's default): before block i < N the row's prompts are prepended and
  stay, so block i runs on [P_i ; P_{i-1}' ; … ; P_0' ; x], (N, (i+1)·P + L, D), and every later block on
  (N, N·P + L, D) (the primes are earlier prompts after the blocks they went through):

      x_{i+1} = Block_i([P[s, t, i] ; x_i])                                i < N
      x_{i+1} = Block_i(x_i)                                               i ≥ N

  The N·P prompt outputs are dropped at the end; the host pools at the original positions.
* ``prompt_type="attention"`` (the reference's option, prefix tuning): block i < N attends over
  [P_k ; W_k x] and [P_v ; W_v x] with P_k, P_v the halves (P/2, D) of P[s, t, i], taken directly in key and
  value space; the sequence keeps its length L.

Streams: the image and text towers have their own prompts on image–text data (as DCP's CLIP version of
MMP); on remote data the one shared encoder serves every modality and each modality keeps its own prompts,
picked per row by ``Rows.modality``. Patterns are the dataset's missing-type codes (3 for two modalities,
7 for three). Initialisation as the reference: zeros, with one token of ones marking the pattern (token
t mod P of pattern t; in the attention variant also token P/2 + t mod P/2). Defaults as the reference:
P = 16 (``prompt_length``), N = the first half of the blocks (``prompt_depth``; 6 of ViT-B/16's 12).
``prompt_length=0`` or ``prompt_depth=0`` leaves the frozen encoder exactly as it is. ``budget`` scales
``prompt_length`` (``CAPACITY``).
"""
from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.methods.options import PROMPT_TYPE_DOC, PromptOptions, key
from mamol.models.lora import OpenAttention, open_attention
from mamol.models.method import Method, Rows
from mamol.models.prompting import (
    check_tower,
    pattern_count,
    resolve_depth,
    run_prompted,
    stream_of,
    tower_streams,
)

REFERENCE = {"prompt_length": 16}
"""The reference's prompt length (its ``prompt_layers`` default [0..5] is the first half of 12 blocks)."""


@dataclass(frozen=True)
class MMPOptions(PromptOptions):
    """MMP's config keys: the prompt keys, with ``prompt_type`` "input" or "attention"."""

    CAPACITY: ClassVar[str | None] = "prompt_length"

    prompt_type: Literal["input", "attention"] = key("input", PROMPT_TYPE_DOC)

    @staticmethod
    def paper_defaults(kind: str) -> dict:
        return REFERENCE

    def capacity_step(self) -> int:
        """Attention prompts split into key and value halves: even lengths."""
        return 2 if self.prompt_type == "attention" else 1

    def check(self) -> None:
        """Each error names the key."""
        if self.prompt_length < 0 or (self.prompt_depth is not None and self.prompt_depth < 0):
            raise ConfigError(f"prompt_length ({self.prompt_length}) and prompt_depth ({self.prompt_depth}) "
                              f"must be >= 0")
        if self.prompt_type == "attention" and self.prompt_length % 2:
            raise ConfigError(f"prompt_type='attention' splits prompt_length into key and value halves: "
                              f"prompt_length={self.prompt_length} must be even")


class MMP(Method):
    """Missing-aware prompts per (stream, pattern, block) in the first ``prompt_depth`` blocks of each tower."""

    name: ClassVar[str] = "mmp"
    title: ClassVar[str] = "MMP"
    Options: ClassVar[type] = MMPOptions

    def __init__(self, options: MMPOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        self.prompts = nn.ParameterDict()  # tower -> (S, T, N, P, D): streams, patterns, blocks, tokens, width
        self.depth: dict[str, int] = {}

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: MMPOptions = self.options
        check_tower(transformer)
        depth = resolve_depth(o.prompt_depth, len(transformer.resblocks))
        streams, patterns = len(tower_streams(self.kind, tower, self.modalities)), pattern_count(len(self.modalities))
        length = o.prompt_length
        prompts = torch.zeros(streams, patterns, depth, length, transformer.width)
        if length:
            half = length // 2
            for t in range(patterns):  # the reference's init: one token of ones marks the pattern
                if o.prompt_type == "attention":
                    prompts[:, t, :, t % half] = 1.0
                    prompts[:, t, :, half + t % half] = 1.0
                else:
                    prompts[:, t, :, t % length] = 1.0
        self.prompts[tower] = nn.Parameter(prompts)
        self.depth[tower] = depth
        if o.prompt_type == "attention":
            for block in transformer.resblocks[:depth]:
                open_attention(block)

    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        depth, length = self.depth[tower], self.options.prompt_length
        if depth == 0 or length == 0:
            return transformer(x, attn_mask=attn_mask)
        prompts = self.prompts[tower][stream_of(self.kind, rows), rows.codes].to(x.dtype)  # (N, depth, P, D)
        if self.options.prompt_type == "input":
            def prepend(i: int, h: Tensor) -> Tensor:
                return torch.cat([prompts[:, i], h], dim=1) if i < depth else h  # (N, P + ..., D)

            return run_prompted(transformer, x, prepend, attn_mask)

        half = length // 2

        def prefix(i: int) -> AbstractContextManager[None]:
            if i >= depth:
                return contextlib.nullcontext()
            attention: OpenAttention = transformer.resblocks[i].attn
            return attention.prefixed(prompts[:, i, :half], prompts[:, i, half:])  # keys, values (N, P/2, D)

        return run_prompted(transformer, x, lambda i, h: h, attn_mask, around=prefix)
