"""``sweep``: train the product of seeds × methods (× datasets × training missing settings), then report.

``python run.py sweep with <named config> ... 'seeds=[0,1,2]' 'methods=["mamol","lora"]'`` trains one run per
combination, one after another, into the sweep folder ``<log_dir>/<exp_name>/``; each run is an ordinary
run folder ``<sweep>/<run name>/version_<n>/`` (run name ``<method>-<datasets>-train_<type><ratio>-seed<k>``, the
type as :func:`mamol.missing.spelling` writes it: ``train_hsi0.7`` for ``HS``).
A ``methods`` entry is a registered method name (the ``method`` key) or a named variant — ``{"name":
"mamol_r4", "method": "mamol", "adapter_rank": 4}`` trains MaMOL with those keys changed and reports it as
``mamol_r4``. With ``sweep_grid`` each trained checkpoint is also evaluated over
the grid (``grid.*`` in its run folder), which gives the report its curves over the missing ratio.

Running the same command again continues the sweep: a run whose folder holds ``test_results.json`` (and
``grid.json`` with ``sweep_grid``) is skipped, a run interrupted during training resumes from its
``checkpoints/last.ckpt``, and a run interrupted during its grid gets only the grid. ``sweep.json`` in the
sweep folder records the plan (name, method label, seed, datasets, training setting, config changes) and
each run's state; ``report`` reads the method labels from it. At the end the report is written into the
sweep folder (:mod:`mamol.experiments.report`).

A run's identity is its whole config, so ``sweep.json`` also records the sweep's shared config (every key but
the sweep's axes and :data:`mamol.runs.RESULT_NEUTRAL_KEYS`) and each run's variant changes. Run again under
another one (``max_epoch=2`` after 1), the sweep is refused, naming each differing key with its old and new
value, instead of skipping the old runs as complete; ``sweep_new=True`` sets the old sweep folder aside (renamed
``<exp_name>.replaced-<n>``, nothing deleted) and starts a new sweep. A ``sweep.json`` written before the config
was recorded is continued with a warning.

With several processes (``num_processes``, ``num_gpus``, ``num_nodes``) every process runs the sweep and
trains each run together; the bookkeeping (``sweep.json``), the grids (predicted on one device) and the
report are done by rank 0 while the others wait for it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mamol import console, distributed, train
from mamol.data import catalogue
from mamol.errors import ConfigError, MamolError, MissingFileError
from mamol.experiments import launch as launch_
from mamol.experiments import report
from mamol.experiments.launch import LaunchOptions, RunJob
from mamol.experiments.records import PLAN_FILE
from mamol.files import storage_errors, write_json
from mamol.locks import held_or_refused
from mamol.methods import METHODS, method_class
from mamol.missing import spelling
from mamol.runs import identity, identity_changes, write_command_record
from mamol.settings import RunSettings, coerce, from_config
from mamol.tasks import SPLITS

log = logging.getLogger(__name__)

# Keys a variant may not change: the sweep sets them for every run.
_SWEEP_KEYS = ("seed", "method", "datasets", "log_dir", "exp_name", "test_only", "resume_from")
# The sweep's axes: set per run (and compared per run through its name and variant changes), not shared.
_AXES = frozenset({*_SWEEP_KEYS, "seeds", "methods", "sweep_datasets", "sweep_train_missing"})


@dataclass(frozen=True)
class SweepOptions:
    """The sweep's axes (see ``config.py``)."""

    seeds: tuple[int, ...]
    methods: tuple[Any, ...]  # each a registered method name or {"name", "method", <config keys>}
    sweep_datasets: tuple[Any, ...] | None  # each a list of dataset names (or one name)
    sweep_train_missing: tuple[Any, ...] | None  # each {"ratio": r, "type": t}
    sweep_grid: bool
    sweep_new: bool  # set an existing sweep folder made under another config aside and start anew


@dataclass(frozen=True)
class SweepRun:
    """One run of the sweep: what it is called, what it trains, and the config keys it changes."""

    name: str
    label: str  # method label in reports: the registered name or the variant's name
    method: str  # registered method
    seed: int
    datasets: tuple[str, ...]
    train_ratio: float
    train_type: str
    updates: dict[str, Any]  # the variant's config changes


