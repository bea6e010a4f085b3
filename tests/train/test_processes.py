"""Several processes on the CPU (DDP over gloo), launched as a user does: ``run.py with num_processes=2``."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mamol.predictions import read_predictions
from tests.helpers import TINY, cli, cli_updates, convert_scene, run_experiment, short_run, trainable_state


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory) -> Path:
    """A scene with 64 training samples and an odd test split (427 samples), so ranks get unequal shares."""
    return convert_scene(tmp_path_factory.mktemp("odd"), "arrow", size=(24, 32), train_per_class=16,
                         val_per_class=4, test_per_class=-1)


@pytest.fixture(scope="module")
def two(odd_root, tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess]:
    """(config updates, process) of ``run.py with num_processes=2 per_gpu_batchsize=16``: train, then test."""
    common = short_run(odd_root, tmp_path_factory.mktemp("processes"), max_epoch=2)  # batches of 32
    proc = cli("with", "remote", *cli_updates({**TINY, **common, "per_gpu_batchsize": 16, "num_processes": 2,
                                               "exp_name": "two"}))
    return common, proc


def test_two_processes_train_and_evaluate_like_one(two):
    common, proc = two
    one = run_experiment("remote", **common, exp_name="one", test_after_fit=False)
    assert set(one) == {"run_dir"}  # test_after_fit=False: trained, not tested (no test_results.json)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((Path(common["log_dir"]) / "two").iterdir())
    assert len(runs) == 1  # both ranks used rank 0's folder
    assert f"rank 1: the results are written by rank 0 to {runs[0] / 'test_results.json'}" in proc.stdout
    assert proc.stdout.count(f"written to {runs[0] / 'test_results.json'}") == 1
    two = json.loads((runs[0] / "test_results.json").read_text())

    # Training: 2 processes x 16 see the samples 1 process x 32 sees at each step, and average their gradients.
    # The gradients agree to float rounding; Adam turns that into ~1e-5 on weights that moved ~4e-3 in 4 steps.
    a = trainable_state(Path(one["run_dir"]) / "checkpoints" / "last.ckpt")
    b = trainable_state(runs[0] / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)

    # Evaluation: every one of the 427 test samples counted once over the 2 ranks, so the metrics equal exactly
    # what one process reports for the same checkpoint.
    alone = run_experiment("remote", **common, exp_name="alone", test_only=True,
                           load_path=two["checkpoint"])
    assert alone["metrics"] == two["metrics"]
    # The saved test predictions too: both ranks' shares gathered into one file, each sample once, by index.
    shared = read_predictions(runs[0] / two["predictions"])["synthetic"]
    single = read_predictions(Path(alone["run_dir"]) / alone["predictions"])["synthetic"]
    assert shared.index.tolist() == list(range(427))
    for field in ("index", "label", "pred", "missing_type"):
        np.testing.assert_array_equal(getattr(shared, field), getattr(single, field))


def test_two_processes_evaluate_whatever_the_training_batch_says(two):
    """test_only never checks gradient accumulation: per_gpu_batchsize = batch_size on 2 processes evaluates."""
    common, proc = two
    assert proc.returncode == 0, proc.stderr[-3000:]
    (trained,) = (Path(common["log_dir"]) / "two").iterdir()
    report = json.loads((trained / "test_results.json").read_text())
    tested = cli("with", "remote", *cli_updates({**TINY, **common, "batch_size": 64, "per_gpu_batchsize": 64,
                                                 "num_processes": 2, "exp_name": "tested", "test_only": True,
                                                 "load_path": report["checkpoint"]}))
    assert tested.returncode == 0, tested.stderr[-3000:]
    (run,) = (Path(common["log_dir"]) / "tested").iterdir()
    assert json.loads((run / "test_results.json").read_text())["metrics"] == report["metrics"]


# Started in every process of a run (sitecustomize on PYTHONPATH): rank 1 cannot see the file named by
# MAMOL_TEST_HIDDEN, as a node without the submitting node's storage.
HIDE_ON_RANK_1 = """
import builtins, os
hidden = os.environ.get("MAMOL_TEST_HIDDEN")
if hidden and os.environ.get("LOCAL_RANK") == "1":
    real_stat, real_open = os.stat, builtins.open
    def stat(path, *args, **kwargs):
        if os.fspath(path) == hidden:
            raise FileNotFoundError(2, "No such file or directory", hidden)
        return real_stat(path, *args, **kwargs)
    def open_(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == hidden:
            raise FileNotFoundError(2, "No such file or directory", hidden)
        return real_open(file, *args, **kwargs)
    os.stat, builtins.open = stat, open_
"""


def test_a_rank_that_cannot_see_load_path_names_itself(two, tmp_path):
    common, proc = two
    assert proc.returncode == 0, proc.stderr[-3000:]
    (trained,) = (Path(common["log_dir"]) / "two").iterdir()
    checkpoint = json.loads((trained / "test_results.json").read_text())["checkpoint"]
    (tmp_path / "sitecustomize.py").write_text(HIDE_ON_RANK_1)
    tested = cli("with", "remote", *cli_updates({**TINY, **common, "per_gpu_batchsize": 16, "num_processes": 2,
                                                 "exp_name": "hidden", "test_only": True, "load_path": checkpoint}),
                 env={"PYTHONPATH": str(tmp_path), "MAMOL_TEST_HIDDEN": checkpoint}, timeout=300)
    assert tested.returncode != 0
    errors = [line for line in tested.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: load_path={checkpoint!r}: no such file on rank 1 (host {socket.gethostname()}): every "
                      "process of the run reads load_path, so put it on storage every node sees (or copy it to the "
                      "same path on each node)"], tested.stderr[-3000:]
    assert os.path.isfile(checkpoint)  # rank 0 saw it
