"""Sacred observers get the whole run: ``python run.py -F <folder> ...`` (file storage) or ``-s <url>`` (SQL).

The one module, beside :mod:`mamol.experiment` and :mod:`mamol.commands`, that imports Sacred: the library
below it hands over Lightning loggers (:func:`mamol.train.run`'s ``loggers``) and callables
(:class:`mamol.experiments.launch.RunJob`'s ``observe``), never a Sacred object. docs/observers.md shows the
commands. What an observed run records:

* **metrics**: every value Lightning logs (``train/loss``, ``lr-AdamW``, ``val/*``, ``test/*``, ``epoch``) at the
  step Lightning logs it, once, through Sacred's metrics API (:class:`SacredLogger`; rank 0 only under DDP).
  Sacred's SQL observer keeps no metrics, so beside each one a :class:`SqlMetrics` observer writes them into a
  table ``metric`` (run_id, name, step, value, timestamp) of the same database.
* **result**: the test's checkpoint-selection metric (``the_metric`` of ``test_results.json``, x 100: the test OA
  of a run on one remote scene): one number, as Sacred's SQL schema stores it (a float column) and its
  dashboards sort by. Every test metric is in the run's info (``test_metrics``) and in ``test_results.json``.
* **artifacts**: the files directly in the command's folder (``test_results.json``, ``test_predictions.npz``,
  ``confusion.*``, ``grid.*``, ``metrics.csv``, ``config.json``, ``console.log``, a report's and a sweep's
  ``report.*`` and figures, ...). Names Sacred's file storage keeps for itself (:data:`RESERVED`) get the prefix
  ``mamol_`` (``mamol_config.json``). Checkpoints stay where they are: their paths are in the info
  (``checkpoints``), and ``run_dir`` names the folder the artifacts were copied from.
* **resources**: the Arrow files of the run's datasets: Sacred stores each once per md5 hash of its content
  (the file storage's ``_resources/<name>_<md5>.arrow``, SQL's ``resource`` table); ``observer_resources=False``
  records only their paths and md5 hashes in the info (``data_files``), for data too large to copy.
* **console output**: the run's ``console.log`` as the run's captured output (``cout.txt``, SQL's
  ``captured_out``) and as an artifact. Sacred's own capture stays off (``SETTINGS.CAPTURE_MODE = "no"``): it
  would wrap the terminal under Lightning's progress bar and keep every redraw, where ``console.log`` keeps the
  lines a reader wants (:mod:`mamol.console`).

A sweep with observers records one Sacred run per run it trains (command ``sweep_run``, the run's own config;
also under ``launcher=local`` and ``slurm``: :class:`ObservedRuns` carries the observers' folder or URL to the
job and builds them there) and one for the sweep command itself (the sweep folder's report files). A run that
a repeated sweep skips as complete records nothing.
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from sacred.dependencies import get_digest
from sacred.initialize import create_run
from sacred.observers import FileStorageObserver, RunObserver, SqlObserver
from sacred.run import Run

from mamol import console, distributed
from mamol.data import catalogue
from mamol.experiment import ex
from mamol.experiments.observed import read_record
from mamol.locks import FileLock
from mamol.settings import from_config
from mamol.tasks import SPLITS

log = logging.getLogger(__name__)

RESERVED = frozenset({"run.json", "config.json", "cout.txt", "metrics.json", "info.json"})
"""File names Sacred's file storage writes itself: a run folder's file of that name is stored as ``mamol_<name>``."""
SQL_NAME_LIMIT = 64  # Sacred's SQL schema: artifact.filename is VARCHAR(64)
CHILD_COMMAND = "sweep_run"  # the command name a sweep's runs are recorded under
START_STALE_S = 300.0  # a sweep run's start (observers claiming its id) lock older than this was abandoned


# ------------------------------------------------------------------------------------------- metrics
class SacredLogger(Logger):
    """A Lightning logger that hands every logged value to the Sacred run (``run.log_scalar(name, value, step)``).

    Rank 0 only (``rank_zero_only``). Lightning adds ``epoch`` to every row it writes; the same name at the same
    step with the same value (the train row and the validation row of one step) is sent once.
    """

    def __init__(self, run: Run) -> None:
        super().__init__()
        self._sacred_run = run
        self._last: dict[str, tuple[int | None, float]] = {}

    @property
    def name(self) -> str:
        return "sacred"

    @property
    def version(self) -> str:
        return str(self._sacred_run._id)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the Sacred run's config is the run's config."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        for name, value in metrics.items():
            number = float(value)
            if self._last.get(name) == (step, number):
                continue
            self._last[name] = (step, number)
            self._sacred_run.log_scalar(name, number, step)


_METRIC_TABLE = sa.Table(
    "metric", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.String(24), index=True),  # Sacred's run.run_id
    sa.Column("name", sa.String(256)),
    sa.Column("step", sa.Integer),
    sa.Column("value", sa.Float),
    sa.Column("timestamp", sa.DateTime),
)


class SqlMetrics(RunObserver):
    """The metrics a :class:`SqlObserver`'s run logs, as rows of the table ``metric`` in its database (Sacred's SQL
    schema has no place for them). Joined to ``run`` by ``run_id``."""

    priority = 0

    def __init__(self, sql: SqlObserver) -> None:
        self.sql = sql
        self.run_id = str(sql.run.run_id)  # read here: the run's row belongs to the session of this thread
        _METRIC_TABLE.create(sql.engine, checkfirst=True)

    def log_metrics(self, metrics_by_name: Mapping[str, Mapping[str, list]], info: Mapping[str, Any]) -> None:
        rows = [{"run_id": self.run_id, "name": name, "step": step, "value": None if math.isnan(value) else value,
                 "timestamp": stamp}
                for name, logged in metrics_by_name.items()
                for step, value, stamp in zip(logged["steps"], logged["values"], logged["timestamps"])]
        if rows:  # through the observer's own (thread-local) session: one connection, as SQLite wants
            self.sql.session.execute(_METRIC_TABLE.insert(), rows)
            self.sql.save()


def read_metrics(engine: sa.engine.Engine, run_id: str) -> dict[str, list[tuple[int, float | None]]]:
    """The metrics :class:`SqlMetrics` stored for Sacred run ``run_id``: name -> [(step, value), ...] in order."""
    query = (sa.select(_METRIC_TABLE.c.name, _METRIC_TABLE.c.step, _METRIC_TABLE.c.value)
             .where(_METRIC_TABLE.c.run_id == str(run_id)).order_by(_METRIC_TABLE.c.id))
    out: dict[str, list[tuple[int, float | None]]] = {}
    with engine.connect() as connection:
        for name, step, value in connection.execute(query):
            out.setdefault(name, []).append((step, value))
    return out


# ------------------------------------------------------------------------------------------- one run
def _attach_sql_metrics(run: Run) -> None:
    for observer in list(run.observers):
        if isinstance(observer, SqlObserver) and observer.run is not None:
            run.observers.append(SqlMetrics(observer))


def _artifact_name(path: Path) -> str:
    return f"mamol_{path.name}" if path.name in RESERVED else path.name


def _artifacts(folder: Path) -> list[Path]:
    """The files directly in ``folder`` worth keeping with the run (no hidden files, locks or TensorBoard events:
    the metrics are recorded already)."""
    out = []
    for path in sorted(folder.iterdir()):
        if (not path.is_file() or path.name.startswith(".") or path.name.startswith("events.out.tfevents")
                or path.suffix in (".lock", ".tmp")):
            continue
        if len(_artifact_name(path)) > SQL_NAME_LIMIT:
            log.warning("%s: its name is too long for Sacred's SQL schema (%d characters): not stored as an artifact",
                        path, SQL_NAME_LIMIT)
            continue
        out.append(path)
    return out


def data_files(config: Mapping[str, Any]) -> list[Path]:
    """The Arrow files of the datasets a run reads (each split present in ``data_root``)."""
    if not config.get("data_root"):
        return []
    root = Path(config["data_root"])
    out = []
    for name in catalogue.canonical_names(config.get("datasets")):
        entry = catalogue.entry(name, root)
        for split in SPLITS:
            path = root / f"{entry.arrow_stem(split)}.arrow"
            if path.is_file():
                out.append(path.resolve())
    return out


@dataclass(frozen=True)
class ObserverOptions:
    """What the observers store beyond the run's own files."""

    observer_resources: bool  # the Arrow files themselves as resources (False: their paths and md5 in the info)


