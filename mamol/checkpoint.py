"""Checkpoint contents and checks: what is saved, the backbone fingerprint, refusing mismatches, loading.

A checkpoint holds the trainable tensors only (method, tokenizers, heads, ...) plus what is needed to refuse
a mismatched one: the task descriptions, the method, and a fingerprint of the frozen backbone. When the
backbone was randomly initialised (``clip_random_init=True``) no file could rebuild it, so it is saved too.
``load_path`` takes a Lightning ``.ckpt`` or a plain state dict (keys with or without ``model.``).

Two more facts make a checkpoint's identity: a sha256 of its saved tensors (``state_sha256``: keys in sorted
order, each key, dtype, shape and bytes), verified whenever a file is read, so a flipped byte inside a value —
which leaves the file readable — is refused by name; and the options that change the model's output (the
method's ``Options`` fields except :data:`EXACT_OPTIONS`, plus ``missing_fill``), compared at ``load_path`` and
``resume_from``: another value is refused unless ``allow_option_change=True``, and then recorded. Checkpoints
saved before either existed load with a warning (no checksum) or unchecked (no options).

Format versions (the ``format_version`` of our section): 1 = before the method registry (MaMOL's pattern
embeddings at ``model.pattern`` / ``model.image_pattern`` / ``model.text_pattern``); 2 = now (at
``model.method.patterns.<tower>``). Version-1 files are upgraded when read, so they keep loading.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mamol.errors import CheckpointError
from mamol.settings import BackboneSettings
from mamol.tasks import MULTILABEL, TaskInfo

log = logging.getLogger(__name__)

SECTION = "mamol"  # our section of a Lightning checkpoint
FORMAT_VERSION = 2
EXACT_OPTIONS = ("sparse_experts", "load_balance_weight", "lora_dropout", "dcp_init")
"""Method options that do not change a trained model's output: an exact speed-up, a training-only loss, training-only
dropout and an initialisation."""
_V1_RENAMES = (("pattern.", "method.patterns.image."), ("image_pattern.", "method.patterns.image."),
               ("text_pattern.", "method.patterns.text."))


def fingerprint(model: nn.Module) -> float:
    """A cheap checksum of the frozen weights, to refuse checkpoints trained on another backbone."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in model.parameters() if not p.requires_grad))


def trainable_keys(model: nn.Module, prefix: str = "model.") -> set[str]:
    """State-dict keys of the trainable parameters of ``model`` (with ``prefix``)."""
    return {f"{prefix}{n}" for n, p in model.named_parameters() if p.requires_grad}


def checksum(state: Mapping[str, Tensor]) -> str:
    """sha256 of a state dict: every tensor's key, dtype, shape and bytes, keys in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def output_options(options: Any, missing_fill: str) -> dict[str, Any]:
    """The settings that change a trained model's output, as stored in the checkpoint (tuples as lists)."""
    values = {k: v for k, v in dataclasses.asdict(options).items() if k not in EXACT_OPTIONS}
    values["missing_fill"] = missing_fill
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def section(infos: Sequence[TaskInfo], method: str, backbone: BackboneSettings, frozen_fingerprint: float,
            options: Mapping[str, Any], state: Mapping[str, Tensor]) -> dict:
    """Our part of a checkpoint: what the weights were trained for, and the checksum of the saved ``state``."""
    return {
        "format_version": FORMAT_VERSION,
        "infos": [dataclasses.asdict(i) for i in infos],
        "method": method,
        "options": dict(options),
        "backbone": {"vit": backbone.vit, "clip_weights": str(backbone.clip_weights) if backbone.clip_weights else None,
                     "random_init": backbone.random_init, "fingerprint": frozen_fingerprint},
        "frozen_included": backbone.random_init,
        "state_sha256": checksum(state),
    }


