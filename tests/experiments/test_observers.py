"""Sacred observers get the whole run (mamol/observers.py): ``-F`` file storage and ``-s`` SQL record every logged
metric, the test result, the folder's files, the Arrow files with their md5 hashes and the console output; a sweep
records each run; ``report`` reads a ``-F`` folder. The PostgreSQL variant runs with ``make test-postgres``."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import sqlalchemy as sa
from sacred.observers.sql_bases import Run as SqlRun
from sqlalchemy.orm import Session

from mamol.errors import DataError
from mamol.experiments.observed import run_folders
from mamol.observers import read_metrics
from run import ex
from tests.helpers import TINY, add_callbacks, read_csv, read_json, short_run

RUN = "mamol-synthetic-train_both0.7-seed{}"


def _observed(command: str, options: dict[str, str], **updates) -> None:
    """``python run.py <command> -F ... -s ... with remote <TINY> <updates>`` in this process."""
    ex.run(command_name=command, named_configs=["remote"], config_updates={**TINY, **updates},
           options={"--loglevel": "ERROR", **options})


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _splits(data_root: Path) -> list[Path]:
    """The scene's split files (not its scene file): what a run reads."""
    return sorted(p for p in data_root.glob("*.arrow") if p.stem.rsplit("_", 1)[-1] in ("train", "val", "test"))