def record_folder(run: Run, folder: Path | None, with_data: bool = True) -> float | None:
    """Give ``run`` what ``folder`` holds: its files as artifacts, its ``console.log`` as the captured output, the
    run folder, its checkpoints and its test metrics in the info, and (``with_data``) the Arrow files of the run's
    datasets as resources. Returns the run's result: the test's ``the_metric`` (None without a test)."""
    if folder is None or not Path(folder).is_dir():
        return None
    folder = Path(folder).resolve()
    run.info["run_dir"] = str(folder)
    tested = read_record(folder / "test_results.json")
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt")) if (folder / "checkpoints").is_dir() else []
    if checkpoints or tested.get("checkpoint"):
        run.info["checkpoints"] = {"tested": tested.get("checkpoint"), **{p.name: str(p) for p in checkpoints}}
    if tested.get("metrics"):
        run.info["test_metrics"] = dict(tested["metrics"])
    if with_data:
        files = data_files(run.config)
        run.info["data_files"] = {str(p): get_digest(p) for p in files}
        if from_config(ObserverOptions, run.config).observer_resources:
            for path in files:
                run.add_resource(str(path))
    for path in _artifacts(folder):
        run.add_artifact(str(path), name=_artifact_name(path))
    log_file = folder / console.LOG_FILE
    if log_file.is_file():
        run.captured_out = log_file.read_text(errors="replace")
    result = (tested.get("metrics") or {}).get("the_metric")
    return None if result is None else float(result)


