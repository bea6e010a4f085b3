"""Frozen open_clip layers opened up for methods: low-rank (LoRA) updates and per-row key/value prefixes.

* :class:`LowRank` is the LoRA update of Hu et al. (2021), ``ΔW x = (α / r) · B A drop(x)`` with ``A``
  (r, D_in), ``B`` (D_out, r); ``B`` starts at zero so the adapted layer starts as the frozen one. ``drop`` is
  dropout on the update's input in training mode (the official LoRA code's ``lora_dropout``; 0 = none).
* :class:`LoRALinear` replaces a frozen ``nn.Linear``: ``W x + b + ΔW x``, with ``ΔW`` any update module
  (a :class:`LowRank`, or ``specialists``' one per missing pattern). The frozen ``weight`` and ``bias`` stay under
  their own names, so the backbone's state-dict keys are unchanged.
* :class:`OpenAttention` replaces a frozen ``nn.MultiheadAttention`` of an open_clip block. open_clip packs the
  query, key and value projections into one ``in_proj_weight`` (3D, D) that ``nn.MultiheadAttention`` uses
  internally, so a low-rank update of ``W_q`` cannot be added from outside. This module computes the same
  attention from the same frozen tensors (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), with two
  openings:

      q = W_q x + b_q + ΔW_q x,   k = W_k x + b_k + ΔW_k x,   v = W_v x + b_v + ΔW_v x      (each optional)
      k = [P_k ; k],  v = [P_v ; v]                     per-row prefixes (N, P, D), set with :meth:`prefixed`
      out = out_proj(concat_h softmax(q_h k_hᵀ / √d_h + mask) v_h)

  The prefix keys are visible to every query (the mask gets P zero columns in front). With no update and no
  prefix it equals the frozen module (tests compare them numerically).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROJECTIONS = ("q", "k", "v")
"""The packed input projections of an attention module, in ``in_proj_weight``'s row order."""


