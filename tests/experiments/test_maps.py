"""predict_map: classification maps of a remote scene, cut in batches, equal to the model on test patches."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from mamol.data import catalogue
from mamol.errors import CheckpointError, CommandInterrupted, ConfigError
from mamol.experiments.maps import MapOptions, map_settings
from mamol.experiments.plots import map_figure_size
from mamol.experiments.predict import Predictor, task_infos
from mamol.train import resolve_settings
from tests.helpers import convert_scene, read_json, run_command, run_experiment, tiny_config


def test_maps_equal_the_model_on_test_patches(trained, small_scene_root, tmp_path):
    # The trained checkpoint on the small scene (same bands and classes, so it fits).
    common = trained.updates(data_root=str(small_scene_root), log_dir=str(tmp_path / "runs"),
                             missing_table_root=str(tmp_path / "tables"), load_path=trained.checkpoint)
    folder = run_command("predict_map", "remote", **{**common, "exp_name": "maps"})
    truth = np.load(folder / "ground_truth.npy")
    assert truth.shape == (12, 16) and truth.max() == 3
    record = read_json(folder / "maps.json")
    assert [m["setting"] for m in record["maps"]] == ["complete", "no_hsi", "no_lidar"]
    assert record["class_names"] == ["class_1", "class_2", "class_3", "class_4"]

    # The model's own predictions on the test split's stored patches (complete data).
    s = resolve_settings(tiny_config("remote", **{**common, "test_ratio": 0.0}))
    predictor = Predictor(s, task_infos(s), "test")
    entry = catalogue.entry("synthetic", small_scene_root)
    test = entry.dataset(entry, s.data, s.missing, "test")
    logits, fields = predictor.predict(DataLoader(test, batch_size=64, collate_fn=test.collate), ("row", "col"))
    rows, cols = fields["row"].numpy(), fields["col"].numpy()
    complete = np.load(folder / "map_complete.npy")
    assert complete.dtype == np.int16 and complete.shape == (12, 16) and len(rows) == 24
    np.testing.assert_array_equal(complete[rows, cols], logits.argmax(1).numpy())
    assert ((complete >= 0) == (truth >= 0)).all()  # labelled pixels only, by default
    # Per class, beside the OA over labelled pixels: the share of its labelled pixels predicted as it, by name.
    for m in record["maps"]:
        predicted = np.load(folder / f"map_{m['setting']}.npy")
        by_hand = {name: round(100 * sum(int(predicted[r, c] == k) for r, c in zip(*np.nonzero(truth == k)))
                               / int((truth == k).sum()), 4) for k, name in enumerate(record["class_names"])}
        assert m["class_accuracy_labelled"] == pytest.approx(by_hand, abs=1e-4), m["setting"]
    assert record["maps"][0]["OA_labelled"] == pytest.approx(100 * (complete == truth)[truth >= 0].mean(), abs=1e-4)
    # OA of the map over the test pixels is test_only's OA with that modality missing from every test sample.
    oa = {m["setting"]: m["OA_test_pixels"] for m in record["maps"]}
    for setting, (ratio, kind) in {"complete": (0.0, "both"), "no_hsi": (1.0, "HS")}.items():
        tested = run_experiment("remote", **{**common, "exp_name": "tested", "test_only": True,
                                             "test_ratio": ratio, "test_type": kind})
        assert oa[setting] == tested["metrics"]["OA"], setting
    for name in ("complete", "no_hsi", "no_lidar"):
        with Image.open(folder / f"map_{name}.png") as image:
            assert image.size == map_figure_size(12, 16, 4).size and image.mode in ("RGB", "RGBA")

    # Every pixel: the labelled ones get the same predictions as above.
    folder = run_command("predict_map", "remote", **{**common, "exp_name": "all", "map_pixels": "all",
                                                     "map_missing": ["none"]})
    full = np.load(folder / "map_complete.npy")
    assert (full >= 0).all() and sorted(p.name for p in folder.glob("map_*")) == ["map_complete.npy",
                                                                                   "map_complete.png"]
    np.testing.assert_array_equal(full[truth >= 0], complete[truth >= 0])


def test_map_settings_and_refusals(trained, natural_root, tmp_path):
    settings = map_settings(MapOptions("labelled", ("none", "LiDAR", "HS")), ("hsi", "lidar"))
    assert [(s.name, s.code) for s in settings] == [("complete", 0), ("no_lidar", 2), ("no_hsi", 1)]
    assert [s.name for s in map_settings(MapOptions("all", ("hsi_sar",)), ("hsi", "lidar", "sar"))] == ["no_hsi_sar"]
    with pytest.raises(ConfigError, match="removes every modality"):
        map_settings(MapOptions("labelled", ("hsi_lidar",)), ("hsi", "lidar"))
    with pytest.raises(ConfigError, match="map_missing entry 'rgb'"):
        map_settings(MapOptions("labelled", ("rgb",)), ("hsi", "lidar"))
    common = trained.updates(log_dir=str(tmp_path / "runs"), exp_name="refused")
    with pytest.raises(ConfigError, match="predict_map evaluates a checkpoint: set load_path"):
        run_command("predict_map", "remote", **common)
    with pytest.raises(ConfigError, match="predict_map draws remote scenes"):
        run_command("predict_map", "task_finetune_mmimdb", data_root=str(natural_root), log_dir=str(tmp_path),
                    exp_name="refused", load_path=trained.checkpoint)
    other = convert_scene(tmp_path, "other", hsi_bands=5, size=(12, 16), seed=3, train_per_class=4,
                          val_per_class=2, test_per_class=6)
    with pytest.raises(CheckpointError, match="bands.*'hsi': 6.*'hsi': 5"):
        run_command("predict_map", "remote", **{**common, "data_root": str(other), "load_path": trained.checkpoint})
    assert not (tmp_path / "runs" / "refused").exists()


class Killed(Exception):
    """What this test's own SIGTERM handler raises: a command that installs none is stopped by it."""


