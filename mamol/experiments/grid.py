"""``evaluate_grid``: one checkpoint under every (missing type × missing ratio) of a grid, in one process.

Default grid: two-modality data (remote pairs, image–text) {each modality alone, ``both``} × {0, 0.1, …, 1};
three or more modalities: each modality alone, every pair (both modalities of the pair lost by the same
fraction, independently: ``missing_ratio_2`` = the ratio) and all of them (each missing sample draws one of
the partial patterns). ``grid_types`` / ``grid_ratios`` override.

Each grid point uses the missing table ``test_only`` would use with ``test_ratio=<ratio> test_type=<type>``:
its settings come from :func:`mamol.settings.missing_settings` and its table from the test dataset built
with them (:func:`mamol.missing.load_or_make_missing_table`, stored and reused as usual). The model and the
test data are loaded once. A sample's prediction depends only on its inputs and its missing-type code (no
model here has batch statistics at evaluation), so the test split is predicted once per code that occurs in
any table (3 codes for two modalities, at most 7 for three) and every point is scored from those logits:
33 settings cost 3 passes. Scores equal ``test_only``'s (a test checks it).

Outputs in the run folder: ``grid.csv`` (one row per point: type, ratio, every metric × 100; per-class accuracies
headed by class name, ``acc_<class name>``), ``grid.json`` (keys ``acc_<class index>`` as ``test_results.json``),
``grid.md`` (tables of the summary metrics, types × ratios) and ``robustness.png``.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mamol import distributed, settings, train
from mamol.console import recorded, save_to
from mamol.data import catalogue
from mamol.data.base import BaseArrowDataset
from mamol.errors import ConfigError
from mamol.experiments import plots, tables
from mamol.experiments.predict import Predictor, task_infos
from mamol.files import write_json
from mamol.methods.budget import settle_run
from mamol.metrics import TaskMetrics, class_metric_label, summary_metrics, warn_undefined
from mamol.missing import parse_missing_type
from mamol.runs import new_run_folder, write_run_record
from mamol.settings import RunSettings, from_config
from mamol.tasks import TaskInfo, data_notes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridOptions:
    """The grid's axes (``grid_types``, ``grid_ratios``)."""

    grid_types: tuple[str, ...] | None  # None = the default types of the data's modalities
    grid_ratios: tuple[float, ...]


@dataclass(frozen=True)
class GridPoint:
    """One test setting: a canonical missing type (:func:`parse_missing_type`) at a missing ratio."""

    type: str
    ratio: float

    @property
    def label(self) -> str:
        return "complete" if self.ratio == 0 else f"{self.type} {self.ratio:g}"


def default_types(modalities: Sequence[str]) -> tuple[str, ...]:
    """Each modality alone plus ``both`` (two modalities), or every pair and all of them (three or more)."""
    modalities = tuple(modalities)
    if len(modalities) == 2:
        return (*modalities, "both")
    pairs = ["_".join(p) for p in itertools.combinations(modalities, 2)]
    return (*modalities, *pairs, "_".join(modalities))


def is_pair(kind: str, modalities: Sequence[str]) -> bool:
    """Whether canonical type ``kind`` is a pair of modalities (first at the ratio, second at ``missing_ratio_2``)."""
    return kind not in ("none", "both", "_".join(modalities)) and kind not in modalities


def grid_points(options: GridOptions, modalities: Sequence[str]) -> list[GridPoint]:
    """The grid's points in order (types as given, ratios ascending); ConfigError naming the bad key."""
    ratios = sorted(set(options.grid_ratios))
    if not ratios or any(not 0.0 <= r <= 1.0 for r in ratios):
        raise ConfigError(f"grid_ratios={list(options.grid_ratios)}: give one or more ratios in [0, 1]")
    given = options.grid_types if options.grid_types is not None else default_types(modalities)
    if not given:
        raise ConfigError("grid_types=[]: name at least one missing type (or None for the default)")
    types: list[str] = []
    for name in given:
        try:
            kind = parse_missing_type(name, modalities)
        except ConfigError as err:
            raise ConfigError(f"grid_types: {err}") from err
        if kind == "none":
            raise ConfigError(f"grid_types: {name!r} is complete data, which every type's ratio 0 already is")
        if kind not in types:
            types.append(kind)
    return [GridPoint(kind, ratio) for kind in types for ratio in ratios]


