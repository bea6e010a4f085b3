"""The GPU check script runs end to end in its CPU smoke mode, so it has not rotted when a GPU is lent."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from tests.helpers import REPO


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_smoke_runs_every_step(tmp_path):
    """Every step of the GPU check, on the CPU with the tiny model and the smallest sizes (DDP: 2 processes)."""
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {name: (result, figures) for name, result, figures in json.loads((tmp_path / "summary.json").read_text())}
    assert set(rows) == {"cuda tests", "step tiny fp32", "step tiny bf16", "zero-sync forward", "small scene",
                         "ddp 2 CPU processes", "small run (tiny)", "paper run estimate"}
    assert rows["cuda tests"][0].startswith("ok") and "skipped" in rows["cuda tests"][1]  # no GPU here
    for precision in ("fp32", "bf16"):
        assert "samples/s" in rows[f"step tiny {precision}"][1]
    assert rows["ddp 2 CPU processes"][0].startswith("ok") and rows["ddp 2 CPU processes"][1].startswith("test OA ")
    assert rows["small run (tiny)"][1].startswith("test OA ")
    assert "2412 steps" in rows["paper run estimate"][1]
    table = (tmp_path / "summary.md").read_text()
    assert "| check | result | figures |" in table and table.splitlines()[-1].startswith("| paper run estimate")
    assert "| check | result | figures |" in done.stdout


def test_paper_run_estimate_formula():
    # Houston2013: 1500 training pixels at batch 128 = 12 steps an epoch, 201 epochs; validation every 20
    # epochs (10 x 6 batches of 750) and the test (36 batches of 4500), each a third of a step.
    e = _gpu_check().paper_run_estimate(0.1)
    assert (e["steps"], e["eval_batches"]) == (201 * 12, 10 * 6 + 36)
    assert abs(e["total_s"] - (2412 * 0.1 + 96 * 0.1 / 3)) < 1e-9


def test_wheels_come_from_requirements_txt():
    """gpu_check.sh fetches what requirements.txt lists (nothing written by hand), minus the linter."""
    listed = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--requirements"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    own = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert listed == [r for r in own if r and not r.startswith("ruff")]
    assert "torch==2.14.1" in listed and "sacred==0.8.7" in listed