def option_changes(meta: Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{key: {"checkpoint": stored, "run": this run's}} of the output-changing options that differ."""
    stored = (meta or {}).get("options")
    if stored is None:  # saved before options were recorded: nothing to compare
        return {}
    return {k: {"checkpoint": stored.get(k), "run": options.get(k)} for k in sorted(set(stored) | set(options))
            if stored.get(k) != options.get(k)}


def check_options(changes: Mapping[str, Mapping[str, Any]], allowed: bool, source: str) -> None:
    """Refuse a checkpoint whose output-changing options differ from this run's (unless ``allowed``)."""
    if not changes:
        return
    text = ", ".join(f"{k}: checkpoint {v['checkpoint']!r}, this run {v['run']!r}" for k, v in changes.items())
    if not allowed:
        raise CheckpointError(f"{source}: the checkpoint was trained with other options that change its output "
                              f"({text}); pass the checkpoint's values, or allow_option_change=True to evaluate "
                              f"it under these (recorded in test_results.json)")
    log.warning("%s: evaluated with options other than the checkpoint's (allow_option_change=True): %s", source, text)


def trim(state: Mapping[str, Tensor], model: nn.Module, keep_frozen: bool) -> dict[str, Tensor]:
    """The state dict to save: trainable tensors and buffers of ``model`` (all of it with ``keep_frozen``)."""
    if keep_frozen:
        return dict(state)
    keep = trainable_keys(model) | {f"model.{n}" for n, _ in model.named_buffers()}
    return {k: v for k, v in state.items() if k in keep or not k.startswith("model.")}


def _task_type_v1(info: Mapping[str, Any]) -> str:
    if info.get("kind") == "remote":
        return "remote"
    if info.get("loss") == "bce":
        return MULTILABEL
    return "binary" if info.get("name") == "hatememes" else "multiclass"


def _rename_v1(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in _V1_RENAMES:
            if key.startswith(prefix + old):
                key = prefix + new + key[len(prefix + old):]
                break
        out[key] = value
    return out


def upgrade(checkpoint: dict) -> dict:
    """Bring a checkpoint dict of an older format to :data:`FORMAT_VERSION` in place (and return it)."""
    meta = checkpoint.get(SECTION)
    if meta is None or meta.get("format_version", 1) >= FORMAT_VERSION:
        return checkpoint
    checkpoint["state_dict"] = _rename_v1(checkpoint.get("state_dict", {}), "model.")
    for info in meta["infos"]:
        info.setdefault("task_type", _task_type_v1(info))
        info.pop("loss", None)
    meta.setdefault("method", "mamol")
    meta["format_version"] = FORMAT_VERSION
    log.info("checkpoint upgraded from format 1 (pattern embeddings renamed to model.method.patterns.*)")
    return checkpoint


def infos_of(meta: Mapping[str, Any]) -> list[TaskInfo]:
    """The task descriptions stored in an (upgraded) checkpoint section."""
    fields = {f.name for f in dataclasses.fields(TaskInfo)}
    return [TaskInfo(**{k: (tuple(v) if k in ("modalities", "class_names") else v)
                        for k, v in info.items() if k in fields}) for info in meta["infos"]]


def check_compatible(meta: Mapping[str, Any] | None, infos: Sequence[TaskInfo], method: str,
                     backbone: BackboneSettings, frozen_fingerprint: float, source: str) -> None:
    """Refuse a checkpoint made for other data, another method or another backbone, saying which."""
    if meta is None:
        return
    theirs = infos_of(meta)
    def shapes(described: Sequence[TaskInfo]) -> list[tuple]:
        return [(i.modalities, i.bands, i.num_classes) for i in described]

    if shapes(theirs) != shapes(infos):
        raise CheckpointError(
            f"{source}: the checkpoint was made for {'; '.join(i.describe() for i in theirs)}, but this run's data "
            f"is {'; '.join(o.describe() for o in infos)}. Use a checkpoint trained on this dataset (and the same "
            f"`modalities`).")
    if meta.get("method", method) != method:
        raise CheckpointError(f"{source}: the checkpoint was trained with method={meta['method']!r}, this run builds "
                              f"method={method!r}; pass method={meta['method']}")
    stored = meta.get("backbone", {})
    if not meta.get("frozen_included") and stored.get("fingerprint") is not None:
        if stored.get("vit") != backbone.vit:
            raise CheckpointError(f"{source}: the checkpoint was trained with vit={stored.get('vit')!r}, this run "
                                  f"builds vit={backbone.vit!r}")
        if abs(stored["fingerprint"] - frozen_fingerprint) > 1e-6 * max(1.0, abs(frozen_fingerprint)):
            raise CheckpointError(
                f"{source}: the checkpoint was trained on other frozen CLIP weights (clip_weights="
                f"{stored.get('clip_weights')!r}); this run loaded clip_weights="
                f"{str(backbone.clip_weights) if backbone.clip_weights else None!r}. Pass the same clip_weights.")


def read(path: str | os.PathLike, source: str) -> dict:
    """``torch.load`` a checkpoint file (tensors and plain data only), upgraded to the current format.

    A missing, truncated or foreign file is a CheckpointError naming ``source`` (e.g. ``load_path='x.ckpt'``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError, pickle.UnpicklingError,
            zipfile.BadZipFile) as err:  # what torch's weights-only unpickler raises on a file that is no pickle
        raise CheckpointError(f"{source} is not a readable PyTorch checkpoint ({path.stat().st_size} bytes; "
                              f"truncated or not a checkpoint?): {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a checkpoint dict, found {type(obj).__name__}")
    verify(obj, source)
    return upgrade(obj)


def verify(obj: Mapping[str, Any], source: str) -> None:
    """Refuse a checkpoint whose tensors do not match the checksum saved with them (a changed value).

    A checkpoint of ours saved before checksums were recorded loads with a warning; a plain state dict (no
    section of ours) carries none and is not checked.
    """
    meta = obj.get(SECTION)
    if not isinstance(meta, Mapping):
        return
    expected = meta.get("state_sha256")
    if expected is None:
        log.warning("%s: no checksum (saved before checkpoints carried one); its tensors cannot be verified", source)
        return
    state = obj.get("state_dict")
    found = checksum(state) if isinstance(state, Mapping) and all(isinstance(v, Tensor) for v in state.values()) \
        else "unreadable"
    if found != expected:
        raise CheckpointError(f"{source}: its tensors do not match the checksum saved with them (sha256 {found[:12]} "
                              f"instead of {expected[:12]}): the file is corrupted; use another copy or checkpoint")


def state_of(obj: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """The ``model.``-prefixed state dict of a Lightning checkpoint or a plain state dict."""
    state = obj.get("state_dict", obj)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: no state dict of tensors found (top-level keys: {sorted(obj)[:8]})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    if SECTION not in obj:  # a plain state dict: it may still use the format-1 names
        state = _rename_v1(state, "model.")
    return state


def check_state(state: Mapping[str, Tensor], own: Mapping[str, Tensor], required: set[str], source: str,
                describe: str) -> None:
    """Refuse a state dict whose shapes do not fit ``own`` or that lacks a ``required`` tensor."""
    shape_errors = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
                    for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = sorted(required - set(state))
    if shape_errors or missing:
        detail = "; ".join(shape_errors[:5]) if shape_errors else f"missing trainable tensors {missing[:5]}"
        more = " ..." if len(shape_errors) > 5 or len(missing) > 5 else ""
        raise CheckpointError(f"{source} does not fit this model ({describe}): {detail}{more}")


def logged_steps(ckpt: dict) -> int:
    """The logging step a Lightning training checkpoint was saved at: the rows a run logged before it have a
    lower ``step`` in ``metrics.csv`` (Lightning logs with the count of optimizer-stepped batches)."""
    loop = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(loop.get("_batches_that_stepped", ckpt.get("global_step", 0)))