def point_missing(config: Mapping[str, Any], point: GridPoint, modalities: Sequence[str]) -> settings.MissingSettings:
    """The missing settings ``test_only`` runs with for ``test_ratio=point.ratio test_type=point.type``
    (pairs also set ``missing_ratio_2=point.ratio``)."""
    updates: dict[str, Any] = {"test_ratio": point.ratio, "test_type": point.type}
    if is_pair(point.type, modalities):
        updates["missing_ratio_2"] = point.ratio
    return settings.missing_settings({**config, **updates})


class WithCode(Dataset):
    """Every sample of ``dataset`` read with missing-type code ``code`` (the dataset's own reading and fill)."""

    def __init__(self, dataset: BaseArrowDataset, code: int) -> None:
        self.dataset, self.code = dataset, int(code)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        ds = self.dataset
        ds.table  # noqa: B018 - make sure this process has the file open
        sample = ds.get_sample(index, self.code)
        sample["missing_type"] = torch.tensor(self.code, dtype=torch.int64)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        sample["task"] = ds.name
        return sample


@dataclass
class GridResult:
    """Scores of every grid point: ``rows[i] = {"type", "ratio", "metrics": {name: value x 100}}``."""

    points: list[GridPoint]
    rows: list[dict[str, Any]]
    headline: str  # the checkpoint-selection metric's name (``the_metric`` with several tasks)
    summary: list[str]  # metrics worth a table and a panel (headline first; no per-class accuracies)
    datasets: list[str]
    modalities: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def complete(self) -> dict[str, float] | None:
        """Metrics of the complete-data point (ratio 0), when the grid has one."""
        return next((r["metrics"] for r in self.rows if r["ratio"] == 0), None)

    def to_dict(self) -> dict[str, Any]:
        return {"headline": self.headline, "summary_metrics": self.summary, "datasets": self.datasets,
                "modalities": self.modalities, "types": list(dict.fromkeys(p.type for p in self.points)),
                "ratios": sorted({p.ratio for p in self.points}), "rows": self.rows,
                "complete": self.complete(), **self.meta}


def score(logits: Tensor, labels: Tensor, info: TaskInfo) -> tuple[dict[str, float], dict[str, str]]:
    """Metric fractions of ``logits`` (N, K) against ``labels`` with the task's metrics (``the_metric`` too), and
    the metrics undefined on these labels (NaN) with the reason (``TaskMetrics.undefined``)."""
    metrics = TaskMetrics(info.task_type, info.num_classes, sync=False)  # all samples are here, in one process
    metrics.update(logits, labels)
    values = {k: float(v) for k, v in metrics.compute().items()}
    return values, dict(metrics.undefined)


def warn_undefined_points(undefined: Mapping[tuple[str, str, str], Sequence[str]], n_points: int) -> None:
    """One warning per (metric key, reason) that left a metric NaN, naming the grid settings where it did
    (:func:`mamol.metrics.warn_undefined`'s words: the same line training gives)."""
    for (task, name, why), labels in undefined.items():
        labels = list(dict.fromkeys(labels))  # the complete setting is ratio 0 of every type
        where = (f"test/{task} at every grid setting ({n_points})" if len(labels) == n_points
                 else f"test/{task} at grid setting{'s' if len(labels) > 1 else ''} {', '.join(labels)}")
        warn_undefined(where, {name: why})


def point_codes(s: RunSettings, config: Mapping[str, Any], points: Sequence[GridPoint],
                modalities: Sequence[str]) -> tuple[list[BaseArrowDataset], list[list[np.ndarray]]]:
    """The test datasets (one per task) and, per point and task, every sample's code (N_t,) under the point's
    missing table (the table the test dataset builds for that setting, as under ``test_only``)."""
    entries = [catalogue.entry(name, s.data.root) for name in s.data.datasets]
    datasets = [e.dataset(e, s.data, point_missing(config, points[0], modalities), "test") for e in entries]
    rows = [np.array([ds.row_of(i)[0] for i in range(len(ds))], dtype=np.int64) for ds in datasets]  # sample -> row
    codes = []
    for point in points:
        missing = point_missing(config, point, modalities)
        tables_ = [e.dataset(e, s.data, missing, "test").missing_table.numpy() for e in entries]  # (rows_t,)
        codes.append([table[r] for table, r in zip(tables_, rows)])
    return datasets, codes


