"""The contract between a model *host* and a *method* (MaMOL, LoRA, prompts, ...).

A host (:class:`mamol.models.remote.RemoteModel`, :class:`mamol.models.natural.NaturalModel`) owns what every
method shares: the frozen CLIP towers, the modality tokenizers, the fusion of per-modality features with
missing slices zeroed, and the head(s). A :class:`Method` owns the trainable part in the middle: it may put
modules into the frozen towers when the host hands them over (:meth:`Method.attach`) and it runs each
tower's blocks (:meth:`Method.run_blocks`), conditioned on the rows' missing patterns if it wants.

Adding a method is one file in ``mamol/methods/`` (a subclass with its ``Options`` dataclass) plus one entry
in ``mamol/methods/__init__.py``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn


def trainable_parameters(model: nn.Module) -> int:
    """Number of trainable scalars of ``model`` (what run records, reports and budgets count)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


@dataclass(frozen=True)
class Rows:
    """Per-row conditioning of one tower call: row ``n`` of the token batch encodes modality ``modality[n]``
    of a sample whose missing-type code is ``codes[n]`` and whose modalities are present where ``present[n]``."""

    codes: Tensor  # (N,) int64 missing-type codes (mamol.missing)
    present: Tensor  # (N, M) bool, modality order of the dataset
    modality: Tensor  # (N,) int64 index (in the dataset's modality order) of the modality row n encodes


@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own; the base of every method's ``Options``.

    ``CAPACITY`` names the integer key that scales the method's trainable parameters (``lora_rank``,
    ``adapter_rank``, ``prompt_length``, ...), which ``budget=matched`` / ``budget=lora`` set
    (:mod:`mamol.methods.budget`); None = nothing to scale (``linear_probe``), refused under those budgets.
    """

    CAPACITY: ClassVar[str | None] = None

    @staticmethod
    def paper_defaults(kind: str) -> dict:
        return {}

    def capacity_step(self) -> int:
        """The capacity key's values are multiples of this (e.g. DCP's prompt thirds: 3)."""
        return 1


class Method(nn.Module):
    """Base method: the frozen towers as they are (what ``linear_probe`` uses unchanged).

    Args:
        options: the method's ``Options`` dataclass, resolved from the config (``mamol.settings``).
        kind: "remote" (one image tower serves every modality) or "natural" (image and text towers).
        modalities: the dataset's code order; ``Rows.present`` columns follow it.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    """The name in tables and figures (``"MoE-LoRA"``); the registry name (``moe_lora``) is the config value."""
    Options: ClassVar[type] = NoOptions
    trains_pooling: bool = False
    """Remote host: also train CLIP's ``ln_post`` and visual ``proj`` (image–text hosts always train them)."""
    encodes_missing: ClassVar[bool] = False
    """True: the host encodes a missing modality too, from the tokens :meth:`fill_tokens` puts in its place, and
    keeps its feature (Flex-MoE's missing-modality bank); False: its pass is skipped or its feature zeroed (SPEC
    §5.4), and ``skip_missing`` applies."""

    def __init__(self, options: object, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__()
        self.options, self.kind, self.modalities = options, kind, tuple(modalities)

    def attach(self, tower: str, transformer: nn.Module) -> None:
        """Called once per tower the host uses ("image", then "text" for image–text data), right after the
        frozen backbone is built: put modules into ``transformer.resblocks`` or create per-tower parameters."""

    def fill_tokens(self, tower: str, tokens: Tensor, rows: Rows) -> Tensor:
        """The tower's input tokens (N, L, D) before the class token and positions are added (remote: the
        tokenizer's output; image: the patch embedding; text: the token embedding); a method that
        ``encodes_missing`` replaces those of the rows whose modality is missing. Default: unchanged."""
        return tokens

    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        """Run the tower's blocks on tokens x (N, L, D); must return (N, L, D) for the same L positions."""
        return transformer(x, attn_mask=attn_mask)

    def begin_forward(self) -> None:
        """Called by the host at the start of each forward, before any tower runs: forget what the previous forward
        left behind (the layers' balance terms), so that a tower this batch skips contributes nothing."""

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        """Trainable parameters of the method exempt from weight decay beyond the generic rule (biases, norms and
        every other tensor of fewer than 2 dimensions are never decayed)."""
        return ()

    def aux_loss(self) -> Tensor | None:
        """An auxiliary loss term of the last training forward, already weighted (None when there is none); only
        layers that ran in that forward contribute (:meth:`begin_forward`)."""
        return None


class Host(nn.Module):
    """Base of the models: what the training loop asks of every model, answered for the host and its method."""

    method: Method

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at ``lr_mult`` x the learning rate."""
        raise NotImplementedError

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Parameters exempt from weight decay beyond the generic rule (tensors of fewer than 2 dimensions)."""
        return list(self.method.no_weight_decay())

    def aux_loss(self) -> Tensor | None:
        """The method's auxiliary loss of the last training forward, weighted (None when it has none)."""
        return self.method.aux_loss()