class LowRank(nn.Module):
    """The LoRA update ``x -> (alpha / rank) · B A dropout(x)`` from ``in_features`` to ``out_features``.

    ``A`` is initialised like ``nn.Linear``'s weight (Kaiming-uniform, the official LoRA code), ``B`` to zero.
    ``dropout`` (probability) acts on the update's input only, and only in training mode, as the official
    code's ``lora_dropout``: the frozen path sees the token unchanged.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, found {rank}")
        self.A = nn.Parameter(torch.empty(rank, in_features))  # (r, D_in)
        self.B = nn.Parameter(torch.zeros(out_features, rank))  # (D_out, r)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = float(alpha) / rank
        self.dropout = float(dropout)

    def extra_repr(self) -> str:
        return (f"in={self.A.shape[1]}, out={self.B.shape[0]}, rank={self.A.shape[0]}, scale={self.scale:g}"
                + (f", dropout={self.dropout:g}" if self.dropout else ""))

    def forward(self, x: Tensor) -> Tensor:
        """(..., D_in) -> (..., D_out)."""
        if self.dropout and self.training:
            x = F.dropout(x, self.dropout, training=True)
        return self.scale * F.linear(F.linear(x, self.A), self.B)


class LoRALinear(nn.Module):
    """``linear(x) + lora(x)`` for a frozen ``nn.Linear``, keeping its ``weight`` and ``bias`` names; ``lora`` maps
    (..., D_in) to (..., D_out) (a :class:`LowRank` built from the linear's sizes)."""

    def __init__(self, linear: nn.Linear, lora: nn.Module) -> None:
        super().__init__()
        self.weight = linear.weight  # (D_out, D_in), frozen
        self.bias = linear.bias  # (D_out,) or None, frozen
        self.lora = lora

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.lora(x)


class OpenAttention(nn.Module):
    """A frozen batch-first ``nn.MultiheadAttention`` (self-attention, as open_clip's blocks use it) re-expressed
    with optional low-rank updates of its q/k/v projections (``deltas``) and per-row key/value prefixes."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attention.batch_first or not attention._qkv_same_embed_dim or attention.in_proj_weight is None:
            raise ValueError("OpenAttention expects open_clip's batch-first nn.MultiheadAttention with one packed "
                             "in_proj_weight")
        if attention.bias_k is not None or attention.add_zero_attn or attention.dropout:
            raise ValueError("OpenAttention does not support bias_k/bias_v, add_zero_attn or attention dropout")
        self.embed_dim, self.num_heads = attention.embed_dim, attention.num_heads
        self.in_proj_weight = attention.in_proj_weight  # (3D, D), frozen
        self.in_proj_bias = attention.in_proj_bias  # (3D,), frozen
        self.out_proj = attention.out_proj  # frozen Linear (D, D), or a LoRALinear
        self.deltas = nn.ModuleDict()  # "q" / "k" / "v" -> an update D -> D (a LowRank)
        self._prefix: tuple[Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"

    @contextlib.contextmanager
    def prefixed(self, keys: Tensor, values: Tensor) -> Iterator[None]:
        """Prepend ``keys`` and ``values`` (N, P, D) to every row's keys and values during the calls inside."""
        if keys.shape != values.shape or keys.ndim != 3:
            raise ValueError(f"prefix keys and values must be (N, P, D) alike, found {tuple(keys.shape)} and "
                             f"{tuple(values.shape)}")
        self._prefix = (keys, values)
        try:
            yield
        finally:
            self._prefix = None

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                need_weights: bool = False, attn_mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> tuple[Tensor, None]:
        """Self-attention of x = ``query`` (N, L, D) -> ((N, L, D), None), called as open_clip calls the original."""
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("OpenAttention computes self-attention only (key and value must be the query)")
        if need_weights or key_padding_mask is not None:
            raise ValueError("OpenAttention returns no attention weights and takes no key_padding_mask")
        x = query
        n, length, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # 3 x (N, L, D)
        if self.deltas:
            q, k, v = (t + self.deltas[name](x) if name in self.deltas else t
                       for name, t in zip(PROJECTIONS, (q, k, v)))
        mask = attn_mask
        if self._prefix is not None:
            prefix_k, prefix_v = self._prefix
            if prefix_k.shape[0] != n or prefix_k.shape[-1] != d:
                raise ValueError(f"prefix {tuple(prefix_k.shape)} does not fit tokens {tuple(x.shape)}")
            k = torch.cat([prefix_k.to(k.dtype), k], dim=1)  # (N, P + L, D)
            v = torch.cat([prefix_v.to(v.dtype), v], dim=1)
            if mask is not None:
                mask = F.pad(_additive(mask, q.dtype), (prefix_k.shape[1], 0))  # (L, P + L): prefixes always visible
        if mask is not None:
            mask = _additive(mask, q.dtype)

        def heads(t: Tensor) -> Tensor:
            return t.reshape(n, t.shape[1], self.num_heads, d // self.num_heads).transpose(1, 2)  # (N, H, *, d_h)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)  # (N, H, L, d_h)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, d)), None


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """An attention mask as ``nn.MultiheadAttention`` reads it (bool: True = blocked; float: added) -> float."""
    if mask.ndim != 2:
        raise ValueError(f"OpenAttention takes a 2-D (L, S) attention mask, found shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def open_attention(block: nn.Module) -> OpenAttention:
    """``block.attn`` as an :class:`OpenAttention`, replacing the frozen module the first time."""
    if not isinstance(block.attn, OpenAttention):
        block.attn = OpenAttention(block.attn)
    return block.attn


def open_attentions(transformer: nn.Module) -> None:
    """Every block's attention of an open_clip ``Transformer`` as an :class:`OpenAttention` (the hosts do this
    when they build the backbone).

    Exact (same frozen tensors and state-dict keys; tests compare with open_clip) and faster for training on the
    CPU: ``nn.MultiheadAttention`` goes through the sequence-first ``F.multi_head_attention_forward`` (transposes
    and reshapes around one SDPA call), this path is one packed qkv linear and SDPA on (N, H, L, d_h) —
    ``python -m mamol.bench``, README "Benchmarks".
    """
    for block in transformer.resblocks:
        open_attention(block)
