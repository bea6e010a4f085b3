"""The GPU check script runs end to end in its CPU smoke mode, so it has not rotted when a GPU is lent."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.heavy
def test_gpu_check_smoke_runs_every_step(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {name: (result, figures) for name, result, figures in json.loads((tmp_path / "summary.json").read_text())}
    assert set(rows) == {"cuda tests", "step tiny fp32", "step tiny bf16", "small scene", "ddp 0 GPU(s)",
                         "small run (tiny)"}
    assert rows["cuda tests"][0].startswith("ok") and "skipped" in rows["cuda tests"][1]  # no GPU here
    for precision in ("fp32", "bf16"):
        assert "samples/s" in rows[f"step tiny {precision}"][1]
    assert rows["small run (tiny)"][1].startswith("test OA ")
    assert "| check | result | figures |" in done.stdout
