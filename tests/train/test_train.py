"""The training/evaluation loop end to end on a generated scene, tiny random CLIP, CPU."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mamol.errors import CheckpointError, DataError, MissingFileError
from mamol.module import MaMOLModule
from tests.helpers import (
    TINY,
    add_callbacks,
    cli,
    cli_updates,
    convert_scene,
    open_split,
    read_csv,
    run_experiment,
    short_run,
)


def _run(arrow: Path, tmp: Path, *named: str, **updates) -> dict:
    """A short remote run on ``arrow`` (2 epochs, batch 32, validation every epoch) with ``updates``."""
    return run_experiment(*(named or ("remote",)), **short_run(arrow, tmp, **{"max_epoch": 2, **updates}))


def _cli_args(arrow: Path, tmp: Path, **updates) -> list[str]:
    return cli_updates({**TINY, **short_run(arrow, tmp, **{"max_epoch": 2, **updates})})


def test_fast_dev_run_through_cli(remote_root, tmp_path):
    proc = cli("with", "remote", *_cli_args(remote_root, tmp_path, fast_dev_run=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Test results" in proc.stdout


def test_fit_checkpoints_and_test_only_cli_round_trip(remote_root, tmp_path):
    report = _run(remote_root, tmp_path, exp_name="fit", max_epoch=2)
    run_dir = Path(report["run_dir"])
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "config.json").is_file()
    assert {"OA", "AA", "kappa", "acc_0"} <= set(report["metrics"])
    # validation logged on the scale of the test file (x100)
    val_oa = [float(row["val/OA"]) for row in read_csv(run_dir / "metrics.csv") if row.get("val/OA")]
    assert val_oa and max(val_oa) > 1.0 and all(0.0 <= v <= 100.0 for v in val_oa)
    best = report["checkpoint"]
    assert best and Path(best).name.startswith("best-")
    # A checkpoint holds the trainable tensors (here also the random backbone, which no file can rebuild).
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert state["mamol"]["infos"][0]["bands"] == {"hsi": 8, "lidar": 1}

    # test_only through the CLI with the README's evaluation flags: same weights, same test metrics.
    proc = cli("with", "remote", *_cli_args(remote_root, tmp_path, exp_name="eval", test_only=True, load_path=best))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next((tmp_path / "runs" / "eval").glob("version_*/test_results.json")).read_text())
    assert results["metrics"] == pytest.approx(report["metrics"], abs=1e-6)
    assert results["missing"]["missing_ratio"] == 0.7 and results["missing"]["missing_type"] == "both"
    assert results["checkpoint"] == best and results["dataset"]["synthetic"]["bands"]["hsi"] == 8

    # Plain state dicts load too, with or without the "model." prefix.
    plain = {k: v for k, v in state["state_dict"].items()}
    for name, sd in (("prefixed.pt", plain), ("bare.pt", {k.removeprefix("model."): v for k, v in plain.items()})):
        torch.save(sd, tmp_path / name)
        again = _run(remote_root, tmp_path, exp_name="plain", test_only=True, load_path=str(tmp_path / name))
        assert again["metrics"] == pytest.approx(report["metrics"], abs=1e-6)

    # Another missing setting at test time changes what is measured, not the weights.
    single = _run(remote_root, tmp_path, exp_name="hs", test_only=True, load_path=best, test_ratio=1.0,
                  test_type="HS")
    assert single["missing"] == {**report["missing"], "missing_ratio": 1.0, "missing_type": "hsi"}
    assert report["method"] == "mamol" and report["settings"]["method"]["options"]["adapter_rank"] == 8


def test_resume_from_last_continues(remote_root, tmp_path):
    first = _run(remote_root, tmp_path, exp_name="resume", max_epoch=1)
    last = Path(first["run_dir"]) / "checkpoints" / "last.ckpt"
    before = torch.load(last, map_location="cpu", weights_only=True)
    second = _run(remote_root, tmp_path, exp_name="resume", max_epoch=2, resume_from=str(last))
    after = torch.load(Path(second["run_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert after["epoch"] == before["epoch"] + 1  # one more epoch, not a restart
    assert after["global_step"] == 2 * before["global_step"]
    assert after["optimizer_states"][0]["state"], "optimizer state carried over"


@pytest.mark.parametrize("damage,error,match", [
    ("deleted", MissingFileError, r"expected synthetic_train\.arrow, synthetic_val\.arrow, synthetic_test\.arrow"),
    ("truncated", DataError, r"synthetic_test\.arrow is not a readable Arrow IPC file"),
    ("table", DataError, r"missing table .*synthetic_test_missing_both_07_.*\.pt"),
])
def test_a_broken_test_split_is_refused_before_training(remote_root, tmp_path, damage, error, match):
    """The test split (file or missing table) is checked with the others before the fit, not found broken
    after it; the run leaves no folder behind."""
    root = tmp_path / "arrow"
    shutil.copytree(remote_root, root)
    test = root / "synthetic_test.arrow"
    updates = {}
    if damage == "deleted":
        test.unlink()
    elif damage == "truncated":
        test.write_bytes(test.read_bytes()[:3000])
    else:  # a stored test table that cannot be read, and a run told not to redraw it
        updates = {"missing_table_root": str(tmp_path / "tables"), "missing_table_on_mismatch": "refuse"}
        table = open_split(root, "synthetic", "test", "remote", **updates).missing_table
        assert len(table)
        (stored,) = (tmp_path / "tables").glob("synthetic_test_*.pt")
        stored.write_bytes(b"not a table")
    with pytest.raises(error, match=match):
        _run(root, tmp_path, exp_name="broken", max_epoch=1, **updates)
    assert not (tmp_path / "runs" / "broken").exists() or not any((tmp_path / "runs" / "broken").iterdir())


def test_checkpoint_of_another_dataset_is_refused(remote_root, tmp_path):
    report = _run(remote_root, tmp_path, exp_name="src", max_epoch=1)
    other = convert_scene(tmp_path, "other", hsi_bands=5)
    with pytest.raises(CheckpointError, match="bands.*'hsi': 8.*'hsi': 5"):
        _run(other, tmp_path, exp_name="dst", test_only=True, load_path=report["checkpoint"])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        _run(remote_root, tmp_path, exp_name="dst", test_only=True, load_path=str(garbage))


def test_a_corrupted_or_reconfigured_checkpoint_is_refused_at_test_only_and_resume(remote_root, tmp_path):
    """A changed value in a saved checkpoint (the file stays readable) and evaluation under other output-changing
    options (top_k) are refused by name; allow_option_change=True evaluates and records what changed."""
    report = _run(remote_root, tmp_path, exp_name="src", max_epoch=1)
    best, last = report["checkpoint"], Path(report["run_dir"]) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    ckpt["state_dict"]["model.head.weight"][0, 0] += 0.5  # the checksum saved with it is left as it was
    corrupt = last.with_name("corrupt.ckpt")
    torch.save(ckpt, corrupt)
    with pytest.raises(CheckpointError, match=r"load_path='.*corrupt\.ckpt': its tensors do not match the checksum"):
        _run(remote_root, tmp_path, exp_name="eval", test_only=True, load_path=str(corrupt))
    with pytest.raises(CheckpointError, match=r"resume_from='.*corrupt\.ckpt': its tensors do not match"):
        _run(remote_root, tmp_path, exp_name="src", resume_from=str(corrupt))
    with pytest.raises(CheckpointError, match=r"top_k: checkpoint 1, this run 2"):
        _run(remote_root, tmp_path, exp_name="eval", test_only=True, load_path=best, top_k=2)
    allowed = _run(remote_root, tmp_path, exp_name="eval", test_only=True, load_path=best, top_k=2,
                   allow_option_change=True)
    recorded = json.loads((Path(allowed["run_dir"]) / "test_results.json").read_text())
    assert recorded["option_changes"] == {"top_k": {"checkpoint": 1, "run": 2}}
    assert recorded["config"]["allow_option_change"] is True
    assert report["option_changes"] == {}


def test_accumulation_guard_through_cli(remote_root, tmp_path):
    proc = cli("with", "remote", *_cli_args(remote_root, tmp_path, batch_size=16, per_gpu_batchsize=32))
    assert proc.returncode != 0
    assert "raise batch_size to at least 32" in proc.stderr


def test_unknown_key_is_refused_by_the_cli():
    proc = cli("with", "remote", "no_such_key=1")
    assert proc.returncode != 0 and "no_such_key" in proc.stderr


def test_bf16_on_the_cpu_fits_and_tests_under_autocast(remote_root, tmp_path, monkeypatch):
    """precision="bf16" on the CPU runs Lightning's bf16-mixed: every forward (training, validation, test) gives
    bfloat16 logits, and the run ends with finite test metrics."""
    seen: set[tuple[str, str, torch.dtype]] = set()
    forward = MaMOLModule.forward

    def recording(self, batch):
        logits = forward(self, batch)
        seen.add((self.trainer.state.stage.value, self.trainer.precision, logits.dtype))
        return logits

    monkeypatch.setattr(MaMOLModule, "forward", recording)
    report = _run(remote_root, tmp_path, exp_name="bf16", precision="bf16", max_epoch=1)
    assert seen == {(stage, "bf16-mixed", torch.bfloat16) for stage in ("train", "validate", "test")}, seen
    assert report["settings"]["hardware"]["precision"] == "bf16-mixed"
    assert {"OA", "AA", "kappa"} <= set(report["metrics"])
    assert all(math.isfinite(v) for v in report["metrics"].values()), report["metrics"]
    assert 0.0 <= report["metrics"]["OA"] <= 100.0


@pytest.mark.heavy
def test_short_training_beats_chance_and_uses_both_modalities(tmp_path):
    arrow = convert_scene(tmp_path, "learn", hsi_bands=8, seed=2, size=(64, 96), train_per_class=80,
                          val_per_class=20, test_per_class=80)
    trained = _run(arrow, tmp_path, exp_name="learn", max_epoch=12, check_val_every_n_epoch=4,
                   learning_rate=2e-3, warmup_steps=0.05)
    oa = {}
    for label, ratio, kind in (("complete", 0.0, "both"), ("no_hsi", 1.0, "HS"), ("no_lidar", 1.0, "lidar")):
        report = _run(arrow, tmp_path, exp_name=label, test_only=True, load_path=trained["checkpoint"],
                      test_ratio=ratio, test_type=kind)
        oa[label] = report["metrics"]["OA"]
    # 4 classes = 2 spectra x 2 heights: each modality alone separates only half of them.
    assert oa["complete"] > 75.0, oa
    assert oa["complete"] > oa["no_hsi"] + 10 and oa["complete"] > oa["no_lidar"] + 10, oa


def test_last_checkpoint_after_every_epoch_without_validation(remote_root, tmp_path, monkeypatch):
    """last.ckpt is written at each epoch end, also when validation runs only every few epochs."""
    seen: list[tuple[int, int]] = []

    class Probe(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            if trainer.current_epoch > 0:
                assert last.is_file(), f"no last.ckpt at the start of epoch {trainer.current_epoch}"
                state = torch.load(last, map_location="cpu", weights_only=True)
                seen.append((trainer.current_epoch, state["epoch"]))

    add_callbacks(monkeypatch, Probe())
    report = _run(remote_root, tmp_path, exp_name="last", max_epoch=3, check_val_every_n_epoch=5)
    assert seen == [(1, 0), (2, 1)]  # the file of epoch e-1 is there when epoch e starts
    last = Path(report["run_dir"]) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 2
    assert report["checkpoint"] == str(last)  # no validation ran: the final weights were tested


def test_last_checkpoint_exists_before_the_first_epoch_ends(remote_root, tmp_path, monkeypatch):
    """last.ckpt is written when training starts: it is there, holding epoch 0 and step 0, at the first batch."""
    seen: list[tuple[int, int]] = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 0 and batch_idx == 0:
                last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
                assert last.is_file(), "no last.ckpt at the first training batch"
                state = torch.load(last, map_location="cpu", weights_only=True)
                seen.append((state["epoch"], state["global_step"]))

    add_callbacks(monkeypatch, Probe())
    _run(remote_root, tmp_path, exp_name="first", max_epoch=1, test_after_fit=False)
    assert seen == [(0, 0)]


def test_failed_run_keeps_its_folder_with_failed_json_once_a_checkpoint_exists(remote_root, tmp_path, monkeypatch):
    """A run failing after last.ckpt was written keeps its folder and says why in failed.json; one failing before
    any checkpoint leaves no folder."""
    class Fail(pl.Callback):
        def __init__(self, hook: str) -> None:
            self.hook = hook

        def setup(self, trainer, pl_module, stage):  # before training starts: no checkpoint yet
            if self.hook == "setup":
                raise RuntimeError("broken before any checkpoint")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # last.ckpt written at the start
            if self.hook == "batch":
                raise RuntimeError("broken in the first batch")

    add_callbacks(monkeypatch, Fail("setup"))
    with pytest.raises(RuntimeError, match="broken before any checkpoint"):
        _run(remote_root, tmp_path, exp_name="early")
    assert list((tmp_path / "runs" / "early").iterdir()) == []  # its version_0 was removed

    monkeypatch.undo()
    add_callbacks(monkeypatch, Fail("batch"))
    with pytest.raises(RuntimeError, match="broken in the first batch"):
        _run(remote_root, tmp_path, exp_name="late")
    run_dir = tmp_path / "runs" / "late" / "version_0"
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed == {"error": "RuntimeError: broken in the first batch",
                      "checkpoints": [str(run_dir / "checkpoints" / "last.ckpt")]}
    assert (run_dir / "config.json").is_file() and not (run_dir / "test_results.json").exists()


def test_limit_test_evaluates_a_fraction_or_a_number_of_test_batches(remote_root, tmp_path, monkeypatch):
    """The 240 test samples in batches of 32 are 8 batches: limit_test=3 tests 3 of them (96 samples), 0.5 half of
    them (4 batches, 128 samples), the default all 240; test_results.json records the value."""
    counted: list[int] = []

    class Count(pl.Callback):
        def on_test_epoch_start(self, trainer, pl_module):
            counted.append(0)

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            counted[-1] += len(batch["label"])

    add_callbacks(monkeypatch, Count())
    fitted = _run(remote_root, tmp_path, exp_name="fit", max_epoch=1, limit_test=3)
    tested = {limit: _run(remote_root, tmp_path, exp_name="test", test_only=True, load_path=fitted["checkpoint"],
                          **({} if limit is None else {"limit_test": limit}))
              for limit in (0.5, None)}
    assert counted == [96, 128, 240]
    assert (fitted["limit_test"], tested[0.5]["limit_test"], tested[None]["limit_test"]) == (3, 0.5, 1.0)