def evaluate(s: RunSettings, config: Mapping[str, Any], options: GridOptions, predictor: Predictor,
             progress: bool | None = None) -> GridResult:
    """Score the checkpoint of ``predictor`` at every grid point (see the module docstring)."""
    infos = predictor.infos
    modalities = infos[0].modalities
    points = grid_points(options, modalities)
    datasets, codes = point_codes(s, config, points, modalities)
    disable = True if progress is False else None  # None: shown on a terminal only

    # One pass per task and code that occurs: every sample's logits under that code, stacked (codes, N_t, K_t).
    needed = [sorted({int(c) for per_point in codes for c in np.unique(per_point[t])}) for t in range(len(infos))]
    stacked, labels = [], []
    with tqdm(total=sum(len(ds) * len(n) for ds, n in zip(datasets, needed)), desc="grid: predicting",
              unit="sample", disable=disable) as bar:
        for ds, task_codes in zip(datasets, needed):
            per_code = []
            for code in task_codes:
                loader = DataLoader(WithCode(ds, code), batch_size=s.hardware.per_device_batch, shuffle=False,
                                    num_workers=s.data.num_workers, collate_fn=ds.collate)
                logits, fields = predictor.predict(loader, ("label",), bar)  # (N_t, K_t)
                per_code.append(logits)
            stacked.append(torch.stack(per_code))
            labels.append(fields["label"])

    headline = TaskMetrics(infos[0].task_type, infos[0].num_classes).the_metric if len(infos) == 1 else "the_metric"
    rows = []
    undefined: dict[tuple[str, str, str], list[str]] = {}  # (task, metric, why) -> the settings where it is NaN
    for point, per_task in zip(tqdm(points, desc="grid: scoring", unit="setting", disable=disable), codes):
        values: dict[str, float] = {}
        the_metrics = []
        for t, info in enumerate(infos):
            position = torch.as_tensor(np.searchsorted(needed[t], per_task[t]))  # (N_t,) index into the codes
            chosen = stacked[t][position, torch.arange(len(position))]  # (N_t, K_t): each sample under its code
            scores, nan = score(chosen, labels[t], info)
            for name, why in nan.items():
                undefined.setdefault((info.name, name, why), []).append(point.label)
            prefix = "" if len(infos) == 1 else f"{info.name}/"
            values.update({prefix + k: v for k, v in scores.items() if k != "the_metric"})
            the_metrics.append(scores["the_metric"])
        values["the_metric"] = float(np.mean(the_metrics)) if len(infos) > 1 else the_metrics[0]
        # x 100 and rounded as test_results.json writes them
        rows.append({"type": point.type, "ratio": point.ratio,
                     "metrics": {k: round(100.0 * v, 4) for k, v in values.items()}})
    warn_undefined_points(undefined, len({p.label for p in points}))
    first = point_missing(config, points[0], modalities)
    meta = {"checkpoint": str(s.run.load_path), "method": s.method.name,
            "missing": {"both_ratio": first.test.both_ratio, "missing_seed": first.test.seed,
                        "missing_fill": first.fill, "pairs": "missing_ratio_2 = ratio"},
            "class_names": {i.name: list(i.class_names) for i in infos}, "notes": data_notes(infos),
            "samples": {ds.name: len(ds) for ds in datasets}, "passes": {ds.name: n for ds, n in zip(datasets, needed)},
            # metric key (as in rows) -> why it is NaN and where: what the figure's panel and the warning say
            "undefined": {("" if len(infos) == 1 else f"{task}/") + name: {
                "why": why, "settings": list(dict.fromkeys(at))} for (task, name, why), at in undefined.items()}}
    return GridResult(points, rows, headline, summary_metrics(list(rows[0]["metrics"]), headline),
                      list(s.data.datasets), list(modalities), meta)


