"""Training curves of a run: ``curves.png`` drawn from the ``metrics.csv`` its CSV logger wrote.

Three panels over the optimiser step (shared x axis): the training loss (``train/loss``, logged from the first
step, :class:`mamol.runs.LogFromFirstStep`), the headline validation metric at each validation (``val/the_metric``,
named by the metric it equals, e.g. ``OA``; the checkpoint-selection score, best one starred) and the learning rate
(Lightning's ``LearningRateMonitor``; parameter groups with the same schedule drawn once). A run that never
validated says so in the middle panel; an undefined (NaN) validation score leaves a gap, and a panel where every
value is NaN says the metric is undefined.

A resumed run keeps one ``metrics.csv`` holding its whole history (:class:`mamol.runs.HistoryCSVLogger`); a step
logged twice counts once, its last row. Training writes ``curves.png`` into its run folder after the test
(:mod:`mamol.train`); for an existing folder (an older run, a run trained with ``test_after_fit=False`` elsewhere)
``python -m mamol.curves <run folder or folder of runs> ...`` (re)draws it (:func:`write_curves`).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mamol import figures
from mamol.cli import print_error
from mamol.errors import DataError, MamolError, MissingFileError
from mamol.files import write_png
from mamol.metrics import TaskMetrics
from mamol.tasks import TASK_TYPES

METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
LOSS, VALIDATION, LR_PREFIX = "train/loss", "val/the_metric", "lr-"


@dataclass(frozen=True)
class Series:
    """One line: values (NaN where undefined) at optimiser steps, ascending."""

    label: str
    step: np.ndarray  # (N,) int64
    value: np.ndarray  # (N,) float64

    def __len__(self) -> int:
        return len(self.step)


@dataclass(frozen=True)
class RunCurves:
    """What ``curves.png`` shows: the training loss, the validation headline metric and the learning rates."""

    loss: Series
    validation: Series
    headline: str  # the validation metric's name ("OA", "AUROC"; "the_metric" when it averages several tasks)
    learning_rates: list[Series]  # one per distinct schedule of the optimiser's parameter groups


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file; expected the metrics.csv a training run's CSV logger writes "
                               f"(a run with logger disabled, e.g. fast_dev_run, has none)")
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot be read as CSV ({type(err).__name__}: {err})") from err
    if "step" not in columns:
        raise DataError(f"{path}: expected a 'step' column (Lightning's CSV logger), found columns {columns}")
    return columns, rows


def _series(rows: Sequence[dict[str, str]], column: str, label: str, path: Path) -> Series:
    """The rows that logged ``column``, one per step (the last row of a step logged twice), by step."""
    by_step: dict[int, float] = {}
    for row in rows:
        text = row.get(column) or ""
        if not text or not row.get("step"):
            continue
        try:
            by_step[int(float(row["step"]))] = float(text)
        except ValueError as err:
            raise DataError(f"{path}: column {column!r} at step {row['step']!r}: expected a number, found "
                            f"{text!r}") from err
    steps = sorted(by_step)
    return Series(label, np.asarray(steps, dtype=np.int64), np.asarray([by_step[s] for s in steps], dtype=np.float64))


def _headline(columns: Sequence[str]) -> str:
    """The metric ``val/the_metric`` repeats: the checkpoint-selection metric of the task type whose metrics the
    run logged (``OA`` for a remote scene, ``AUROC`` for a binary task, ...), or ``the_metric`` when it averages
    several tasks (their metrics logged as ``val/<task>/<metric>``). By name, not by value: OA equals AA under
    the class-balanced split."""
    logged = {c.removeprefix("val/") for c in columns if c.startswith("val/") and c.count("/") == 1}
    found: tuple[int, str] | None = None
    for task_type in TASK_TYPES:
        metrics = TaskMetrics(task_type, 2)
        names = set(metrics.metrics.keys()) - {"class_acc"}
        if names <= logged and (found is None or len(names) > found[0]):  # the most specific set wins
            found = (len(names), metrics.the_metric)
    return found[1] if found else "the_metric"


def read_curves(folder: str | os.PathLike) -> RunCurves:
    """The curves of the run folder ``folder`` from its ``metrics.csv``."""
    path = Path(folder) / METRICS_FILE
    columns, rows = _read_rows(path)
    loss = _series(rows, LOSS, "training loss", path)
    validation = _series(rows, VALIDATION, VALIDATION, path)
    headline = _headline(columns)
    schedules: list[Series] = []
    for column in (c for c in columns if c.startswith(LR_PREFIX)):
        series = _series(rows, column, column.removeprefix(LR_PREFIX), path)
        if not any(np.array_equal(series.step, s.step) and np.array_equal(series.value, s.value) for s in schedules):
            schedules.append(series)
    if len(schedules) == 1:
        schedules = [Series("learning rate", schedules[0].step, schedules[0].value)]
    return RunCurves(loss, Series(f"val {headline}", validation.step, validation.value), headline, schedules)


def curves_figure(curves: RunCurves, title: str, path: str | os.PathLike) -> Path:
    """Draw the three panels (loss, validation metric, learning rate) over the step into ``path``."""
    fig = Figure(figsize=(7.6, 7.4), layout="constrained")
    loss_ax, val_ax, lr_ax = fig.subplots(3, 1, sharex=True)

    if figures.finite(curves.loss.value).size:
        loss_ax.plot(curves.loss.step, curves.loss.value, linewidth=1.2, color="tab:blue", label="training loss")
        loss_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        figures.undefined_panel(loss_ax, "no training loss logged in this run" if not len(curves.loss)
                                else figures.undefined_text("training loss", "NaN at every logged step"))
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title(title, fontsize=9)

    val = curves.validation
    if not len(val):
        figures.undefined_panel(val_ax, "no validation in this run (max_epoch < check_val_every_n_epoch, or "
                                        "validation turned off)")
    elif not figures.finite(val.value).size:
        figures.undefined_panel(val_ax, figures.undefined_text(curves.headline, "NaN at every validation"))
    else:
        val_ax.plot(val.step, val.value, marker="o", markersize=4, linewidth=1.2, color="tab:green", label=val.label)
        best = int(np.nanargmax(val.value))
        val_ax.plot([val.step[best]], [val.value[best]], marker="*", markersize=13, color="black", linestyle="none",
                    label=f"best ({val.value[best]:.2f})")
        figures.percent_axis(val_ax, val.value)
        val_ax.grid(alpha=0.3)
        val_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    val_ax.set_ylabel(f"val {curves.headline} (%)")

    shown = [s for s in curves.learning_rates if figures.finite(s.value).size]
    for series in shown:
        lr_ax.plot(series.step, series.value, linewidth=1.2, label=series.label)
    if shown:
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        lr_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        lr_ax.set_ylim(bottom=0.0)
    else:
        figures.undefined_panel(lr_ax, "no learning rate logged in this run")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimiser step")
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
    steps = [s for series in (curves.loss, val, *curves.learning_rates) for s in series.step]
    if steps:
        last = max(steps)
        lr_ax.set_xlim(-0.02 * max(last, 1), last + 0.02 * max(last, 1))
    return write_png(fig, path)


def write_curves(folder: str | os.PathLike, title: str | None = None) -> RunCurves:
    """Read ``folder/metrics.csv`` and write ``folder/curves.png``; returns what was drawn."""
    folder = Path(folder)
    curves = read_curves(folder)
    curves_figure(curves, title or f"{folder.parent.name}/{folder.name}: training curves", folder / CURVES_FILE)
    return curves


def run_folders(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Each path that is a run folder (holds ``metrics.csv``), or the run folders under it."""
    found: list[Path] = []
    for given in map(Path, paths):
        if (given / METRICS_FILE).is_file():
            found.append(given)
            continue
        inside = sorted(p.parent for p in given.rglob(METRICS_FILE)) if given.is_dir() else []
        if not inside:
            raise MissingFileError(f"{given}: no {METRICS_FILE} in it or under it; expected a run folder "
                                   f"(<log_dir>/<exp_name>/version_<n>) or a folder holding run folders")
        found += inside
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mamol.curves FOLDER ...``: (re)draw ``curves.png`` in every run folder given or found."""
    parser = argparse.ArgumentParser(description="Draw curves.png (training loss, validation metric, learning rate) "
                                                 "in run folders from their metrics.csv.")
    parser.add_argument("folders", nargs="+", help="run folders, or folders holding run folders (searched)")
    args = parser.parse_args(argv)
    try:
        for folder in run_folders(args.folders):
            curves = write_curves(folder)
            line = f"{folder / CURVES_FILE}: {len(curves.loss)} loss steps, {len(curves.validation)} validations"
            print(line, flush=True)  # noqa: T201 - the entry point's own report
    except MamolError as err:
        return print_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
