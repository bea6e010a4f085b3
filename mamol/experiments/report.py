"""``report``: finished runs aggregated into mean ± std over seeds, per method and test setting, with paired tests.

``python run.py report with 'report_dirs=["result/my_sweep", "result/other/version_3"]'`` searches each folder
for finished runs (``test_results.json``; with ``grid.json`` beside it when the run was evaluated over the
grid, and ``test_predictions.npz`` when it saved its test predictions). A run belongs to the group of its
datasets and training missing setting; within a group runs of the
same method label (the variant name recorded in a sweep's ``sweep.json``, else the ``method``) and the same
identity are the seeds of that method. A run's identity is its whole config except the result-neutral keys
(:data:`mamol.runs.RESULT_NEUTRAL_KEYS`) and :data:`NOT_POOLED_ON` (the seed, which is averaged over, and
the evaluation settings, which are the tables' rows); runs of one label with different identities (a 3-epoch
run beside a sweep's 1-epoch runs) are never pooled: each identity gets its own column, labelled by the keys
that differ (``mamol (max_epoch=3)``), with a warning in the log and in ``report.md``. Every cell shows its n.
For every (group, method, test setting) the report gives n (seeds), the mean and the sample standard deviation
(n − 1 in the denominator; left empty for a single seed) of every metric × 100, and per run its trainable
parameters and wall time (``test_results.json`` records them).

Significance (:mod:`mamol.experiments.significance`): at each test setting runs were tested at (the setting of
``test_results.json``), every method is tested against a reference method (``write_report(reference=...)``;
default ``mamol`` where a group has it, else the group's first method) on runs paired by seed: McNemar's exact
test on per-sample correctness from the saved predictions, per seed and combined over seeds, and Wilcoxon's
signed-rank and the paired t test over seeds on the headline metric. Runs without saved predictions (made
before they were saved) get "n/a (no predictions saved)" for McNemar; their paired tests still work.

Files (in the report's folder):

* ``report.md``: runs, methods, then per group the headline table (test settings × methods; a ``†`` / ``‡`` beside a
  score whose combined McNemar p against the reference is < 0.05 / < 0.01, the rule written under the table;
  under the scores each method's trainable parameters and mean fit wall time), one table per other metric, the
  p-values against the reference (footnotes say why a paired test is empty), per-class accuracy at each tested
  setting (class names from ``test_results.json``), and, for a method trained under several training settings on
  the same datasets, a training × test table of the headline metric;
* ``report.csv``: one row per group, method and test setting: every metric's mean and std;
* ``report.tex``: LaTeX ``booktabs`` tables of the methods' cost, the headline metric (markers, cost rows after a
  ``\\midrule``), the p-values, the per-class accuracy and the training × test tables;
* ``significance.csv``: one row per group, test setting and method against the reference: McNemar's b, c and p per
  seed and combined, the mean difference, the Wilcoxon and paired t p-values, and a note where one is empty;
* ``comparison.png``: the headline metric against the test missing ratio, one line per method with a ±std band, one
  panel per group and missing type (drawn from grid results);
* ``comparison_bars.png``: the headline metric at each group's tested setting, one bar per method (mean, error bar
  ± std over seeds).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mamol import confusion
from mamol.console import recorded, save_to
from mamol.data import catalogue
from mamol.errors import ConfigError, DataError, MissingFileError
from mamol.experiments import observed, plots, significance, tables
from mamol.experiments.significance import Comparison, SeedRun
from mamol.metrics import CLASS_PREFIX, TaskMetrics, is_class_metric, summary_metrics
from mamol.missing import parse_missing_type
from mamol.predictions import read_predictions
from mamol.runs import identity, new_run_folder, write_command_record
from mamol.settings import from_config
from mamol.tasks import REMOTE

log = logging.getLogger(__name__)

PLAN_FILE = "sweep.json"
"""The plan a sweep writes into its folder: each run's name and method label (:mod:`mamol.experiments.sweep`)."""
COMPLETE = "complete"
NOT_POOLED_ON = frozenset({
    "seed",  # what a cell averages over
    "seeds", "methods", "sweep_datasets", "sweep_train_missing", "sweep_grid",  # the sweep's axes (runs record theirs)
    "datasets", "missing_ratio", "missing_type",  # the group (datasets, training setting) and the tested setting
    "test_ratio", "test_type", "grid_types", "grid_ratios",  # the test settings: the tables' rows
    "test_only", "load_path", "resume_from", "test_after_fit",  # how the tested weights were reached or loaded
})
"""Config keys, besides the result-neutral ones, that runs pooled into one report cell may differ in."""


@dataclass(frozen=True)
class ReportOptions:
    """Which folders to aggregate (``report_dirs``) and where the report's own run folder goes."""

    report_dirs: tuple[Path, ...]
    log_dir: Path
    exp_name: str
    report_reference: str | None  # the method the others are tested against (None: mamol, else the first)


