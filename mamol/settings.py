"""Typed run settings: the Sacred config dict becomes small frozen dataclasses, once, at the edge.

:func:`resolve` is the only reader of the raw config. It checks every value (type, range, how values relate)
with an error that names the key, fills the keys left ``None`` with the paper's value for the data kind, and
derives the hardware plan. Everything below ``mamol.train.run`` takes these dataclasses, never the dict.

Where each default lives: the Sacred experiment (:mod:`mamol.experiment`) holds every key's default with its
meaning (a method's keys beside the method, a dataset's in its catalogue entry); the named configs only set
keys; a method's own sizes that depend on the data kind (e.g. MaMOL's rank 8 on remote scenes, 16 on
image–text data) are stated once, in that method's ``Options.paper_defaults``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import torch

from mamol import distributed
from mamol.errors import ConfigError
from mamol.missing import MissingSetting
from mamol.tasks import KINDS, SPLITS

log = logging.getLogger(__name__)



# ------------------------------------------------------------------------------------------- the groups
@dataclass(frozen=True)
class RunInfo:
    """What the run is called, where it writes, and what it starts from."""

    exp_name: str
    seed: int
    log_dir: Path
    fast_dev_run: bool | int
    test_only: bool
    load_path: Path | None
    resume_from: Path | None
    logger: Literal["csv", "tensorboard"]  # training curves: metrics.csv, and TensorBoard event files too
    test_after_fit: bool  # test the best checkpoint when training ends
    limit_test: float  # part of the test split evaluated: a fraction (<= 1) or a number of batches (> 1)
    allow_option_change: bool  # load a checkpoint although its output-changing options differ (recorded)


@dataclass(frozen=True)
class DataSettings:
    """Which datasets, where, and how their samples are prepared."""

    root: Path = field(metadata={"key": "data_root"})
    datasets: tuple[str, ...]  # canonical task names (the Arrow file prefixes)
    modalities: tuple[str, ...] | None  # remote: modalities to use; None = HSI + LiDAR (or the first pair stored)
    image_size: int
    max_text_len: int
    num_workers: int  # DataLoader workers per process (the config's None resolved by :func:`loader_workers`)
    class_num: Mapping[str, int]  # image-text head sizes by task (``<task>_class_num`` keys)
    loss_weights: Mapping[str, float]  # loss weight of each dataset (``loss_names``)
    vit: str  # the backbone name, which picks the text tokenizer


@dataclass(frozen=True)
class MissingSettings:
    """Missing-modality simulation of every split (SPEC §4), with ``test_ratio``/``test_type`` applied."""

    train: MissingSetting
    val: MissingSetting
    test: MissingSetting
    table_root: Path | None = field(metadata={"key": "missing_table_root"})  # None = beside the Arrow files
    on_mismatch: Literal["regenerate", "refuse"] = field(metadata={"key": "missing_table_on_mismatch"})
    simulate: bool = field(metadata={"key": "simulate_missing"})  # redraw complete training samples' patterns
    fill: Literal["ones", "zeros"] = field(metadata={"key": "missing_fill"})  # input substituted when missing

    def split(self, split: str) -> MissingSetting:
        """The setting of ``split`` ("train", "val" or "test")."""
        return getattr(self, split)


@dataclass(frozen=True)
class BackboneSettings:
    """The frozen CLIP backbone and where its weights come from (SPEC §5.1)."""

    vit: str
    clip_weights: Path | None
    random_init: bool = field(metadata={"key": "clip_random_init"})


@dataclass(frozen=True)
class ModelSettings:
    """What every method shares around the encoder: tokenizers, head, skipping missing modalities."""

    tokenizer_dim: int  # remote tokenizers: width of the 3x3 conv
    head_init_std: float  # std of the head's weight init (bias 0)
    skip_missing: bool  # skip the encoder pass of a missing modality (exact: its feature is zeroed)


@dataclass(frozen=True)
class MethodSettings:
    """The method (``method`` key), its own options (a dataclass the method defines) and its parameter budget.

    ``budget`` other than "default" sets the options' capacity key (``Options.CAPACITY``) once the data's shapes
    are known (:func:`mamol.methods.budget.settle`); ``capacity`` then records the choice: the key, its value,
    the run's trainable parameters, the reference method and its count (None until settled, and for "default").
    """

    name: str
    options: Any
    budget: Literal["default", "matched", "lora"] = "default"
    capacity: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class OptimSettings:
    """Optimiser, schedule, length and validation cadence (SPEC §6)."""

    learning_rate: float
    weight_decay: float
    lr_mult: float  # learning-rate multiplier of the head(s)
    warmup_steps: float  # steps (>= 1) or a fraction of all optimiser steps (< 1)
    decay_power: float | Literal["cosine"]
    end_lr: float
    grad_clip: float  # 0 = off
    max_epoch: int
    max_steps: int | None
    batch_size: int  # effective batch
    val_check_interval: float  # fraction of an epoch (<= 1) or every N batches (> 1)
    check_val_every_n_epoch: int


@dataclass(frozen=True)
class HardwareSettings:
    """Devices, precision, distribution and gradient accumulation, derived from the batch keys."""

    accelerator: Literal["cpu", "gpu"]
    devices: int
    num_nodes: int
    precision: str  # Lightning's precision string ("32-true", "16-mixed", "bf16-mixed")
    per_device_batch: int
    accumulate: int
    strategy: Literal["auto", "ddp"]


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs, typed and checked."""

    kind: str  # "remote" | "natural": the data kind of every dataset of the run
    run: RunInfo
    data: DataSettings
    missing: MissingSettings
    backbone: BackboneSettings
    model: ModelSettings
    method: MethodSettings
    optim: OptimSettings
    hardware: HardwareSettings
    config: Mapping[str, Any]  # the user's config as given (saved with the run for the record)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict of the resolved settings (paths as strings)."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------------------------- checking values
