"""The frozen CLIP backbone (SPEC §5.1): open_clip build, weight loading, the tiny test config, freezing.

``build_clip(vit, clip_weights, clip_random_init)`` returns an ``open_clip.CLIP`` whose parameters are all
frozen. Where the weights come from, in order:

1. ``clip_weights=<path>``: an OpenAI JIT archive (``ViT-B-16.pt`` as OpenAI released it) or an open_clip
   state dict (``.bin`` / ``.pt`` / ``.pth`` / ``.safetensors``, optionally wrapped as ``{"state_dict": ...}``);
2. ``clip_random_init=True``: random weights, asked for explicitly (tests, the demo, benchmarks);
3. otherwise open_clip's ``openai`` weights: from the local cache (Hugging Face hub cache or ``~/.cache/clip``)
   when they are there, else downloaded once by open_clip (``open_clip.pretrained.download_pretrained``), which
   caches them for the next run. With ``HF_HUB_OFFLINE=1`` nothing is downloaded.

No usable weights (none cached offline, a failed download, an unreadable or foreign file) is a
:class:`~mamol.errors.MamolError` naming ``clip_weights`` and the ways out; it comes before the model is built.

``vit="tiny"`` is a small registered open_clip config (224 input, patch 16 -> 197 positions, width 64, 4 blocks)
for CPU tests and the demo; it has no released weights.
"""
from __future__ import annotations

import http.client
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import open_clip
import open_clip.pretrained
import torch
from open_clip.model import CLIP
from safetensors import SafetensorError
from torch import Tensor

from mamol.errors import CheckpointError, ConfigError, MissingFileError

log = logging.getLogger(__name__)

TINY_NAME = "mamol-tiny"
"""open_clip config name of the tiny test backbone (``vit="tiny"``), defined in ``mamol-tiny.json``."""
_TINY_CONFIG_FILE = Path(__file__).with_name(f"{TINY_NAME}.json")

VIT_NAMES: dict[str, str] = {
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-B-16": "ViT-B-16-quickgelu",
    "ViT-B-16-quickgelu": "ViT-B-16-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B-32": "ViT-B-32-quickgelu",
    "ViT-B-32-quickgelu": "ViT-B-32-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L-14": "ViT-L-14-quickgelu",
    "ViT-L-14-quickgelu": "ViT-L-14-quickgelu",
    "tiny": TINY_NAME,
    TINY_NAME: TINY_NAME,
}
"""User-facing ``vit`` names -> open_clip config names. OpenAI weights need QuickGELU, hence ``-quickgelu``."""

# Entries of a checkpoint that are not weights: OpenAI JIT archives store the first three as tensors, and a
# scripted open_clip model saves its causal mask (a non-persistent buffer in open_clip).
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")

_HOW_TO = ("set clip_weights=/path/to/weights (e.g. OpenAI's ViT-B-16.pt JIT archive, or an open_clip "
           ".bin/.pt/.safetensors state dict), or set clip_random_init=True for a randomly initialised backbone "
           "(tests, demo)")

# What a checkpoint reader raises for a file it cannot read: torch.load (zip or pickle), torch.jit.load, safetensors.
_READ_ERRORS = (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
                SafetensorError)
# What a failed download raises: no network or a refused request (OSError: urllib, requests, huggingface_hub,
# which open_clip rethrows as FileNotFoundError), a cut connection, open_clip's checksum check (RuntimeError).
_DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, RuntimeError)
_TRUE = {"1", "ON", "YES", "TRUE"}  # the values huggingface_hub reads as true


def register_tiny_config() -> None:
    """Register the tiny CLIP config with open_clip (idempotent)."""
    if TINY_NAME not in open_clip.list_models():
        open_clip.add_model_config(_TINY_CONFIG_FILE)


