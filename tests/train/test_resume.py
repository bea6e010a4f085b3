"""Interrupting and resuming training: SIGTERM / SIGINT stop at a batch boundary, ``resume_from=last.ckpt``
continues in the same run folder and ends where the uninterrupted run ends, in everything a user sees: the
weights, the best checkpoint, the test metrics, one ``metrics.csv`` with the whole history, the files on disk."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mamol import train
from mamol.errors import CheckpointError, CommandInterrupted, ConfigError, TrainingInterrupted
from tests.helpers import convert_scene, run_experiment, trainable_state


@pytest.fixture(scope="module")
def resume_root(tmp_path_factory) -> Path:
    """A small scene (64 / 80 / 96 samples): epochs of 4 batches, so a run of 3 epochs takes seconds."""
    return convert_scene(tmp_path_factory.mktemp("resume_scene"), "arrow", hsi_bands=8, size=(32, 40),
                         train_per_class=16, val_per_class=20, test_per_class=24)


def _run(root: Path, tmp: Path, exp: str, **updates) -> dict:
    """Three epochs of 4 batches, validation every epoch (val/the_metric 38.75, 37.5, 40: best checkpoints after
    the first and the last epoch), a test on the first 2 batches (the same for every run compared)."""
    return run_experiment("remote", data_root=str(root), datasets=["synthetic"], batch_size=16, per_gpu_batchsize=16,
                          log_dir=str(tmp / "runs"), missing_table_root=str(tmp / "tables"), max_epoch=3,
                          check_val_every_n_epoch=1, learning_rate=2e-3, exp_name=exp, limit_test=2, **updates)



def _recorded_best(checkpoint: Path) -> tuple[str, float]:
    """The best checkpoint's path and score recorded in ``checkpoint`` (the state a resume starts from)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["callbacks"]
    (best,) = [v for k, v in state.items() if k.startswith("BestCheckpoint")]
    return best["best_model_path"], float(best["best_model_score"])


