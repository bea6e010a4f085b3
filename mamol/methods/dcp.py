"""DCP: deep correlated prompting (Hu et al., "Deep Correlated Prompting for Visual Recognition with Missing
Modalities", NeurIPS 2024; the reference's CLIP code).

Each prompted block i < N of a stream s (a tower on image–text data) gets n = ``prompt_length`` / 3 tokens
of each enabled part, put in front of the sequence at block 0 in the order [layer ; common ; dynamic]:

* layer prompts L_i^s (n, D_s), always present. *Correlated* (``correlated`` on): derived from the previous
  layer's prompts of every stream, starting from one learnable prompt per stream and modality state
  S^s_present / S^s_missing (n, D_s) chosen by the row's pattern t:

      L_0^s = f_0^s(LN([S^1(t) ; … ; S^M(t)]))       L_i^s = f_i^s(LN([L_{i-1}^1 ; … ; L_{i-1}^M]))

  with f = Linear(ΣD, ΣD/r) · GELU · Linear(ΣD/r, D_s) and r = ``prompt_reduction``; the joint width ΣD
  concatenates every stream's width. Without ``correlated``: independent learnable L_i^s(t) per pattern.
  At blocks 0 < i < N the layer prompts replace the previous block's outputs at their n positions.
* common prompts (``common``): one learnable C(t) (n, D_c) per pattern, shared by the streams and projected
  into each, g^s(C(t)) with g = Linear(D_c, D_c/r) · GELU · Linear(D_c/r, D_s), D_c the smallest stream width
  (the text width on image–text data, as the reference). Inserted at block 0, then carried along.
* dynamic prompts (``dynamic``): generated from the input, one-head attention at block 0 with learnable
  queries Q^s(t) (n, D_s) over the block's input tokens x (L, D_s): softmax(Q W_q (x W_k)ᵀ / √D) x W_v W_o.
  Inserted at block 0, then carried along.

Every later block runs on (N, (1 + common + dynamic)·n + L, D); the prompts are removed before the host
pools. ``prompt_type`` selects the parts as a "+"-joined list of ``correlated``, ``dynamic``, ``common``;
``input`` (DCP's command lines, the default) means all three, ``none`` leaves only independent layer prompts.
Defaults as the reference: ``prompt_length=36`` (12 per part), ``prompt_depth`` = the first half of the
blocks (6 of 12), r = 16. The reference keeps its dynamic queries as unregistered tensors that never
train (SPEC §7); here they are parameters.

Remote data: one encoder serves every modality. Each modality is a stream with its own parts (what the
reference keeps per tower: S^s, f^s, g^s, Q^s and the dynamic attention), picked per row by
``Rows.modality``; the correlated prompts join the states of all M modalities (ΣD = M·D), and a pattern is
the dataset's missing-type code (3 for two modalities, 7 for three).

Variants: ``dcp_variant="release"`` is the DCP baseline of MaMOL's release on remote scenes (its
``DualVisualPromptLearner`` on one CLIP encoder): one dynamic attention shared by every modality's stream (each
stream keeps its queries Q^s(t)), and CLIP's ``ln_post`` and visual ``proj`` train with the prompts (the host's
``trains_pooling``); image–text runs have no such variant and refuse it. ``dcp_init="identical"`` starts the
per-block projections f_i^s of a stream as copies of f_0^s, as DCP's ``_get_clones`` (and the release) do;
``"independent"`` (the default) draws each afresh. ``budget`` scales ``prompt_length`` in steps of 3
(``CAPACITY``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.methods.options import PromptOptions, key
from mamol.missing import present_mask
from mamol.models.method import Method, Rows
from mamol.models.prompting import (
    check_tower,
    pattern_count,
    resolve_depth,
    run_prompted,
    stream_of,
    tower_streams,
)

PARTS = ("correlated", "dynamic", "common")
REFERENCE = {"prompt_length": 36}
"""The reference's prompt length (``prompt_depth=6`` of 12 blocks is the first half, this project's None)."""
INIT_STD = 0.02  # the reference's normal init of every learnable prompt


def prompt_parts(prompt_type: str) -> frozenset[str]:
    """The parts ``prompt_type`` selects: "input" (or "all") = all three, "none" = none, else a "+"-joined list."""
    text = prompt_type.strip().lower()
    if text in ("input", "all"):
        return frozenset(PARTS)
    if text == "none":
        return frozenset()
    names = [t.strip() for t in text.split("+")]
    unknown = [t for t in names if t not in PARTS]
    if unknown or len(set(names)) != len(names):
        raise ConfigError(f"prompt_type={prompt_type!r}: method=dcp expects 'input' (all parts), 'none', or a "
                          f"'+'-joined list of {list(PARTS)}, e.g. prompt_type='correlated+common'")
    return frozenset(names)


@dataclass(frozen=True)
class DCPOptions(PromptOptions):
    """DCP's config keys: the prompt keys (``prompt_type`` selects the parts), the projections' bottleneck and
    the variants."""

    CAPACITY: ClassVar[str | None] = "prompt_length"

    prompt_reduction: int = key(16, "dcp: bottleneck ratio r of the prompt projections (hidden width = input "
                                    "width // r)")
    dcp_variant: Literal["reference", "release"] = key(
        "reference", 'dcp: "reference" (DCP, one dynamic attention per stream) or "release" (MaMOL release\'s '
                     "remote DCP: one dynamic attention shared by the modalities, ln_post and proj trained)")
    dcp_init: Literal["independent", "identical"] = key(
        "independent", 'dcp: the per-block prompt projections of a stream start "independent" (each drawn afresh) '
                       'or "identical" (copies of the first, as DCP\'s _get_clones)')

    @staticmethod
    def paper_defaults(kind: str) -> dict:
        return REFERENCE

    def capacity_step(self) -> int:
        """Three equal parts: prompt lengths are multiples of 3."""
        return 3

    def check(self) -> None:
        """Each error names the key."""
        prompt_parts(self.prompt_type)
        if self.prompt_length < 0 or self.prompt_length % 3:
            raise ConfigError(f"prompt_length={self.prompt_length}: method=dcp splits the prompts into three equal "
                              f"parts (layer, common, dynamic); use a multiple of 3 such as 36")
        if self.prompt_depth is not None and self.prompt_depth < 0:
            raise ConfigError(f"prompt_depth must be >= 0, found {self.prompt_depth}")
        if self.prompt_reduction < 1:
            raise ConfigError(f"prompt_reduction must be >= 1, found {self.prompt_reduction}")


def bottleneck(width_in: int, width_out: int, reduction: int) -> nn.Sequential:
    """Linear(width_in, width_in / r) · GELU · Linear(width_in / r, width_out)."""
    hidden = max(width_in // reduction, 1)
    return nn.Sequential(nn.Linear(width_in, hidden), nn.GELU(), nn.Linear(hidden, width_out))


class DCPStream(nn.Module):
    """One stream's parts: a tower's on image–text data, a modality's on the shared remote encoder."""

    def __init__(self, width: int, joint_width: int, common_width: int, length: int, patterns: int, depth: int,
                 parts: frozenset[str], reduction: int, identical: bool = False, attention: bool = True) -> None:
        super().__init__()

        def prompts(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) * INIT_STD)

        if "correlated" in parts:
            self.start = prompts(2, length, width)  # S^s for [missing, present]
            def project() -> nn.Sequential:
                return nn.Sequential(nn.LayerNorm(joint_width), *bottleneck(joint_width, width, reduction))

            first = project()  # f_0^s with its LN; identical: every f_i^s starts as a copy (DCP's _get_clones)
            self.project = nn.ModuleList([first, *(copy.deepcopy(first) if identical else project()
                                                   for _ in range(depth - 1))] if depth else [])
        else:
            self.layers = prompts(patterns, depth, length, width)  # L_i^s(t), independent per block
        if "common" in parts:
            self.common_project = bottleneck(common_width, width, reduction)  # g^s
        if "dynamic" in parts:
            self.queries = prompts(patterns, length, width)  # Q^s(t)
            if attention:  # else the method's one attention serves every stream (dcp_variant="release")
                self.attention = nn.MultiheadAttention(width, 1, batch_first=True)


