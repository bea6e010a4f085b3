"""Plans of a paper's tables and dry runs: the runs, their count and device hours, without data or training."""
from __future__ import annotations

import math
import re

import pytest

from mamol import plans, train
from mamol.errors import ConfigError
from mamol.methods import METHODS
from tests.helpers import TINY, cli, cli_updates, tiny_config


def _rows(text: str) -> dict[str, tuple[int, float, float]]:
    """name -> (steps, s/step, hours) of a dry run's table."""
    out = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\S+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", line.strip())
        if match:
            out[match[1]] = (int(match[2]), float(match[3]), float(match[4]))
    return out


def test_plan_remote_main_dry_run_lists_30_runs_per_method_with_hours_and_needs_no_data(tmp_path):
    updates = {**TINY, "log_dir": str(tmp_path / "runs"), "plan_step_seconds": {"*": 2.0}}
    proc = cli("sweep", "with", "plan_remote_main", "dry_run=True", *cli_updates(updates), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(proc.stdout)
    runs = len(METHODS) * 3 * 10  # every registered method x 3 scenes x 10 seeds
    assert len(rows) == runs
    assert {name.split("-")[0] for name in rows} == set(METHODS)
    # 100 training pixels per class, batches of 128, 201 epochs (Houston 15 classes, Trento 6, Augsburg 7).
    for scene, classes in (("houston2013", 15), ("trento", 6), ("augsburg", 7)):
        steps = {s for name, (s, _, _) in rows.items() if f"-{scene}-" in name}
        assert steps == {math.ceil(100 * classes / 128) * 201}, scene
    hours = sum(h for _, _, h in rows.values())
    total = float(re.search(rf"{runs} runs; estimated ([\d.]+) wall-clock hours on 1 device", proc.stdout)[1])
    # each row's hours are printed to 0.01 h, the total to 0.1 h
    assert total == pytest.approx(hours, abs=0.05 + 0.005 * len(rows))
    assert total > sum(s for s, _, _ in rows.values()) * 2.0 / 3600
    assert "step costs: declared" in proc.stdout and "no data was read" in proc.stdout
    assert not (tmp_path / "runs").exists()  # nothing written, nothing trained


@pytest.mark.parametrize(("plan", "count"), [("plan_natural_main", len(METHODS) * 3 * 10), ("plan_ablation", 150),
                                              ("plan_missing_ratio", len(METHODS) * 5 * 10), ("plan_cross", 80),
                                              ("plan_matched", 180)])
def test_every_plan_lists_its_runs(plan, count):
    cfg = tiny_config(plan, dry_run=True, plan_step_seconds={"*": 1.0})
    text = plans.dry_run(cfg)
    assert len(_rows(text)) == count and f"{count} runs; estimated" in text


def test_undeclared_step_costs_are_measured_once_per_method_and_setting():
    calls = []

    def counted(s, cfg, rows):
        calls.append((cfg["method"], s.missing.train.ratio))
        return plans.measure_step(s, cfg, rows)

    cfg = tiny_config("remote", dry_run=True, methods=["mamol", "lora"], seeds=[0, 1],
                      sweep_datasets=[["trento"], ["augsburg"]], plan_step_seconds={"lora": 0.25}, max_epoch=2)
    text = plans.dry_run(cfg, measure=counted)
    rows = _rows(text)
    assert len(rows) == 8 and calls == [("mamol", 0.7)]  # lora declared; mamol measured once for 4 runs
    assert {r[1] for name, r in rows.items() if name.startswith("lora")} == {0.25}
    measured = {r[1] for name, r in rows.items() if name.startswith("mamol")}
    assert len(measured) == 1 and measured.pop() > 0
    assert "declared; measured on cpu (16 rows" in text


def test_a_dry_run_for_gpu_runs_works_on_a_machine_without_one():
    """A login node has no GPU: the runs' num_gpus=1 is not refused there, and a measured step says where it
    was measured."""
    cfg = tiny_config("remote", dry_run=True, num_gpus=1, methods=["lora"], seeds=[0], max_epoch=1)
    with pytest.raises(ConfigError, match="num_gpus=1 but 0 GPUs"):
        train.resolve_settings({**cfg, "data_root": "/"})
    text = plans.dry_run(cfg)
    assert "1 runs; estimated" in text and "measured on cpu, not the GPU the runs ask for" in text