def _files(run_dir: Path) -> list[str]:
    """The files of a run folder a user sees, without the resume records."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and not p.name.startswith("config_resumed_"))


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _same_history(rows: list[dict[str, str]], reference: list[dict[str, str]]) -> None:
    assert len(rows) == len(reference) and rows[0].keys() == reference[0].keys()
    for row, ref in zip(rows, reference):
        assert row.keys() == ref.keys()
        for key in ref:
            if ref[key] == "" or row[key] == "":
                assert row[key] == ref[key], (key, row, ref)
            else:
                assert float(row[key]) == pytest.approx(float(ref[key]), abs=1e-4), (key, row, ref)


class SendSignal(pl.Callback):
    """Sends ``signum`` to this process at batch ``batch`` of epoch ``epoch`` (batch None: at the epoch's end);
    epoch ``"test"``: at the first test batch."""

    def __init__(self, signum: int, epoch: int | str, batch: int | None) -> None:
        self.signum, self.epoch, self.batch = signum, epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and self.batch is None:
            os.kill(os.getpid(), self.signum)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.epoch == "test" and batch_idx == 0:
            os.kill(os.getpid(), self.signum)


@pytest.fixture()
def with_signal(monkeypatch):
    """Add a :class:`SendSignal` to the next run's trainer; epoch ``"best"``: SIGTERM right after the best
    checkpoint of epoch ``batch`` was written."""
    def install(signum: int, epoch: int | str, batch: int | None) -> None:
        if epoch == "best":
            save = train.BestCheckpoint._save_checkpoint

            def save_then_signal(self, trainer, filepath):
                save(self, trainer, filepath)
                if trainer.current_epoch == batch:
                    os.kill(os.getpid(), signum)

            monkeypatch.setattr(train.BestCheckpoint, "_save_checkpoint", save_then_signal)
            return
        original = train.build_trainer

        def build(*args, **kwargs):
            trainer, best, last = original(*args, **kwargs)
            trainer.callbacks.append(SendSignal(signum, epoch, batch))
            return trainer, best, last

        monkeypatch.setattr(train, "build_trainer", build)
    return install


@pytest.fixture(scope="module")
def uninterrupted(resume_root, tmp_path_factory) -> dict:
    return _run(resume_root, tmp_path_factory.mktemp("whole"), "whole")


def test_last_checkpoint_records_the_current_best(uninterrupted):
    """last.ckpt is written after the best checkpoint of the same epoch, so it records that one (not the
    previous epoch's) and no best file on disk is unknown to it."""
    run_dir = Path(uninterrupted["run_dir"])
    path, score = _recorded_best(run_dir / "checkpoints" / "last.ckpt")
    assert path == uninterrupted["checkpoint"]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("best-*.ckpt")) == [Path(path).name]
    assert score == pytest.approx(max(float(r["val/the_metric"]) for r in _metrics(run_dir)
                                      if r["val/the_metric"]), abs=1e-6)


@pytest.mark.parametrize("signum,epoch,batch,expected", [
    # Over 30 s each here; what they check beyond the others: the one-line message at an epoch's end.
    pytest.param(signal.SIGINT, 0, None, "SIGINT during epoch 2 (step 4): last.ckpt holds the state after epoch 1",
                 marks=pytest.mark.heavy),
    pytest.param(signal.SIGTERM, "best", 0, "SIGTERM during epoch 2 (step 4): last.ckpt holds the state after "
                 "epoch 1", marks=pytest.mark.heavy),
    # After the rows logged at step 9 (train loss, learning rates): they are dropped and logged again, once.
    (signal.SIGTERM, 2, 2, "SIGTERM during epoch 3 (step 11): last.ckpt holds the state after epoch 2"),
    (signal.SIGTERM, "test", None, "SIGTERM during the test of the best checkpoint"),
], ids=["epoch-end", "after-best-saved", "mid-epoch", "during-test"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(resume_root, tmp_path, uninterrupted, with_signal,
                                                             monkeypatch, signum, epoch, batch, expected):
    with_signal(signum, epoch, batch)
    with pytest.raises(TrainingInterrupted) as stopped:
        _run(resume_root, tmp_path, "cut")
    err = stopped.value
    run_dir = tmp_path / "runs" / "cut" / "version_0"
    assert expected in str(err) and err.checkpoint == str(run_dir / "checkpoints" / "last.ckpt")
    assert err.exit_code == 128 + signum and (run_dir / "config.json").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    monkeypatch.undo()  # no more signals
    resumed = _run(resume_root, tmp_path, "cut", resume_from=err.checkpoint)
    assert resumed["run_dir"] == str(run_dir)  # the same run folder, not a new version
    assert not (tmp_path / "runs" / "cut" / "version_1").exists()
    whole = Path(uninterrupted["run_dir"])
    final, reference = trainable_state(run_dir / "checkpoints" / "last.ckpt"), trainable_state(
        whole / "checkpoints" / "last.ckpt")
    assert final.keys() == reference.keys() and final
    for key in final:
        torch.testing.assert_close(final[key], reference[key], rtol=0, atol=1e-6, msg=key)
    assert Path(resumed["checkpoint"]).name == Path(uninterrupted["checkpoint"]).name  # the same best checkpoint
    assert resumed["metrics"] == pytest.approx(uninterrupted["metrics"], abs=1e-4)
    assert _files(run_dir) == _files(whole)  # no orphaned best checkpoint, temporary or failure file
    _same_history(_metrics(run_dir), _metrics(whole))  # one metrics.csv, the whole history, nothing twice


class Killed(BaseException):
    """A kill no handler sees (SIGKILL, a node lost), simulated in this process."""


def test_run_killed_between_best_and_last_checkpoint_resumes_without_orphans(resume_root, tmp_path, uninterrupted,
                                                                             monkeypatch):
    """Killed after the best checkpoint of the last epoch was written but before last.ckpt was: last.ckpt holds
    the epoch before, the new best file is not recorded in it; resuming removes that file and redoes the epoch,
    so the run ends with the uninterrupted run's files, best checkpoint and metrics."""
    save = train.LastCheckpoint._save

    def killed_at_the_last_epoch(self, trainer):
        if trainer.current_epoch == 2:
            raise Killed
        save(self, trainer)

    monkeypatch.setattr(train.LastCheckpoint, "_save", killed_at_the_last_epoch)
    with pytest.raises(Killed):
        _run(resume_root, tmp_path, "killed")
    run_dir = tmp_path / "runs" / "killed" / "version_0"
    assert (run_dir / "checkpoints" / Path(uninterrupted["checkpoint"]).name).is_file()  # written, not recorded
    monkeypatch.undo()
    resumed = _run(resume_root, tmp_path, "killed", resume_from=str(run_dir / "checkpoints" / "last.ckpt"))
    whole = Path(uninterrupted["run_dir"])
    assert Path(resumed["checkpoint"]).name == Path(uninterrupted["checkpoint"]).name
    assert resumed["metrics"] == pytest.approx(uninterrupted["metrics"], abs=1e-4)
    assert _files(run_dir) == _files(whole)  # no orphan, no "-v1" copy, no stale failed.json
    _same_history(_metrics(run_dir), _metrics(whole))


def test_finished_run_resumed_tests_the_recorded_best_without_training(resume_root, tmp_path, uninterrupted):
    """resume_from the last.ckpt of a finished run (as after an interruption during its test) trains nothing
    and tests the best checkpoint of the fit."""
    run_dir = tmp_path / "runs" / "done" / "version_0"
    shutil.copytree(uninterrupted["run_dir"], run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    recorded = _recorded_best(last)[0]
    copied = str(run_dir / "checkpoints" / Path(recorded).name)
    before = last.read_bytes()
    # The copy records the original folder's paths: the best file of this folder is the one tested.
    report = _run(resume_root, tmp_path, "done", resume_from=str(last))
    assert report["checkpoint"] == copied and last.read_bytes() == before  # nothing trained, nothing rewritten
    assert report["metrics"] == pytest.approx(uninterrupted["metrics"], abs=1e-4)
    _same_history(_metrics(run_dir), _metrics(Path(uninterrupted["run_dir"])))


def test_a_run_folder_another_live_process_continues_is_refused(resume_root, tmp_path, uninterrupted):
    """Two processes resuming one run folder would write the same checkpoints and log: the second is refused,
    naming the first; a lock left by a process that is gone is taken over."""
    run_dir = tmp_path / "runs" / "twice" / "version_0"
    shutil.copytree(uninterrupted["run_dir"], run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = run_dir / ".run.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": child.pid, "time": time.time(), "token": "x"}))
    try:
        with pytest.raises(ConfigError, match=rf"run folder .*version_0 is in use by another process \(host "
                                              rf"{socket.gethostname()}, pid {child.pid}"):
            _run(resume_root, tmp_path, "twice", resume_from=str(last))
    finally:
        child.kill()
        child.wait()
    assert sorted(p.name for p in run_dir.glob("config_resumed_*")) == []  # nothing of the run was touched
    _run(resume_root, tmp_path, "twice", resume_from=str(last))  # its owner is gone: taken over, then released
    assert not lock.exists()


def test_truncated_resume_checkpoint_is_refused_by_name(resume_root, tmp_path, uninterrupted):
    last = Path(uninterrupted["run_dir"]) / "checkpoints" / "last.ckpt"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"resume_from='.*cut\.ckpt' is not a readable PyTorch checkpoint"):
        _run(resume_root, tmp_path, "bad", resume_from=str(cut))


def test_test_only_stopped_by_a_signal_is_one_error_and_leaves_no_folder(resume_root, tmp_path, uninterrupted,
                                                                         with_signal):
    """A test_only run stopped by SIGTERM at its first test batch ends in a project error (exit 128 + 15) that
    says nothing was written, and its run folder is removed (it held no result)."""
    with_signal(signal.SIGTERM, "test", 0)
    with pytest.raises(CommandInterrupted) as stopped:
        _run(resume_root, tmp_path, "evaluated", test_only=True, load_path=uninterrupted["checkpoint"])
    assert stopped.value.exit_code == 128 + signal.SIGTERM and "nothing was written" in str(stopped.value)
    assert not (tmp_path / "runs" / "evaluated" / "version_0").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