class DCP(Method):
    """Deep correlated, modal-common and dynamic prompts in the first ``prompt_depth`` blocks of each tower."""

    name: ClassVar[str] = "dcp"
    title: ClassVar[str] = "DCP"
    Options: ClassVar[type] = DCPOptions

    def __init__(self, options: DCPOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        self.parts = prompt_parts(options.prompt_type)
        self.length = options.prompt_length // 3  # n tokens per part
        self.patterns = pattern_count(len(self.modalities))
        self.depth: dict[str, int] = {}  # tower -> prompted blocks
        self.widths: dict[int, int] = {}  # modality index -> its tower's width
        self.streams = nn.ModuleDict()  # modality name -> DCPStream, built once every stream's width is known
        self.common: nn.Parameter | None = None  # C(t) (T, n, D_c)
        self.shared_attention: nn.MultiheadAttention | None = None  # dcp_variant="release": one for every stream
        if options.dcp_variant == "release" and kind != "remote":
            raise ConfigError("dcp_variant='release' is the DCP baseline of MaMOL's release on remote scenes (one "
                              "encoder shared by the modalities); image-text runs take DCP's own, "
                              "dcp_variant='reference'")
        self.trains_pooling = options.dcp_variant == "release"  # the release trains ln_post and proj too

    def attach(self, tower: str, transformer: nn.Module) -> None:
        check_tower(transformer)
        self.depth[tower] = resolve_depth(self.options.prompt_depth, len(transformer.resblocks))
        for j in tower_streams(self.kind, tower, self.modalities):
            self.widths[j] = transformer.width
        if len(self.widths) == len(self.modalities):
            self._build()

    def _build(self) -> None:
        """The streams' parts, once all widths are known (the correlated prompts join every stream)."""
        o: DCPOptions = self.options
        depth = max(self.depth.values())  # the towers of one backbone share the prompt depth
        widths = [self.widths[j] for j in range(len(self.modalities))]
        common_width = min(widths)
        shared = o.dcp_variant == "release"
        for j, name in enumerate(self.modalities):
            self.streams[name] = DCPStream(widths[j], sum(widths), common_width, self.length, self.patterns, depth,
                                           self.parts, o.prompt_reduction, identical=o.dcp_init == "identical",
                                           attention=not shared)
        if shared and "dynamic" in self.parts:
            self.shared_attention = nn.MultiheadAttention(widths[0], 1, batch_first=True)  # remote: one width
        if "common" in self.parts:
            self.common = nn.Parameter(torch.randn(self.patterns, self.length, common_width) * INIT_STD)

    # ---------------------------------------------------------------- prompts per pattern
    def layer_prompts(self) -> list[Tensor]:
        """Every stream's layer prompts for every pattern: (T, depth, n, D_s) per stream (modality order)."""
        streams = [self.streams[name] for name in self.modalities]
        if "correlated" not in self.parts:
            return [s.layers for s in streams]
        present = present_mask(torch.arange(self.patterns, device=streams[0].start.device),
                               len(streams)).long()  # (T, M): 1 where modality m is present in pattern t
        previous = [s.start[present[:, j]] for j, s in enumerate(streams)]  # S^s(t), (T, n, D_s) each
        layers: list[list[Tensor]] = [[] for _ in streams]
        for i in range(len(streams[0].project)):
            joint = torch.cat(previous, dim=-1)  # (T, n, ΣD)
            previous = [s.project[i](joint) for s in streams]  # L_i^s, (T, n, D_s)
            for j, p in enumerate(previous):
                layers[j].append(p)
        return [torch.stack(per_layer, dim=1) for per_layer in layers]  # (T, depth, n, D_s)

    def dynamic_prompts(self, streams: tuple[int, ...], local: Tensor, x: Tensor, rows: Rows) -> Tensor:
        """Dynamic prompts (N, n, D) of each row from its stream's attention over the block-0 tokens x (N, L, D).

        Each stream's attention runs on every row and each row keeps its own stream's: selecting a stream's rows
        first would need their count on the host (``nonzero``, a GPU sync per stream), and rows do not interact.
        """
        if self.shared_attention is not None:  # one attention: every row at once, with its own stream's queries
            queries = torch.stack([self.streams[self.modalities[j]].queries for j in streams])  # (S, T, n, D)
            queries = queries[local, rows.codes].to(x.dtype)  # (N, n, D)
            return self.shared_attention(queries, x, x, need_weights=False)[0].to(x.dtype)  # (N, n, D)
        out: Tensor | None = None
        for s, j in enumerate(streams):
            stream = self.streams[self.modalities[j]]
            queries = stream.queries[rows.codes].to(x.dtype)  # (N, n, D)
            # CUDA autocast gives the attention's projections in half precision while x may be float32 (e.g. after
            # ln_pre); the prompts join x's dtype, as the tokens they are put in front of (a no-op in fp32).
            prompts = stream.attention(queries, x, x, need_weights=False)[0].to(x.dtype)  # (N, n, D)
            out = prompts if out is None else torch.where((local == s).view(-1, 1, 1), prompts, out)
        return out

    # ---------------------------------------------------------------- the encoder
    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        depth, n = self.depth[tower], self.length
        if depth == 0 or n == 0:
            return transformer(x, attn_mask=attn_mask)
        streams = tower_streams(self.kind, tower, self.modalities)
        local = stream_of(self.kind, rows)  # (N,) index into streams
        every = self.layer_prompts()
        layers = torch.stack([every[j][:, :depth] for j in streams])[local, rows.codes].to(x.dtype)  # (N, depth, n, D)
        front = [layers[:, 0]]
        if "common" in self.parts:
            common = torch.stack([self.streams[self.modalities[j]].common_project(self.common) for j in streams])
            front.append(common[local, rows.codes].to(x.dtype))  # (N, n, D)
        if "dynamic" in self.parts:
            front.append(self.dynamic_prompts(streams, local, x, rows))  # (N, n, D)

        def insert(i: int, h: Tensor) -> Tensor:
            if i == 0:
                return torch.cat([*front, h], dim=1)  # (N, parts·n + L, D)
            if i < depth:
                return torch.cat([layers[:, i], h[:, n:]], dim=1)  # new layer prompts; common, dynamic carried
            return h

        return run_prompted(transformer, x, insert, attn_mask)
