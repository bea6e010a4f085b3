"""What a run prints: kept in ``console.log``, readable without a terminal, free of third-party noise."""
from __future__ import annotations

import sys

from mamol import console
from tests.helpers import TINY, cli, cli_updates, read_csv, short_run

NOISE = ("Tip:", "litlogger", "srun", "LeafSpec", "GPU available", "TPU available")


def test_console_log_keeps_the_final_state_of_each_bar_line(tmp_path):
    with console.recording():
        sys.stdout.write("before the folder exists\n")
        console.save_to(tmp_path)
        sys.stdout.write("\rEpoch 0:  50%|#    | 1/2")
        sys.stdout.write("\rEpoch 0: 100%|#####| 2/2\n")
        sys.stderr.write("\r\x1b[Avalidating\r           \r\n")  # a bar that clears itself leaves nothing
        sys.stdout.write("after\n")
    text = (tmp_path / console.LOG_FILE).read_text()
    assert text == "before the folder exists\nEpoch 0: 100%|#####| 2/2\nafter\n"


def test_nested_recordings_share_lines_once(tmp_path):
    outer, inner = tmp_path / "sweep", tmp_path / "run"
    outer.mkdir()
    inner.mkdir()
    with console.recording():
        sys.stdout.write("sweep starts\n")
        console.save_to(outer)
        with console.recording():  # a run inside the sweep: its own folder, and the sweep's
            sys.stdout.write("run output\n")
            console.save_to(inner)
            sys.stdout.write("run result\n")
        sys.stdout.write("sweep report\n")
    assert (outer / console.LOG_FILE).read_text() == "sweep starts\nrun output\nrun result\nsweep report\n"
    assert (inner / console.LOG_FILE).read_text() == "run output\nrun result\n"

    command = tmp_path / "command"
    command.mkdir()
    with console.recording():  # a command whose folder is made by the run it calls: its summary is kept too
        with console.recording():
            console.save_to(command)
            sys.stdout.write("training\n")
        sys.stdout.write("summary\n")
    assert (command / console.LOG_FILE).read_text() == "training\nsummary\n"


def test_warnings_are_one_line():
    text = console.one_line_warning(UserWarning("split\n  over lines"), UserWarning, "mod.py", 7, "x = 1")
    assert text == "mod.py:7: UserWarning: split over lines\n"  # no echoed source line


def test_a_run_without_a_terminal_prints_lines_and_keeps_them(remote_root, tmp_path):
    # 160 training samples in batches of 80: one epoch of two steps; `remote` validates every 20 epochs.
    updates = {**TINY, **short_run(remote_root, tmp_path, batch_size=80, per_gpu_batchsize=80)}
    del updates["check_val_every_n_epoch"]
    proc = cli("with", "remote", *cli_updates(updates))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "\r" not in out  # no progress bar redrawn into a file
    assert not [line for line in out.splitlines() if any(word in line for word in NOISE)], out
    never = [line for line in proc.stderr.splitlines() if "never validates" in line]
    assert len(never) == 1 and "max_epoch=1 < check_val_every_n_epoch=20" in never[0]
    assert "epoch 1/1  step 2  train/loss" in proc.stderr  # the epoch's line, in place of the bar

    run_dir = tmp_path / "runs" / "mamol" / "version_0"
    log = (run_dir / console.LOG_FILE).read_text()
    assert "\r" not in log
    for expected in ("run folder:", "never validates", "epoch 1/1  step 2", "Test results", "test_results.json"):
        assert expected in log, expected
    assert not [line for line in log.splitlines() if any(word in line for word in NOISE)]

    rows = read_csv(run_dir / "metrics.csv")
    losses = {int(r["step"]) for r in rows if r.get("train/loss")}
    assert losses == {0, 1}  # every step of a short epoch, from the first
    lr = [c for c in rows[0] if c.startswith("lr-")]
    assert lr and any(r[lr[0]] and int(r["step"]) == 0 for r in rows)