def _csv_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """What Lightning's CSV logger wrote: metric -> [(step, value), ...] (``epoch`` once per step)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in read_csv(path):
        for name, value in row.items():
            if name != "step" and value != "" and (name != "epoch" or (int(row["step"]), float(value))
                                                   not in out.get(name, [])):
                out.setdefault(name, []).append((int(row["step"]), float(value)))
    return out


def test_a_run_under_file_storage_records_metrics_result_files_data_and_console(small_scene_root, tmp_path):
    observer = tmp_path / "observed"
    _observed("main", {"--file_storage": str(observer)},
              **short_run(small_scene_root, tmp_path, max_epoch=2, exp_name="one"))
    (run_dir,) = (tmp_path / "runs" / "one").glob("version_*")
    (record,) = [p.parent for p in observer.glob("*/run.json")]
    run = read_json(record / "run.json")
    tested = read_json(run_dir / "test_results.json")
    assert run["status"] == "COMPLETED" and run["command"] == "main"
    assert run["result"] == pytest.approx(tested["metrics"]["the_metric"])

    # Every value Lightning logged arrives once, at its step: what metrics.csv holds, from the first step.
    metrics = read_json(record / "metrics.json")
    logged = {name: list(zip(m["steps"], m["values"])) for name, m in metrics.items()}
    expected = _csv_metrics(run_dir / "metrics.csv")
    assert set(logged) == set(expected)
    for name, rows in expected.items():
        assert [s for s, _ in logged[name]] == [s for s, _ in rows], name
        assert [v for _, v in logged[name]] == pytest.approx([v for _, v in rows], rel=1e-5), name
    assert [s for s, _ in logged["train/loss"]] == [0, 1]
    assert {"val/the_metric", "test/OA", "test/the_metric"} <= set(logged)
    assert any(name.startswith("lr-") for name in logged)

    # The folder's files as artifacts (config.json under a name Sacred leaves free), checkpoints by path.
    assert {"test_results.json", "test_predictions.npz", "confusion.json", "confusion.csv", "confusion.png",
            "metrics.csv", "console.log", "mamol_config.json"} <= set(run["artifacts"])
    assert read_json(record / "test_results.json") == tested
    assert read_json(record / "mamol_config.json") == read_json(run_dir / "config.json")
    info = read_json(record / "info.json")
    assert info["run_dir"] == str(run_dir.resolve()) and info["test_metrics"] == tested["metrics"]
    assert info["checkpoints"]["tested"] == tested["checkpoint"] and Path(tested["checkpoint"]).is_file()
    assert not list(record.glob("*.ckpt"))

    # The Arrow files as resources, stored once under their md5 hash; the console output as the run's output.
    arrows = _splits(small_scene_root)
    assert sorted(source for source, _ in run["resources"]) == sorted(str(p.resolve()) for p in arrows)
    for source, stored in run["resources"]:
        assert Path(stored).name == f"{Path(source).stem}_{_md5(Path(source))}.arrow"
        assert _md5(Path(stored)) == _md5(Path(source))
    assert info["data_files"] == {str(p.resolve()): _md5(p) for p in arrows}
    console = (run_dir / "console.log").read_text()
    assert "Test results" in console and (record / "cout.txt").read_text() == console


def _sweep(small_scene_root: Path, tmp: Path, options: dict[str, str], **changes) -> Path:
    updates = {**short_run(small_scene_root, tmp), "seeds": [0, 1], "methods": ["mamol"], "grid_types": ["lidar"],
               "grid_ratios": [0.0, 1.0], "cpu_threads": 1, "exp_name": "swept", **changes}
    _observed("sweep", options, **updates)
    return tmp / "runs" / "swept"


def check_sql_runs(url: str, sweep: Path) -> None:
    """The SQL database at ``url`` holds the sweep in ``sweep`` as Sacred runs: the sweep command's and one per
    training run, completed, with their result, metrics, artifacts, Arrow files and console output."""
    engine = sa.create_engine(url)
    try:
        with Session(engine) as session:
            runs = [r for r in session.query(SqlRun).all()
                    if json.loads(r.config)["log_dir"].startswith(str(sweep.parent))]
            by_command: dict[str, list[SqlRun]] = {}
            for run in runs:
                by_command.setdefault(run.command, []).append(run)
            assert sorted(by_command) == ["sweep", "sweep_run"] and len(by_command["sweep"]) == 1
            assert all(r.status == "COMPLETED" for r in runs)
            (swept,) = by_command["sweep"]
            assert {"report.md", "report.csv", "sweep.json", "console.log"} <= {a.filename for a in swept.artifacts}
            seeds = []
            for run in by_command["sweep_run"]:
                config = json.loads(run.config)
                seeds.append(config["seed"])
                (version,) = (sweep / RUN.format(config["seed"])).glob("version_*")
                tested = read_json(version / "test_results.json")
                assert run.result == pytest.approx(tested["metrics"]["the_metric"], abs=1e-4)
                artifacts = {a.filename: a.content for a in run.artifacts}
                assert {"test_results.json", "grid.json", "confusion.json", "console.log"} <= set(artifacts)
                assert json.loads(artifacts["grid.json"]) == read_json(version / "grid.json")
                assert run.captured_out == (version / "console.log").read_text()
                assert {r.md5sum for r in run.resources} == {_md5(p) for p in _splits(Path(config["data_root"]))}
                metrics = read_metrics(engine, run.run_id)
                assert [step for step, _ in metrics["train/loss"]] == [0]
                assert {"val/the_metric", "test/OA"} <= set(metrics)
                assert metrics["test/the_metric"][0][1] == pytest.approx(tested["metrics"]["the_metric"], abs=1e-3)
                assert all(not math.isnan(v) for _, v in metrics["train/loss"])
            assert sorted(seeds) == [0, 1]
    finally:
        engine.dispose()


def test_a_sweep_records_each_run_in_sqlite_and_report_reads_the_file_storage(small_scene_root, tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    observer = tmp_path / "observed"
    sweep = _sweep(small_scene_root, tmp_path, {"--sql": url, "--file_storage": str(observer)})
    check_sql_runs(url, sweep)

    # The -F folder holds the same runs; report finds them there and reports what the sweep's report says.
    _observed("report", {}, **{"report_dirs": [str(observer)], "log_dir": str(tmp_path / "reports"),
                               "exp_name": "from_observer"})
    (folder,) = (tmp_path / "reports" / "from_observer").glob("version_*")
    assert read_csv(folder / "report.csv") == read_csv(sweep / "report.csv")

    # Moved elsewhere (its run folders gone), the observer folder's own copies give the same report.
    moved = tmp_path / "moved"
    (tmp_path / "runs").rename(moved)
    _observed("report", {}, **{"report_dirs": [str(observer)], "log_dir": str(tmp_path / "reports"),
                               "exp_name": "from_copies"})
    (folder,) = (tmp_path / "reports" / "from_copies").glob("version_*")
    assert read_csv(folder / "report.csv") == read_csv(moved / "swept" / "report.csv")


@pytest.mark.postgres
def test_a_local_sweep_is_recorded_in_postgresql(small_scene_root, tmp_path):
    """Two runs at once (launcher=local), each a Sacred run in a real PostgreSQL that scripts/postgres_local.sh
    started (``make test-postgres`` sets MAMOL_POSTGRES_URL)."""
    url = os.environ.get("MAMOL_POSTGRES_URL")
    if not url:
        pytest.skip("MAMOL_POSTGRES_URL is not set: run `make test-postgres` (root)")
    sweep = _sweep(small_scene_root, tmp_path, {"--sql": url}, launcher="local", max_parallel=2)
    check_sql_runs(url, sweep)


def test_a_failed_run_still_gives_the_observers_its_folder_and_console(small_scene_root, tmp_path, monkeypatch):
    """A run that fails once it has a checkpoint keeps its folder: the observers get failed.json, console.log as
    the run's output and what it logged, beside Sacred's FAILED status and traceback."""
    class Fail(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                print("second epoch: breaking now", flush=True)  # noqa: T201 (output of the run before it fails)
                raise RuntimeError("broken in the second epoch")

    add_callbacks(monkeypatch, Fail())
    observer = tmp_path / "observed"
    with pytest.raises(RuntimeError, match="broken in the second epoch"):
        _observed("main", {"--file_storage": str(observer)},
                  **short_run(small_scene_root, tmp_path, max_epoch=2, exp_name="failing"))
    (run_dir,) = (tmp_path / "runs" / "failing").glob("version_*")
    (record,) = [p.parent for p in observer.glob("*/run.json")]
    run = read_json(record / "run.json")
    assert run["status"] == "FAILED" and "broken in the second epoch" in "".join(run["fail_trace"])
    assert {"failed.json", "console.log", "metrics.csv"} <= set(run["artifacts"])
    assert read_json(record / "failed.json") == read_json(run_dir / "failed.json")
    assert (record / "cout.txt").read_text() == (run_dir / "console.log").read_text()
    assert "second epoch: breaking now" in (record / "cout.txt").read_text()
    assert [s for s, _ in _csv_metrics(run_dir / "metrics.csv")["train/loss"]][0] == 0
    assert "train/loss" in read_json(record / "metrics.json")


def test_a_cut_short_observer_record_is_refused_not_skipped(tmp_path):
    """A report from a -F folder never drops a run whose record it cannot read: that would change its means."""
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "run.json").write_text(json.dumps({"status": "COMPLETED", "artifacts": ["test_results.json"]}))
    assert run_folders(tmp_path) == [tmp_path / "1"]  # no info.json: the observer's copy is read
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "run.json").write_text('{"status": "COMPL')
    with pytest.raises(DataError, match=r"2/run\.json: unreadable run record"):
        run_folders(tmp_path)
