"""Training curves (CSV or TensorBoard), run folders, and what test_results.json records for reports."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from mamol.errors import ConfigError
from mamol.runs import new_run_folder, training_loggers
from tests.helpers import run_experiment, run_settings, short_run

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def test_loggers_and_run_folders(tmp_path):
    csv = CSVLogger(save_dir=str(tmp_path), name="exp")
    assert training_loggers("csv", csv) == [csv]
    with pytest.raises(ConfigError, match="logger='wandb': expected 'csv' or 'tensorboard'"):
        run_settings(tmp_path, "remote", datasets=["houston2013"], logger="wandb")
    assert new_run_folder(tmp_path, "exp") == tmp_path / "exp" / "version_0"
    assert new_run_folder(tmp_path, "exp") == tmp_path / "exp" / "version_1"  # numbered like training runs


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed: the missing-package error cannot occur")
def test_tensorboard_without_the_package_is_a_config_error(small_scene_root, tmp_path):
    with pytest.raises(ConfigError, match="logger='tensorboard' needs the `tensorboard` package"):
        run_experiment("remote", **short_run(small_scene_root, tmp_path), exp_name="tb", logger="tensorboard")
    assert not (tmp_path / "runs" / "tb").exists()  # refused before the run folder exists


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the tensorboard package is not installed "
                                                "(pip install -r requirements.txt installs it)")
def test_tensorboard_curves_beside_the_csv_log(small_scene_root, tmp_path):
    csv = CSVLogger(save_dir=str(tmp_path), name="exp")
    loggers = training_loggers("tensorboard", csv)
    assert isinstance(loggers[1], TensorBoardLogger) and loggers[1].log_dir == csv.log_dir
    report = run_experiment("remote", **short_run(small_scene_root, tmp_path), exp_name="tb", logger="tensorboard")
    run_dir = Path(report["run_dir"])
    assert (run_dir / "metrics.csv").is_file() and list(run_dir.glob("events.out.tfevents.*"))