def setting_label(kind: str, ratio: float) -> str:
    """``complete`` for ratio 0 (or type none), else ``<type> <ratio>``."""
    return COMPLETE if ratio == 0 or kind == "none" else f"{kind} {ratio:g}"


def _canonical(kind: str, modalities: Sequence[str] | None) -> str:
    if modalities:
        try:
            return parse_missing_type(kind, modalities)
        except ConfigError:
            pass
    return str(kind).lower()


def headline_metric(tasks: Sequence[str]) -> str:
    """The checkpoint-selection metric of a run on ``tasks`` (``the_metric`` with several tasks)."""
    if len(tasks) != 1:
        return "the_metric"
    entry = catalogue.CATALOGUE.get(tasks[0])
    return TaskMetrics(entry.task_type if entry else REMOTE, 2).the_metric


@dataclass
class RunRecord:
    """One finished run as the report sees it."""

    folder: Path
    name: str
    label: str  # method label
    seed: int
    datasets: tuple[str, ...]
    train: str  # training missing setting, e.g. "both 0.7"
    headline: str
    parameters: int | None
    fit_s: float | None
    test_s: float | None
    tested: str  # the test setting of test_results.json
    identity: dict[str, Any] = field(default_factory=dict)  # config keys that must agree to pool runs
    order: tuple = ()  # sort key: (position in its sweep's plan, folder), so methods appear in plan order
    settings: dict[str, dict[str, float]] = field(default_factory=dict)  # setting label -> metrics x 100
    curves: dict[str, dict[float, dict[str, float]]] = field(default_factory=dict)  # grid type -> ratio -> metrics
    predictions: Path | None = None  # test_predictions.npz of the tested setting (None: saved before there were)
    class_names: dict[str, list[str]] = field(default_factory=dict)  # task -> class names
    # task -> class, support, precision, recall, f1 (x 100) at the tested setting (test_results.json's per_class)
    per_class: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)  # task -> the run's confusion figure
    notes: list[str] = field(default_factory=list)  # caveats of its data (test_results.json's notes)

    @property
    def group(self) -> tuple[str, str]:
        return "+".join(self.datasets), self.train


def _labels(folder: Path) -> dict[str, tuple[int, str]]:
    """Run name -> (position in the plan, method label) of the sweep in ``folder`` (empty if none)."""
    path = folder / PLAN_FILE
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text())["runs"]
        return {r["name"]: (i, r["label"]) for i, r in enumerate(runs)}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a sweep plan written by `run.py sweep` ({err})") from err


def read_run(folder: Path) -> RunRecord:
    """The record of the finished run in ``folder``; its method label is the one its sweep recorded
    (``<sweep>/<run name>/version_<n>/`` with ``<sweep>/sweep.json``), else its ``method``."""
    path = folder / "test_results.json"
    try:
        tested = json.loads(path.read_text())
        config, settings = tested["config"], tested["settings"]
        tasks = tuple(tested["tasks"])
        modalities = next(iter(tested.get("modalities", {}).values()), None)
        train_missing = settings["missing"]["train"]
        test_missing = tested["missing"]
    except (json.JSONDecodeError, KeyError, TypeError, StopIteration) as err:
        raise DataError(f"{path}: not a test_results.json written by run.py ({type(err).__name__}: {err})") from err
    wall = tested.get("wall_time_s") or {}
    train_label = setting_label(_canonical(train_missing["type"], modalities), float(train_missing["ratio"]))
    test_label = setting_label(_canonical(test_missing["missing_type"], modalities),
                               float(test_missing["missing_ratio"]))
    position, label = _labels(folder.parent.parent).get(folder.parent.name, (-1, tested.get("method", "?")))
    record = RunRecord(
        folder=folder, name=f"{folder.parent.name}/{folder.name}", label=label, seed=int(config["seed"]),
        datasets=tasks, order=(position, str(folder)),
        train=train_label, headline=headline_metric(tasks), parameters=tested.get("trainable_parameters"),
        fit_s=wall.get("fit"), test_s=wall.get("test"),
        tested=test_label, identity=identity(config, NOT_POOLED_ON),
        class_names={str(k): list(v) for k, v in (tested.get("class_names") or {}).items()},
        notes=list(tested.get("notes") or []))
    record.settings[record.tested] = dict(tested["metrics"])
    if tested.get("predictions"):
        predictions = folder / tested["predictions"]
        if predictions.is_file():
            record.predictions = predictions
        else:
            log.warning("report: %s names %s, which is absent: no McNemar test for this run", path, predictions)
    record.per_class = tested.get("per_class") or {}
    if not record.per_class and record.predictions is not None and record.class_names:  # tested before it was saved
        record.per_class = confusion.per_class_scores(read_predictions(record.predictions), record.class_names)
    for task, files in ((tested.get("confusion") or {}).get("tasks") or {}).items():
        if (folder / files["figure"]).is_file():
            record.figures[task] = folder / files["figure"]
    grid_path = folder / "grid.json"
    if grid_path.is_file():
        try:
            rows = json.loads(grid_path.read_text())["rows"]
            for row in rows:
                record.curves.setdefault(row["type"], {})[float(row["ratio"])] = row["metrics"]
                record.settings.setdefault(setting_label(row["type"], float(row["ratio"])), row["metrics"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{grid_path}: not a grid.json written by evaluate_grid ({err})") from err
    return record


def collect(dirs: Sequence[Path]) -> list[RunRecord]:
    """Every finished run under ``dirs`` (each folder once); MissingFileError naming an empty or absent entry."""
    if not dirs:
        raise ConfigError("report_dirs=[]: name run or sweep folders, e.g. report_dirs='[\"result/my_sweep\"]'")
    records, seen = [], set()
    for root in dirs:
        if not root.is_dir():
            raise MissingFileError(f"report_dirs entry {str(root)!r} is not a folder")
        # a file-storage observer folder (run.py -F) gives its runs' folders; any other folder is searched
        found = observed.run_folders(root) or sorted(p.parent for p in root.rglob("test_results.json"))
        if not found:
            raise MissingFileError(f"report_dirs entry {str(root)!r} holds no finished run (no test_results.json "
                                   f"below it)")
        for run in sorted((read_run(f) for f in found if f.resolve() not in seen), key=lambda r: r.order):
            seen.add(run.folder.resolve())
            records.append(run)
    return records


# ------------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for one value) of values over seeds."""

    n: int
    mean: float
    std: float | None
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, values: Sequence[float], seeds: Sequence[int]) -> Stat:
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std(ddof=1)) if len(array) > 1 else None
        return cls(len(array), float(array.mean()), std, tuple(seeds))

    def text(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f}" if self.std is None else f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def latex(self, digits: int = 2, n: bool = False) -> str:
        count = f"\\;(n={self.n})" if n else ""
        if self.std is None:
            return f"${self.mean:.{digits}f}{count}$"
        return f"${self.mean:.{digits}f} \\pm {self.std:.{digits}f}{count}$"


