"""Interrupting and resuming training: SIGTERM / SIGINT stop at a batch boundary, ``resume_from=last.ckpt``
continues in the same run folder and reaches the weights and test metrics of the uninterrupted run."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mamol.errors import CheckpointError, TrainingInterrupted
from tests.helpers import add_callbacks, run_experiment, short_run, trainable_state


def _run(root: Path, tmp: Path, exp: str, **updates) -> dict:
    """Two epochs of 5 batches, validation every epoch (the best checkpoint can change from one to the next), a
    test on the first 3 batches (the same for every run compared)."""
    return run_experiment("remote", **short_run(root, tmp, max_epoch=2, exp_name=exp, limit_test=3, **updates))


class SendSignal(pl.Callback):
    """Sends ``signum`` to this process at batch ``batch`` of epoch ``epoch`` (batch None: at the epoch's end)."""

    def __init__(self, signum: int, epoch: int, batch: int | None) -> None:
        self.signum, self.epoch, self.batch = signum, epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and self.batch is None:
            os.kill(os.getpid(), self.signum)


@pytest.fixture()
def with_signal(monkeypatch):
    """Add a :class:`SendSignal` to the next run's trainer."""
    def install(signum: int, epoch: int, batch: int | None) -> None:
        add_callbacks(monkeypatch, SendSignal(signum, epoch, batch))
    return install


@pytest.fixture(scope="module")
def uninterrupted(remote_root, tmp_path_factory) -> dict:
    return _run(remote_root, tmp_path_factory.mktemp("whole"), "whole")


@pytest.mark.parametrize("signum,epoch,batch,expected", [
    (signal.SIGINT, 0, None, "SIGINT during epoch 2 (step 5): last.ckpt holds the state after epoch 1"),
    (signal.SIGTERM, 1, 1, "SIGTERM during epoch 2 (step 7): last.ckpt holds the state after epoch 1"),
])
def test_interrupted_run_resumes_to_the_uninterrupted_result(remote_root, tmp_path, uninterrupted, with_signal,
                                                             monkeypatch, signum, epoch, batch, expected):
    with_signal(signum, epoch, batch)
    with pytest.raises(TrainingInterrupted) as stopped:
        _run(remote_root, tmp_path, "cut")
    err = stopped.value
    run_dir = tmp_path / "runs" / "cut" / "version_0"
    assert expected in str(err) and err.checkpoint == str(run_dir / "checkpoints" / "last.ckpt")
    assert err.exit_code == 128 + signum and (run_dir / "config.json").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    monkeypatch.undo()  # no more signals
    resumed = _run(remote_root, tmp_path, "cut", resume_from=err.checkpoint)
    assert resumed["run_dir"] == str(run_dir)  # the same run folder, not a new version
    assert not (tmp_path / "runs" / "cut" / "version_1").exists()
    final = trainable_state(run_dir / "checkpoints" / "last.ckpt")
    reference = trainable_state(Path(uninterrupted["run_dir"]) / "checkpoints" / "last.ckpt")
    assert final.keys() == reference.keys() and final
    for key in final:
        torch.testing.assert_close(final[key], reference[key], rtol=0, atol=1e-6, msg=key)
    assert resumed["metrics"] == pytest.approx(uninterrupted["metrics"], abs=1e-4)
    assert Path(resumed["checkpoint"]).name == Path(uninterrupted["checkpoint"]).name  # the best carried over


def test_truncated_resume_checkpoint_is_refused_by_name(remote_root, tmp_path, uninterrupted):
    last = Path(uninterrupted["run_dir"]) / "checkpoints" / "last.ckpt"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"resume_from='.*cut\.ckpt' is not a readable PyTorch checkpoint"):
        _run(remote_root, tmp_path, "bad", resume_from=str(cut))