def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    if origin in (Mapping, dict, typing.Mapping):
        return f"a dict of {_describe(args[1])}"
    if hint is type(None):
        return "None"
    return {bool: "True/False", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` of config key ``key`` converted to the type ``hint``; ConfigError naming the key otherwise.

    Accepts what a command line gives: an integer where a number is expected, a list where a tuple is, a
    string where a path is. Never guesses across kinds (``"1e-3"`` is not a number, ``1`` is not True).
    """
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: expected {_describe(hint)}")
    if origin is Literal:
        if isinstance(value, str):
            matches = [a for a in args if isinstance(a, str) and a.lower() == value.lower()]
            if matches:
                return matches[0]
        if value in args and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected {_describe(hint)}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected {_describe(hint)}, e.g. {key}='[...]'")
        return tuple(coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r}: expected {_describe(hint)}")
        return {str(k): coerce(f"{key}['{k}']", v, args[1]) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}={value!r}: expected a finite number")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
    else:
        raise TypeError(f"coerce: unsupported type {hint!r} for key {key}")
    raise ConfigError(f"{key}={value!r}: expected {_describe(hint)}, found {type(value).__name__}")


def from_config(cls: type, cfg: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                **given: Any) -> Any:
    """Build dataclass ``cls`` from the config keys of its fields (``metadata["key"]`` or the field name).

    ``given`` supplies fields computed by the caller; ``defaults`` replaces keys whose value is ``None``
    (the paper's values for the data kind).
    """
    hints = get_type_hints(cls)
    values = dict(given)
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        key = f.metadata.get("key", f.name)
        if key not in cfg:
            raise ConfigError(f"the config has no key {key!r} (needed by {cls.__name__}); "
                              f"is mamol.experiment out of date?")
        value = cfg[key]
        if value is None and defaults is not None and key in defaults:
            value = defaults[key]
        values[f.name] = coerce(key, value, hints[f.name])
    return cls(**values)


# ------------------------------------------------------------------------------------------- resolving
def _per_split(cfg: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, Mapping):  # one value for every split
        return {split: value for split in SPLITS}
    unknown = sorted(set(value) - set(SPLITS))
    absent = [s for s in SPLITS if s not in value]
    require(not unknown and not absent, f"{key} must give a value for each of {list(SPLITS)}; "
                                        f"missing {absent}, unknown {unknown}")
    return dict(value)


def missing_settings(cfg: Mapping[str, Any]) -> MissingSettings:
    """Per-split missing settings; ``test_ratio``/``test_type`` override val and test."""
    ratios, kinds = _per_split(cfg, "missing_ratio"), _per_split(cfg, "missing_type")
    both = coerce("both_ratio", cfg["both_ratio"], float)
    ratio_2 = coerce("missing_ratio_2", cfg["missing_ratio_2"], float)
    seed = coerce("missing_seed", cfg["missing_seed"], int)
    test_ratio = coerce("test_ratio", cfg["test_ratio"], float | None)
    test_type = coerce("test_type", cfg["test_type"], str | None)
    for key, value in (("both_ratio", both), ("missing_ratio_2", ratio_2), ("test_ratio", test_ratio)):
        require(value is None or 0.0 <= value <= 1.0, f"{key} must be in [0, 1], found {value}")
    splits = {}
    for split in SPLITS:
        ratio = coerce(f"missing_ratio['{split}']", ratios[split], float)
        require(0.0 <= ratio <= 1.0, f"missing_ratio['{split}'] must be in [0, 1], found {ratio}")
        kind = coerce(f"missing_type['{split}']", kinds[split], str)
        if split != "train":
            ratio = ratio if test_ratio is None else test_ratio
            kind = kind if test_type is None else test_type
        if ratio == 0.0 and ratio_2 == 0.0:
            kind = "none"  # nothing goes missing, whatever the type says (e.g. 'both' on 3 modalities)
        splits[split] = MissingSetting(ratio=ratio, type=kind, both_ratio=both, ratio_2=ratio_2, seed=seed)
    return from_config(MissingSettings, dict(cfg) | {"missing_table_root": cfg["missing_table_root"] or None},
                       **splits)


def launcher_processes(env: Mapping[str, str]) -> tuple[str, int, int] | None:
    """(launcher, processes per node, nodes) when an external launcher started this process, else None.

    torchrun sets ``LOCAL_WORLD_SIZE`` and ``WORLD_SIZE``; ``srun`` sets ``SLURM_NTASKS`` and ``SLURM_NNODES``
    (an interactive SLURM shell, as Lightning treats it, does not count).
    """
    if "TORCHELASTIC_RUN_ID" in env and "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
        local, world = int(env["LOCAL_WORLD_SIZE"]), int(env["WORLD_SIZE"])
        return "torchrun", local, max(world // max(local, 1), 1)
    if int(env.get("SLURM_NTASKS", "1")) > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        tasks, nodes = int(env["SLURM_NTASKS"]), int(env.get("SLURM_NNODES", "1"))
        return "SLURM", max(tasks // nodes, 1), nodes
    return None


def hardware_settings(cfg: Mapping[str, Any], batch_size: int, cuda_devices: int | None = None,
                      env: Mapping[str, str] | None = None, training: bool = True) -> HardwareSettings:
    """Accelerator, devices, precision, strategy and gradient accumulation.

    ``num_gpus`` GPUs per node (0 = the CPU, then ``num_processes`` CPU processes per node) on ``num_nodes``
    nodes; more than one process in all runs DDP. A process started by torchrun or SLURM takes its process
    counts from the launcher. Asking for GPUs that are not there is an error, not a silent CPU run. Gradient
    accumulation is a training matter: without ``training`` (``test_only``) it is 1 and ``batch_size`` is not
    checked against the per-device batch.
    """
    num_gpus = coerce("num_gpus", cfg["num_gpus"], int)
    num_processes = coerce("num_processes", cfg["num_processes"], int)
    num_nodes = coerce("num_nodes", cfg["num_nodes"], int)
    require(num_gpus >= 0, f"num_gpus must be >= 0, found {num_gpus}")
    require(num_processes >= 1, f"num_processes must be >= 1, found {num_processes}")
    require(num_nodes >= 1, f"num_nodes must be >= 1, found {num_nodes}")
    available = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    require(num_gpus <= available,
            f"num_gpus={num_gpus} but {available} GPU{'s are' if available != 1 else ' is'} available: set "
            f"num_gpus={available}" + (" (CPU: num_gpus=0, and num_processes=N for N CPU processes)" if available
                                       else " to train on the CPU (num_processes=N for N CPU processes)"))
    use_gpu = num_gpus > 0
    require(not (use_gpu and num_processes > 1),
            f"num_processes={num_processes} is for CPU runs (num_gpus=0); with GPUs, num_gpus sets the processes")
    devices = num_gpus if use_gpu else num_processes
    launched = launcher_processes(os.environ if env is None else env)
    if launched is not None:
        launcher, per_node, nodes = launched
        if (per_node, nodes) != (devices, num_nodes):
            log.warning("started by %s with %d process(es) per node on %d node(s): using those (the config asked "
                        "for %d per node on %d)", launcher, per_node, nodes, devices, num_nodes)
        devices, num_nodes = per_node, nodes

    precision = str(cfg["precision"])
    require(precision in {"16", "32", "bf16", "16-mixed", "bf16-mixed", "32-true"},
            f"precision must be 16, 'bf16' or 32, found {cfg['precision']!r}")
    if use_gpu:
        lightning_precision = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true"}.get(precision, precision)
    elif precision in {"bf16", "bf16-mixed"}:
        lightning_precision = "bf16-mixed"  # asked for explicitly: bf16 autocast on the CPU (AVX-512 BF16 / AMX)
    else:
        # Lightning would turn 16 into bf16 on the CPU; fp16 is a GPU format, so the CPU runs 32-bit (SPEC §2).
        if precision not in {"32", "32-true"}:
            log.info("precision=%s applies to GPUs only: the CPU run uses 32-bit (precision='bf16' for bf16 "
                     "autocast on the CPU)", precision)
        lightning_precision = "32-true"

    per_device = coerce("per_gpu_batchsize", cfg["per_gpu_batchsize"] or 0, int)
    world = devices * num_nodes
    if per_device == 0:
        per_device = max(batch_size // world, 1)
    require(batch_size >= 1 and per_device >= 1,
            f"batch_size ({batch_size}) and per_gpu_batchsize ({per_device}) must be >= 1")
    accumulate = batch_size // (per_device * world) if training else 1
    require(accumulate >= 1,
            f"gradient accumulation = batch_size // (per_gpu_batchsize x processes x num_nodes) = "
            f"{batch_size} // ({per_device} x {devices} x {num_nodes}) = 0: raise batch_size to at least "
            f"{per_device * world}, or lower per_gpu_batchsize / num_gpus / num_processes / num_nodes")
    if training and batch_size % (per_device * world):
        log.warning("batch_size=%d is not a multiple of per_gpu_batchsize x processes x nodes = %d: the effective "
                    "batch is %d", batch_size, per_device * world, accumulate * per_device * world)
    return HardwareSettings(accelerator="gpu" if use_gpu else "cpu", devices=devices, num_nodes=num_nodes,
                            precision=lightning_precision, per_device_batch=per_device, accumulate=accumulate,
                            strategy="ddp" if world > 1 else "auto")


MAX_LOADER_WORKERS = 8
"""Most DataLoader workers a process gets by default: beyond that, decoding rarely limits a step."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity: what a cluster scheduler granted), or the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(processes_per_node: int, cpus: int | None = None) -> int:
    """Default DataLoader workers of each process: the ``cpus`` (default :func:`available_cpus`) shared by the
    node's training processes, one left for each process itself, capped at :data:`MAX_LOADER_WORKERS`.

    E.g. 16 CPUs and one GPU: 8 workers; 16 CPUs and 8 GPUs: 1 each; 2 CPUs and one process: 1.
    """
    cpus = available_cpus() if cpus is None else cpus
    return max(0, min(MAX_LOADER_WORKERS, cpus // max(processes_per_node, 1) - 1))


def _loss_weights(cfg: Mapping[str, Any], kind: str, datasets: tuple[str, ...]) -> dict[str, float]:
    given = coerce("loss_names", cfg["loss_names"] or {}, Mapping[str, float])
    weights = {}
    for task in datasets:
        key = "remote" if kind == "remote" else task
        weight = given.get(key, 1.0 if kind == "remote" else 0.0)
        require(weight > 0, f"loss_names['{key}'] is {weight}: the loss of dataset {task!r} would be off; "
                            f"set loss_names.{key}=1 (or use the task_finetune_{task} named config)")
        weights[task] = weight
    return weights


def _optim_settings(cfg: Mapping[str, Any]) -> OptimSettings:
    require(str(cfg["optim_type"]).lower() == "adamw",
            f"optim_type must be 'adamw' (the only optimiser of the method), found {cfg['optim_type']!r}")
    optim = from_config(OptimSettings, cfg)
    for key in ("learning_rate", "weight_decay", "warmup_steps", "end_lr", "grad_clip", "lr_mult"):
        require(getattr(optim, key) >= 0, f"{key} must be >= 0, found {getattr(optim, key)}")
    require(optim.decay_power == "cosine" or optim.decay_power > 0,
            f"decay_power must be a positive number or 'cosine', found {optim.decay_power!r}")
    require(optim.max_epoch >= 1, f"max_epoch must be >= 1, found {optim.max_epoch}")
    require(optim.max_steps is None or optim.max_steps >= 1, f"max_steps must be >= 1 or None, found {optim.max_steps}")
    require(optim.check_val_every_n_epoch >= 1,
            f"check_val_every_n_epoch must be >= 1, found {optim.check_val_every_n_epoch}")
    require(optim.val_check_interval > 0, f"val_check_interval must be > 0, found {optim.val_check_interval}")
    return optim


def resolve_model(cfg: Mapping[str, Any], kind: str, method_options: type
                  ) -> tuple[BackboneSettings, ModelSettings, MethodSettings]:
    """The settings a model is built from (also what tests and the model benchmark use)."""
    method_name = coerce("method", cfg["method"], str)
    options = from_config(method_options, cfg, defaults=method_options.paper_defaults(kind))
    if hasattr(options, "check"):
        options.check()
    if cfg.get("prompt_type") not in (None, "", "input") and "prompt_type" not in options.__dataclass_fields__:
        log.info("prompt_type=%r is accepted for DCP command lines and has no effect in method=%s", cfg["prompt_type"],
                 method_name)
    model = from_config(ModelSettings, cfg)
    require(model.tokenizer_dim >= 1, f"tokenizer_dim must be >= 1, found {model.tokenizer_dim}")
    backbone = from_config(BackboneSettings, dict(cfg) | {"clip_weights": cfg["clip_weights"] or None})
    budget = coerce("budget", cfg["budget"], Literal["default", "matched", "lora"])
    return backbone, model, MethodSettings(name=method_name, options=options, budget=budget)


def resolve(cfg: Mapping[str, Any], *, kind: str, datasets: tuple[str, ...], method_options: type,
            evaluation: bool = False, cuda_devices: int | None = None) -> RunSettings:
    """Check the Sacred config ``cfg`` and return the typed settings.

    Args:
        kind: the data kind of ``datasets`` (from the dataset catalogue).
        datasets: canonical names of ``cfg["datasets"]`` (from the dataset catalogue).
        evaluation: the command only evaluates (``evaluate_grid``, ``predict_map``), as ``test_only`` does:
            training-only checks such as gradient accumulation do not apply.
        method_options: the options dataclass of ``cfg["method"]`` (from the method registry); keys it reads
            that are ``None`` take ``method_options.paper_defaults(kind)``.
        cuda_devices: the GPUs the run will have (default: this machine's); a sweep submitting SLURM jobs from a
            login node without GPUs checks its runs against the GPUs they ask for.
    """
    cfg = dict(cfg)
    require(kind in KINDS, f"data kind must be one of {KINDS}, found {kind!r}")
    require(bool(datasets), "datasets must name at least one task, e.g. datasets='[\"houston2013\"]'")
    require(bool(cfg.get("data_root")), "data_root is empty: set data_root=<folder with the Arrow files>")
    if isinstance(cfg.get("modalities"), str):  # "hsi,sar" or "hsi+sar" from a command line
        cfg["modalities"] = [t for t in cfg["modalities"].replace("+", ",").split(",") if t.strip()]
    workers = None if cfg["num_workers"] is None else coerce("num_workers", cfg["num_workers"], int)
    require(workers is None or workers >= 0, f"num_workers must be >= 0, found {workers}")
    data = from_config(DataSettings, cfg, datasets=tuple(datasets), loss_weights=_loss_weights(cfg, kind, datasets),
                       class_num={k.removesuffix("_class_num"): coerce(k, v, int)
                                  for k, v in cfg.items() if k.endswith("_class_num")},
                       num_workers=workers or 0)  # None: resolved below, once the processes per node are known
    require(data.root.is_dir(), f"data_root={str(data.root)!r} is not a folder")
    if kind == "natural":
        # CLIP's text context and input size are fixed by the backbone (MMP used other values).
        require(1 <= data.max_text_len <= 77,
                f"max_text_len={data.max_text_len}: CLIP's text encoder takes at most 77 tokens")
        require(data.image_size == 224,
                f"image_size={data.image_size}: the CLIP ViT backbones here take 224 x 224 images")

    run = from_config(RunInfo, cfg | {k: cfg[k] or None for k in ("load_path", "resume_from")})
    require(run.limit_test > 0 and (run.limit_test <= 1 or float(run.limit_test).is_integer()),
            f"limit_test must be a fraction in (0, 1] or a whole number of batches, found {run.limit_test}")
    require(run.logger != "tensorboard" or importlib.util.find_spec("tensorboard") is not None,
            "logger='tensorboard' needs the `tensorboard` package, which is not installed in this environment: run "
            "`pip install -r requirements.txt` (it lists tensorboard), or use logger='csv'")
    if run.test_only:
        require(run.load_path is not None, "test_only=True needs load_path=<checkpoint to evaluate>")
    for key in ("load_path", "resume_from"):
        path = getattr(run, key)
        rank = distributed.global_rank()
        # Every process reads the file itself: on several nodes, one that cannot see it says which it is.
        require(path is None or path.is_file(), f"{key}={str(path)!r}: no such file" + (
            f" on rank {rank} (host {socket.gethostname()}): every process of the run reads {key}, so put it on "
            f"storage every node sees (or copy it to the same path on each node)" if rank else ""))

    optim = _optim_settings(cfg)
    backbone, model, method = resolve_model(cfg, kind, method_options)
    hardware = hardware_settings(cfg, optim.batch_size, cuda_devices=cuda_devices,
                                 training=not (run.test_only or evaluation))
    if workers is None:
        data = dataclasses.replace(data, num_workers=loader_workers(hardware.devices))
    return RunSettings(
        kind=kind, run=run, data=data, missing=missing_settings(cfg),
        backbone=backbone, model=model, method=method, optim=optim, hardware=hardware, config=dict(cfg),
    )