def test_an_interrupted_predict_map_keeps_the_finished_maps(trained, small_scene_root, tmp_path, monkeypatch):
    common = trained.updates(data_root=str(small_scene_root), log_dir=str(tmp_path / "runs"),
                             missing_table_root=str(tmp_path / "tables"), load_path=trained.checkpoint)
    predict, calls = Predictor.predict, []

    def predict_then_stop(self, *args, **kwargs):  # SIGTERM while the second map is predicted
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return predict(self, *args, **kwargs)

    def killed(signum, frame):
        raise Killed

    monkeypatch.setattr(Predictor, "predict", predict_then_stop)
    previous = signal.signal(signal.SIGTERM, killed)
    try:
        with pytest.raises(CommandInterrupted, match=r"SIGTERM during predict_map: the finished maps \['complete'\] "
                                                     r"are kept") as stopped:
            run_command("predict_map", "remote", **{**common, "exp_name": "cut"})
        assert signal.getsignal(signal.SIGTERM) is killed  # the handler in place before comes back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    folder = tmp_path / "runs" / "cut" / "version_0"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "console.log", "ground_truth.npy",
                                                        "map_complete.npy", "map_complete.png",
                                                        "maps.json"]  # no temporary file
    record = read_json(folder / "maps.json")
    assert [m["setting"] for m in record["maps"]] == ["complete"]
    assert record["pending"] == ["no_hsi", "no_lidar"] and record["complete"] is False

    # Stopped before any map was finished, it leaves nothing.
    calls.clear()
    calls.append(1)
    previous = signal.signal(signal.SIGTERM, killed)
    try:
        with pytest.raises(CommandInterrupted, match="before any map was finished"):
            run_command("predict_map", "remote", **{**common, "exp_name": "early", "map_missing": ["hsi", "none"]})
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not list((tmp_path / "runs" / "early").glob("version_*"))
