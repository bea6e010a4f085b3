"""Train or evaluate MaMOL: ``python run.py with data_root=<ARROW_ROOT> remote exp_name=mamol``.

Commands beyond training (README "Experiments"), each writing into a run (or sweep) folder it prints:
``evaluate_grid`` (a checkpoint under every missing type x ratio), ``sweep`` (seeds x methods x datasets x
training missing settings, then a report), ``report`` (mean ± std tables and plots of run/sweep folders),
``predict_map`` (classification maps of a remote scene). See README.md for every command. The Sacred config
lives in ``config.py``; the package takes a plain dict.
"""
from __future__ import annotations

import copy

from config import ex


@ex.command
def evaluate_grid(_config: dict) -> None:
    """Evaluate load_path under every missing type x ratio (grid_types, grid_ratios)."""
    from mamol.experiments import grid

    print(grid.command(copy.deepcopy(dict(_config))), flush=True)


@ex.command
def sweep(_config: dict) -> None:
    """Train seeds x methods (x sweep_datasets x sweep_train_missing) into one sweep folder, then report."""
    from mamol.experiments import sweep as sweeps

    print(sweeps.command(copy.deepcopy(dict(_config))), flush=True)


@ex.command
def report(_config: dict) -> None:
    """Aggregate the runs of report_dirs: mean ± std over seeds per method and setting."""
    from mamol.experiments import report as reports

    print(reports.command(copy.deepcopy(dict(_config))), flush=True)


@ex.command
def predict_map(_config: dict) -> None:
    """Classification maps of the run's remote scene with load_path, complete and with modalities missing."""
    from mamol.experiments import maps

    print(maps.command(copy.deepcopy(dict(_config))), flush=True)


@ex.automain  # last: Sacred runs the command line here, so the commands above must already be registered
def main(_config: dict) -> None:
    from mamol.train import run

    report = run(copy.deepcopy(dict(_config)))
    print(report["summary"], flush=True)
