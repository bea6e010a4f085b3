"""Where a sweep's runs train: ``launcher=serial`` (one after another in this process), ``launcher=local`` (up
to ``max_parallel`` runs at once on this machine, each its own process) or ``launcher=slurm`` (one SLURM job
per run, submitted as a job array through submitit).

Every launcher trains a run the same way (:func:`execute`: skip, resume from ``last.ckpt``, grid only, or
train) and ``cpu_threads`` fixes the torch threads of every run under any launcher, so a run's metrics do not
depend on the launcher or on what runs beside it.

Each run keeps its own record ``<sweep>/<run name>/job.json`` (``queued`` → ``running`` → ``complete`` |
``failed`` with a one-line reason | ``requeued``), written by whoever holds the run at the time: the submitter
before submitting, then the job itself. ``sweep.json`` records each run's launcher and job id, so
``sweep_status`` can ask the scheduler (``squeue``) or the process table whether a ``queued`` or ``running``
run is still alive; one that is not ended without a result (killed, out of memory or time) and is failed.

Pre-emption and time limits: SLURM sends SIGUSR2 (submitit's ``--signal=USR2@90``) before it stops a job.
During training the run stops at the next batch boundary (like SIGTERM, :class:`mamol.train.StopOnSignal`),
the job requeues itself (``scontrol requeue``; a ``local`` job is restarted by its controller) and, started
again with the same job id, resumes from ``checkpoints/last.ckpt`` in the same run folder. Outside training
(testing, the grid) submitit's own handler requeues it through :meth:`RunJob.checkpoint`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mamol import console, distributed, train
from mamol.errors import ConfigError, MamolError, TrainingInterrupted
from mamol.files import write_json
from mamol.locks import held_or_refused
from mamol.settings import coerce, from_config, require

log = logging.getLogger(__name__)

LAUNCHERS = ("serial", "local", "slurm")
JOB_FILE = "job.json"
JOBS_FOLDER = ".jobs"  # inside the sweep folder: submitit's pickles and each job's stdout / stderr
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # a local job has no time limit worth the name
PATH_KEYS = ("data_root", "log_dir", "missing_table_root", "clip_weights", "load_path")


@dataclass(frozen=True)
class LaunchOptions:
    """How the runs of a sweep are launched (the keys are explained in ``mamol/experiment.py``)."""

    launcher: str
    max_parallel: int
    cpu_threads: int | None
    slurm_partition: str | None
    slurm_account: str | None
    slurm_time: int  # minutes per attempt
    slurm_cpus_per_run: int | None
    slurm_mem_gb: float | None
    slurm_array_parallelism: int
    slurm_extra: tuple[str, ...]
    sweep_wait: bool

    def __post_init__(self) -> None:
        require(self.launcher in LAUNCHERS, f"launcher={self.launcher!r}: expected one of {list(LAUNCHERS)}")
        require(self.max_parallel >= 1, f"max_parallel must be >= 1, found {self.max_parallel}")
        require(self.cpu_threads is None or self.cpu_threads >= 1,
                f"cpu_threads must be None or >= 1, found {self.cpu_threads}")
        require(self.slurm_time >= 1, f"slurm_time (minutes per run) must be >= 1, found {self.slurm_time}")
        require(self.slurm_array_parallelism >= 1,
                f"slurm_array_parallelism must be >= 1, found {self.slurm_array_parallelism}")
        extra_parameters(self.slurm_extra)  # a bad line is refused before anything is submitted


def launch_options(config: Mapping[str, Any]) -> LaunchOptions:
    return from_config(LaunchOptions, config)


def extra_parameters(lines: Sequence[str]) -> dict[str, Any]:
    """``slurm_extra`` (``["--qos=high", "--exclusive"]``, ``#SBATCH`` optional) as submitit's
    ``additional_parameters``: ``{"qos": "high", "exclusive": True}``."""
    out: dict[str, Any] = {}
    for i, line in enumerate(lines):
        text = str(line).strip().removeprefix("#SBATCH").strip()
        if not text.startswith("--") or " " in text.split("=", 1)[0]:
            raise ConfigError(f"slurm_extra[{i}]={line!r}: expected an sbatch option like '--qos=high' or "
                              f"'--exclusive'")
        key, _, value = text[2:].partition("=")
        out[key.replace("-", "_")] = value if value else True
    return out


# ------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunState:
    """Where a planned run stands on disk: its finished run folder, or what is left of an interrupted one."""

    done: Path | None  # version folder with test_results.json
    needs_grid: bool  # finished training, but its grid is missing
    resume: Path | None  # last.ckpt of an interrupted training


def _version_number(path: Path) -> int:
    tail = path.name.split("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def state_of(folder: Path, with_grid: bool) -> RunState:
    """The state of the run whose version folders live in ``folder``."""
    versions = sorted(folder.glob("version_*"), key=_version_number)
    for version in reversed(versions):
        if (version / "test_results.json").is_file():
            return RunState(version, with_grid and not (version / "grid.json").is_file(), None)
    last = next((v / "checkpoints" / "last.ckpt" for v in reversed(versions)
                 if (v / "checkpoints" / "last.ckpt").is_file()), None)
    return RunState(None, False, last)


Work = Callable[[list[Any]], "Path | None"]
"""What :func:`execute` does for a run, given extra Lightning loggers: train and/or grid; returns the run folder."""
Observe = Callable[[Mapping[str, Any], Work], "Path | None"]
"""``observe(cfg, work)``: runs ``work`` recorded as a run of its own (by Sacred's observers: mamol/observers.py)."""


def unobserved(cfg: Mapping[str, Any], work: Work) -> Path | None:
    """The :data:`Observe` of a sweep without observers: the work, with no extra logger."""
    return work([])


def execute(cfg: Mapping[str, Any], folder: Path, with_grid: bool, grid_of: Callable[..., None],
            note: Callable[[str], None] = log.info, observe: Observe = unobserved) -> str:
    """Bring the run whose version folders live in ``folder`` to its end: skip it when complete, evaluate only
    the grid when trained, resume an interrupted training from ``last.ckpt``, or train it. Returns what it did.

    ``grid_of(cfg, version folder, checkpoint)`` evaluates the grid (rank 0 alone under DDP: the caller's
    business); ``note`` receives one line saying what is about to happen; ``observe`` runs the work (not a
    skip) as a recorded run of its own.
    """
    state = state_of(folder, with_grid)
    if state.done is not None and not state.needs_grid:
        return "skipped (complete)"
    if state.done is not None:
        done = state.done
        note("trained; evaluating the grid")
        tested = json.loads((done / "test_results.json").read_text())

        def grid_only(loggers: list[Any]) -> Path:
            grid_of(cfg, done, tested.get("checkpoint"))
            return done
        observe(cfg, grid_only)
        return "grid added"
    cfg = dict(cfg)
    if state.resume is not None:
        note(f"resuming from {state.resume}")
        cfg["resume_from"] = str(state.resume)
    else:
        note("training")

    def train_and_grid(loggers: list[Any]) -> Path:
        results = train.run(cfg, loggers=loggers)
        if with_grid:
            grid_of(cfg, Path(results["run_dir"]), results.get("checkpoint"))
        return Path(results["run_dir"])
    observe(cfg, train_and_grid)
    return "resumed and finished" if state.resume is not None else "trained"


def read_job(folder: Path) -> dict[str, Any]:
    """The run's ``job.json`` (``{}`` when there is none or it cannot be read)."""
    try:
        record = json.loads((folder / JOB_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_job(folder: Path, state: str, **fields: Any) -> None:
    """Record the run's state in its ``job.json`` (atomically), with who wrote it and when."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), **fields}
    write_json(folder / JOB_FILE, record)


def one_line(err: BaseException) -> str:
    """An error as the one line ``sweep_status`` shows for a failed run."""
    text = str(err).strip().splitlines()
    message = text[0] if text else ""
    return message if isinstance(err, MamolError) else f"{type(err).__name__}: {message}"


def _scheduler_job() -> tuple[Any, str | None]:
    """(submitit's job environment, job id) when this process is a submitit job, else (None, None)."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return None, None
    import submitit

    env = submitit.JobEnvironment()
    return env, env.job_id


class RunJob:
    """One sweep run as a submitit job (also called in-process by the serial launcher).

    Holds the run's whole config (paths made absolute), so a job started anywhere trains exactly what the
    submitter planned; submitit pickles it (``observe`` too: the sweep's observers, :func:`execute`).
    ``checkpoint`` makes it requeue-able: requeued, it is the same call.
    """

    def __init__(self, cfg: Mapping[str, Any], folder: Path, with_grid: bool, cpu_threads: int | None,
                 observe: Observe = unobserved) -> None:
        self.cfg = absolute_paths(cfg)
        self.folder = Path(folder).resolve()
        self.with_grid = with_grid
        self.cpu_threads = cpu_threads
        self.observe = observe

    @property
    def name(self) -> str:
        return self.folder.name

    @console.recorded
    def __call__(self) -> str:
        from mamol.experiments import grid  # the grid imports training: keep this module light to pickle

        env, job_id = _scheduler_job()
        if env is not None and not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # Under DDP (serial launcher, several processes) every rank trains; rank 0 alone keeps the records.
        rank0 = distributed.global_rank() == 0
        record = write_job if rank0 else (lambda *args, **kwargs: None)
        previous = read_job(self.folder)
        attempt = int(previous.get("attempt", 0)) + 1 if previous.get("job_id") == job_id else 1
        threads = torch.get_num_threads()
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        lock = (held_or_refused(self.folder.with_name(f".{self.name}.job.lock"), f"run {self.folder}") if rank0
                else contextlib.nullcontext())
        try:
            with lock:
                record(self.folder, "running", job_id=job_id, attempt=attempt)
                if rank0:  # the run's own folder: every attempt's output, appended
                    console.save_to(self.folder)
                what = execute(self.cfg, self.folder, self.with_grid, grid.evaluate_into,
                               note=lambda text: log.info("%s: %s", self.name, text), observe=self.observe)
        except TrainingInterrupted as err:
            if env is not None and err.signal_name == "SIGUSR2":  # pre-empted or near its time limit
                record(self.folder, "requeued", job_id=job_id, attempt=attempt, reason=one_line(err))
                log.warning("%s: %s; requeueing job %s", self.name, one_line(err), job_id)
                env._requeue(0)  # scontrol requeue (SLURM) or exit code 'requeue me' (local controller)
                sys.exit(-1)  # like submitit's own handler: no result file, the requeued job carries on
            # SIGTERM / SIGINT: stopped, resumable (SLURM may requeue it itself: sweep_status asks the queue)
            record(self.folder, "stopped", job_id=job_id, attempt=attempt, reason=one_line(err))
            raise
        except Exception as err:
            record(self.folder, "failed", job_id=job_id, attempt=attempt, reason=one_line(err))
            raise
        except BaseException as err:  # Ctrl-C, or submitit's requeue (SystemExit): what is on disk resumes
            if read_job(self.folder).get("state") != "requeued":
                record(self.folder, "stopped", job_id=job_id, attempt=attempt,
                       reason=one_line(err) if str(err) else type(err).__name__)
            raise
        finally:
            torch.set_num_threads(threads)
        record(self.folder, "complete", job_id=job_id, attempt=attempt, what=what)
        return what

    def checkpoint(self) -> Any:
        """submitit's requeue hook (a signal outside training): the same call again; it resumes from disk."""
        import submitit

        _, job_id = _scheduler_job()
        write_job(self.folder, "requeued", job_id=job_id, reason="signalled outside training")
        return submitit.helpers.DelayedSubmission(self)


def absolute_paths(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config with its path keys made absolute: a job may start in another working directory."""
    out = dict(cfg)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value:
            out[key] = str(Path(value).expanduser().absolute())
    return out


# ------------------------------------------------------------------------------------------- launchers
@dataclass
class Submitted:
    """A submitted run: its job (submitit) and what ``sweep.json`` records of it."""

    job: RunJob
    handle: Any  # submitit Job
    record: dict[str, Any]


def job_record(launcher: str, handle: Any, logs: Path) -> dict[str, Any]:
    return {"launcher": launcher, "id": str(handle.job_id), "host": socket.gethostname(), "submitted": time.time(),
            "logs": str(logs)}


def _scheduled(options: LaunchOptions, jobs: Sequence[RunJob], folder: Path) -> Any:
    """The submitit executor of ``options.launcher`` for these jobs."""
    import submitit

    logs = folder / JOBS_FOLDER
    first = jobs[0].cfg
    gpus = coerce("num_gpus", first["num_gpus"], int)
    if options.launcher == "local":
        executor = submitit.LocalExecutor(folder=logs / "%j")
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=gpus)
        return executor
    executor = submitit.SlurmExecutor(folder=logs / "%j", max_num_timeout=1000)
    tasks = gpus if gpus else coerce("num_processes", first["num_processes"], int)
    parameters: dict[str, Any] = {
        "job_name": f"mamol-{folder.name}", "time": options.slurm_time, "nodes": coerce("num_nodes",
                                                                                          first["num_nodes"], int),
        "ntasks_per_node": tasks, "array_parallelism": options.slurm_array_parallelism,
    }
    if gpus:
        parameters["gpus_per_node"] = gpus
    if options.slurm_cpus_per_run:
        parameters["cpus_per_task"] = max(options.slurm_cpus_per_run // tasks, 1)
    if options.slurm_mem_gb:
        parameters["mem"] = f"{int(round(options.slurm_mem_gb * 1024))}M"
    if options.slurm_partition:
        parameters["partition"] = options.slurm_partition
    if options.slurm_account:
        parameters["account"] = options.slurm_account
    extra = extra_parameters(options.slurm_extra)
    if extra:
        parameters["additional_parameters"] = extra
    executor.update_parameters(**parameters)
    return executor


def check_launcher(options: LaunchOptions, cfg: Mapping[str, Any]) -> None:
    """Refuse a launcher that cannot run these runs, before anything is submitted."""
    if options.launcher == "serial":
        return
    gpus = coerce("num_gpus", cfg["num_gpus"], int)
    processes = coerce("num_processes", cfg["num_processes"], int)
    if options.launcher == "local":
        require(options.sweep_wait, "launcher=local runs its jobs under this command: sweep_wait=False needs "
                                    "launcher=slurm")
        require(coerce("num_nodes", cfg["num_nodes"], int) == 1 and processes == 1 and gpus <= 1,
                f"launcher=local runs one process per run (num_gpus <= 1, num_processes=1, num_nodes=1), found "
                f"num_gpus={gpus}, num_processes={processes}, num_nodes={cfg['num_nodes']}: use launcher=slurm or "
                f"launcher=serial for runs over several devices")
        require(not gpus or options.max_parallel <= 1,
                "launcher=local with num_gpus=1 runs one run per GPU: max_parallel above 1 would put runs on "
                "the same GPU; use launcher=slurm to spread runs over GPUs")
    if options.launcher == "slurm":
        require(shutil.which("sbatch") is not None,
                "launcher=slurm: no `sbatch` on PATH; submit from a SLURM login node (scripts/slurm_local.sh up "
                "starts a one-node SLURM on this machine)")


def submit(options: LaunchOptions, jobs: Sequence[RunJob], folder: Path) -> list[Submitted]:
    """Submit ``jobs`` (local: all at once, use :func:`run_local` for a throttle; slurm: one job array)."""
    if not jobs:
        return []
    for job in jobs:  # before submitting: a job may start and record 'running' at once
        write_job(job.folder, "queued", launcher=options.launcher)
    executor = _scheduled(options, jobs, folder)
    with executor.batch():
        handles = [executor.submit(job) for job in jobs]
    return [Submitted(job, handle, job_record(options.launcher, handle, handle.paths.stdout.parent))
            for job, handle in zip(jobs, handles)]


def run_local(options: LaunchOptions, jobs: Sequence[RunJob], folder: Path,
              on_submit: Callable[[Submitted], None], poll_s: float = 0.5) -> list[Submitted]:
    """Run ``jobs`` as local processes, at most ``max_parallel`` at once, until all have ended."""
    if not jobs:
        return []
    executor = _scheduled(options, jobs, folder)
    pending: list[RunJob] = list(jobs)
    active: list[Submitted] = []
    finished: list[Submitted] = []
    for job in jobs:
        write_job(job.folder, "queued", launcher="local")
    while pending or active:
        while pending and len(active) < options.max_parallel:
            job = pending.pop(0)
            handle = executor.submit(job)
            submitted = Submitted(job, handle, job_record("local", handle, handle.paths.stdout.parent))
            on_submit(submitted)
            active.append(submitted)
        time.sleep(poll_s)
        for submitted in [s for s in active if s.handle.done()]:
            active.remove(submitted)
            finished.append(submitted)
    return finished


# ------------------------------------------------------------------------------------------- status
def slurm_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """SLURM's state of each job still known to the queue (``squeue``); None when squeue cannot be asked."""
    if not job_ids or shutil.which("squeue") is None:
        return None if shutil.which("squeue") is None else {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _pid_alive(host: str | None, pid: Any) -> bool | None:
    """Whether process ``pid`` on ``host`` runs (None: another host, cannot tell)."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


@dataclass(frozen=True)
class RunStatus:
    """What ``sweep_status`` says of one run."""

    state: str  # done | running | queued | failed | left
    detail: str = ""


def status_of(folder: Path, with_grid: bool, submitted: Mapping[str, Any] | None,
              queue: Mapping[str, str] | None) -> RunStatus:
    """The status of the run in ``folder`` from its files, its ``job.json``, the job ``sweep.json`` recorded
    (``submitted``) and the SLURM queue (``queue``: job id → state; None when not asked or not askable).

    The scheduler has the last word on a job it still holds (a pre-empted job waits in the queue again);
    a ``queued`` or ``running`` record whose job is gone ended without a result: failed.
    """
    state = state_of(folder, with_grid)
    if state.done is not None and not state.needs_grid:
        return RunStatus("done", str(state.done))
    job = read_job(folder)
    recorded = job.get("state")
    launcher = (submitted or {}).get("launcher", job.get("launcher"))
    job_id = str((submitted or {}).get("id", ""))
    in_queue = launcher == "slurm" and queue is not None and bool(job_id)
    if in_queue and job_id in queue:
        return RunStatus("running" if queue[job_id] == "RUNNING" else "queued", f"SLURM job {job_id} {queue[job_id]}")
    if recorded == "failed":
        return RunStatus("failed", str(job.get("reason", "no reason recorded")))
    if recorded in ("queued", "running", "requeued"):
        alive: bool | None
        if in_queue:
            alive = False
        elif launcher == "local" and submitted and recorded != "running":  # its controller starts it (again)
            alive = _pid_alive(submitted.get("host"), submitted.get("id"))
        else:  # the process that wrote job.json: the run itself, or the submitter holding it in its queue
            alive = _pid_alive(job.get("host"), job.get("pid"))
        if alive is not False:
            where = f" on {job.get('host')}" if recorded == "running" else ""
            return RunStatus("running" if recorded == "running" else "queued",
                             f"{launcher or 'serial'} job {job_id or job.get('pid')}{where}".strip())
        logs = (submitted or {}).get("logs")
        return RunStatus("failed", "the job ended without a result (killed, or out of time or memory?)"
                         + (f"; its log: {_last_log(Path(logs))}" if logs else ""))
    stopped = f"stopped ({job['reason']}); " if recorded == "stopped" and job.get("reason") else ""
    if state.needs_grid:
        return RunStatus("left", f"{stopped}trained; its grid is left")
    if state.resume is not None:
        return RunStatus("left", f"{stopped}resumes from {state.resume}")
    return RunStatus("left", stopped.removesuffix("; "))


def _last_log(folder: Path) -> str:
    """The job's stderr file, with its last non-empty line when there is one."""
    files = sorted(folder.glob("*.err"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not files:
        return str(folder)
    lines = [line for line in files[-1].read_text(errors="replace").splitlines() if line.strip()]
    return f"{files[-1]}" + (f" ({lines[-1].strip()[:200]})" if lines else "")


