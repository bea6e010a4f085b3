"""Builders shared by the tests: configs from ``config.py``'s defaults, task descriptions, tiny models.

Every test gets its config through :func:`tiny_config` (the Sacred defaults plus the tiny random backbone on
the CPU), so no test restates a default.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from config import defaults
from mamol.conversion.remote import prepare_remote
from mamol.conversion.synthetic import generate_scene, write_scene
from mamol.data import catalogue
from mamol.data.base import BaseArrowDataset
from mamol.methods.budget import model_for
from mamol.missing import COMPLETE, FIRST_MISSING, IMAGE_MISSING, SECOND_MISSING, TEXT_MISSING
from mamol.models.adapter import MaMOLAdapter
from mamol.module import MaMOLModule
from mamol.settings import RunSettings
from mamol.tasks import REMOTE, TaskInfo
from mamol.train import build_trainer, resolve_settings
from run import ex  # importing run registers its main function with the experiment

REPO = Path(__file__).resolve().parents[1]

TINY = dict(vit="tiny", clip_random_init=True, num_gpus=0, num_workers=0)
"""What every CPU test sets: the 4-block random CLIP, no GPU, no worker processes."""


def tiny_config(*named_configs: str, **updates) -> dict:
    """The config ``run.py with <named_configs> vit=tiny clip_random_init=True num_gpus=0 ... <updates>`` uses."""
    return defaults(*named_configs, **{**TINY, **updates})


def remote_info(modalities: Sequence[str] = ("hsi", "lidar"), bands: Sequence[int] = (12, 1), classes: int = 5,
                name: str = "synthetic", patch_size: int = 14) -> TaskInfo:
    """A remote scene's description without any file."""
    return TaskInfo(name=name, kind="remote", task_type=REMOTE, modalities=tuple(modalities),
                    bands=dict(zip(modalities, bands)), num_classes=classes,
                    class_names=tuple(f"c{i}" for i in range(classes)), patch_size=patch_size, metadata={})


def natural_info(name: str = "mmimdb", classes: int = 23) -> TaskInfo:
    """An image-text task's description (task type from the catalogue) without any file."""
    entry = catalogue.CATALOGUE[name]
    return TaskInfo(name=name, kind="natural", task_type=entry.task_type, modalities=entry.modalities, bands={},
                    num_classes=classes, class_names=tuple(f"c{i}" for i in range(classes)), patch_size=0,
                    metadata={})


def tiny_model(infos: TaskInfo | Sequence[TaskInfo], **updates) -> nn.Module:
    """The model a run would build for ``infos`` with the tiny backbone and the config ``updates``."""
    infos = [infos] if isinstance(infos, TaskInfo) else list(infos)
    cfg = tiny_config(**updates)
    return model_for(cfg, infos)


def run_settings(data_root: str | Path, *named_configs: str, **updates) -> RunSettings:
    """Typed settings of a tiny CPU run on the Arrow files in ``data_root`` (as ``run.py`` resolves them)."""
    return resolve_settings(tiny_config(*named_configs, data_root=str(data_root), **updates))


def open_split(data_root: str | Path, name: str, split: str, *named_configs: str, **updates) -> BaseArrowDataset:
    """Split ``split`` of dataset ``name`` as a run with these config ``updates`` serves it.

    Image-text datasets take their ``task_finetune_<name>`` named config unless others are given.
    """
    entry = catalogue.entry(name, data_root)
    if entry.kind == "natural" and not named_configs:
        named_configs = (f"task_finetune_{entry.name}",)
    s = run_settings(data_root, *named_configs, datasets=[name], **updates)
    return entry.dataset(entry, s.data, s.missing, split)


def convert_scene(tmp: Path, name: str = "arrow", hsi_bands: int = 8, seed: int = 0,
                  size: tuple[int, int] = (48, 64), modalities: Sequence[str] = ("hsi", "lidar"), **counts) -> Path:
    """A generated 4-class scene (2 spectra x 2 heights) converted to Arrow under ``tmp/name``; returns that folder."""
    scene = generate_scene(height=size[0], width=size[1], hsi_bands=hsi_bands, n_classes=4, n_heights=2,
                           regions_per_class=2, modalities=tuple(modalities), sar_bands=2, seed=seed)
    write_scene(scene, tmp / f"raw_{name}")
    counts = {"train_per_class": 40, "val_per_class": 20, "test_per_class": 60, **counts}
    prepare_remote("synthetic", tmp / f"raw_{name}", tmp / name, seed=seed, progress=False, **counts)
    return tmp / name


def run_experiment(*named_configs: str, **updates) -> dict:
    """Run ``python run.py with <named_configs> <TINY> <updates>`` in this process (as ``run.py`` does).

    Returns the new run's ``test_results.json`` (``{}`` without a test) with ``run_dir`` added.
    """
    updates = {**TINY, "exp_name": "mamol", **updates}
    ex.run(named_configs=list(named_configs), config_updates=updates, options={"--loglevel": "ERROR"})
    runs = sorted((Path(updates["log_dir"]) / updates["exp_name"]).glob("version_*"),
                  key=lambda p: int(p.name.split("_")[1]))
    results = runs[-1] / "test_results.json"
    report = json.loads(results.read_text()) if results.is_file() else {}  # none with test_after_fit=False
    report["run_dir"] = str(runs[-1])
    return report


