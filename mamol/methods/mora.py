"""MoRA (Zhao et al., ICLR 2026), as its release builds it: ``Tree-Shu-Zhao/MoRA``, ``src/models/clip_mora.py``
at commit 5fec986 (the release's own names in brackets).

Every adapted projection W (D, D) (a q/k/v row block of open_clip's packed ``in_proj_weight``) of a chosen block
gets two DoRA-style terms, one driven by a low-rank pair shared across modalities and one by the stream's own
LoRA, each with its own magnitude vector. For the rows of stream s (one tower, or one remote modality):

    S_s  = U_s (Σ_{n≠s} U_nᵀ U_n) U_sᵀ                  shared cross-modal update (D, D), one per block
    P_s  = A_s B_s                                      the stream's own LoRA, A (D, r), B (r, D), B = 0 at start
    W'_s = m_s ⊙ (W + α S_sᵀ) / ‖W + α S_sᵀ‖_c + p_s ⊙ (W + α P_sᵀ) / ‖W + α P_sᵀ‖_c
    y    = W'_s drop(x) + b

‖V‖_c is the L2 norm of each column of V (over the outputs, one per input feature, clamped at 1e-5); the
magnitudes m_s [shared_magnitude] and p_s [specific_magnitude] (D,) broadcast over the rows and both start at
‖W‖_c; drop is dropout on the projection's whole input, in training. The factors start as the release's:
U and A ~ N(0, 1/r), B = 0. On image–text data U_text = A [shared_A] (d_t, r) and U_image = B [shared_B]
(d_v, r), so S_text = A(BᵀB)Aᵀ and S_image = B(AᵀA)Bᵀ (the release's ``compute_shared_lora``); the j-th
adapted block of each tower shares the pair j (the release: the same block index in both towers).

**Remote data** (one encoder run for every modality, d = D for all): every modality m has its own factor
U_m (D, r) per adapted block, and its rows use S_m above, the sum over the other modalities of the pairwise
coupling U_m (U_nᵀU_n) U_mᵀ. With two modalities this *is* the release's pair (the first modality's pass takes
the "text-side" update A(BᵀB)Aᵀ with A = U_0, the second the "vision-side" one); with three, each modality is
coupled to both others. Each modality also has its own LoRA and magnitudes, as each release tower has, and
``Rows.modality`` picks a row's stream: on the CPU each stream's weight runs on its rows only; elsewhere every
stream's runs on every row and the row keeps its own (no host read, as :data:`mamol.models.adapter.SPARSE_DEVICES`).

Start: B = 0 makes the specific term W exactly, but the release's shared term is not W: its random pair gives
W + α S a direction of its own, rescaled to ‖W‖_c. The adapted weights start at W + ‖W‖_c ⊙ dir(W + αS), not
at the frozen W (tests pin this). Missing inputs: the release encodes a placeholder (an all-ones image, an empty
text) and fuses its features; here, like every method, the host zeroes a missing modality's features and skips
its pass (``skip_missing``). Nothing in the layers depends on the missing pattern. Defaults are the release's
model config (``configs/model/clip_mora.yaml``, also its Hateful Memes experiment) for both data kinds.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.methods.options import BlockOptions, key
from mamol.models import adapter
from mamol.models.lora import PROJECTIONS, OpenAttention, open_attention
from mamol.models.method import Method, Rows
from mamol.models.prompting import stream_of, tower_streams

RELEASE = {
    "hatememes": dict(mora_rank=8, mora_alpha=0.1, mora_targets=("k", "v")),
    "food101": dict(mora_rank=4, mora_alpha=0.01, mora_targets=("q", "v")),
    "mmimdb": dict(mora_rank=4, mora_alpha=0.001, mora_targets=("q", "k")),
}
"""The release's per-dataset values (``configs/experiment/mora_<dataset>.yaml``; shared, vision and text ranks
equal, START_LAYER_INDEX 10 = the last two blocks, dropout 0.1 in all three). The keys' defaults are its model
config, the Hateful Memes values; the others are passed on the command line (docs/methods.md)."""


@dataclass(frozen=True)
class MoRAOptions(BlockOptions):
    """MoRA's config keys, on MaMOL's blocks (``adapter_layers`` / ``adapter_layers_text``)."""

    CAPACITY: ClassVar[str] = "mora_rank"
    """The key that scales the trainable parameters (the shared rank follows it unless set)."""

    mora_rank: int = key(8, "mora: rank r of each stream's own LoRA (A (D, r), B (r, D)), and of the shared pair "
                            "unless mora_shared_rank is set; release: 8 (Hateful Memes, its default), 4 (MM-IMDb, "
                            "Food-101)")
    mora_shared_rank: int | None = key(None, "mora: rank of the cross-modal factors U_m (D, r); None = mora_rank "
                                             "(every release config sets them equal)")
    mora_alpha: float = key(0.1, "mora: multiplies both low-rank updates inside the DoRA directions (not divided by "
                                 "the rank); release: 0.1 (Hateful Memes), 0.01 (Food-101), 0.001 (MM-IMDb)")
    mora_targets: tuple[str, ...] = key(
        ("k", "v"), 'mora: adapted attention projections, any of "q", "k", "v"; release: k,v (Hateful Memes), '
                    "q,v (Food-101), q,k (MM-IMDb)")
    mora_dropout: float = key(0.1, "mora: dropout on the whole input of each adapted projection, in training "
                                   "(the release's 0.1)")

    @property
    def shared_rank(self) -> int:
        """The rank of the cross-modal factors."""
        return self.mora_rank if self.mora_shared_rank is None else self.mora_shared_rank

    def check(self) -> None:
        """Each error names the key."""
        if self.mora_rank < 1 or self.shared_rank < 1:
            raise ConfigError(f"mora_rank and mora_shared_rank must be >= 1, found {self.mora_rank} and "
                              f"{self.mora_shared_rank}")
        if self.mora_alpha <= 0 or not 0 <= self.mora_dropout < 1:
            raise ConfigError(f"mora_alpha must be > 0 and mora_dropout in [0, 1), found {self.mora_alpha} and "
                              f"{self.mora_dropout}")
        unknown = [t for t in self.mora_targets if t not in PROJECTIONS]
        if unknown or not self.mora_targets or len(set(self.mora_targets)) != len(self.mora_targets):
            raise ConfigError(f"mora_targets={list(self.mora_targets)}: expected a non-empty list of distinct names "
                              f"from {list(PROJECTIONS)}")


class SharedFactors(nn.Module):
    """The cross-modal factors U_m (J, D_m, r) of each modality m, one (D_m, r) per adapted block position j."""

    def __init__(self) -> None:
        super().__init__()
        self.factors = nn.ParameterDict()  # modality name -> (J, D_m, r)

    def update(self, modality: str, j: int) -> Tensor:
        """S = U_m (Σ_{n≠m} U_nᵀ U_n) U_mᵀ (D_m, D_m) of block position j for the rows of ``modality``."""
        u = self.factors[modality][j]  # (D_m, r)
        gram = sum(self.factors[n][j].T @ self.factors[n][j] for n in self.factors if n != modality)  # (r, r)
        return u @ gram @ u.T


class Streams:
    """Each row's stream (index into a tower's streams) during one tower call; not a module, no parameters."""

    def __init__(self) -> None:
        self.index: Tensor | None = None  # (N,) int64

    @contextlib.contextmanager
    def rows(self, index: Tensor) -> Iterator[None]:
        self.index = index
        try:
            yield
        finally:
            self.index = None


def direction(v: Tensor) -> Tensor:
    """V / ‖V‖_c: each column (input feature) of V (D_out, D_in) scaled to unit L2 norm, as the release clamps."""
    return v / v.norm(p=2, dim=0, keepdim=True).clamp(min=1e-5)


class MoRAProjection(nn.Module):
    """The change ``W'_s drop(x) + b - (W x + b)`` of one packed projection (an ``OpenAttention`` delta), per stream.

    Args:
        attention: the opened attention whose ``in_proj_weight`` row block ``PROJECTIONS.index(name)`` is W.
        name: "q", "k" or "v".
        streams: modality names of the tower's streams (the keys of ``shared.factors``).
        shared: the method's cross-modal factors; ``position``: this block's index j among the adapted blocks.
        context: each row's stream during a call (unused with one stream).
    """

    def __init__(self, attention: OpenAttention, name: str, streams: tuple[str, ...], rank: int, alpha: float,
                 dropout: float, shared: SharedFactors, position: int, context: Streams) -> None:
        super().__init__()
        self._refs = (attention, shared)  # a tuple: neither is registered a second time under this module
        self.index, self.streams, self.position, self.context = PROJECTIONS.index(name), streams, position, context
        self.alpha = float(alpha)
        d, count = attention.embed_dim, len(streams)
        norm = self.frozen().detach().norm(p=2, dim=0)  # (D,) ‖W‖_c of the pretrained weight
        self.shared_magnitude = nn.Parameter(norm.repeat(count, 1))  # (S, D) m_s
        self.specific_magnitude = nn.Parameter(norm.repeat(count, 1))  # (S, D) p_s
        self.A = nn.Parameter(torch.randn(count, d, rank) / rank ** 0.5)  # (S, D, r)
        self.B = nn.Parameter(torch.zeros(count, rank, d))  # (S, r, D)
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return (f"streams={list(self.streams)}, rank={self.A.shape[-1]}, alpha={self.alpha:g}, "
                f"block_position={self.position}")

    def frozen(self) -> Tensor:
        """W (D, D): this projection's rows of the frozen packed weight."""
        attention = self._refs[0]
        d = attention.embed_dim
        return attention.in_proj_weight[self.index * d:(self.index + 1) * d]

    def weight(self, s: int) -> Tensor:
        """W'_s (D, D), the release's ``new_weight`` for stream s."""
        w = self.frozen()
        shared = self._refs[1].update(self.streams[s], self.position)  # (D, D)
        own = self.A[s] @ self.B[s]  # (D, D)
        return (self.shared_magnitude[s] * direction(w + self.alpha * shared.T)
                + self.specific_magnitude[s] * direction(w + self.alpha * own.T))

    def change(self, x: Tensor, s: int) -> Tensor:
        """W'_s drop(x) - W x for rows x (n, L, D) of stream s."""
        if self.training and self.dropout.p > 0:
            return F.linear(self.dropout(x), self.weight(s)) - F.linear(x, self.frozen())
        return F.linear(x, self.weight(s) - self.frozen())

    def forward(self, x: Tensor) -> Tensor:
        """(N, L, D) -> (N, L, D), added to the frozen ``W x + b`` by :class:`OpenAttention`."""
        if len(self.streams) == 1:
            return self.change(x, 0)
        stream = self.context.index
        if stream is None or stream.shape[0] != x.shape[0]:
            raise ValueError("MoRA on a multi-stream tower needs each row's stream: run the tower through "
                             "MoRA.run_blocks")
        if x.device.type not in adapter.SPARSE_DEVICES:  # every stream on every row, masked: no host read
            out = self.change(x, 0)
            for s in range(1, len(self.streams)):
                out = torch.where((stream == s)[:, None, None], self.change(x, s), out)
            return out
        rows = [(s, (stream == s).nonzero().squeeze(1)) for s in range(len(self.streams))]  # each stream's rows only
        parts = [(idx, self.change(x.index_select(0, idx), s)) for s, idx in rows if idx.numel()]
        out = parts[0][1].new_zeros(x.shape)  # the parts' dtype (autocast may lower it)
        for idx, part in parts:
            out = out.index_copy(0, idx, part)
        return out


