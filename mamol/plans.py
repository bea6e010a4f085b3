"""A paper's tables as sweep plans, and ``dry_run=True``: what a sweep would train and about how long it takes.

Plans are named configs (``python run.py sweep with plan_remote_main ...``), one per table:

- ``plan_remote_main``: every registered method × Houston2013, Trento, Augsburg × 10 seeds (30 runs per method);
- ``plan_natural_main``: the same over MM-IMDb, Food-101, Hateful Memes (DCP's fine-tuning values);
- ``plan_ablation``: MaMOL and its ablations (no dynamic / shared / modality experts, a router blind to the
  pattern) × the three scenes × 10 seeds;
- ``plan_missing_ratio``: MaMOL and the baselines trained at missing ratios 0.1 … 0.9 (both) on Houston2013 ×
  10 seeds, each tested over the grid of test ratios (the train- and test-ratio curves);
- ``plan_cross``: every training missing setting (complete, HSI missing, LiDAR missing, both at 0.7) × every
  test setting of the grid, on Houston2013 × 10 seeds (the train × test cross table).

``dry_run=True`` (with ``sweep`` and any plan or sweep keys) lists the runs, their count and an estimate of the
device hours; it reads no data and trains nothing. A run's cost is its optimiser steps (``max_epoch`` ×
⌈train samples / ``batch_size``⌉, or ``max_steps``) times the seconds per step, plus its evaluations (validation
every ``check_val_every_n_epoch`` epochs, the test, and with ``sweep_grid`` each grid point) at a third of a
training step per sample (forward only). Train / val / test sizes are the datasets' nominal ones
(:data:`NOMINAL_SIZES`: the standard splits). Seconds per step come from ``plan_step_seconds`` when it names the
method label (``{"mamol": 0.31, "lora/trento": 0.2, "*": 0.3}``: label/dataset, then label, then ``*``), else
they are measured here, now: a few training steps of the run's model (its method, variant keys, backbone and
precision) on a synthetic batch of the run's per-device batch (at most ``plan_measure_batch`` rows, scaled
linearly to the batch) on this machine's device. Measure on the machine the runs will use, or declare.
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mamol import bench, train
from mamol.data import catalogue
from mamol.data.scenes import KNOWN_SCENES
from mamol.errors import ConfigError
from mamol.experiments import grid
from mamol.experiments.sweep import SweepOptions, SweepRun, plan, run_config
from mamol.methods import build_model, method_class
from mamol.missing import MissingSetting, make_missing_table
from mamol.settings import RunSettings, coerce, from_config, resolve_model
from mamol.tasks import REMOTE, TaskInfo

REMOTE_PER_CLASS = (100, 50, 300)  # the converter's default split: train / val / test pixels per class (SPEC §3.1)
NOMINAL_SIZES: dict[str, tuple[int, int, int]] = {
    **{name: tuple(n * len(spec.class_names) for n in REMOTE_PER_CLASS) for name, spec in KNOWN_SCENES.items()},
    "mmimdb": (15552, 2608, 7799),  # split.json ids (a movie with several plots gives more samples)
    "food101": (61142, 6846, 22716),  # split.json files
    "hatememes": (8500, 500, 1000),  # train.jsonl, dev_seen.jsonl, test_seen.jsonl
}
"""(train, val, test) samples of each catalogued dataset's standard split, for estimates without data."""
EVAL_FRACTION = 1 / 3  # an evaluated sample costs about the forward third of a trained one
MEASURED_STEPS = 2  # timed training steps per measurement (after one warm-up step)


@dataclass(frozen=True)
class DryRunOptions:
    dry_run: bool
    plan_step_seconds: dict[str, float]
    plan_measure_batch: int


@dataclass(frozen=True)
class RunCost:
    """One planned run's work and its estimated device seconds."""

    run: SweepRun
    steps: int  # optimiser steps
    eval_samples: int  # validation + test + grid samples
    step_s: float  # seconds per optimiser step
    source: str  # "declared" or "measured on <device> ..."
    batch: int  # samples per optimiser step

    @property
    def seconds(self) -> float:
        return self.steps * self.step_s + self.eval_samples * self.step_s / self.batch * EVAL_FRACTION


