"""sweep and report: seeds x method variants, continued after an interruption, reported as mean ± std."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from mamol import train
from mamol.errors import ConfigError, MissingFileError
from mamol.experiments.launch import RunState, state_of
from tests.helpers import (
    TINY,
    add_callbacks,
    cli,
    cli_updates,
    read_csv,
    read_json,
    run_command,
    short_run,
    tiny_config,
)

METHODS = ["mamol", {"name": "mamol_r4", "method": "mamol", "adapter_rank": 4}]


def _sweep_updates(data_root: Path, tmp: Path, **changes) -> dict:
    return {**short_run(data_root, tmp), "exp_name": "sweep", "seeds": [0, 1], "methods": METHODS,
            "grid_types": ["lidar"], "grid_ratios": [0.0, 1.0], **changes}


def test_sweep_continues_after_an_interruption_and_reports(small_scene_root, tmp_path, monkeypatch):
    real_run = train.run
    trained: list[str] = []

    def stopped_at_the_second_run(cfg, **kwargs):
        if trained:
            raise KeyboardInterrupt  # the user stops the sweep as its second run starts
        trained.append(cfg["exp_name"])
        return real_run(cfg, **kwargs)

    monkeypatch.setattr(train, "run", stopped_at_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        run_command("sweep", "remote", **_sweep_updates(small_scene_root, tmp_path))
    folder = tmp_path / "runs" / "sweep"
    plan = read_json(folder / "sweep.json")["runs"]
    names = [r["name"] for r in plan]
    assert names == ["mamol-synthetic-train_both0.7-seed0", "mamol_r4-synthetic-train_both0.7-seed0",
                     "mamol-synthetic-train_both0.7-seed1", "mamol_r4-synthetic-train_both0.7-seed1"]
    assert trained == names[:1] and [r["state"] for r in plan][:2] == ["complete", "running"]
    assert read_json(folder / names[1] / "job.json")["state"] == "stopped"  # the interrupted run says so

    resumed: list[tuple[str, str]] = []

    def recorded(cfg, **kwargs):
        resumed.append((cfg["exp_name"], cfg["resume_from"]))
        return real_run(cfg, **kwargs)

    monkeypatch.setattr(train, "run", recorded)
    run_command("sweep", "remote", **_sweep_updates(small_scene_root, tmp_path))
    assert resumed == [(name, "") for name in names[1:]]  # the first run is not repeated
    assert sorted(p.name for p in (folder / names[0]).iterdir()) == ["console.log", "job.json", "version_0"]
    assert read_json(folder / names[0] / "job.json")["state"] == "complete"
    assert [r["state"] for r in read_json(folder / "sweep.json")["runs"]] == ["complete"] * 4

    # The report's numbers, recomputed here from the runs' own files.
    runs = {name: folder / name / "version_0" for name in names}
    values: dict[tuple[str, str], list[float]] = {}
    for name, run in runs.items():
        label = name.split("-")[0]
        tested = read_json(run / "test_results.json")
        values.setdefault((label, "both 0.7"), []).append(tested["metrics"]["OA"])
        for row in read_json(run / "grid.json")["rows"]:
            if row["type"] == "lidar":
                setting = "complete" if row["ratio"] == 0 else f"lidar {row['ratio']:g}"
                values.setdefault((label, setting), []).append(row["metrics"]["OA"])
    rows = {(r["method"], r["setting"]): r for r in read_csv(folder / "report.csv")}
    assert {s for _, s in rows} == {"complete", "lidar 1", "both 0.7"}
    for key, observed in values.items():
        row = rows[key]
        assert row["n"] == "2" and row["seeds"] == "0 1"
        assert float(row["OA_mean"]) == pytest.approx(np.mean(observed), abs=1e-5), key
        assert float(row["OA_std"]) == pytest.approx(np.std(observed, ddof=1), abs=1e-5), key
    parameters = {label: int(rows[(label, "complete")]["trainable_parameters"]) for label in ("mamol", "mamol_r4")}
    first = read_json(runs[names[0]] / "test_results.json")
    assert parameters["mamol"] == first["trainable_parameters"] > parameters["mamol_r4"]
    assert first["wall_time_s"]["fit"] > 0 and first["wall_time_s"]["test"] > 0
    assert float(rows[("mamol", "complete")]["fit_s_mean"]) > 0
    assert read_json(folder / "config.json")["command"] == "sweep"
    assert read_json(folder / "config.json")["config"]["seeds"] == [0, 1]
    md, tex = (folder / "report.md").read_text(), (folder / "report.tex").read_text()
    assert "| mamol_r4 |" in md and "comparison.png" in md
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"mamol\_r4" in tex and r"\pm" in tex
    assert (folder / "comparison.png").stat().st_size > 0

    # A run whose grid was lost (stopped while evaluating) gets only its grid when the sweep runs again.
    (runs[names[2]] / "grid.json").unlink()
    resumed.clear()
    run_command("sweep", "remote", **_sweep_updates(small_scene_root, tmp_path))
    assert resumed == [] and (runs[names[2]] / "grid.json").is_file()


def test_report_of_single_runs_and_its_refusals(trained, tmp_path):
    run_dir = Path(trained.report["run_dir"])
    folder = run_command("report", report_dirs=[str(run_dir)], log_dir=str(tmp_path), exp_name="report")
    (row,) = read_csv(folder / "report.csv")
    assert (row["method"], row["setting"], row["n"], row["OA_std"]) == ("mamol", "both 0.7", "1", "")
    assert float(row["OA_mean"]) == pytest.approx(trained.report["metrics"]["OA"])
    assert "no comparison plot" in (folder / "report.md").read_text()
    record = read_json(folder / "config.json")  # every output folder says how it was made
    assert record["command"] == "report" and record["config"]["report_dirs"] == [str(run_dir)]
    assert record["versions"]["mamol"]
    with pytest.raises(ConfigError, match=r"report_dirs=\[\]"):
        run_command("report", report_dirs=[], log_dir=str(tmp_path), exp_name="report")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="holds no finished run"):
        run_command("report", report_dirs=[str(tmp_path / "empty")], log_dir=str(tmp_path), exp_name="report")


def test_sweep_refuses_bad_methods_before_training(scene_root, tmp_path):
    cases = ((["nope"], "method='nope' is not a method"),
             ([{"name": "x", "method": "mamol", "adapter_rnak": 4}], r"unknown config keys \['adapter_rnak'\]"),
             ([{"name": "x", "method": "mamol", "seed": 4}], r"\['seed'\] are set by the sweep"),
             (["mamol", {"name": "mamol", "method": "mamol"}], "distinct names"))
    for methods, message in cases:
        with pytest.raises(ConfigError, match=message):
            run_command("sweep", "remote", **_sweep_updates(scene_root, tmp_path, methods=methods))
    with pytest.raises(ConfigError, match="load_path='.*nowhere.ckpt': no such file"):
        run_command("sweep", "remote", **_sweep_updates(scene_root, tmp_path, load_path=str(tmp_path / "nowhere.ckpt")))
    assert not (tmp_path / "runs" / "sweep").exists()


def test_run_states_decide_skip_resume_and_grid(tmp_path):
    run = tmp_path / "run"
    assert state_of(run, True) == RunState(None, False, None)
    (run / "version_0" / "checkpoints").mkdir(parents=True)
    (run / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert state_of(run, True).resume == run / "version_0" / "checkpoints" / "last.ckpt"
    (run / "version_1").mkdir()
    (run / "version_1" / "test_results.json").write_text("{}")
    assert state_of(run, True) == RunState(run / "version_1", True, None) and not state_of(run, False).needs_grid
    (run / "version_1" / "grid.json").write_text("{}")
    assert state_of(run, True) == RunState(run / "version_1", False, None)


def test_sweep_resumes_a_run_interrupted_mid_training(small_scene_root, tmp_path, monkeypatch):
    """A run stopped after its first epoch continues from its last.ckpt when the sweep is run again."""
    class Crash(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            raise RuntimeError("simulated crash after epoch 0")

    updates = _sweep_updates(small_scene_root, tmp_path, seeds=[0], methods=["mamol"], max_epoch=2)
    add_callbacks(monkeypatch, Crash())
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_command("sweep", "remote", **updates)
    monkeypatch.undo()
    run_command("sweep", "remote", **updates)
    name = "mamol-synthetic-train_both0.7-seed0"
    versions = sorted((tmp_path / "runs" / "sweep" / name).glob("version_*"))
    last = next(v for v in versions if (v / "test_results.json").is_file()) / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1  # epoch 0 from before the crash, epoch 1 after resuming
    assert json.loads((tmp_path / "runs" / "sweep" / "sweep.json").read_text())["runs"][0]["state"] == "complete"


def test_a_sweep_run_again_with_another_setting_is_refused_not_reused(small_scene_root, tmp_path, monkeypatch):
    """max_epoch=2 after a 1-epoch sweep: refused naming the key and both values (the 1-epoch runs are not
    reported as 2-epoch ones); keys that do not change results are free; sweep_new=True starts a new sweep."""
    updates = _sweep_updates(small_scene_root, tmp_path, seeds=[0], methods=["mamol"], sweep_grid=False)
    folder = run_command("sweep", "remote", **updates)
    first = read_json(folder / "mamol-synthetic-train_both0.7-seed0" / "version_0" / "test_results.json")
    assert read_json(folder / "sweep.json")["config"]["max_epoch"] == 1
    trained: list[str] = []
    real_run = train.run
    monkeypatch.setattr(train, "run", lambda cfg, **kw: trained.append(cfg["exp_name"]) or real_run(cfg, **kw))
    with pytest.raises(ConfigError, match=r"sweep.*max_epoch: 1 -> 2.*sweep_new=True"):
        run_command("sweep", "remote", **{**updates, "max_epoch": 2})
    r4 = {"name": "mamol_r4", "method": "mamol", "adapter_rank": 4}
    run_command("sweep", "remote", **{**updates, "methods": [r4]})
    with pytest.raises(ConfigError, match=r"mamol_r4.*adapter_rank: 4 -> 2"):  # a variant redefined under its name
        run_command("sweep", "remote", **{**updates, "methods": [{**r4, "adapter_rank": 2}]})
    assert trained == ["mamol_r4-synthetic-train_both0.7-seed0"]
    run_command("sweep", "remote", **{**updates, "num_workers": 0, "debug": True})  # nothing changes the results
    assert trained == ["mamol_r4-synthetic-train_both0.7-seed0"]
    run_command("sweep", "remote", **{**updates, "max_epoch": 2, "sweep_new": True})
    assert trained[-1] == "mamol-synthetic-train_both0.7-seed0"
    assert read_json(folder / "sweep.json")["config"]["max_epoch"] == 2
    kept = tmp_path / "runs" / "sweep.replaced-1" / "mamol-synthetic-train_both0.7-seed0" / "version_0"
    assert read_json(kept / "test_results.json")["metrics"] == first["metrics"]  # the old sweep is set aside


def _finished_run(folder: Path, oa: float, **updates) -> None:
    """A test_results.json as a remote run with ``updates`` writes it (scores made up)."""
    config = tiny_config("remote", datasets=["synthetic"], **updates)
    folder.mkdir(parents=True)
    (folder / "test_results.json").write_text(json.dumps({
        "config": config, "settings": {"missing": {"train": {"type": "both", "ratio": 0.7}}}, "tasks": ["synthetic"],
        "modalities": {"synthetic": ["hsi", "lidar"]}, "missing": {"missing_type": "both", "missing_ratio": 0.7},
        "metrics": {"OA": oa, "AA": oa, "kappa": oa}, "method": config["method"]}))


def test_report_separates_runs_of_different_configs_and_shows_n(tmp_path):
    """A 3-epoch run beside a sweep's 1-epoch runs of the same method and setting is not pooled into their cell
    (it was: n = 3, seed 0 twice): the cells are labelled by the differing key, with n in every table."""
    _finished_run(tmp_path / "sweep" / "a" / "version_0", 50.0, seed=0, max_epoch=1)
    _finished_run(tmp_path / "sweep" / "b" / "version_0", 60.0, seed=1, max_epoch=1, num_workers=0)  # neutral key
    _finished_run(tmp_path / "long" / "version_0", 90.0, seed=0, max_epoch=3)
    folder = run_command("report", report_dirs=[str(tmp_path / "sweep"), str(tmp_path / "long")],
                         log_dir=str(tmp_path / "out"), exp_name="report")
    rows = {r["method"]: r for r in read_csv(folder / "report.csv")}
    assert set(rows) == {"mamol (max_epoch=1)", "mamol (max_epoch=3)"}
    assert (rows["mamol (max_epoch=1)"]["n"], rows["mamol (max_epoch=1)"]["seeds"]) == ("2", "0 1")
    assert float(rows["mamol (max_epoch=1)"]["OA_mean"]) == pytest.approx(55.0)
    assert (rows["mamol (max_epoch=3)"]["n"], float(rows["mamol (max_epoch=3)"]["OA_mean"])) == ("1", 90.0)
    md, tex = (folder / "report.md").read_text(), (folder / "report.tex").read_text()
    assert "55.00 ± 7.07 (n=2)" in md and "90.00 (n=1)" in md
    assert "runs of mamol on synthetic" in md and "max_epoch" in md  # the warning, in the report too
    # n differs between the columns, so it is in every cell; the better mean is bold, the other underlined
    assert r"$\underline{55.00 \pm 7.07}\;(n=2)$ & $\mathbf{90.00}\;(n=1)$" in tex


def test_a_two_process_sweep_does_its_closing_work_once(small_scene_root, tmp_path):
    """``sweep with num_processes=2``: both ranks train each run together, but the plan, each run's grid and the
    report are written by rank 0 alone (the other rank waits for it)."""
    updates = {**TINY, **_sweep_updates(small_scene_root, tmp_path, seeds=[0], methods=["mamol"]),
               "per_gpu_batchsize": 16, "num_processes": 2}
    proc = cli("sweep", "with", "remote", *cli_updates(updates), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "runs" / "sweep"
    assert proc.stdout.count(f"report written to {folder}") == 1, proc.stdout
    assert f"rank 1: the report is written by rank 0 to {folder}" in proc.stdout
    (version,) = (folder / "mamol-synthetic-train_both0.7-seed0").glob("version_*")
    assert (version / "grid.json").is_file() and (folder / "report.md").is_file()
    assert read_json(folder / "sweep.json")["runs"][0]["state"] == "complete"


def _held_by_a_live_process(lock: Path) -> subprocess.Popen:
    """A lock file held by another live process of this host (a sleeping child)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": child.pid, "time": time.time(), "token": "x"}))
    return child