class MoRA(Method):
    """MoRA projections in the chosen blocks of each tower, coupled across towers (or modalities) by one low-rank
    factor per modality and block position."""

    name: ClassVar[str] = "mora"
    title: ClassVar[str] = "MoRA"
    Options: ClassVar[type] = MoRAOptions

    def __init__(self, options: MoRAOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        self.shared = SharedFactors()
        self.streams = Streams()
        self.positions: dict[str, int] = {}  # tower -> number of adapted blocks

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: MoRAOptions = self.options
        blocks = o.blocks(tower, transformer, self.kind)
        if self.positions and len(blocks) not in self.positions.values():
            raise ConfigError(f"mora pairs the j-th adapted block of the image and text towers (the release: the same "
                              f"block index): adapter_layers and adapter_layers_text must name as many blocks, found "
                              f"{dict(self.positions)} and {tower}: {len(blocks)}")
        self.positions[tower] = len(blocks)
        names = tuple(self.modalities[i] for i in tower_streams(self.kind, tower, self.modalities))
        rank, width = o.shared_rank, transformer.width
        for m in names:
            self.shared.factors[m] = nn.Parameter(torch.randn(len(blocks), width, rank) / rank ** 0.5)  # U_m
        for j, i in enumerate(blocks):
            attention = open_attention(transformer.resblocks[i])
            for target in o.mora_targets:
                attention.deltas[target] = MoRAProjection(attention, target, names, o.mora_rank, o.mora_alpha,
                                                          o.mora_dropout, self.shared, j, self.streams)

    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        with self.streams.rows(stream_of(self.kind, rows)):
            return transformer(x, attn_mask=attn_mask)
