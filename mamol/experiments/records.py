"""Finished runs as a report reads them: one record per run, statistics over seeds, and groups of methods.

A run folder is finished when it holds ``test_results.json`` (with ``grid.json`` beside it when the run was
evaluated over the grid, and ``test_predictions.npz`` when it saved its test predictions). A run belongs to the
group of its datasets and training missing setting; within a group runs of the same method label (the variant
name recorded in a sweep's ``sweep.json``, else the ``method``) and the same identity are the seeds of that method.
A run's identity is its whole config except the result-neutral keys (:data:`mamol.runs.RESULT_NEUTRAL_KEYS`) and
:data:`NOT_POOLED_ON` (the seed, which is averaged over, and the evaluation settings, which are the tables' rows);
runs of one label with different identities (a 3-epoch run beside a sweep's 1-epoch runs) are never pooled: each
identity gets its own column, labelled by the keys that differ (``mamol (max_epoch=3)``), with a warning.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mamol import confusion
from mamol.data import catalogue
from mamol.data.formats import CONVERSION_KEY
from mamol.errors import ConfigError, DataError, MissingFileError
from mamol.experiments import observed, paper, significance
from mamol.experiments.paper import RunFacts
from mamol.experiments.significance import Comparison, SeedRun
from mamol.methods import display_name
from mamol.metrics import TaskMetrics, summary_metrics
from mamol.missing import parse_missing_type
from mamol.predictions import read_predictions
from mamol.runs import identity
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


def setting_label(kind: str, ratio: float) -> str:
    """``complete`` for ratio 0 (or type none), else ``<type> <ratio>``."""
    return COMPLETE if ratio == 0 or kind == "none" else f"{kind} {ratio:g}"


def canonical_type(kind: str, modalities: Sequence[str] | None) -> str:
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
    method: str  # the registered method (``method`` key)
    seed: int
    datasets: tuple[str, ...]
    train: str  # training missing setting, e.g. "both 0.7"
    headline: str
    parameters: int | None
    fit_s: float | None  # wall time of fitting (None: not recorded)
    test_s: float | None
    fit_cpu_s: float | None  # CPU time of fitting (None: recorded before runs recorded it)
    test_cpu_s: float | None
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
    config: dict[str, Any] = field(default_factory=dict)  # the config as given (hyper-parameter table)
    notes: list[str] = field(default_factory=list)  # caveats of its data (test_results.json's notes)
    facts: RunFacts | None = None  # what captions say of the run: resolved settings, the data's metadata

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
    wall, cpu = tested.get("wall_time_s") or {}, tested.get("cpu_time_s") or {}
    train_label = setting_label(canonical_type(train_missing["type"], modalities), float(train_missing["ratio"]))
    test_label = setting_label(canonical_type(test_missing["missing_type"], modalities),
                               float(test_missing["missing_ratio"]))
    position, label = _labels(folder.parent.parent).get(folder.parent.name, (-1, tested.get("method", "?")))
    method = str(tested.get("method", config.get("method", "?")))
    record = RunRecord(
        folder=folder, name=f"{folder.parent.name}/{folder.name}", label=label, method=method,
        seed=int(config["seed"]), datasets=tasks, order=(position, str(folder)),
        train=train_label, headline=headline_metric(tasks), parameters=tested.get("trainable_parameters"),
        fit_s=wall.get("fit"), test_s=wall.get("test"), fit_cpu_s=cpu.get("fit"), test_cpu_s=cpu.get("test"),
        tested=test_label, identity=identity(config, NOT_POOLED_ON),
        class_names={str(k): list(v) for k, v in (tested.get("class_names") or {}).items()}, config=dict(config),
        notes=list(tested.get("notes") or []),
        facts=RunFacts(display_name(label, method), tasks, settings, tested.get("dataset") or {},
                       tuple(modalities or ()),
                       float(tested.get("limit_test", 1.0))))
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
    refuse_mixed_conversions(records)
    return records


def refuse_mixed_conversions(records: Sequence[RunRecord]) -> None:
    """Refuse runs of one dataset made on different conversions of it (another split, seed or normalisation
    written to the same name): their cells would average, and their tests pair, different test sets. DataError
    naming the dataset and one run of each conversion; runs recorded without the data's metadata are let through."""
    made_on: dict[str, dict[str, Path]] = {}  # dataset -> conversion id -> first run folder
    for r in records:
        for task, meta in (r.facts.data if r.facts else {}).items():
            conversion = (meta or {}).get(CONVERSION_KEY)
            if conversion is not None:
                made_on.setdefault(task, {}).setdefault(str(conversion), r.folder)
    for task, folders in made_on.items():
        if len(folders) > 1:
            runs = "; ".join(f"{conversion[:12]}: {folder}" for conversion, folder in folders.items())
            raise DataError(f"report: runs on {task!r} come from {len(folders)} different conversions of it ({runs}); "
                            f"report each conversion's runs apart")


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
        """mean ± std as a cell shows it ("undefined" where NaN; :func:`mamol.experiments.paper.score`)."""
        return paper.score(self.mean, self.std, digits=digits)

    def latex(self, digits: int = 2, n: bool = False) -> str:
        count = f"\\;(n={self.n})" if n else ""
        return f"${paper.score(self.mean, self.std, latex=True, digits=digits)}{count}$"


def _times(runs: Sequence[RunRecord], which: str) -> Stat | None:
    times = [(getattr(r, which), r.seed) for r in runs if getattr(r, which) is not None]
    return Stat.of(*zip(*times)) if times else None


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

    def cost(self, label: str) -> tuple[str, Stat | None, Stat | None]:
        """(trainable parameters as text, fit wall time, fit CPU time statistics) of a method; a time is None
        when no run recorded it (CPU time: runs made before it was recorded)."""
        runs = self.methods[label]
        params = sorted({r.parameters for r in runs if r.parameters is not None})
        text = "" if not params else f"{params[0]:,}" if len(params) == 1 else f"{params[0]:,}–{params[-1]:,}"
        return text, _times(runs, "fit_s"), _times(runs, "fit_cpu_s")

    @property
    def titles(self) -> list[str]:
        """The methods' display names, in column order (:func:`mamol.methods.display_name`)."""
        return [display_name(label, runs[0].method) for label, runs in self.methods.items()]

    def selection(self, choice: str | tuple[str, ...]) -> tuple[list[str], list[str]]:
        """(settings the paper tables show, chosen ones not evaluated) under ``report_settings`` (``choice``)."""
        modalities = next((r.facts.modalities for rs in self.methods.values() for r in rs if r.facts), ())
        return paper.select_settings(choice, self.settings, modalities, self.train, canonical_type, self.tested)

    def caption_context(self, shown: Sequence[str]) -> str:
        """Data, split, missing protocol and training budget of the group, for captions."""
        return paper.context([rs[0].facts for rs in self.methods.values()], self.train, shown)

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
        """The group in captions: "Houston2013, training setting Mixed (70 %)"."""
        return f"{paper.datasets_title(self.datasets)}, training setting {paper.setting_name(self.train)}"


def order_settings(records: Sequence[RunRecord]) -> list[str]:
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
        out.append(Group(datasets, train, headline, methods, order_settings(runs),
                         summary_metrics(names, headline), warnings.get((datasets, train), [])))
    return out