@dataclass
class Group:
    """Runs on the same datasets with the same training setting: methods × test settings."""

    datasets: str
    train: str
    headline: str
    methods: dict[str, list[RunRecord]]
    settings: list[str]  # test settings, complete first, then the grid's order
    metrics: list[str]  # summary metrics, headline first
    warnings: list[str] = field(default_factory=list)  # runs of one label kept apart, and why

    def stat(self, label: str, setting: str, metric: str) -> Stat | None:
        runs = [r for r in self.methods[label] if setting in r.settings and metric in r.settings[setting]]
        if not runs:
            return None
        return Stat.of([r.settings[setting][metric] for r in runs], [r.seed for r in runs])

    def cost(self, label: str) -> tuple[str, Stat | None]:
        """(trainable parameters as text, fit time statistics) of a method."""
        runs = self.methods[label]
        params = sorted({r.parameters for r in runs if r.parameters is not None})
        text = "" if not params else f"{params[0]:,}" if len(params) == 1 else f"{params[0]:,}–{params[-1]:,}"
        times = [(r.fit_s, r.seed) for r in runs if r.fit_s is not None]
        return text, Stat.of(*zip(*times)) if times else None

    def class_scores(self, label: str, setting: str) -> list[tuple[str, int, str, dict[str, Stat]]]:
        """(task, class index, class name, {support, precision, recall, f1: Stat over seeds}) of a method's runs
        tested at ``setting``; empty when none recorded per-class scores."""
        runs = [r for r in self.methods[label] if r.tested == setting and r.per_class]
        out = []
        for task in dict.fromkeys(t for r in runs for t in r.per_class):
            have = [r for r in runs if task in r.per_class]
            for k, name in enumerate(have[0].per_class[task]["class"]):
                out.append((task, k, name, {score: Stat.of([float(r.per_class[task][score][k]) for r in have],
                                                           [r.seed for r in have])
                                            for score in ("support", *confusion.SCORES)}))
        return out

    def summed_confusion(self, label: str, setting: str) -> dict[str, confusion.Confusion]:
        """Per task, the confusion counts of a method's runs tested at ``setting`` summed over seeds (from their
        saved predictions; runs without them are left out)."""
        total: dict[str, confusion.Confusion] = {}
        for r in self.methods[label]:
            if r.tested != setting or r.predictions is None or not r.class_names:
                continue
            for task, c in confusion.confusions(read_predictions(r.predictions), r.class_names).items():
                total[task] = total[task] + c if task in total else c
        return total

    @property
    def tested(self) -> list[str]:
        """The test settings some run's ``test_results.json`` was tested at (those with predictions), in order."""
        own = {r.tested for runs in self.methods.values() for r in runs}
        return [s for s in self.settings if s in own]

    def comparisons(self, reference: str | None = None) -> list[tuple[str, Comparison]]:
        """(test setting, comparison) of every method against the reference at each tested setting
        (:mod:`mamol.experiments.significance`); none for a group of one method."""
        labels = list(self.methods)
        if len(labels) < 2:
            return []
        ref = significance.reference_label(labels, reference)

        def seed_runs(label: str, setting: str) -> list[SeedRun]:
            return [SeedRun(r.seed, r.settings[setting].get(self.headline), r.predictions if r.tested == setting
                            else None) for r in self.methods[label] if setting in r.settings]

        out = []
        for setting in self.tested:
            theirs = seed_runs(ref, setting)
            for label in labels:
                if label != ref:
                    out.append((setting, significance.compare(label, seed_runs(label, setting), ref, theirs)))
        return out

    @property
    def title(self) -> str:
        return f"{self.datasets} · train {self.train}"

    @property
    def plain_title(self) -> str:
        return f"{self.datasets}, trained with {self.train}"


