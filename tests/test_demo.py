"""The demo is deterministic (README: "The run is deterministic"): its pipeline run twice gives the same table.

The demo (``python -m mamol.demo``) converts a generated scene, trains with ``run.py`` and reads its table from
``run.py evaluate_grid``. The quick test runs that pipeline twice on a small scene in this process; the heavy one
runs the demo itself twice (one epoch each; the map of its 15,041 pixels makes it minutes long).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, convert_scene, read_json, run_command, run_experiment, short_run, trainable_state


def demo_pipeline(tmp: Path) -> tuple[dict, dict]:
    """The demo's steps on a 24 x 32 scene under ``tmp``: convert, train (its learning rate), evaluate the grid."""
    arrow = convert_scene(tmp, "arrow", seed=0, size=(24, 32), train_per_class=16, val_per_class=4,
                          test_per_class=16)
    trained = run_experiment("remote", **short_run(arrow, tmp, exp_name="demo_train", learning_rate=2e-3, seed=0))
    grid = run_command("evaluate_grid", "remote", **short_run(
        arrow, tmp, exp_name="demo_grid", load_path=trained["checkpoint"], seed=0, grid_ratios=[0.0, 1.0],
        batch_size=64, per_gpu_batchsize=64))
    return trained, read_json(grid / "grid.json")


def test_the_demo_pipeline_gives_the_same_results_twice(tmp_path):
    (first, first_grid), (second, second_grid) = demo_pipeline(tmp_path / "a"), demo_pipeline(tmp_path / "b")
    a, b = trainable_state(Path(first["checkpoint"])), trainable_state(Path(second["checkpoint"]))
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit, not to a tolerance
    assert first["metrics"] == second["metrics"]
    assert first_grid["rows"] == second_grid["rows"] and len(first_grid["rows"]) == 6  # (hsi, lidar, both) x 2
    oa = {(r["type"], r["ratio"]): r["metrics"]["OA"] for r in first_grid["rows"]}
    assert len(set(oa.values())) > 1  # the table holds different numbers, so equal tables mean something


def demo_table(out: Path) -> list[str]:
    """The table ``python -m mamol.demo --epochs 1`` prints (header and four rows)."""
    done = subprocess.run([sys.executable, "-m", "mamol.demo", "--out", str(out), "--epochs", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("test setting")))
    return lines[start:start + 5]


@pytest.mark.heavy
def test_the_demo_prints_the_same_table_twice(tmp_path):
    first, second = demo_table(tmp_path / "a"), demo_table(tmp_path / "b")
    assert [line.split()[0] for line in first] == ["test", "complete", "hsi", "lidar", "both"]
    assert first == second
