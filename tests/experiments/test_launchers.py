"""Sweep launchers: local processes give the serial numbers, a pre-empted job resumes in its own folder, and
sweep_status says what is done, failed and left."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mamol.errors import ConfigError
from mamol.experiments import launch
from mamol.experiments.sweep import RunsFailed
from tests.helpers import TINY, cli, cli_updates, read_json, run_command, short_run

RUN = "mamol-synthetic-train_both0.7-seed{}"


def _updates(data_root: Path, tmp: Path, **changes) -> dict:
    return {**short_run(data_root, tmp), "seeds": [0, 1], "methods": ["mamol"], "grid_types": ["lidar"],
            "grid_ratios": [0.0, 1.0], "cpu_threads": 1, **changes}


def _results(folder: Path, name: str) -> tuple[dict, list]:
    (version,) = (folder / name).glob("version_*")
    return read_json(version / "test_results.json")["metrics"], read_json(version / "grid.json")["rows"]


def test_local_launcher_gives_the_serial_numbers_and_status_says_done(small_scene_root, tmp_path):
    """The same two runs, one after another here and as two processes at once: identical metrics and grids."""
    serial = run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="serial"))
    local = run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="local",
                                                      launcher="local", max_parallel=2))
    for seed in (0, 1):
        assert _results(local, RUN.format(seed)) == _results(serial, RUN.format(seed))
        job = read_json(local / RUN.format(seed) / "job.json")
        assert job["state"] == "complete" and job["pid"] != os.getpid()  # trained in a process of its own
    plan = read_json(local / "sweep.json")["runs"]
    assert [r["state"] for r in plan] == ["complete"] * 2 and {r["job"]["launcher"] for r in plan} == {"local"}
    assert (local / "report.md").is_file()

    proc = cli("sweep_status", "with", "remote", *cli_updates({**TINY, **_updates(
        small_scene_root, tmp_path, exp_name="local", launcher="local")}), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"sweep {local}: 2 done, 0 running, 0 queued, 0 failed, 0 left (of 2)" in proc.stdout
    assert "the sweep is done" in proc.stdout

    # Run again: nothing is submitted, the runs are reported as complete.
    again = run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="local",
                                                      launcher="local"))
    assert read_json(again / RUN.format(0) / "job.json")["state"] == "complete"


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (what SLURM signals: all processes of the job step)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def test_a_preempted_local_job_is_requeued_and_resumes_in_its_folder(small_scene_root, tmp_path):
    """SIGUSR2 to the job's processes while it trains (as SLURM signals a job it pre-empts): the run stops at a
    batch boundary, the job requeues itself, resumes from last.ckpt in the same run folder, and ends with the
    uninterrupted run's metrics."""
    updates = _updates(small_scene_root, tmp_path, seeds=[0], max_epoch=12, sweep_grid=False, num_workers=1)
    serial = run_command("sweep", "remote", **updates, exp_name="serial")
    folder = tmp_path / "runs" / "preempted"

    def signal_the_job(job: dict) -> int:  # what SLURM signals: every process of the job step
        for pid in _descendants(int(job["pid"])):
            os.kill(pid, signal.SIGUSR2)
        return int(job["pid"])

    signalled, watcher = preempt_once_trained(folder / RUN.format(0), signal_the_job)
    run_command("sweep", "remote", **updates, exp_name="preempted", launcher="local", max_parallel=1)
    watcher.join(timeout=5)
    assert signalled, "the run finished before it could be signalled"
    run = folder / RUN.format(0)
    (version,) = run.glob("version_*")  # the same folder, not a new version trained from scratch
    assert list(version.glob("config_resumed_*.json")), "the requeued job did not resume"
    job = read_json(run / "job.json")
    assert job["state"] == "complete" and job["attempt"] == 2 and job["pid"] != signalled[0]
    assert read_json(version / "test_results.json")["metrics"] == _results_of(serial / RUN.format(0))
    log = "".join(p.read_text() for p in (folder / launch.JOBS_FOLDER).rglob("*.err"))
    assert "interrupted by SIGUSR2" in log and "requeueing job" in log


def preempt_once_trained(run: Path, send: Callable[[dict], object], timeout_s: float = 600
                         ) -> tuple[list, threading.Thread]:
    """A thread that calls ``send(job.json)`` once, when the run in ``run`` is training past its first epoch;
    returns (what ``send`` returned, in a list once sent; the thread)."""
    signalled: list = []

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not signalled:
            job = launch.read_job(run)
            lasts = list(run.glob("version_*/checkpoints/last.ckpt"))
            if job.get("state") == "running" and lasts and _epoch(lasts[0]) >= 1:
                signalled.append(send(job))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return signalled, watcher


