"""curves.png: training loss, validation metric and learning rate over the step, from a run's metrics.csv."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mamol import curves
from mamol.errors import MissingFileError
from tests.helpers import read_csv, run_experiment, short_run


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures :mod:`mamol.curves` saves, in order (saved as usual too)."""
    figures, save = [], curves.write_png

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(curves, "write_png", keep)
    return figures


def test_a_trained_run_writes_its_curves(remote_root, tmp_path, drawn):
    # 160 training samples in batches of 32: 5 steps per epoch, 2 epochs, validated after each.
    report = run_experiment("remote", **short_run(remote_root, tmp_path, max_epoch=2), exp_name="curves")
    folder = Path(report["run_dir"])
    assert report["curves"] == "curves.png" and (folder / "curves.png").is_file()
    with Image.open(folder / "curves.png") as image:
        assert image.size == (760, 740)
    loss_ax, val_ax, lr_ax = drawn[0].axes
    # The learning rate and the loss: one point per optimiser step (an epoch shorter than the logging interval).
    (lr,) = lr_ax.lines
    np.testing.assert_array_equal(lr.get_xdata(), np.arange(10))
    assert len(loss_ax.lines[0].get_xdata()) == 10
    rows = read_csv(folder / "metrics.csv")
    logged = [float(r["val/OA"]) for r in rows if r.get("val/OA")]
    assert val_ax.get_ylabel() == "val OA (%)" and list(val_ax.lines[0].get_ydata()) == pytest.approx(logged)
    assert len(logged) == 2 and val_ax.get_ylim()[1] == 100.0
    assert lr.get_ydata().max() == pytest.approx(1e-3) and lr.get_ydata()[-1] < lr.get_ydata()[0]  # peak, decay

    # Regenerated for an existing folder: the same data.
    again = curves.write_curves(folder)
    assert len(again.learning_rates) == 1 and len(again.learning_rates[0]) == 10 and again.headline == "OA"


def _write_metrics(path: Path, rows: list[dict]) -> None:
    columns = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_no_validation_nan_scores_and_a_resumed_history(tmp_path, drawn):
    run = tmp_path / "version_0"
    run.mkdir()
    rows = [{"step": s, "train/loss": 1.0 - 0.1 * s, "lr-AdamW/pg1": 1e-3, "lr-AdamW/pg2": 1e-2} for s in range(4)]
    rows.append({"step": 2, "train/loss": 0.5})  # redone after a resume: the later row counts
    _write_metrics(run / "metrics.csv", rows)
    found = curves.write_curves(run)
    assert list(found.loss.step) == [0, 1, 2, 3] and found.loss.value[2] == 0.5
    assert [s.label for s in found.learning_rates] == ["AdamW/pg1", "AdamW/pg2"]  # two schedules: two lines
    loss_ax, val_ax, lr_ax = drawn[0].axes
    assert [t.get_text() for t in val_ax.texts][0].startswith("no validation in this run")
    assert [line.get_label() for line in lr_ax.lines] == ["AdamW/pg1", "AdamW/pg2"]
    assert lr_ax.get_legend() is not None and lr_ax.get_legend().get_bbox_to_anchor().x0 > lr_ax.bbox.x1 - 1

    rows = [{"step": s, "train/loss": 0.7, "lr-AdamW": 1e-3} for s in range(4)]
    rows += [{"step": s, "val/AUROC": math.nan, "val/accuracy": 50.0, "val/the_metric": math.nan} for s in (1, 3)]
    _write_metrics(run / "metrics.csv", rows)
    found = curves.write_curves(run)
    assert found.headline == "AUROC" and len(found.validation) == 2
    assert " ".join(drawn[1].axes[1].texts[0].get_text().split()) == "AUROC undefined: NaN at every validation"

    with pytest.raises(MissingFileError, match="no metrics.csv in it or under it"):
        curves.run_folders([tmp_path / "elsewhere"])
    assert curves.run_folders([tmp_path]) == [run]
    assert curves.main([str(tmp_path / "elsewhere")]) == 2