def _order_settings(records: Sequence[RunRecord]) -> list[str]:
    """Complete first, then by missing type (the grid's order first) and ratio."""
    types = list(dict.fromkeys([k for r in records for k in r.curves] + [s.rsplit(" ", 1)[0] for r in records
                                                                           for s in r.settings if s != COMPLETE]))
    present = {s for r in records for s in r.settings}

    def key(setting: str) -> tuple[int, float]:
        if setting == COMPLETE:
            return (-1, 0.0)
        kind, ratio = setting.rsplit(" ", 1)
        return (types.index(kind), float(ratio))

    return sorted(present, key=key)


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 24 else text[:21] + "..."


def split_by_identity(label: str, runs: Sequence[RunRecord]) -> tuple[dict[str, list[RunRecord]], str | None]:
    """Runs of one method label by identity: ({label: runs}, None) when they agree, else one label per identity,
    ``<label> (<key>=<value>, ...)`` over the differing keys (three at most, then ``+n``), and a warning."""
    buckets: dict[str, list[RunRecord]] = {}
    for r in runs:
        buckets.setdefault(json.dumps(r.identity, sort_keys=True), []).append(r)
    if len(buckets) == 1:
        return {label: list(runs)}, None
    identities = [rs[0].identity for rs in buckets.values()]
    keys = sorted(k for k in set().union(*identities) if len({json.dumps(i.get(k)) for i in identities}) > 1)
    out = {}
    for i, rs in zip(identities, buckets.values()):
        parts = [f"{k}={_short(i.get(k))}" for k in keys[:3]] + ([f"+{len(keys) - 3}"] if len(keys) > 3 else [])
        out[f"{label} ({', '.join(parts)})"] = rs
    warning = (f"runs of {label} on {runs[0].group[0]} (train {runs[0].group[1]}) were made with different configs "
               f"(differing: {', '.join(keys)}), so they are reported apart: "
               + "; ".join(f"{name}: {', '.join(str(r.folder) for r in rs)}" for name, rs in out.items()))
    return out, warning


def group_runs(records: Sequence[RunRecord]) -> list[Group]:
    """Runs grouped by (datasets, training setting), then by method label and identity (in the order first seen)."""
    by_label: dict[tuple[str, str], dict[str, list[RunRecord]]] = {}
    for r in records:
        by_label.setdefault(r.group, {}).setdefault(r.label, []).append(r)
    groups: dict[tuple[str, str], dict[str, list[RunRecord]]] = {}
    warnings: dict[tuple[str, str], list[str]] = {}
    for key, labels in by_label.items():
        groups[key] = {}
        for label, runs in labels.items():
            apart, warning = split_by_identity(label, runs)
            groups[key].update(apart)
            if warning:
                log.warning("report: %s", warning)
                warnings.setdefault(key, []).append(warning)
    out = []
    for (datasets, train), methods in groups.items():
        runs = [r for rs in methods.values() for r in rs]
        for label, rs in methods.items():
            seeds = [r.seed for r in rs]
            if len(set(seeds)) != len(seeds):
                log.warning("report: method %s on %s has runs with the same seed %s (%s)", label, datasets, seeds,
                            ", ".join(str(r.folder) for r in rs))
        headline = runs[0].headline
        names = list(dict.fromkeys(k for r in runs for m in r.settings.values() for k in m))
        out.append(Group(datasets, train, headline, methods, _order_settings(runs),
                         summary_metrics(names, headline), warnings.get((datasets, train), [])))
    return out


# ------------------------------------------------------------------------------------------- outputs
Marks = Mapping[tuple[str, str], str]  # (test setting, method label) -> significance marker


