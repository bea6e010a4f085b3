"""Confusion matrices and per-class precision / recall / F1: counts by hand, the files of a tested run, and the
class names in grid and report tables."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mamol.confusion import Confusion, write_run_confusion
from mamol.predictions import TaskPredictions
from tests.helpers import read_csv, read_json


def _predictions(label, pred) -> TaskPredictions:
    label, pred = np.asarray(label), np.asarray(pred)
    small = np.uint8 if label.ndim == 2 else np.int16
    return TaskPredictions(np.arange(len(label), dtype=np.int32), label.astype(small), pred.astype(small),
                           np.zeros(len(label), np.uint8))


# Three classes, 8 samples: true 0 -> predicted 0, 0, 1; true 1 -> 1, 1, 2; true 2 -> 0, 2.
LABEL = [0, 0, 0, 1, 1, 1, 2, 2]
PRED = [0, 0, 1, 1, 1, 2, 0, 2]
NAMES = ("water", "Healthy grass", "road")


def test_single_label_counts_and_scores_by_hand():
    c = Confusion.of(_predictions(LABEL, PRED), NAMES)
    assert c.matrix.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    s = c.scores()
    assert s["class"] == list(NAMES) and s["support"] == [3, 3, 2]
    # water: TP 2, FP 1 (a road sample), FN 1; grass: TP 2, FP 1, FN 1; road: TP 1, FP 1, FN 1.
    assert s["precision"] == pytest.approx([100 * 2 / 3, 100 * 2 / 3, 50.0], abs=1e-4)
    assert s["recall"] == pytest.approx([100 * 2 / 3, 100 * 2 / 3, 50.0], abs=1e-4)
    assert s["f1"] == pytest.approx([100 * 4 / 6, 100 * 4 / 6, 100 * 2 / 4], abs=1e-4)
    assert (c + c).matrix.tolist() == [[4, 2, 0], [0, 4, 2], [2, 0, 2]]  # summed over seeds
    assert c.table() == (["true \\ predicted", *NAMES], [["water", 2, 1, 0], ["Healthy grass", 0, 2, 1],
                                                         ["road", 1, 0, 1]])


def test_a_class_never_predicted_has_no_precision_and_zero_f1():
    s = Confusion.of(_predictions([0, 1, 1], [0, 0, 0]), ("a", "b")).scores()
    assert math.isnan(s["precision"][1]) and s["recall"][1] == 0.0 and s["f1"][1] == 0.0
    assert s["precision"][0] == pytest.approx(100 / 3, abs=1e-4) and s["recall"][0] == 100.0


def test_multilabel_gives_one_two_by_two_matrix_per_class():
    label = [[1, 0], [1, 1], [0, 0], [0, 1]]
    pred = [[1, 1], [0, 1], [0, 0], [1, 1]]
    c = Confusion.of(_predictions(label, pred), ("Drama", "Comedy"))
    assert c.multilabel
    # Drama: TN 1 (sample 2), FP 1 (sample 3), FN 1 (sample 1), TP 1 (sample 0); Comedy: FP 1, TP 2, TN 1.
    assert c.matrix.tolist() == [[[1, 1], [1, 1]], [[1, 1], [0, 2]]]
    s = c.scores()
    assert s["support"] == [2, 2] and s["f1"] == pytest.approx([50.0, 80.0])  # 2*1/(2+1+1), 2*2/(4+1+0)
    assert c.table() == (["class", "TN", "FP", "FN", "TP"], [["Drama", 1, 1, 1, 1], ["Comedy", 1, 1, 0, 2]])
    assert c.to_dict()["matrices"] == {"Drama": [[1, 1], [1, 1]], "Comedy": [[1, 1], [0, 2]]}


def test_run_files_name_classes_and_figures_are_readable(tmp_path):
    names = tuple(f"class {k}" for k in range(15))
    rng = np.random.default_rng(0)
    label = rng.integers(0, 15, 300)
    pred = np.where(rng.random(300) < 0.7, label, rng.integers(0, 15, 300))
    record = write_run_confusion(tmp_path, {"synthetic": _predictions(label, pred)}, {"synthetic": names})
    assert record == {"json": "confusion.json", "tasks": {"synthetic": {"csv": "confusion.csv",
                                                                        "figure": "confusion.png"}}}
    saved = read_json(tmp_path / "confusion.json")["synthetic"]
    assert saved["class_names"] == list(names) and np.asarray(saved["matrix"]).sum() == 300
    rows = read_csv(tmp_path / "confusion.csv")
    assert list(rows[0]) == ["true \\ predicted", *names] and [r["true \\ predicted"] for r in rows] == list(names)
    assert int(rows[3]["class 3"]) == int(((label == 3) & (pred == 3)).sum())
    with Image.open(tmp_path / "confusion.png") as image:
        assert image.size[0] >= 800 and image.size[1] >= 800  # 15 classes: cells large enough for their counts

    both = {"a": _predictions(label, pred), "b": _predictions([[1, 0], [0, 1]], [[1, 1], [0, 1]])}
    record = write_run_confusion(tmp_path / "two", both, {"a": names, "b": ("x", "y")})
    assert record["tasks"]["b"] == {"csv": "confusion_b.csv", "figure": "confusion_b.png"}
    assert (tmp_path / "two" / "confusion_b.png").stat().st_size > 0
    assert read_csv(tmp_path / "two" / "confusion_b.csv")[1] == {"class": "y", "TN": "0", "FP": "1", "FN": "0",
                                                               "TP": "1"}


def test_a_tested_run_writes_its_confusion_and_recall_equals_class_accuracy(trained):
    folder = trained.report["run_dir"]
    results = read_json(f"{folder}/test_results.json")
    per_class = results["per_class"]["synthetic"]
    names = results["class_names"]["synthetic"]
    assert per_class["class"] == names and sum(per_class["support"]) == 80
    for k, recall in enumerate(per_class["recall"]):
        assert recall == pytest.approx(results["metrics"][f"acc_{k}"], abs=1e-4)
    matrix = np.asarray(read_json(f"{folder}/confusion.json")["synthetic"]["matrix"])
    assert matrix.shape == (len(names), len(names)) and matrix.sum() == 80
    assert np.trace(matrix) / 80 * 100 == pytest.approx(results["metrics"]["OA"], abs=1e-3)
    assert results["confusion"]["tasks"]["synthetic"] == {"csv": "confusion.csv", "figure": "confusion.png"}
    assert list(read_csv(f"{folder}/confusion.csv")[0])[1:] == names
    with Image.open(f"{folder}/confusion.png") as image:
        assert min(image.size) > 300


def test_class_columns_are_named_by_class_and_other_names_kept():
    from mamol.metrics import class_metric_label
    one = {"houston2013": ["Healthy grass", "Trees"]}
    assert class_metric_label("acc_1", one) == "acc_Trees" and class_metric_label("OA", one) == "OA"
    assert class_metric_label("acc_7", one) == "acc_7"  # no such class: the index stays
    two = {"a": ["x"], "b": ["y", "z"]}
    assert class_metric_label("b/acc_1", two) == "b/acc_z" and class_metric_label("acc_0", two) == "acc_0"