# ------------------------------------------------------------------------------------------- outputs
def pivot(result: GridResult, metric: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a types × ratios table of ``metric``."""
    ratios = sorted({p.ratio for p in result.points})
    types = list(dict.fromkeys(p.type for p in result.points))
    value = {(r["type"], r["ratio"]): r["metrics"][metric] for r in result.rows}
    header = ["missing type", *[f"{r:g}" for r in ratios]]
    return header, [[plots.type_label(t), *[f"{value[(t, r)]:.2f}" for r in ratios]] for t in types]


def write(result: GridResult, folder: Path, title: str) -> dict[str, Path]:
    """Write grid.csv, grid.json, grid.md and robustness.png into ``folder``."""
    names = list(result.rows[0]["metrics"])
    columns = [class_metric_label(n, result.meta.get("class_names", {})) for n in names]  # acc_<class name>
    paths = {"csv": tables.write_csv(folder / "grid.csv", ["type", "ratio", *columns],
                                     [[r["type"], r["ratio"], *[r["metrics"][n] for n in names]]
                                      for r in result.rows]),
             "json": write_json(folder / "grid.json", result.to_dict())}
    parts = [f"# {title}\n", "Scores x 100 of one checkpoint under every test missing setting (rows: missing type, "
             "columns: missing ratio; ratio 0 = complete data).\n"]
    parts += [f"\n**Note: {n}.**\n" for n in result.meta.get("notes", [])]
    for metric in result.summary:
        header, rows = pivot(result, metric)
        parts += [f"\n## {metric}\n\n", tables.markdown(header, rows)]
    paths["md"] = tables.write_text(folder / "grid.md", "".join(parts))
    complete = result.complete()
    panels = {m: [plots.Curve(plots.type_label(t), *zip(*[(r["ratio"], r["metrics"][m]) for r in result.rows
                                                           if r["type"] == t]))
                  for t in dict.fromkeys(p.type for p in result.points)]
              for m in result.summary[:4]}
    undefined = {m: u["why"] for m, u in result.meta.get("undefined", {}).items()}
    paths["png"] = plots.robustness_figure(panels, {m: complete[m] if complete else None for m in panels},
                                           title, folder / "robustness.png", undefined)
    return paths


def describe(result: GridResult) -> str:
    """The headline metric as a text table (printed by the command)."""
    header, rows = pivot(result, result.headline)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    return f"{result.headline} (x100) by missing type and test missing ratio:\n" + "\n".join(lines)


def evaluate_checkpoint(config: Mapping[str, Any], command_name: str = "evaluate_grid"
                        ) -> tuple[RunSettings, GridResult]:
    """Load ``load_path`` of ``config`` once and score it at every grid point (the grid is checked first)."""
    s = train.resolve_settings(config, evaluation=True)
    options = from_config(GridOptions, config)
    infos = task_infos(s)
    s = settle_run(s, infos)  # budget=matched/lora: the capacity the checkpoint was trained with
    grid_points(options, infos[0].modalities)  # refuse a bad grid before loading anything
    predictor = Predictor(s, infos, command_name)
    return s, evaluate(s, config, options, predictor)


def title_of(s: RunSettings) -> str:
    """Figure and table title: datasets, method and checkpoint file."""
    return f"{'+'.join(s.data.datasets)}, method {s.method.name}: {Path(str(s.run.load_path)).name}"


@recorded
def command(config: Mapping[str, Any]) -> str:
    """``python run.py evaluate_grid with ... load_path=...``: evaluate, write into a new run folder."""
    s, result = evaluate_checkpoint(config)
    folder = new_run_folder(s.run.log_dir, s.run.exp_name)
    save_to(folder)
    write_run_record(folder, s)
    write(result, folder, title_of(s))
    return f"{describe(result)}\nwritten to {folder} (grid.csv, grid.json, grid.md, robustness.png)"


@recorded
def evaluate_into(run_cfg: Mapping[str, Any], version: Path, checkpoint: str | None) -> None:
    """Evaluate a trained run's tested ``checkpoint`` over the grid into its run folder ``version`` (``grid.*``).

    Under DDP it predicts on one device: rank 0 evaluates while the other ranks wait for it.
    """
    with distributed.rank_zero_then_all() as mine:
        if not mine:
            return
        save_to(version)  # appended to the run's console.log
        if not checkpoint:
            log.warning("%s: no checkpoint was tested, so no grid", version)
            return
        cfg = {**run_cfg, "load_path": checkpoint, "test_only": True}
        s, result = evaluate_checkpoint(cfg, "sweep")
        write(result, version, title_of(s))
