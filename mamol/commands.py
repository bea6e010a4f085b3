"""The commands of ``python run.py`` (or ``python -m mamol``): train or evaluate, ``... with data_root=<ARROW_ROOT>
remote exp_name=mamol``.

Commands beyond training (README "Experiments"), each writing into a run (or sweep) folder it prints:
``evaluate_grid`` (a checkpoint under every missing type x ratio), ``sweep`` (seeds x methods x datasets x
training missing settings, then a report), ``report`` (mean ± std tables and plots of run/sweep folders),
``predict_map`` (classification maps of a remote scene). See README.md for every command. The Sacred config
lives in :mod:`mamol.experiment`; ``mamol.train`` types it. A project error (bad config, data or checkpoint) is
printed as one line and exits with status 2 (``debug=True``: the full traceback); a run stopped by SIGTERM/SIGINT
names the checkpoint to resume from. With Sacred observers (``-F <folder>``, ``-s <url>``) each command's run
records its metrics, result, files and console output, and a sweep records each of its runs
(:mod:`mamol.observers`, docs/observers.md).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

from mamol import cli, console, observers, plans
from mamol.errors import MamolError
from mamol.experiment import ex, parse_command_line, root_config
from mamol.experiments import grid, maps
from mamol.experiments import report as reports
from mamol.experiments import sweep as sweeps
from mamol.settings import coerce
from mamol.train import run

_ONE_LINE = False  # set by command_line(): in-process callers (tests, sweeps) get the project errors as raised


def _one_line() -> bool:
    return _ONE_LINE


def _sacred_logger() -> logging.Logger:
    """Sacred's warnings only, without the ones that repeat what the run says itself: no observers (a run
    without ``-F``/``-s`` is recorded in its folder), changed types (the settings check every type) and "Failed
    after" (the one-line error says it)."""
    logger = logging.getLogger("mamol.run")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
        for prefix in ("No observers", "Changed type of config entry", "Failed after"):
            handler.addFilter(cli.DropLine(prefix))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False  # the root logger's console handler would print them twice
    return logger


@ex.main
@cli.one_line_errors(_one_line)
@console.recorded  # the summary printed below goes into the folder's console.log too
def main(_config: dict, _run) -> float | None:
    """Train (then test the best checkpoint), or with test_only=True evaluate load_path."""
    with observers.observing(_run) as loggers:
        try:
            report = run(copy.deepcopy(dict(_config)), loggers=loggers)
        except BaseException:  # a run that kept its folder (failed.json, console.log) is recorded as it stands
            try:
                _observed(_run, console.folder())
            except Exception as err:  # recording must not hide why the run failed
                logging.getLogger(__name__).warning("the observers did not get the failed run's folder: %s", err)
            raise
    print(report["summary"], flush=True)
    return _observed(_run, Path(report["run_dir"]))


def _observed(sacred_run, folder: Path | None, with_data: bool = True) -> float | None:
    """The files of the command's ``folder`` recorded by the run's observers; the run's result (see
    :mod:`mamol.observers`), None when nothing observes it."""
    return observers.record_folder(sacred_run, folder, with_data) if observers.observed(sacred_run) else None


@ex.command
@cli.one_line_errors(_one_line)
@console.recorded
def evaluate_grid(_config: dict, _run) -> None:
    """Evaluate load_path under every missing type x ratio (grid_types, grid_ratios)."""
    print(grid.command(copy.deepcopy(dict(_config))), flush=True)
    _observed(_run, console.folder())


@ex.command
@cli.one_line_errors(_one_line)
@console.recorded
def sweep(_config: dict, _run) -> None:
    """Train seeds x methods (x sweep_datasets x sweep_train_missing) into one sweep folder, then report."""
    if _config["dry_run"]:  # the runs and their device hours; no data, no training
        print(plans.dry_run(copy.deepcopy(dict(_config))), flush=True)
        return
    try:
        print(sweeps.command(copy.deepcopy(dict(_config)), observe=observers.children_of(_run)), flush=True)
    except sweeps.RunsFailed as failed:
        print(failed.report, flush=True)
        raise
    finally:  # the sweep's own files (report, sweep.json); each run is a Sacred run of its own
        _observed(_run, console.folder(), with_data=False)


@ex.command
@cli.one_line_errors(_one_line)
def sweep_status(_config: dict) -> None:
    """What a sweep has done, is running, has queued, has failed (with the reason) and has left."""
    print(sweeps.status_table(copy.deepcopy(dict(_config))), flush=True)


@ex.command
@cli.one_line_errors(_one_line)
@console.recorded
def report(_config: dict, _run) -> None:
    """Aggregate the runs of report_dirs: mean ± std over seeds per method and setting."""
    print(reports.command(copy.deepcopy(dict(_config))), flush=True)
    _observed(_run, console.folder(), with_data=False)


@ex.command
@cli.one_line_errors(_one_line)
@console.recorded
def predict_map(_config: dict, _run) -> None:
    """Classification maps of the run's remote scene with load_path, complete and with modalities missing."""
    print(maps.command(copy.deepcopy(dict(_config))), flush=True)
    _observed(_run, console.folder())


def command_line(argv: list[str]) -> int:
    """Check the keys and named configs of ``argv`` (with suggestions), then run Sacred's command line."""
    global _ONE_LINE
    updates, named, debug = parse_command_line(argv)
    _ONE_LINE = not debug
    ex.logger = _sacred_logger()
    # One-line warnings; what is printed from now on goes into the run folder's console.log (undone at the end).
    with console.session():
        return _run_command_line(argv, updates, named, debug)


def _run_command_line(argv: list[str], updates: dict, named: list[str], debug: bool) -> int:
    global _ONE_LINE
    try:
        cli.check_names(updates, named, set(root_config()), set(ex.named_configs))
        if "seed" in updates:  # Sacred seeds its own generators from it before any command runs
            coerce("seed", updates["seed"], int)
        ex.run_commandline(argv)
    except cli.ProjectExit as stop:
        return cli.print_error(stop.error)
    except MamolError as err:
        if debug:
            raise
        return cli.print_error(err)
    finally:
        _ONE_LINE = False
    return 0