def _cell(stat: Stat | None, latex: bool, mark: str = "") -> str:
    if stat is None:
        return ""
    if latex:
        sign = {"†": r"^{\dagger}", "‡": r"^{\ddagger}"}.get(mark, "")
        return stat.latex(n=True)[:-1] + sign + "$"
    return f"{stat.text()} (n={stat.n})" + (f" {mark}" if mark else "")


def _pivot(group: Group, metric: str, latex: bool = False, marks: Marks | None = None
           ) -> tuple[list[str], list[list[str]]]:
    header = ["test setting", *group.methods]
    rows = []
    for setting in group.settings:
        cells = [_cell(group.stat(label, setting, metric), latex, (marks or {}).get((setting, label), ""))
                 for label in group.methods]
        rows.append([setting, *cells])
    return header, rows


def _cost_rows(group: Group, latex: bool = False) -> list[list[str]]:
    """The rows under a headline table: each method's trainable parameters and mean fit wall time."""
    params, times = ["trainable parameters"], ["fit time (s)"]
    for label in group.methods:
        count, fit = group.cost(label)
        params.append(count)
        times.append("" if fit is None else fit.latex(1) if latex else fit.text(1))
    return [params, times]


def _marks(comparisons: Sequence[tuple[str, Comparison]]) -> dict[tuple[str, str], str]:
    return {(setting, c.label): c.marker for setting, c in comparisons if c.marker}


def _class_table(group: Group, setting: str, latex: bool = False) -> tuple[list[str], list[list[str]]] | None:
    """Per-class accuracy (mean ± std over seeds) of each method at ``setting``; None without class metrics."""
    runs = [r for rs in group.methods.values() for r in rs if setting in r.settings]
    keys = list(dict.fromkeys(k for r in runs for k in r.settings[setting] if is_class_metric(k)))
    if not keys:
        return None
    names = {task: n for r in runs for task, n in r.class_names.items()}
    several = any("/" in k for k in keys)

    def name(key: str) -> str:
        task, _, short = key.rpartition("/")
        index = int(short.removeprefix(CLASS_PREFIX))
        task = task or next(iter(names), "")
        known = names.get(task, [])
        text = f"{index + 1} {known[index]}" if index < len(known) else short
        return f"{task}: {text}" if several else text

    keys.sort(key=lambda k: (k.rpartition("/")[0], int(k.rpartition("/")[2].removeprefix(CLASS_PREFIX))))
    rows = [[name(k), *[_cell(group.stat(label, setting, k), latex) for label in group.methods]] for k in keys]
    return ["class", *group.methods], rows


SCORE_TITLES = {"precision": "precision", "recall": "recall (= accuracy)", "f1": "F1", "support": "support"}


def _scores_table(group: Group, label: str, setting: str, latex: bool = False
                  ) -> tuple[list[str], list[list[str]]] | None:
    """Per-class precision, recall and F1 (mean ± std over seeds, × 100) and mean support of one method at a
    tested setting; None when its runs recorded no per-class scores."""
    scores = group.class_scores(label, setting)
    if not scores:
        return None
    several = len({task for task, *_ in scores}) > 1
    rows = []
    for task, k, name, stats in scores:
        cells = [stats[s].latex() if latex else stats[s].text() for s in confusion.SCORES]
        rows.append([f"{task}: {k + 1} {name}" if several else f"{k + 1} {name}", *cells,
                     f"{stats['support'].mean:g}"])
    n = scores[0][3]["f1"].n
    return [f"class (n={n})", *[SCORE_TITLES[s] for s in confusion.SCORES], "support"], rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def _confusion_figures(groups: Sequence[Group], folder: Path) -> dict[tuple[int, str, str, str], Path]:
    """``confusion_<method>.png`` per method of each group's tested setting, counts summed over seeds (the group,
    setting and task are added to the name when the report holds several); key (group index, setting, method,
    task)."""
    several_groups = len(groups) > 1
    out = {}
    for i, g in enumerate(groups):
        for setting in g.tested:
            for label in g.methods:
                summed = g.summed_confusion(label, setting)
                for task, c in summed.items():
                    parts = [label] + [f"{g.datasets}_{g.train}"] * several_groups
                    parts += [setting] * (len(g.tested) > 1) + [task] * (len(summed) > 1)
                    seeds = sum(1 for r in g.methods[label] if r.tested == setting and r.predictions is not None)
                    title = (f"{label} · {g.title} · test {setting} · {task}: summed over {seeds} seed(s); "
                             f"shading: share of the true class")
                    path = folder / f"confusion_{'_'.join(_slug(p) for p in parts)}.png"
                    out[(i, setting, label, task)] = confusion.confusion_figure(c, title, path)
    return out