def test_two_sweeps_on_one_folder_are_refused_naming_the_owner(small_scene_root, tmp_path, monkeypatch):
    """A second sweep into a folder another live sweep is working on is refused at once (they would train the
    same runs into the same run folders); once that sweep is gone, its lock is taken over."""
    updates = _sweep_updates(small_scene_root, tmp_path, seeds=[0], methods=["mamol"], sweep_grid=False)
    lock = tmp_path / "runs" / ".sweep.sweep.lock"
    child = _held_by_a_live_process(lock)
    trained: list[str] = []
    monkeypatch.setattr(train, "run", lambda cfg, **kw: trained.append(cfg["exp_name"]))
    try:
        owner = rf"\(host {socket.gethostname()}, pid {child.pid}"
        with pytest.raises(ConfigError, match=rf"sweep folder .*sweep is in use by another process {owner}.*delete "
                                              rf".*\.sweep\.sweep\.lock"):
            run_command("sweep", "remote", **updates)
        assert trained == [] and not (tmp_path / "runs" / "sweep").exists()
    finally:
        child.kill()
        child.wait()
    monkeypatch.undo()
    folder = run_command("sweep", "remote", **updates)  # the owner is gone: its lock is taken over
    assert read_json(folder / "sweep.json")["runs"][0]["state"] == "complete" and not lock.exists()