def cli(*args: str, script: str = "run.py", timeout: int = 600, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    """Run an entry point of the repository (``run.py`` by default) in a fresh interpreter, offline; ``env``
    adds to (or overrides) its environment."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def cli_updates(updates: dict) -> list[str]:
    """``key=value`` words of a Sacred command line for ``updates``."""
    return [f"{k}={v!r}" if isinstance(v, (list, str, dict)) else f"{k}={v}" for k, v in updates.items()]


def make_arrow_script() -> ModuleType:
    """``datasets/make_arrow.py`` loaded as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_arrow_cli", REPO / "datasets" / "make_arrow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------- models and batches
def tiny_batch(kind: str, device: str = "cpu") -> dict:
    """Four rows with missing modalities (complete, first missing, second missing, complete) for the models of
    :func:`tiny_model` on :func:`remote_info` (HSI 12 bands + LiDAR, 5 classes) or :func:`natural_info` (MM-IMDb)."""
    g = torch.Generator().manual_seed(0)
    if kind == "remote":
        data = {"hsi": torch.rand(4, 12, 14, 14, generator=g), "lidar": torch.rand(4, 1, 14, 14, generator=g),
                "missing_type": torch.tensor([COMPLETE, FIRST_MISSING, SECOND_MISSING, COMPLETE]),
                "label": torch.tensor([0, 3, 4, 1])}
    else:
        text_ids = torch.zeros(4, 77, dtype=torch.long)
        for row, length in enumerate((5, 9, 3, 12)):  # start token, words, end token, padding
            text_ids[row, 0], text_ids[row, length - 1] = 49406, 49407
            text_ids[row, 1:length - 1] = torch.randint(300, 40000, (length - 2,), generator=g)
        data = {"image": torch.randn(4, 3, 224, 224, generator=g), "text_ids": text_ids,
                "missing_type": torch.tensor([COMPLETE, TEXT_MISSING, IMAGE_MISSING, COMPLETE]),
                "label": torch.randint(0, 2, (4, 23), generator=g)}
    return {key: value.to(device) for key, value in data.items()}


def outputs_and_grads(net: nn.Module, data: dict, loss) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``net(data)`` and the gradient of ``loss(logits)`` for every trainable parameter (set to none first)."""
    net.zero_grad(set_to_none=True)
    logits = net(data)
    loss(logits).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}


def zero_output_projections(net: nn.Module) -> None:
    """Zero every MaMOL adapter's output projection W_o (weight and bias): the adapters then add nothing."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, MaMOLAdapter):
                m.out.weight.zero_()
                m.out.bias.zero_()


# ------------------------------------------------------------------------------------------- modules and checkpoints
def tiny_module(tmp: Path, info: TaskInfo | None = None, **updates) -> MaMOLModule:
    """The Lightning module of a seeded ``remote`` run for ``info`` (default :func:`remote_info`); reads no file."""
    torch.manual_seed(0)
    s = run_settings(tmp, "remote", datasets=["houston2013"], **updates)  # a catalogued name: no files read
    return MaMOLModule(s, [info or remote_info()])


def save_checkpoint(module: MaMOLModule, path: Path) -> Path:
    """What Lightning's checkpointing writes, through the module's own hook."""
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def trainable_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a run's checkpoint: adapters, head, tokenizers and the method's own parts."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if ".adapter." in k or k.startswith(("model.head", "model.tokenizers",
                                                                                  "model.method."))}


# ------------------------------------------------------------------------------------------- runs
def short_run(data_root: str | Path, tmp: Path, **changes) -> dict:
    """Config updates of a short remote run on ``data_root``: batches of 32, one epoch validated at its end,
    learning rate 1e-3, runs and missing tables under ``tmp``; ``changes`` override."""
    return {"data_root": str(data_root), "datasets": ["synthetic"], "batch_size": 32, "per_gpu_batchsize": 32,
            "log_dir": str(tmp / "runs"), "missing_table_root": str(tmp / "tables"), "max_epoch": 1,
            "check_val_every_n_epoch": 1, "learning_rate": 1e-3, **changes}


def run_command(command: str, *named: str, **updates) -> Path:
    """``python run.py <command> with <named> <TINY> <updates>`` in this process; returns the newest folder the
    command wrote (``<log_dir>/<exp_name>/version_<n>``; a sweep: ``<log_dir>/<exp_name>``)."""
    updates = {**TINY, **updates}
    ex.run(command_name=command, named_configs=list(named), config_updates=updates, options={"--loglevel": "ERROR"})
    folder = Path(updates["log_dir"]) / updates["exp_name"]
    if command == "sweep":
        return folder
    return max(folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def add_callbacks(monkeypatch: pytest.MonkeyPatch, *callbacks: pl.Callback) -> None:
    """Give the trainer of every later run of this test ``callbacks`` as well (``monkeypatch.undo()`` stops it)."""
    def with_callbacks(*args, **kwargs):
        trainer, best, last = build_trainer(*args, **kwargs)
        trainer.callbacks.extend(callbacks)
        return trainer, best, last

    monkeypatch.setattr("mamol.train.build_trainer", with_callbacks)


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a CSV file with a header (``metrics.csv``, ``grid.csv``, ``report.csv``) as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def set_pattern_embedding(method: nn.Module, rows: dict[int, list[float]], tower: str = "image") -> nn.Module:
    """MaMOL's pattern embedding of ``tower`` with hand-set weights: zero but ``rows`` (embedding coordinate ->
    its weight per missing-type code; the input is the code's one-hot), no bias. Returns the embedding."""
    embedding = method.patterns[tower]
    with torch.no_grad():
        embedding.proj.weight.zero_()
        embedding.proj.bias.zero_()
        for row, weights in rows.items():
            embedding.proj.weight[row] = torch.tensor(weights)
    return embedding
