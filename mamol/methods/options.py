"""Config keys of the methods: each method declares its keys beside it, in its ``Options`` dataclass.

A field of an ``Options`` dataclass *is* a Sacred config key: its default is the key's default and its
``doc`` (set with :func:`key`) the key's meaning, which ``python run.py print_config`` shows. The
experiment (:mod:`mamol.experiment`) collects the keys of every registered method with :func:`config_keys`;
a key several methods read (``adapter_rank`` for ``mamol`` and ``moe_lora``) is declared once, in one of the
groups below that those methods share. A field left ``None`` takes the method's ``paper_defaults(kind)``
when the settings are resolved (:func:`mamol.settings.resolve_model`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mamol.models.adapter import resolve_layers
from mamol.models.method import NoOptions

PAPER: dict[str, dict[str, Any]] = {
    "remote": dict(adapter_rank=8, num_dynamic_experts=2, top_k=1, adapter_scale=1.0, num_shared_experts=1),
    "natural": dict(adapter_rank=16, num_dynamic_experts=4, top_k=2, adapter_scale=0.2, num_shared_experts=1),
}
"""MaMOL's adapter sizes per data kind (SPEC §5.3), used for expert keys left None (also by ``moe_lora``)."""


def key(default: Any, doc: str) -> Any:
    """A config-key field: ``default`` is the key's default (lists as tuples), ``doc`` its meaning and unit."""
    return dataclasses.field(default=default, metadata={"doc": doc})


def default_adapter_layers(kind: str, depth: int) -> range:
    """The paper's blocks in a tower of ``depth`` blocks: the last half of the image encoder for remote data,
    the last two blocks of each tower for image–text data (also the blocks of ``lora`` and ``moe_lora``)."""
    return range(depth // 2, depth) if kind == "remote" else range(depth - 2, depth)


@dataclass(frozen=True)
class BlockOptions(NoOptions):
    """Which blocks of each tower a method adapts (``mamol``, ``lora``, ``moe_lora``)."""

    adapter_layers: tuple[int, ...] | None = key(
        None, "image-encoder blocks with an adapter; None = paper: remote 6-11 (last half), natural 10-11")
    adapter_layers_text: tuple[int, ...] | None = key(
        None, "natural data: blocks of the text encoder with an adapter; None = the last two")

    def blocks(self, tower: str, transformer: nn.Module, kind: str) -> list[int]:
        """Indices of the adapted blocks of ``tower`` ("image" or "text"); ConfigError naming the key."""
        name = "adapter_layers_text" if tower == "text" else "adapter_layers"
        depth = len(transformer.resblocks)
        return resolve_layers(getattr(self, name), depth, name, default_adapter_layers(kind, depth))


@dataclass(frozen=True)
class ExpertOptions(BlockOptions):
    """The sizes of a mixture of LoRA experts (``mamol`` and ``moe_lora`` share them, so a comparison holds
    them equal); ``None`` = :data:`PAPER`'s value for the data kind."""

    adapter_rank: int | None = key(None, "LoRA rank r of every expert; None = paper: remote 8, natural 16")
    num_dynamic_experts: int | None = key(
        None, "experts chosen per token by the router; None = remote 2, natural 4")
    top_k: int | None = key(None, "dynamic experts kept per token (gates not renormalised); None = remote 1, "
                                  "natural 2")
    num_shared_experts: int | None = key(None, "static experts applied to every sample; None = mamol 1, moe_lora 0")
    adapter_scale: float | None = key(None, "multiplies the adapter output Δ; None = remote 1.0, natural 0.2")
    sparse_experts: bool = key(
        True, "run each dynamic expert only on its routed tokens (exact; on the CPU: elsewhere the sync-free dense "
              "formula, mamol.models.adapter.SPARSE_DEVICES); False = dense masked formula")
    load_balance_weight: float = key(0.0, "optional router load-balancing loss weight (0 = the paper's method)")

    @staticmethod
    def paper_defaults(kind: str) -> dict:
        return PAPER[kind]


PROMPT_TYPE_DOC = ('mmp: "input" or "attention" (key/value prefixes); dcp: "input" (= correlated+dynamic+common), '
                   '"none", or a "+"-joined subset such as "correlated+common"; inert for the other methods (kept '
                   "for DCP's command lines)")


@dataclass(frozen=True)
class PromptOptions(NoOptions):
    """Learnable prompt tokens prepended to every sequence (``mmp``, ``dcp``), removed again before pooling."""

    prompt_length: int | None = key(
        None, "prompt tokens per layer; None = the references': mmp 16, dcp 36 (12 per part)")
    prompt_depth: int | None = key(
        None, "prompts enter the first N blocks of each tower; None = the first half (6 of 12)")
    prompt_type: str = key("input", PROMPT_TYPE_DOC)


def config_keys(option_classes: Iterable[type]) -> tuple[dict[str, Any], dict[str, str]]:
    """(defaults, docs) of every config key the ``Options`` dataclasses declare; lists for tuple defaults.

    A key declared by several classes must have one default (a shared group above declares it once); a field
    without a default is a programming error, reported with the class and field.
    """
    defaults: dict[str, Any] = {}
    docs: dict[str, str] = {}
    owners: dict[str, str] = {}
    for cls in option_classes:
        for f in dataclasses.fields(cls):
            name = f.metadata.get("key", f.name)
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{f.name} has no default: every method option is a config key "
                                f"and needs one (use mamol.methods.options.key)")
            value = list(f.default) if isinstance(f.default, tuple) else f.default
            if name in defaults and defaults[name] != value:
                raise TypeError(f"config key {name!r} has default {defaults[name]!r} in {owners[name]} but {value!r} "
                                f"in {cls.__name__}: declare a shared key once")
            defaults.setdefault(name, value)
            docs.setdefault(name, f.metadata.get("doc", ""))
            owners.setdefault(name, cls.__name__)
    return defaults, docs

