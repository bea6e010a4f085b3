"""Specialists: one LoRA per missing pattern, each row routed to its pattern's — the oracle of pattern-wise models.

The earlier answer to missing modalities that MaMOL replaces (SPEC §1) trains one adapted network per missing
pattern. This method is that answer inside one model: every pattern t (complete, each single-missing pattern,
and with three modalities each two-missing pattern: the codes of :func:`mamol.missing.valid_codes`) has its own
set of ``lora``'s updates, on ``lora``'s weights and blocks (``lora_targets``, ``adapter_layers`` /
``adapter_layers_text``, ``lora_rank``, ``lora_alpha``), and row n of a sample with missing-type code t_n gets
only its set's update:

    y_n = W x_n + b + (α / r) · B_{t_n} A_{t_n} x_n           A_t (r, D_in), B_t (D_out, r), B_t = 0 at the start

so in training a set's gradient comes only from its pattern's rows, and in evaluation each sample is encoded by
its pattern's set. It tells how much one shared model (``mamol``, ``lora``, ...) gives up against models that
each see only one pattern. One model holds all sets, so runs, checkpoints, ``test_only`` and reports work as for
every method.

Sets per tower: on remote data the one shared encoder encodes the present modalities of every pattern, so it
has a set for each pattern (3 with two modalities, 7 with three). On image–text data a tower runs only where
its modality is present, so the image tower has sets for "complete" and "text missing", the text tower for
"complete" and "image missing" (a set for the other pattern would never run). A row whose pattern has no set
in its tower (only with ``skip_missing=False``, whose outputs the host zeroes) passes the frozen weights.

What "trained only on its pattern's samples" means here (the decisions, docs/methods.md):

* the **shared parts** — the modality tokenizers, the head, and on image–text data CLIP's ``ln_post``, ``proj``
  and ``ln_final`` — are shared by all patterns and trained on every sample, as in every method: the oracle
  isolates what separate *encoder adaptations* give, everything else held equal to the other methods;
* a set whose pattern no row of a batch has gets **no gradient** on the CPU (``None``, not zeros), so AdamW
  leaves it as it is in that step (no weight decay, no momentum step), as a model that did not see the batch;
  on a GPU it gets a zero gradient instead (the sync-free formula below), so AdamW's momentum and weight decay
  still move it. At the paper's batch sizes (128, 256 per step) a pattern of the training table is in
  practically every step, and both are the same. A pattern the training table never has (e.g. SAR missing under
  ``missing_type=HS_Lidar``) keeps its set's initial B = 0: such samples see the frozen encoder;
* batches mix patterns: a set's gradient is its rows' part of the batch-mean loss (n_t / B of what a run on its
  pattern alone would give, which Adam's normalisation largely undoes), and one gradient-norm clip and one
  learning-rate schedule serve the whole model. Fully separate models per pattern are ``lora`` runs on tables
  of one pattern each (e.g. ``missing_ratio=1.0 missing_type=text``, or ``missing_ratio=0`` for complete).

On the CPU each set runs only on its rows (a gather, the set's update, a scatter back with ``index_copy``), the
rows split once per tower call with one host read of their counts. Counting on the host would wait for the GPU
at every tower call, so elsewhere (as MaMOL's sparse experts, :data:`mamol.models.adapter.SPARSE_DEVICES`)
every set runs on every row, times the 0/1 mask of its pattern: the same outputs and gradients, at P times
LoRA's update work (q and v at r = 8: 2·2·D·r multiply-adds per token, 0.3 % of a ViT-B/16 block's, per set).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mamol.methods.lora import LoRAOptions, add_updates
from mamol.missing import is_missing, present_rows, valid_codes
from mamol.models.adapter import dispatches_sparsely
from mamol.models.lora import LowRank
from mamol.models.method import Method, Rows
from mamol.models.prompting import tower_streams


@dataclass(frozen=True)
class SpecialistsOptions(LoRAOptions):
    """``lora``'s keys (rank, alpha, targets, blocks), applied to every pattern's set."""

    CAPACITY: ClassVar[str] = "lora_rank"
    """The key that scales the trainable parameters (read by ``budget=matched``)."""


class PatternRows:
    """The rows of each missing pattern in the current tower call, shared by the tower's :class:`PatternLowRank`
    layers (open_clip's blocks pass only the tokens down). Not a module: it holds tensors of one call only.

    On the CPU (:func:`mamol.models.adapter.dispatches_sparsely`) the rows are split by pattern; elsewhere only
    the one-hot masks are kept, which needs no host read.
    """

    def __init__(self) -> None:
        self.rows: list[Tensor] | None = None  # per pattern code t, the rows (n_t,) of that pattern
        self.masks: Tensor | None = None  # (N, P) bool, row n has pattern t

    @contextlib.contextmanager
    def split(self, codes: Tensor, patterns: int) -> Iterator[None]:
        """Group the rows by their code (N,) for the calls inside."""
        onehot = codes.unsqueeze(-1) == torch.arange(patterns, device=codes.device)  # (N, P)
        if dispatches_sparsely(codes.device):
            self.rows = present_rows(onehot)  # one host read of the group sizes
        else:
            self.masks = onehot
        try:
            yield
        finally:
            self.rows = self.masks = None


class PatternLowRank(nn.Module):
    """One low-rank update per missing pattern (``sets[str(t)]``, a :class:`LowRank`); row n gets only the update
    of its pattern t_n, zero where its pattern has no set.

    Two exact ways (tests compare outputs and gradients): on the CPU each set runs on its rows only, and a set no
    row needs takes no part (no gradient at all); elsewhere every set runs on every row, times the rows' 0/1
    mask of its pattern (no host read; such a set gets a zero gradient).
    """

    def __init__(self, sets: dict[int, nn.Module], groups: PatternRows) -> None:
        super().__init__()
        self.sets = nn.ModuleDict({str(t): update for t, update in sets.items()})
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        """(N, L, D_in) -> (N, L, D_out), each row through its pattern's update only."""
        rows, masks = self.groups.rows, self.groups.masks
        if rows is None and masks is None:
            raise RuntimeError("a specialists update ran outside Specialists.run_blocks, which tells it the rows' "
                               "missing patterns")
        out = None
        for t, update in self.sets.items():
            if masks is not None:
                y = update(x)  # (N, L, D_out)
                y = y * masks[:, int(t), None, None].to(y.dtype)  # other rows: exactly zero, and no gradient
                out = y if out is None else out + y
                continue
            idx = rows[int(t)]  # (n_t,)
            if idx.numel() == 0:
                continue  # no row of this pattern: the set takes no part, and gets no gradient
            y = update(x.index_select(0, idx))  # (n_t, L, D_out); under autocast in its dtype
            out = (y.new_zeros(*x.shape[:-1], y.shape[-1]) if out is None else out).index_copy(0, idx, y)
        if out is None:  # no row has a set here: a zero update in the dtype an update would give
            empty = next(iter(self.sets.values()))(x[:0])  # (0, L, D_out)
            out = empty.new_zeros(*x.shape[:-1], empty.shape[-1])
        return out


class Specialists(Method):
    """A set of LoRA updates per missing pattern in the chosen blocks of each tower; rows routed by pattern."""

    name: ClassVar[str] = "specialists"
    title: ClassVar[str] = "Specialists"
    Options: ClassVar[type] = SpecialistsOptions

    def __init__(self, options: SpecialistsOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        self.patterns = valid_codes(len(self.modalities))
        self.groups: dict[str, PatternRows] = {}  # tower -> the row split its updates read

    def tower_patterns(self, tower: str) -> tuple[int, ...]:
        """The patterns with a set in ``tower``: those where one of the modalities it encodes is present."""
        streams = tower_streams(self.kind, tower, self.modalities)
        return tuple(t for t in self.patterns if any(not is_missing(t, m) for m in streams))

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: SpecialistsOptions = self.options
        layers = o.blocks(tower, transformer, self.kind)
        if not layers:
            return
        groups = self.groups[tower] = PatternRows()
        patterns = self.tower_patterns(tower)

        def make(d_in: int, d_out: int) -> PatternLowRank:
            updates = {t: LowRank(d_in, d_out, o.lora_rank, o.lora_alpha, o.lora_dropout) for t in patterns}
            return PatternLowRank(updates, groups)

        add_updates(transformer, layers, o.lora_targets, make)

    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        if tower not in self.groups:
            return transformer(x, attn_mask=attn_mask)
        with self.groups[tower].split(rows.codes, len(self.patterns)):
            return transformer(x, attn_mask=attn_mask)