@contextlib.contextmanager
def observing(run: Run | None) -> Iterator[list[Logger]]:
    """``with observing(_run) as loggers:`` — the Lightning loggers that feed ``run`` (none when it has no
    observers, or outside rank 0); SQL observers get their metrics table."""
    if not observed(run):
        yield []
        return
    _attach_sql_metrics(run)
    yield [SacredLogger(run)]


def observed(run: Run | None) -> bool:
    """Whether ``run`` records anything (observers, and this is rank 0); its observer keys are checked first, so a
    bad value fails before any training (ConfigError naming the key)."""
    if run is None:
        return False
    from_config(ObserverOptions, run.config)
    return bool(run.observers) and not run.unobserved and distributed.global_rank() == 0


# ------------------------------------------------------------------------------------------- a sweep's runs
@dataclass(frozen=True)
class ObserverSpec:
    """An observer as it can travel to a job: its kind and its folder or database URL."""

    kind: str  # "file_storage" | "sql"
    where: str

    def build(self) -> RunObserver:
        return FileStorageObserver(self.where) if self.kind == "file_storage" else SqlObserver(self.where)


def specs_of(observers: Sequence[RunObserver]) -> tuple[ObserverSpec, ...]:
    """What builds ``observers`` again elsewhere; an observer of another kind gets a warning and is not carried."""
    specs = []
    for observer in observers:
        if isinstance(observer, FileStorageObserver):
            specs.append(ObserverSpec("file_storage", str(Path(observer.basedir).absolute())))
        elif isinstance(observer, SqlObserver):
            specs.append(ObserverSpec("sql", observer.engine.url.render_as_string(hide_password=False)))
        elif not isinstance(observer, SqlMetrics):
            log.warning("the sweep's runs are not recorded by the %s (only file storage -F and SQL -s observers are "
                        "carried into them)", type(observer).__name__)
    return tuple(specs)


class _Work:
    """What Sacred calls as a run's main function: ``work(run)`` (Sacred reads ``prefix`` and ``signature.name``)."""

    prefix = ""

    def __init__(self, name: str, work: Callable[[], float | None]) -> None:
        self.signature = type("Signature", (), {"name": name})()
        self.work = work

    def __call__(self) -> float | None:
        return self.work()


@dataclass(frozen=True)
class ObservedRuns:
    """``observe(cfg, work)`` of :func:`mamol.experiments.launch.execute`: ``work(loggers)`` (training and grid
    of one sweep run; returns its run folder) inside a new Sacred run of ``ex`` with the run's config, recorded
    by new observers built from ``specs``. Picklable: submitit carries it to ``local`` and ``slurm`` jobs."""

    specs: tuple[ObserverSpec, ...]

    def __call__(self, cfg: Mapping[str, Any], work: Callable[[list[Logger]], Path | None]) -> Path | None:
        if distributed.global_rank() != 0:  # under DDP the other ranks work unobserved
            return work([])
        folder: list[Path | None] = [None]
        # Observers number runs by reading the highest id (SQL) and claiming the next: runs starting at once
        # (launcher=local, slurm) take turns until each has its id, with a lock in the sweep folder.
        starting = FileLock(Path(cfg["log_dir"]) / ".observers.lock", stale_after=START_STALE_S)

        def main() -> float | None:
            if starting.owner is not None:
                starting.release()
            with observing(run) as loggers:
                try:
                    folder[0] = work(loggers)
                finally:  # a failed run keeps what its folder holds
                    result = record_folder(run, folder[0])
            return result

        with warnings.catch_warnings():  # Sacred's notes on a config passed whole (every key "changed")
            warnings.simplefilter("ignore")
            run = _child_run(dict(cfg), _Work(CHILD_COMMAND, main))
        run.observers = [spec.build() for spec in self.specs]
        starting.acquire()
        try:
            run()
        finally:
            if starting.owner is not None:
                starting.release()
        return folder[0]


def _child_run(cfg: dict[str, Any], main: _Work) -> Run:
    """A Sacred run of ``ex`` with config ``cfg`` whose main function is ``main``, not registered as a command
    (it would be listed by ``run.py help``): registered only while the run is made."""
    ex.commands[CHILD_COMMAND] = main
    try:
        run = create_run(ex, CHILD_COMMAND, config_updates=cfg)
    finally:
        del ex.commands[CHILD_COMMAND]
    run.meta_info["command"] = CHILD_COMMAND
    return run


def children_of(run: Run | None) -> ObservedRuns | None:
    """What records a sweep's runs with the observers of the sweep command's ``run`` (None: nothing observes it)."""
    if not observed(run):
        return None
    specs = specs_of(run.observers)
    return ObservedRuns(specs) if specs else None


@ex.option_hook
def _rank_zero_observes(options: dict[str, Any]) -> None:
    """Under DDP every process runs the command line: only rank 0's run is observed (one record per run)."""
    if distributed.global_rank() != 0:
        options["--unobserved"] = True