def _epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # being replaced
        return -1


def _results_of(run: Path) -> dict:
    (version,) = run.glob("version_*")
    return read_json(version / "test_results.json")["metrics"]


def test_a_failed_local_run_is_reported_with_its_reason_and_retried_alone(small_scene_root, tmp_path):
    """One run that cannot start (no CLIP weights) fails with its one-line reason; the other finishes, the report
    covers it; sweep_status lists the failure; run again, only the failed run is submitted."""
    methods = ["mamol", {"name": "no_weights", "method": "mamol", "clip_random_init": False,
                         "clip_weights": str(tmp_path / "absent.pt")}]
    updates = _updates(small_scene_root, tmp_path, seeds=[0], methods=methods, exp_name="failing",
                       launcher="local", sweep_grid=False)
    with pytest.raises(RunsFailed, match=r"1 of 2 sweep runs failed \(no_weights-"):
        run_command("sweep", "remote", **updates)
    folder = tmp_path / "runs" / "failing"
    failed = read_json(folder / "no_weights-synthetic-train_both0.7-seed0" / "job.json")
    assert failed["state"] == "failed" and "absent.pt" in failed["reason"] and "\n" not in failed["reason"]
    assert (folder / "report.md").is_file()

    proc = cli("sweep_status", "with", "remote", *cli_updates({**TINY, **updates}), timeout=300)
    assert "1 done, 0 running, 0 queued, 1 failed, 0 left (of 2)" in proc.stdout, proc.stdout + proc.stderr
    assert "no_weights-synthetic-train_both0.7-seed0" in proc.stdout and "absent.pt" in proc.stdout
    assert "run the same `sweep` command again" in proc.stdout

    first = read_json(folder / "mamol-synthetic-train_both0.7-seed0" / "job.json")
    proc = cli("sweep", "with", "remote", *cli_updates({**TINY, **updates}), timeout=300)
    assert proc.returncode == 2 and "FAILED" in proc.stdout and proc.stderr.count("\n") == 1, proc.stderr
    assert read_json(folder / "mamol-synthetic-train_both0.7-seed0" / "job.json") == first  # not run again


def test_status_of_reads_the_job_and_the_queue(tmp_path):
    run = tmp_path / "run"
    assert launch.status_of(run, False, None, None) == launch.RunStatus("left", "")
    launch.write_job(run, "running", job_id="17")  # this process: alive
    assert launch.status_of(run, False, None, None).state == "running"
    launch.write_job(run, "running", job_id="17")
    record = json.loads((run / "job.json").read_text())
    record["pid"] = 2 ** 22 + 1  # no such process on this host
    (run / "job.json").write_text(json.dumps(record))
    status = launch.status_of(run, False, None, None)
    assert status.state == "failed" and "ended without a result" in status.detail
    submitted = {"launcher": "slurm", "id": "42_3", "host": "login", "logs": str(tmp_path / "logs")}
    assert launch.status_of(run, False, submitted, {"42_3": "PENDING"}) == launch.RunStatus(
        "queued", "SLURM job 42_3 PENDING")  # requeued by SLURM: the queue has the last word
    assert launch.status_of(run, False, submitted, {"42_3": "RUNNING"}).state == "running"
    assert launch.status_of(run, False, submitted, {}).state == "failed"
    launch.write_job(run, "failed", reason="ConfigError: bad")
    assert launch.status_of(run, False, submitted, {}) == launch.RunStatus("failed", "ConfigError: bad")
    (run / "version_0").mkdir()
    (run / "version_0" / "test_results.json").write_text("{}")
    assert launch.status_of(run, False, submitted, {}).state == "done"
    assert socket.gethostname()


def test_launcher_settings_are_checked_before_anything_runs(small_scene_root, tmp_path):
    with pytest.raises(ConfigError, match="launcher='cluster': expected one of"):
        run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="x", launcher="cluster"))
    with pytest.raises(ConfigError, match=r"slurm_extra\[0\]='qos=high'"):
        run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="x", slurm_extra=["qos=high"]))
    with pytest.raises(ConfigError, match="launcher=local runs one process per run"):
        run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="x", launcher="local",
                                                  num_processes=2, per_gpu_batchsize=16))
    assert not (tmp_path / "runs" / "x").exists()
    assert launch.extra_parameters(["#SBATCH --qos=high", "--exclusive", "--constraint=a100"]) == {
        "qos": "high", "exclusive": True, "constraint": "a100"}
