"""evaluate_grid: one checkpoint under every missing type x ratio, equal to test_only point by point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mamol.conversion.hateful_memes import prepare_hateful_memes
from mamol.errors import CheckpointError, ConfigError
from mamol.experiments.grid import GridOptions, default_types, grid_points
from mamol.experiments.predict import task_infos
from mamol.module import MaMOLModule
from tests.fakes.natural import make_hateful_memes_raw
from tests.helpers import convert_scene, read_csv, read_json, run_command, run_settings

RATIOS = [0.0, 0.7, 1.0]


def test_grid_equals_test_only_and_writes_its_files(trained):
    folder = run_command("evaluate_grid", "remote", **trained.updates(exp_name="grid", load_path=trained.checkpoint,
                                                                      grid_ratios=RATIOS))
    rows = read_csv(folder / "grid.csv")
    assert [(r["type"], float(r["ratio"])) for r in rows] == [(t, r) for t in ("hsi", "lidar", "both") for r in RATIOS]
    names = trained.report["class_names"]["synthetic"]
    assert {"OA", "AA", "kappa", f"acc_{names[0]}", f"acc_{names[3]}", "the_metric"} <= set(rows[0])
    assert not any(k.startswith("acc_") and k[4:].isdigit() for k in rows[0])  # class names, not indices
    grid = read_json(folder / "grid.json")
    by_point = {(r["type"], r["ratio"]): r["metrics"] for r in grid["rows"]}
    # Ratio 0 is complete data whatever the type: identical rows.
    assert by_point[("hsi", 0.0)] == by_point[("lidar", 0.0)] == by_point[("both", 0.0)] == grid["complete"]
    # Each point equals test_only with test_ratio/test_type (same checkpoint, same missing table).
    for (kind, ratio), (test_type, test_ratio) in {("both", 0.7): ("both", 0.7), ("hsi", 1.0): ("HS", 1.0),
                                                   ("hsi", 0.0): ("both", 0.0)}.items():
        assert by_point[(kind, ratio)] == trained.test_only(test_ratio, test_type)["metrics"], (kind, ratio)
    assert by_point[("both", 1.0)] != by_point[("both", 0.0)]  # the grid measures something
    # The release's spelling and the project's give the same setting; what is written says hsi.
    release, canonical = trained.test_only(1.0, "HS"), trained.test_only(1.0, "hsi")
    assert release["metrics"] == canonical["metrics"] and release["missing"] == canonical["missing"]
    assert release["missing"]["missing_type"] == "hsi" and release["config"]["test_type"] == "HS"  # as given
    assert grid["passes"] == {"synthetic": [0, 1, 2]} and grid["samples"] == {"synthetic": 80}
    md = (folder / "grid.md").read_text()
    assert "## OA" in md and "| hsi missing |" in md and (folder / "config.json").is_file()
    with Image.open(folder / "robustness.png") as image:
        assert image.size == (3 * 420, 360 + 42)  # OA, AA, kappa panels of 4.2 x 3.6 in, a legend row under them


def test_default_types_and_bad_grids():
    assert default_types(("hsi", "lidar")) == ("hsi", "lidar", "both")
    assert default_types(("text", "image")) == ("text", "image", "both")
    assert default_types(("hsi", "lidar", "sar")) == ("hsi", "lidar", "sar", "hsi_lidar", "hsi_sar", "lidar_sar",
                                                      "hsi_lidar_sar")
    points = grid_points(GridOptions(("HS", "LiDAR", "hsi"), (1.0, 0.0, 1.0)), ("hsi", "lidar"))
    assert [(p.type, p.ratio) for p in points] == [("hsi", 0.0), ("hsi", 1.0), ("lidar", 0.0), ("lidar", 1.0)]
    with pytest.raises(ConfigError, match="grid_types: .*'rgb' is not a modality"):
        grid_points(GridOptions(("rgb",), (0.5,)), ("hsi", "lidar"))
    with pytest.raises(ConfigError, match=r"grid_ratios=\[1.5\]"):
        grid_points(GridOptions(None, (1.5,)), ("hsi", "lidar"))
    with pytest.raises(ConfigError, match="grid_types: 'none' is complete data"):
        grid_points(GridOptions(("none",), (0.5,)), ("hsi", "lidar"))


def _untrained_checkpoint(data_root: Path, path: Path, *named: str, **updates) -> Path:
    """A plain state dict of a freshly built model (random backbone included), as ``load_path`` takes it."""
    s = run_settings(data_root, *named, **updates)
    torch.manual_seed(0)
    torch.save(MaMOLModule(s, task_infos(s)).state_dict(), path)
    return path


def test_three_modalities_and_image_text(natural_root, tmp_path):
    arrow = convert_scene(tmp_path, "three", hsi_bands=4, size=(24, 32), modalities=("hsi", "lidar", "sar"),
                          train_per_class=6, val_per_class=3, test_per_class=5)
    updates = dict(datasets=["synthetic"], modalities=["hsi", "lidar", "sar"],
                   missing_table_root=str(tmp_path / "tables"), log_dir=str(tmp_path / "runs"))
    weights = _untrained_checkpoint(arrow, tmp_path / "three.pt", "remote_3modality", **updates)
    folder = run_command("evaluate_grid", "remote_3modality", data_root=str(arrow), **updates, exp_name="g3",
                         load_path=str(weights), grid_ratios=[0.0, 0.5])
    grid = read_json(folder / "grid.json")
    assert grid["types"] == ["hsi", "lidar", "sar", "hsi_lidar", "hsi_sar", "lidar_sar", "hsi_lidar_sar"]
    assert len(grid["rows"]) == 14 and len({str(r["metrics"]) for r in grid["rows"] if r["ratio"] == 0}) == 1
    pair = torch.load(next((tmp_path / "tables").glob("synthetic_test_missing_hsi_lidar_05_*.pt")),
                      weights_only=True)["params"]
    assert pair["missing_ratio"] == pair["missing_ratio_2"] == 0.5  # both modalities of a pair at the ratio
    assert grid["passes"]["synthetic"] == list(range(7))  # every partial pattern occurs somewhere in the grid

    updates = dict(missing_table_root=str(tmp_path / "tables"), log_dir=str(tmp_path / "runs"), batch_size=4,
                   per_gpu_batchsize=4)
    weights = _untrained_checkpoint(natural_root, tmp_path / "mmimdb.pt", "task_finetune_mmimdb", **updates)
    folder = run_command("evaluate_grid", "task_finetune_mmimdb", data_root=str(natural_root), **updates,
                         exp_name="gn", load_path=str(weights), grid_ratios=[0.0, 1.0])
    grid = read_json(folder / "grid.json")
    assert grid["types"] == ["text", "image", "both"] and grid["headline"] == "F1_macro"
    assert {"F1_micro", "F1_macro", "F1_weighted", "F1_samples"} <= set(grid["complete"])


def test_grid_refuses_a_missing_or_mismatched_checkpoint(trained, tmp_path):
    common = trained.updates(log_dir=str(tmp_path / "runs"), exp_name="refused")
    with pytest.raises(ConfigError, match="evaluate_grid evaluates a checkpoint: set load_path"):
        run_command("evaluate_grid", "remote", **common)
    with pytest.raises(ConfigError, match="load_path='.*nowhere.ckpt': no such file"):
        run_command("evaluate_grid", "remote", **{**common, "load_path": str(tmp_path / "nowhere.ckpt")})
    other = convert_scene(tmp_path, "other", hsi_bands=5)
    with pytest.raises(CheckpointError, match="bands.*'hsi': 6.*'hsi': 5"):
        run_command("evaluate_grid", "remote", **{**common, "data_root": str(other), "load_path": trained.checkpoint})
    with pytest.raises(ConfigError, match="grid_types"):
        run_command("evaluate_grid", "remote", **{**common, "load_path": trained.checkpoint, "grid_types": ["rgb"]})
    assert not (tmp_path / "runs" / "refused").exists()  # nothing written by a refused command


def test_grid_is_never_refused_over_training_batch_keys(trained, tmp_path):
    """Evaluation takes per_gpu_batchsize as its batch whatever batch_size says (accumulation is for training)."""
    folder = run_command("evaluate_grid", "remote", **trained.updates(
        log_dir=str(tmp_path / "runs"), exp_name="small_batch", batch_size=1, per_gpu_batchsize=128,
        load_path=trained.checkpoint, grid_types=["both"], grid_ratios=[0.7]))
    row = read_json(folder / "grid.json")["rows"][0]
    assert row["metrics"]["OA"] == trained.test_only(0.7, "both")["metrics"]["OA"]


def test_grid_warns_like_training_when_auroc_is_undefined(tmp_path):
    """A test split of one class leaves AUROC undefined: one warning naming the settings, a panel that says so."""
    raw = make_hateful_memes_raw(tmp_path / "raw", counts=(6, 3, 4), seed=1)
    test = raw.root / "test_seen.jsonl"
    test.write_text("".join(json.dumps(dict(json.loads(line), label=0)) + "\n"
                            for line in test.read_text().splitlines()))
    arrow = tmp_path / "arrow"
    prepare_hateful_memes(raw.root, arrow, progress=False)
    updates = dict(missing_table_root=str(tmp_path / "tables"), log_dir=str(tmp_path / "runs"), batch_size=4,
                   per_gpu_batchsize=4)
    weights = _untrained_checkpoint(arrow, tmp_path / "hm.pt", "task_finetune_hatememes", **updates)
    with pytest.warns(UserWarning, match="AUROC is undefined") as caught:
        folder = run_command("evaluate_grid", "task_finetune_hatememes", data_root=str(arrow), **updates,
                             exp_name="nan", load_path=str(weights), grid_types=["text"], grid_ratios=[0.0, 1.0])
    lines = [str(w.message) for w in caught if "AUROC is undefined" in str(w.message)]
    why = "all 4 samples are negative: AUROC needs both classes"
    # The words training uses (mamol.metrics.warn_undefined), once, naming where.
    assert lines == [f"test/hatememes at every grid setting (2): AUROC is undefined on this split and reported as "
                     f"NaN ({why})"]
    grid = read_json(folder / "grid.json")
    assert grid["undefined"] == {"AUROC": {"why": why, "settings": ["complete", "text 1"]}}
    assert all(r["metrics"]["AUROC"] != r["metrics"]["AUROC"] for r in grid["rows"])  # NaN