def methods_of(options: SweepOptions, config: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered method, config changes) of each ``methods`` entry; ConfigError naming a bad one."""
    out = []
    for i, spec in enumerate(options.methods):
        where = f"methods[{i}]"
        if isinstance(spec, str):
            method_class(spec)  # ConfigError listing the registered methods
            out.append((spec, spec, {}))
            continue
        if not isinstance(spec, Mapping) or not {"name", "method"} <= set(spec) or not isinstance(spec["name"], str):
            raise ConfigError(f"{where}={spec!r}: expected a registered method name or a variant "
                              f"{{'name': 'mamol_r4', 'method': 'mamol', 'adapter_rank': 4}}")
        if spec["name"] in METHODS and spec["name"] != spec["method"]:
            raise ConfigError(f"{where}: name {spec['name']!r} is a registered method; give the variant another name")
        method_class(spec["method"])
        updates = {k: v for k, v in spec.items() if k not in ("name", "method")}
        unknown = sorted(k for k in updates if k not in config)
        fixed = sorted(k for k in updates if k in _SWEEP_KEYS)
        if unknown:
            raise ConfigError(f"{where} ({spec['name']!r}): unknown config keys {unknown}")
        if fixed:
            raise ConfigError(f"{where} ({spec['name']!r}): {fixed} are set by the sweep for every run")
        out.append((spec["name"], spec["method"], updates))
    labels = [label for label, _, _ in out]
    if not out or len(set(labels)) != len(labels):
        raise ConfigError(f"methods={list(options.methods)}: give one or more methods with distinct names")
    return out


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)


def plan(config: Mapping[str, Any], options: SweepOptions, s: RunSettings) -> list[SweepRun]:
    """Every run of the sweep in training order (datasets, training settings, seeds, then methods).

    ``s`` (the sweep config's settings) gives the defaults: its datasets and its training missing setting.
    """
    if not options.seeds or len(set(options.seeds)) != len(options.seeds):
        raise ConfigError(f"seeds={list(options.seeds)}: give one or more distinct seeds")
    methods = methods_of(options, config)
    datasets = ([catalogue.canonical_names(d) for d in options.sweep_datasets] if options.sweep_datasets
                else [s.data.datasets])
    if options.sweep_train_missing is None:
        train_settings = [(s.missing.train.ratio, s.missing.train.type)]
    else:
        train_settings = []
        for i, spec in enumerate(options.sweep_train_missing):
            if not isinstance(spec, Mapping) or set(spec) != {"ratio", "type"}:
                raise ConfigError(f"sweep_train_missing[{i}]={spec!r}: expected {{'ratio': <0..1>, 'type': <type>}}")
            train_settings.append((spec["ratio"], spec["type"]))
    runs = []
    for names in datasets:
        for i, (ratio, kind) in enumerate(train_settings):
            ratio = coerce(f"sweep_train_missing[{i}]['ratio']", ratio, float)
            kind = coerce(f"sweep_train_missing[{i}]['type']", kind, str)
            if not 0.0 <= ratio <= 1.0:
                raise ConfigError(f"sweep_train_missing[{i}]: ratio must be in [0, 1], found {ratio}")
            for seed in options.seeds:
                for label, method, updates in methods:
                    name = _tag(f"{label}-{'+'.join(names)}-train_{spelling(kind)}{ratio:g}-seed{seed}")
                    runs.append(SweepRun(name, label, method, int(seed), names, ratio, kind, dict(updates)))
    return runs


def run_config(config: Mapping[str, Any], run: SweepRun, folder: Path) -> dict[str, Any]:
    """The config of one sweep run: the sweep's config with the run's seed, method, data and missing setting."""
    cfg = dict(config)
    ratios, kinds = cfg["missing_ratio"], cfg["missing_type"]
    ratios = dict(ratios) if isinstance(ratios, Mapping) else {s: ratios for s in SPLITS}
    kinds = dict(kinds) if isinstance(kinds, Mapping) else {s: kinds for s in SPLITS}
    cfg.update(run.updates)
    cfg.update(seed=run.seed, method=run.method, datasets=list(run.datasets), log_dir=str(folder),
               exp_name=run.name, test_only=False, resume_from="",
               missing_ratio={**ratios, "train": run.train_ratio}, missing_type={**kinds, "train": run.train_type})
    return cfg


def shared_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What every run of the sweep shares: the config without the axes, result-neutral keys and the training
    split's missing setting (each run sets it)."""
    shared = identity(config, _AXES)
    for key in ("missing_ratio", "missing_type"):
        value = shared.get(key)
        shared[key] = ({s: v for s, v in value.items() if s != "train"} if isinstance(value, dict)
                       else {s: value for s in SPLITS if s != "train"})
    return shared


def _read_plan(folder: Path) -> dict[str, Any] | None:
    path = folder / PLAN_FILE
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
        recorded["runs"] = list(recorded.get("runs", []))
        return recorded
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise ConfigError(f"{path}: not a sweep plan written by `run.py sweep` ({err})") from err


def check_same_sweep(folder: Path, shared: Mapping[str, Any], runs: Sequence[SweepRun]) -> None:
    """Refuse to continue the sweep in ``folder`` under another shared config or other variant changes."""
    recorded = _read_plan(folder)
    if recorded is None:
        return
    changes = []
    if "config" not in recorded:
        log.warning("%s was written before sweeps recorded their config: its runs are continued unchecked",
                    folder / PLAN_FILE)
    else:
        changes += identity_changes(recorded["config"], shared)
    old_runs = {r.get("name"): r for r in recorded["runs"] if isinstance(r, Mapping)}
    for run in runs:
        old = old_runs.get(run.name)
        if old is not None and "updates" in old:
            changes += [f"{run.label} {c}" for c in identity_changes(identity(old["updates"]), identity(run.updates))]
    if changes:
        raise ConfigError(f"sweep {folder} was run with other settings than this command's ({'; '.join(changes)}); "
                          f"rerun it with its settings to continue it, or pass sweep_new=True to set it aside "
                          f"(renamed, kept) and start a new sweep, or choose another exp_name")


def set_aside(folder: Path) -> Path:
    """Rename a sweep folder to the first free ``<name>.replaced-<n>`` beside it; returns the new path."""
    n = 1
    while folder.with_name(f"{folder.name}.replaced-{n}").exists():
        n += 1
    target = folder.with_name(f"{folder.name}.replaced-{n}")
    folder.rename(target)
    log.warning("sweep_new=True: the earlier sweep in %s is now %s", folder, target)
    return target


def _save_plan(folder: Path, shared: Mapping[str, Any], runs: Sequence[SweepRun], states: Mapping[str, str],
               jobs: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Write ``sweep.json``: the shared config and each run (its state here, and the job it was submitted as)."""
    path = folder / PLAN_FILE
    recorded = {}
    previous = _read_plan(folder)
    if previous is not None:  # keep runs of an earlier plan of this sweep (their folders may still be reported)
        recorded = {r["name"]: r for r in previous["runs"]}
    for run in runs:
        entry = {**asdict(run), "datasets": list(run.datasets), "state": states.get(run.name, "planned")}
        job = (jobs or {}).get(run.name) or recorded.get(run.name, {}).get("job")
        if job:
            entry["job"] = dict(job)
        recorded[run.name] = entry
    write_json(path, {"config": dict(shared), "runs": list(recorded.values())})


def prepare(config: Mapping[str, Any], options: SweepOptions, s: RunSettings, folder: Path
            ) -> tuple[list[SweepRun], dict[str, Any]]:
    """The sweep's runs and shared config, every run's config checked, the folder set aside or checked to be
    this sweep's (see the module docstring) and created."""
    runs = plan(config, options, s)
    elsewhere = config.get("launcher") == "slurm"  # the runs train on SLURM nodes, not on this machine
    for run in runs:  # check every run's config before training the first
        train.resolve_settings(run_config(config, run, folder), elsewhere=elsewhere)
    shared = shared_config(config)
    if options.sweep_new and folder.exists():
        set_aside(folder)
    check_same_sweep(folder, shared, runs)
    folder.mkdir(parents=True, exist_ok=True)
    if distributed.global_rank() == 0:
        console.save_to(folder)  # the sweep's console.log: everything it printed, each run's part included
        write_command_record(folder, "sweep", config)  # the latest command that worked on the sweep, as given
    return runs, shared


def _job(config: Mapping[str, Any], run: SweepRun, folder: Path, options: SweepOptions,
         launch: LaunchOptions, observe: launch_.Observe = launch_.unobserved) -> RunJob:
    return RunJob(run_config(config, run, folder), folder / run.name, options.sweep_grid, launch.cpu_threads,
                  observe)


def run_serial(config: Mapping[str, Any], options: SweepOptions, launch: LaunchOptions, folder: Path,
               runs: Sequence[SweepRun], shared: Mapping[str, Any], observe: launch_.Observe = launch_.unobserved
               ) -> list[tuple[SweepRun, str]]:
    """Train the runs one after another in this process (every rank, under DDP)."""
    states: dict[str, str] = {}
    done: list[tuple[SweepRun, str]] = []
    for i, run in enumerate(runs, 1):
        log.info("[%d/%d] %s", i, len(runs), run.name)
        states[run.name] = "running"
        if distributed.global_rank() == 0:
            _save_plan(folder, shared, runs, states)
        what = _job(config, run, folder, options, launch, observe)()
        states[run.name] = "complete"
        if distributed.global_rank() == 0:
            _save_plan(folder, shared, runs, states)
        done.append((run, what))
    return done


def statuses(folder: Path, runs: Sequence[SweepRun], with_grid: bool) -> dict[str, launch_.RunStatus]:
    """Each run's status (:func:`mamol.experiments.launch.status_of`), asking SLURM once for all its jobs."""
    recorded = _read_plan(folder) or {"runs": []}
    jobs = {r.get("name"): r.get("job") for r in recorded["runs"] if isinstance(r, Mapping)}
    slurm_ids = [str(j["id"]) for j in jobs.values() if isinstance(j, Mapping) and j.get("launcher") == "slurm"]
    queue = launch_.slurm_states(slurm_ids) if slurm_ids else None
    return {run.name: launch_.status_of(folder / run.name, with_grid, jobs.get(run.name), queue) for run in runs}


def run_scheduled(config: Mapping[str, Any], options: SweepOptions, launch: LaunchOptions, folder: Path,
                  runs: Sequence[SweepRun], shared: Mapping[str, Any], poll_s: float,
                  observe: launch_.Observe = launch_.unobserved) -> list[tuple[SweepRun, str]]:
    """Submit every run that is neither done nor queued or running (``local`` or ``slurm``), and with
    ``sweep_wait`` wait until each has ended; (run, what happened) in plan order."""
    before = statuses(folder, runs, options.sweep_grid)
    todo = [run for run in runs if before[run.name].state in ("left", "failed")]
    jobs: dict[str, dict[str, Any]] = {}
    states = {run.name: "complete" if before[run.name].state == "done" else "submitted" for run in runs}

    def record(submitted: launch_.Submitted) -> None:
        jobs[submitted.job.name] = submitted.record
        _save_plan(folder, shared, runs, states, jobs)

    batch = [_job(config, run, folder, options, launch, observe) for run in todo]
    if launch.launcher == "local" and launch.sweep_wait:
        launch_.run_local(launch, batch, folder, record, poll_s=poll_s)
    else:
        for submitted in launch_.submit(launch, batch, folder):
            jobs[submitted.job.name] = submitted.record
        _save_plan(folder, shared, runs, states, jobs)
        log.info("submitted %d SLURM job(s): %s", len(jobs), ", ".join(j["id"] for j in jobs.values()))
    # Wait for every run in the queue, also those an earlier `sweep_wait=False` submitted.
    while launch.sweep_wait and launch.launcher == "slurm" and any(
            s.state in ("queued", "running") for s in statuses(folder, runs, options.sweep_grid).values()):
        time.sleep(poll_s)
    after = statuses(folder, runs, options.sweep_grid)
    for run in runs:
        states[run.name] = "complete" if after[run.name].state == "done" else after[run.name].state
    _save_plan(folder, shared, runs, states, jobs)
    out = []
    for run in runs:
        status, submitted = after[run.name], run in todo
        if not submitted and before[run.name].state == "done":
            what = "skipped (complete)"
        elif not submitted:  # queued or running by an earlier submission
            what = ("done (submitted earlier)" if status.state == "done" else f"already {status.state} "
                    f"({status.detail})" if status.state in ("queued", "running") else f"FAILED: {status.detail}")
        elif status.state == "done":
            what = f"done ({launch.launcher} job {jobs[run.name]['id']})"
        elif status.state == "failed":
            what = f"FAILED: {status.detail}"
        else:
            what = f"{status.state} ({status.detail})"
        out.append((run, what))
    return out


def run_sweep(config: Mapping[str, Any], options: SweepOptions, s: RunSettings, folder: Path,
              launch: LaunchOptions | None = None, poll_s: float = 2.0,
              observe: launch_.Observe = launch_.unobserved) -> list[tuple[SweepRun, str]]:
    """Train (or skip, resume, complete) every run of the plan into ``folder`` with the configured launcher;
    (run, what happened) in plan order. ``observe``: each run trained is recorded as a run of its own (the sweep
    command's Sacred observers, :mod:`mamol.observers`)."""
    launch = launch or launch_.launch_options(config)
    launch_.check_launcher(launch, config)
    runs, shared = prepare(config, options, s, folder)
    if launch.launcher == "serial":
        return run_serial(config, options, launch, folder, runs, shared, observe)
    return run_scheduled(config, options, launch, folder, runs, shared, poll_s, observe)


def status_table(config: Mapping[str, Any]) -> str:
    """``python run.py sweep_status with ...`` (the sweep's own command line): each run's status and the counts."""
    options = from_config(SweepOptions, config)
    s = train.resolve_settings(config, elsewhere=True)  # reads the folders; trains nothing here
    folder = s.run.log_dir / s.run.exp_name
    if not (folder / PLAN_FILE).is_file():
        raise MissingFileError(f"no sweep in {folder} ({PLAN_FILE} not found): check log_dir and exp_name, or "
                               f"start it with `python run.py sweep with ...`")
    runs = plan(config, options, s)
    check_same_sweep(folder, shared_config(config), runs)
    current = statuses(folder, runs, options.sweep_grid)
    counts = {state: sum(1 for st in current.values() if st.state == state) for state in STATUS_ORDER}
    lines = [f"sweep {folder}: " + ", ".join(f"{counts[state]} {state}" for state in STATUS_ORDER)
             + f" (of {len(runs)})"]
    lines += [f"  {run.name:<48s} {current[run.name].state:<8s} {current[run.name].detail}".rstrip() for run in runs]
    left = counts["left"] + counts["failed"]
    if left:
        lines.append(f"{left} run(s) not done and not queued: run the same `sweep` command again to submit only "
                     f"those")
    elif counts["done"] == len(runs):
        lines.append("the sweep is done")
    return "\n".join(lines)


STATUS_ORDER = ("done", "running", "queued", "failed", "left")
WAITING = ("queued", "running", "already queued", "already running")  # what a run submitted without waiting says


@console.recorded
def command(config: Mapping[str, Any], observe: launch_.Observe | None = None) -> str:
    """``python run.py sweep with ...``: run the sweep into ``<log_dir>/<exp_name>/``, then write its report
    (``observe``: see :func:`run_sweep`)."""
    options = from_config(SweepOptions, config)
    tabled = report.table_options(config)
    launch = launch_.launch_options(config)
    s = train.resolve_settings(config, elsewhere=launch.launcher == "slurm")
    folder = s.run.log_dir / s.run.exp_name
    # One sweep at a time in a folder: a second one would train the same runs into the same run folders.
    lock = (held_or_refused(s.run.log_dir / f".{s.run.exp_name}.sweep.lock", f"sweep folder {folder}")
            if distributed.global_rank() == 0 else contextlib.nullcontext())
    with storage_errors(f"log_dir={str(s.run.log_dir)!r}"):
        s.run.log_dir.mkdir(parents=True, exist_ok=True)
    with lock:
        done = run_sweep(config, options, s, folder, launch, observe=observe or launch_.unobserved)
        lines = [f"  {run.name:<48s} {what}" for run, what in done]
        failed = [run.name for run, what in done if what.startswith("FAILED")]
        pending = [run.name for run, what in done if what.startswith(WAITING)]
        if pending:  # submitted without waiting: the report comes when they are done
            return "\n".join(["sweep runs:", *lines, f"{len(pending)} run(s) submitted or in the queue; follow them "
                              f"with `python run.py sweep_status with <the same settings>`, and run `sweep` again (or "
                              f"`report`) when they are done", f"sweep folder: {folder}"])
        with distributed.rank_zero_then_all() as mine:  # the closing files are written once, by rank 0
            text = (report.write_report([folder], folder, tabled.report_reference, tabled.report_settings,
                                        tabled.report_label) if mine else
                    f"rank {distributed.global_rank()}: the report is written by rank 0 to {folder}")
    out = "\n".join(["sweep runs:", *lines, text, f"sweep folder: {folder}"])
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(done)} sweep runs failed ({', '.join(failed)}; reasons above, "
                         f"`sweep_status` repeats them); fix the cause and run the same command again: only the "
                         f"runs not done are submitted", out)
    return out


class RunsFailed(MamolError):
    """Some runs of a scheduled sweep failed; ``report`` is the sweep's table with each failure's reason."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(message)
        self.report = report