def resolve_vit(vit: str) -> str:
    """open_clip config name for a ``vit`` config value; ConfigError listing the choices otherwise."""
    register_tiny_config()
    if vit in VIT_NAMES:
        return VIT_NAMES[vit]
    raise ConfigError(f"vit={vit!r} is not supported; expected one of {sorted(VIT_NAMES)}")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value ("1", "true", ...), read now (not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def openai_cfg(vit: str) -> dict:
    """open_clip's pretrained config of the ``openai`` weights for ``vit`` (``{}``: none released)."""
    return open_clip.get_pretrained_cfg(resolve_vit(vit).removesuffix("-quickgelu"), "openai")


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript (``torch.jit.save``) archive such as OpenAI's released ``ViT-B-16.pt``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def load_clip_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a CLIP checkpoint file into an open_clip-layout state dict (CPU tensors).

    Accepts an OpenAI JIT archive, a ``torch.save``'d state dict (``.pt`` / ``.pth`` / ``.bin``, possibly under
    ``"state_dict"``, possibly with a DDP ``module.`` prefix) or a ``.safetensors`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"clip_weights={str(path)!r}: no such file; {_HOW_TO}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit.load is deprecated, but it is how OpenAI shipped CLIP
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as err:  # each means the same to the user: not a readable checkpoint
        raise CheckpointError(
            f"clip_weights={str(path)!r} could not be read as a CLIP checkpoint ({type(err).__name__}: {err}); "
            "expected an OpenAI JIT .pt or an open_clip .bin/.pt/.safetensors state dict"
        ) from err
    while isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"clip_weights={str(path)!r} holds a {type(obj).__name__}, not a state dict of tensors")
    state = {str(k): v for k, v in obj.items() if str(k) not in _NON_WEIGHT_KEYS}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"clip_weights={str(path)!r}: entries {bad[:5]} are not tensors; is this a CLIP state "
                              f"dict?")
    return state


def _short(items: list, n: int = 5) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


def load_clip_weights(model: CLIP, path: str | os.PathLike, vit: str) -> None:
    """Load the checkpoint at ``path`` into ``model`` strictly; a CheckpointError names what does not fit."""
    state = load_clip_state_dict(path)
    own = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].ndim != own["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys ({_short(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_short(unexpected)})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches ({_short(mismatched, 3)})")
        raise CheckpointError(
            f"clip_weights={str(path)!r} does not fit vit={vit!r} (open_clip {resolve_vit(vit)}): "
            + "; ".join(problems) + ". Is it a checkpoint of another CLIP architecture?"
        )
    model.load_state_dict(state, strict=True)


def cached_openai_weights(vit: str) -> tuple[Path | None, list[str]]:
    """Path of open_clip's ``openai`` weights for ``vit`` if already in the local cache, and where we looked.

    Never downloads (:func:`openai_weights` does): checks the Hugging Face hub cache (open_clip's preferred
    source) and ``~/.cache/clip`` (the OpenAI URL download target).
    """
    pcfg = openai_cfg(vit)
    looked: list[str] = []
    hub = pcfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # the hub client is optional; the URL cache below still works
            try_to_load_from_cache = None
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for fname in names:
            looked.append(f"hf-hub cache {repo}/{fname}")
            if try_to_load_from_cache is not None:
                found = try_to_load_from_cache(repo, fname)
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found), looked
    url = pcfg.get("url", "")
    if url:
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        looked.append(str(target))
        if target.is_file():
            return target, looked
    return None, looked


def _no_weights(vit: str, looked: list[str], why: str) -> str:
    return (f"no CLIP weights for vit={vit!r}: clip_weights is not set and open_clip's 'openai' weights are not in "
            f"the local cache (looked in: {'; '.join(looked)}), {why}. Either set clip_weights=/path/to/weights "
            f"(OpenAI's JIT .pt archive, or an open_clip .bin/.pt/.safetensors state dict), or run once with network "
            f"access (HF_HUB_OFFLINE unset) so that open_clip downloads and caches them; clip_random_init=True "
            f"gives a randomly initialised backbone (tests, demo)")


def openai_weights(vit: str) -> Path:
    """The file of open_clip's ``openai`` weights for ``vit``: from the local cache, else downloaded by open_clip.

    open_clip caches what it downloads, so only the first run fetches. With ``HF_HUB_OFFLINE=1`` nothing is
    downloaded. A MissingFileError naming ``clip_weights`` when there are none to be had; a ConfigError for a
    ``vit`` without released weights (``tiny``).
    """
    pcfg = openai_cfg(vit)
    if not pcfg:
        raise ConfigError(f"vit={vit!r} has no released weights: {_HOW_TO}")
    cached, looked = cached_openai_weights(vit)
    if cached is not None:
        return cached
    if hub_offline():
        raise MissingFileError(_no_weights(vit, looked, "and HF_HUB_OFFLINE is set, so nothing is downloaded"))
    log.info("CLIP %s: downloading open_clip's 'openai' weights (once: open_clip caches them)", vit)
    try:
        target = open_clip.pretrained.download_pretrained(pcfg)
    except _DOWNLOAD_ERRORS as err:
        cause = " ".join(str(err).split())
        cause = cause if len(cause) <= 160 else cause[:157] + "..."
        raise MissingFileError(_no_weights(vit, looked, f"and downloading them failed ({type(err).__name__}: "
                                                        f"{cause})")) from err
    if not target or not Path(target).is_file():
        raise MissingFileError(_no_weights(vit, looked, f"and open_clip's download gave no file ({target!r})"))
    return Path(target)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module`` and put it in eval mode."""
    for param in module.parameters():
        param.requires_grad_(False)
    return module.eval()


def build_clip(vit: str = "ViT-B/16", clip_weights: str | os.PathLike | None = None,
               clip_random_init: bool = False) -> CLIP:
    """A frozen open_clip ``CLIP`` for ``vit`` with weights from ``clip_weights``, random init or ``openai``.

    Raises a MamolError (ConfigError, MissingFileError, CheckpointError) naming the key when no usable weights
    are found; the weights are looked up (or downloaded) before the model is built.
    """
    name = resolve_vit(vit)
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None or model_cfg.get("custom_text") or "timm_model_name" in model_cfg.get("vision_cfg", {}):
        raise ConfigError(f"vit={vit!r}: open_clip config {name!r} is not a plain CLIP ViT")
    source: str | os.PathLike | None = None
    if clip_weights:
        if clip_random_init:
            log.warning("clip_random_init=True is ignored because clip_weights=%s is set", clip_weights)
        if not Path(clip_weights).is_file():
            raise MissingFileError(f"clip_weights={str(clip_weights)!r}: no such file; {_HOW_TO}")
        source = clip_weights
    elif not clip_random_init:
        source = openai_weights(vit)
    model = CLIP(**model_cfg)  # random init (global torch RNG); overwritten below when weights were found
    if source is not None:
        load_clip_weights(model, source, vit)
        log.info("CLIP %s: weights from %s", vit, source)
    else:
        log.info("CLIP %s: random weights (clip_random_init=True)", vit)
    return freeze(model)