def _run_links(group: Group, label: str, setting: str, folder: Path) -> str:
    """Markdown links from the report's folder to each run's confusion figure, by seed."""
    links = [f"[seed {r.seed}{'' if len(r.figures) == 1 else f' {task}'}]({os.path.relpath(path, folder)})"
             for r in group.methods[label] if r.tested == setting for task, path in r.figures.items()]
    return ("Each run's confusion matrix: " + ", ".join(links) + ".\n") if links else ""


def _classes_csv(groups: Sequence[Group]) -> tuple[list[str], list[list[Any]]]:
    """``report_classes.csv``: one row per group, method, tested setting and class (its name in ``class``):
    mean and std over seeds of the per-class accuracy, precision, recall and F1, and the mean support."""
    header = ["datasets", "train", "method", "setting", "task", "class_index", "class", "n", "seeds", "support",
              *[f"{m}_{part}" for m in ("accuracy", *confusion.SCORES) for part in ("mean", "std")]]
    rows = []
    for g in groups:
        for setting in g.tested:
            for label in g.methods:
                for task, k, name, stats in g.class_scores(label, setting):
                    several = any("/" in m for r in g.methods[label] for m in r.settings.get(setting, {}))
                    acc = g.stat(label, setting, f"{task + '/' if several else ''}{CLASS_PREFIX}{k}")
                    row: list[Any] = [g.datasets, g.train, label, setting, task, k, name, stats["f1"].n,
                                      " ".join(map(str, stats["f1"].seeds)), f"{stats['support'].mean:g}"]
                    for s in (acc, *(stats[m] for m in confusion.SCORES)):
                        row += ["", ""] if s is None else [
                            "" if math.isnan(s.mean) else round(s.mean, 6),
                            "" if s.std is None or math.isnan(s.std) else round(s.std, 6)]
                    rows.append(row)
    return header, rows


def _cross_tables(groups: Sequence[Group], latex: bool = False) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(datasets, method, header, rows) per method trained under several training settings on the same datasets:
    rows = training setting, columns = test settings, cells = the headline metric (mean ± std over seeds)."""
    by_key: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        for label in g.methods:
            by_key.setdefault((g.datasets, label), []).append(g)
    out = []
    for (datasets, label), gs in by_key.items():
        if len({g.train for g in gs}) < 2:
            continue
        settings = _order_settings([r for g in gs for r in g.methods[label]])
        rows = [[g.train, *[_cell(g.stat(label, s, g.headline), latex) for s in settings]] for g in gs]
        out.append((datasets, label, ["train / test", *settings], rows))
    return out


def _bars(groups: Sequence[Group], path: Path) -> Path | None:
    """``comparison_bars.png``: the headline metric at each group's tested settings, per method (mean, ±std)."""
    panels: dict[str, list[plots.Bar]] = {}
    for g in groups:
        for setting in g.tested:
            bars = []
            for label in g.methods:
                stat = g.stat(label, setting, g.headline)
                if stat is not None:
                    bars.append(plots.Bar(label, stat.mean, math.nan if stat.std is None else stat.std, stat.n))
            if bars:
                panels[f"{g.title} · test {setting}"] = bars
    if not panels:
        return None
    metric = groups[0].headline if len({g.headline for g in groups}) == 1 else "headline metric"
    return plots.bar_figure(panels, metric, "mean over seeds, error bar: ± standard deviation", path)