def sizes(dataset: str) -> tuple[int, int, int]:
    """Nominal (train, val, test) sizes of ``dataset``; ConfigError for a dataset without them."""
    if dataset not in NOMINAL_SIZES:
        raise ConfigError(f"dry_run: dataset {dataset!r} has no nominal split sizes (known: {sorted(NOMINAL_SIZES)}); "
                          f"estimates cover the catalogued datasets")
    return NOMINAL_SIZES[dataset]


def work(s: RunSettings, cfg: Mapping[str, Any], with_grid: bool) -> tuple[int, int]:
    """(optimiser steps, evaluated samples) of a run with settings ``s``."""
    train_n = sum(sizes(d)[0] for d in s.data.datasets)
    val_n = sum(sizes(d)[1] for d in s.data.datasets)
    test_n = sum(sizes(d)[2] for d in s.data.datasets)
    per_epoch = math.ceil(train_n / (s.hardware.per_device_batch * s.hardware.accumulate *
                                     s.hardware.devices * s.hardware.num_nodes))
    steps = per_epoch * s.optim.max_epoch
    if s.optim.max_steps:
        steps = min(steps, s.optim.max_steps)
    epochs = math.ceil(steps / per_epoch)
    interval = s.optim.val_check_interval
    validations = (epochs // s.optim.check_val_every_n_epoch) * (round(1 / interval) if interval < 1 else 1)
    points = 1 + (len(grid.grid_points(from_config(grid.GridOptions, cfg), _modalities(s))) if with_grid else 0)
    return steps, validations * val_n + points * test_n


def _modalities(s: RunSettings) -> tuple[str, ...]:
    if s.kind == "remote":
        return tuple(s.data.modalities or ("hsi", "lidar"))
    return catalogue.CATALOGUE[s.data.datasets[0]].modalities


def _info(s: RunSettings) -> TaskInfo:
    """A task description of the run's first dataset shaped like the real one, without reading its files."""
    name = s.data.datasets[0]
    if s.kind == "remote":
        modalities = _modalities(s)
        bands = {m: dict(zip(bench.MODALITIES, bench.BANDS)).get(m, 4) for m in modalities}
        classes = bench.CLASSES
        return TaskInfo(name=name, kind="remote", task_type=REMOTE, modalities=modalities, bands=bands,
                        num_classes=classes,
                        class_names=tuple(f"c{i}" for i in range(classes)), patch_size=bench.PATCH)
    entry = catalogue.CATALOGUE[name]
    return TaskInfo(name=name, kind="natural", task_type=entry.task_type, modalities=entry.modalities, bands={},
                    num_classes=entry.class_num, class_names=tuple(f"c{i}" for i in range(entry.class_num)),
                    patch_size=0)


def _batch(info: TaskInfo, rows: int, s: RunSettings, device: torch.device) -> dict:
    """A synthetic batch of ``rows`` with the run's training missing setting."""
    g = torch.Generator().manual_seed(0)
    m = s.missing.train
    setting = MissingSetting(ratio=m.ratio, type=m.type, both_ratio=m.both_ratio, ratio_2=m.ratio_2, seed=0)
    batch: dict[str, torch.Tensor] = {"missing_type": make_missing_table(rows, info.modalities, setting)}
    if info.kind == "remote":
        for name, bands in info.bands.items():
            batch[name] = torch.rand(rows, bands, info.patch_size, info.patch_size, generator=g)
    else:
        batch["image"] = torch.randn(rows, 3, s.data.image_size, s.data.image_size, generator=g)
        text = torch.randint(300, 40000, (rows, s.data.max_text_len), generator=g)
        text[:, 0], text[:, 20] = 49406, 49407
        text[:, 21:] = 0
        batch["text_ids"] = text
    if info.loss == "bce":
        batch["label"] = torch.randint(0, 2, (rows, info.num_classes), generator=g).float()
    else:
        batch["label"] = torch.randint(0, info.num_classes, (rows,), generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def measure_step(s: RunSettings, cfg: Mapping[str, Any], max_rows: int) -> tuple[float, str]:
    """Seconds per optimiser step of the run, measured here on a synthetic batch; (seconds, where)."""
    device = torch.device("cuda" if s.hardware.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    info = _info(s)
    cfg = {**cfg, "clip_random_init": True}  # the step's cost does not depend on the weights: none are loaded
    model = build_model(*resolve_model(cfg, s.kind, method_class(cfg["method"]).Options), [info]).to(device)
    rows = min(s.hardware.per_device_batch, max_rows)
    batch = _batch(info, rows, s, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    autocast = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(s.hardware.precision)

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = model(batch)
            logits = logits[info.name] if isinstance(logits, Mapping) else logits
            loss = (F.binary_cross_entropy_with_logits(logits.float(), batch["label"]) if info.loss == "bce"
                    else F.cross_entropy(logits.float(), batch["label"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(MEASURED_STEPS + 1):
        bench.sync(device)
        start = time.perf_counter()
        step()
        bench.sync(device)
        if i:
            times.append(time.perf_counter() - start)
    per_row = statistics.median(times) / rows
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if s.hardware.accelerator == "gpu" and device.type == "cpu":
        name = "cpu, not the GPU the runs ask for"
    where = f"measured on {name} ({rows} rows, {torch.get_num_threads()} threads)"
    return per_row * s.hardware.per_device_batch * s.hardware.accumulate, where


def declared(step_seconds: Mapping[str, float], run: SweepRun) -> float | None:
    for key in (f"{run.label}/{'+'.join(run.datasets)}", run.label, "*"):
        if key in step_seconds:
            return coerce(f"plan_step_seconds[{key!r}]", step_seconds[key], float)
    return None


def estimate(config: Mapping[str, Any], runs: Sequence[SweepRun], options: DryRunOptions, with_grid: bool,
             measure: Any = measure_step) -> list[RunCost]:
    """Every run's cost. A measurement is made once per method label, data kind and training missing setting,
    and reused across seeds and datasets (the measured batch has the Houston 2013 shapes, or the image–text
    ones: datasets of a kind differ only in their bands and classes)."""
    measured: dict[tuple[str, str, float, str], tuple[float, str]] = {}
    out = []
    for run in runs:
        cfg = run_config(config, run, config.get("log_dir", "result"))
        s = train.resolve_settings(cfg, elsewhere=True)
        steps, evaluated = work(s, cfg, with_grid)
        step_s = declared(options.plan_step_seconds, run)
        if step_s is not None:
            source = "declared"
        else:
            key = (run.label, s.kind, run.train_ratio, run.train_type)
            if key not in measured:
                measured[key] = measure(s, cfg, options.plan_measure_batch)
            step_s, source = measured[key]
        batch = s.hardware.per_device_batch * s.hardware.accumulate * s.hardware.devices * s.hardware.num_nodes
        out.append(RunCost(run, steps, evaluated, step_s, source, batch))
    return out


def dry_run(config: Mapping[str, Any], measure: Any = measure_step) -> str:
    """``python run.py sweep with <plan or sweep keys> dry_run=True``: the runs, their count and device hours."""
    # No data is read: the settings only need data_root to name a folder.
    config = {**config, "data_root": config.get("data_root") or tempfile.gettempdir()}
    options = from_config(DryRunOptions, config)
    sweep = from_config(SweepOptions, config)
    s = train.resolve_settings(config, elsewhere=True)
    runs = plan(config, sweep, s)
    costs = estimate(config, runs, options, sweep.sweep_grid, measure)
    devices = s.hardware.devices * s.hardware.num_nodes
    lines = [f"{'run':<56s} {'steps':>7s} {'s/step':>7s} {'hours':>7s}"]
    for cost in costs:
        lines.append(f"{cost.run.name:<56s} {cost.steps:>7d} {cost.step_s:>7.3f} {cost.seconds / 3600:>7.2f}")
    total = sum(c.seconds for c in costs) / 3600
    sources = sorted({c.source for c in costs})
    lines += [
        f"{len(costs)} runs; estimated {total:.1f} wall-clock hours on {devices} device(s) per run = "
        f"{total * devices:.1f} device hours (step costs: {'; '.join(sources)})",
        "nothing was trained and no data was read (dry_run=True); the runs are independent: with N jobs at once "
        "the sweep takes about 1/N of that",
    ]
    return "\n".join(lines)
