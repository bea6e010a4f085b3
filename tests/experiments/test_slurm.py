"""launcher=slurm on a real one-node SLURM (``make test-slurm``: ``scripts/slurm_local.sh up``, these tests, ``down``).

Deselected from the quick suite (marker ``slurm``); skipped when no SLURM answers on this machine.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mamol.experiments import launch
from tests.experiments.test_launchers import RUN, _results, _results_of, _updates, preempt_once_trained
from tests.helpers import read_json, run_command


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s.strip() in ("idle", "mix", "alloc") for s in out.stdout.split())


pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not _cluster_up(), reason="no SLURM here: scripts/slurm_local.sh up (root)")]
SLURM = {"launcher": "slurm", "slurm_cpus_per_run": 1, "slurm_time": 30}


def test_a_slurm_sweep_gives_the_serial_numbers(small_scene_root, tmp_path):
    serial = run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="serial"))
    slurm = run_command("sweep", "remote", **_updates(small_scene_root, tmp_path, exp_name="slurm", **SLURM))
    plan = read_json(slurm / "sweep.json")["runs"]
    assert [r["state"] for r in plan] == ["complete"] * 2 and {r["job"]["launcher"] for r in plan} == {"slurm"}
    for seed in (0, 1):
        assert _results(slurm, RUN.format(seed)) == _results(serial, RUN.format(seed))
        job = read_json(slurm / RUN.format(seed) / "job.json")
        assert job["state"] == "complete" and job["job_id"] == plan[seed]["job"]["id"]
    assert (slurm / "report.md").is_file()


def test_a_preempted_slurm_job_is_requeued_and_resumes_in_its_folder(small_scene_root, tmp_path):
    """``scancel --signal=USR2`` (what SLURM sends before pre-emption or the time limit): the job requeues itself
    with the same id and resumes from last.ckpt in the same run folder, ending with the uninterrupted metrics."""
    updates = _updates(small_scene_root, tmp_path, seeds=[0], max_epoch=12, sweep_grid=False, num_workers=1)
    serial = run_command("sweep", "remote", **updates, exp_name="serial")
    folder = tmp_path / "runs" / "preempted"
    def scancel(job: dict) -> str:
        subprocess.run(["scancel", "--signal=USR2", str(job["job_id"])], check=True, timeout=30)
        return str(job["job_id"])

    signalled, watcher = preempt_once_trained(folder / RUN.format(0), scancel)
    run_command("sweep", "remote", **updates, exp_name="preempted", **SLURM)
    watcher.join(timeout=5)
    assert signalled, "the run finished before it could be signalled"
    run = folder / RUN.format(0)
    (version,) = run.glob("version_*")
    assert list(version.glob("config_resumed_*.json")), "the requeued job did not resume"
    job = read_json(run / "job.json")
    assert job["state"] == "complete" and job["attempt"] == 2 and job["job_id"] == signalled[0]
    assert read_json(version / "test_results.json")["metrics"] == _results_of(serial / RUN.format(0))
    logs = "".join(p.read_text() for p in Path(folder / launch.JOBS_FOLDER).rglob("*.err"))
    assert "interrupted by SIGUSR2" in logs