def _runs_table(records: Sequence[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    header = ["run", "method", "datasets", "train", "seed", "trainable parameters", "fit (s)", "test (s)",
              "headline (tested setting)"]
    rows = []
    for r in records:
        value = r.settings[r.tested].get(r.headline)
        rows.append([r.name, r.label, "+".join(r.datasets), r.train, r.seed,
                     "" if r.parameters is None else f"{r.parameters:,}",
                     "" if r.fit_s is None else f"{r.fit_s:.1f}", "" if r.test_s is None else f"{r.test_s:.1f}",
                     "" if value is None else f"{r.headline} {value:.2f} ({r.tested})"])
    return header, rows


def _methods_table(groups: Sequence[Group], latex: bool = False) -> tuple[list[str], list[list[str]]]:
    header = ["datasets", "train", "method", "seeds", "trainable parameters", "fit time (s)"]
    rows = []
    for g in groups:
        for label, runs in g.methods.items():
            params, fit = g.cost(label)
            rows.append([g.datasets, g.train, label, str(len(runs)), params,
                         "" if fit is None else fit.latex(1) if latex else fit.text(1)])
    return header, rows


def _csv_rows(groups: Sequence[Group]) -> tuple[list[str], list[list[Any]]]:
    metrics = list(dict.fromkeys(m for g in groups for m in g.metrics))
    header = ["datasets", "train", "method", "setting", "n", "seeds", "trainable_parameters", "fit_s_mean",
              "fit_s_std", *[f"{m}_{part}" for m in metrics for part in ("mean", "std")]]
    rows = []
    for g in groups:
        for label in g.methods:
            params, fit = g.cost(label)
            for setting in g.settings:
                stats = {m: g.stat(label, setting, m) for m in metrics}
                present = [s for s in stats.values() if s is not None]
                if not present:
                    continue
                row: list[Any] = [g.datasets, g.train, label, setting, present[0].n,
                                  " ".join(map(str, present[0].seeds)), params.replace(",", ""),
                                  "" if fit is None else round(fit.mean, 3),
                                  "" if fit is None or fit.std is None else round(fit.std, 3)]
                for m in metrics:
                    s = stats[m]
                    row += ["", ""] if s is None else [round(s.mean, 6), "" if s.std is None else round(s.std, 6)]
                rows.append(row)
    return header, rows


def _comparison(groups: Sequence[Group], path: Path) -> Path | None:
    panels: dict[str, list[plots.Curve]] = {}
    for g in groups:
        kinds = list(dict.fromkeys(k for runs in g.methods.values() for r in runs for k in r.curves))
        for kind in kinds:
            curves = []
            for label, runs in g.methods.items():
                ratios = sorted({ratio for r in runs for ratio in r.curves.get(kind, {})})
                stats = [Stat.of(*zip(*[(r.curves[kind][x][g.headline], r.seed) for r in runs
                                        if x in r.curves.get(kind, {})])) for x in ratios]
                if stats:
                    curves.append(plots.Curve(label, ratios, [s.mean for s in stats],
                                              [math.nan if s.std is None else s.std for s in stats]))
            panels[f"{g.title} · test: {plots.type_label(kind)}"] = curves
    if not panels:
        return None
    metric = groups[0].headline if len({g.headline for g in groups}) == 1 else "headline metric"
    return plots.comparison_figure(panels, metric, "mean over seeds, band: ± standard deviation", path)


def write_report(dirs: Sequence[Path], folder: Path, reference: str | None = None) -> str:
    """Aggregate the runs under ``dirs`` into ``folder``; returns the headline tables as text.

    ``reference``: the method every other one is tested against (default: ``mamol`` where a group has it, else
    the group's first method; :mod:`mamol.experiments.significance`).
    """
    records = collect([Path(d) for d in dirs])
    groups = group_runs(records)
    significance.check_reference(reference, list(dict.fromkeys(label for g in groups for label in g.methods)))
    folder.mkdir(parents=True, exist_ok=True)
    note = ("Scores x 100: mean ± sample standard deviation over seeds (n - 1 in the denominator; one seed: "
            "the value alone), n = runs (seeds) in the cell. Test settings: `complete` (ratio 0) and "
            "`<missing type> <ratio>`. Under each headline table: the methods' trainable parameters and mean fit "
            "wall time.\n")
    caveats = "".join(f"**Note: {n}.**\n\n" for n in dict.fromkeys(n for r in records for n in r.notes))
    md = [f"# Report\n\n{len(records)} runs from {', '.join(str(d) for d in dirs)}.\n\n{caveats}{note}\n## Runs\n\n",
          tables.markdown(*_runs_table(records), align_right_from=4), "\n## Methods\n\n",
          tables.markdown(*_methods_table(groups), align_right_from=3)]
    tex = [f"% {len(records)} runs; {note}", tables.latex_booktabs(
        *_methods_table(groups, latex=True), caption="Methods: seeds, trainable parameters and training time.",
        label="tab:methods", align_right_from=3)]
    text, csv_rows = [], []
    separated = [w for g in groups for w in g.warnings]
    if separated:
        md.append("\n## Warnings\n\n" + "".join(f"- {w}\n" for w in separated))
    confusions = _confusion_figures(groups, folder)
    for i, g in enumerate(groups):
        comparisons = g.comparisons(reference)
        marks = _marks(comparisons)
        rule = (significance.MARKER_RULE.format(reference=comparisons[0][1].reference) + "; McNemar needs the runs' "
                "test_predictions.npz, so only the settings runs were tested at (not grid points) can be marked."
                if comparisons else "")
        header, rows = _pivot(g, g.headline, marks=marks)
        md += [f"\n## {g.title}: {g.headline}\n\n", tables.markdown(header, rows + _cost_rows(g))]
        md += [f"\n{rule}\n"] if rule else []
        for metric in g.metrics[1:]:
            md += [f"\n## {g.title}: {metric}\n\n", tables.markdown(*_pivot(g, metric))]
        header, rows = _pivot(g, g.headline, latex=True, marks=marks)
        tex.append(tables.latex_booktabs(
            header, rows, caption=f"{g.headline}, mean and standard deviation over seeds, {g.plain_title}; below: "
            f"trainable parameters and fit time (s).", label=f"tab:results{i + 1}", footer=_cost_rows(g, latex=True),
            notes=[rule] if rule else []))
        if comparisons:
            ref = comparisons[0][1].reference
            head, sig_rows, notes = significance.table(comparisons)
            md += [f"\n### {g.title}: significance against {ref} ({g.headline})\n\n",
                   tables.markdown(head, sig_rows, align_right_from=3)]
            md += ["\n" + "".join(f"- {n}\n" for n in notes)] if notes else []
            tex.append(tables.latex_booktabs(
                head, sig_rows, caption=f"p-values against {ref}, {g.plain_title}: McNemar (exact, per seed and "
                f"combined over seeds; b/c = samples only {ref} / only the method gets right), Wilcoxon signed-rank "
                f"and paired t over seeds on {g.headline}.", label=f"tab:significance{i + 1}", align_right_from=3,
                notes=notes))
            csv_rows += [significance.csv_row(g.datasets, g.train, setting, g.headline, c)
                         for setting, c in comparisons]
        for j, setting in enumerate(g.tested):
            per_class = _class_table(g, setting)
            if per_class is None:
                continue
            md += [f"\n### {g.title}: per-class accuracy (test {setting})\n\n", tables.markdown(*per_class)]
            tex.append(tables.latex_booktabs(
                *_class_table(g, setting, latex=True), caption=f"Per-class accuracy at test setting {setting}, mean "
                f"and standard deviation over seeds, {g.plain_title}.", label=f"tab:classes{i + 1}-{j + 1}"))
        for j, setting in enumerate(g.tested):
            for m, label in enumerate(g.methods):
                scores = _scores_table(g, label, setting)
                if scores is None:
                    continue
                md += [f"\n### {g.title}: {label}, per-class precision, recall and F1 (test {setting})\n\n",
                       tables.markdown(*scores), "\n" + _run_links(g, label, setting, folder)]
                figures = [p for (gi, s, lab, _), p in confusions.items() if (gi, s, lab) == (i, setting, label)]
                md += [f"\n![summed confusion matrix of {label}]({p.name})\n" for p in figures]
                tex.append(tables.latex_booktabs(
                    *_scores_table(g, label, setting, latex=True), caption=f"{label}: per-class precision, recall "
                    f"and F1 at test setting {setting}, mean and standard deviation over seeds, {g.plain_title}; "
                    f"support: test samples of the class.", label=f"tab:prf{i + 1}-{j + 1}-{m + 1}"))
        plain_header, plain_rows = _pivot(g, g.headline, marks=marks)
        widths = [max(len(str(c)) for c in col) for col in zip(plain_header, *plain_rows)]
        text += [f"{g.title}: {g.headline} (x100, mean ± std over seeds)"]
        text += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [plain_header, *plain_rows]]
    cross = _cross_tables(groups)
    if cross:
        md.append("\n## Training × test settings\n\nThe headline metric of each method trained under each training "
                  "setting (rows) at each test setting (columns).\n")
        latex_cross = _cross_tables(groups, latex=True)
        for k, ((datasets, label, header, rows), (*_, latex_rows)) in enumerate(zip(cross, latex_cross)):
            md += [f"\n### {datasets}: {label}\n\n", tables.markdown(header, rows)]
            tex.append(tables.latex_booktabs(
                header, latex_rows, caption=f"{label} on {datasets}: the headline metric by training setting (rows) "
                f"and test setting (columns), mean and standard deviation over seeds.", label=f"tab:cross{k + 1}"))
    figure = _comparison(groups, folder / "comparison.png")
    if figure is None:
        md.append("\nNo run has grid results (`grid.json`), so there is no comparison plot.\n")
    else:
        md.append("\n![comparison](comparison.png)\n")
    bars = _bars(groups, folder / "comparison_bars.png")
    if bars is not None:
        md.append("\n![comparison at the tested settings](comparison_bars.png)\n")
    tables.write_text(folder / "report.md", "".join(md))
    tables.write_csv(folder / "report.csv", *_csv_rows(groups))
    tables.write_text(folder / "report.tex", "\n".join(tex))
    written = ["report.md", "report.csv", "report.tex"]
    class_header, class_rows = _classes_csv(groups)
    if class_rows:
        tables.write_csv(folder / "report_classes.csv", class_header, class_rows)
        written.append("report_classes.csv")
    if csv_rows:
        tables.write_csv(folder / "significance.csv", significance.CSV_HEADER, csv_rows)
        written.append("significance.csv")
    written += [f.name for f in (figure, bars, *confusions.values()) if f is not None]
    return "\n".join(text) + f"\nreport written to {folder} ({', '.join(written)})"


@recorded
def command(config: Mapping[str, Any]) -> str:
    """``python run.py report with 'report_dirs=[...]'``: the report in a new run folder."""
    options = from_config(ReportOptions, config)
    collect(options.report_dirs)  # refuse bad folders before creating the output folder
    folder = new_run_folder(options.log_dir, options.exp_name)
    save_to(folder)
    write_command_record(folder, "report", config)
    return write_report(options.report_dirs, folder, options.report_reference)
