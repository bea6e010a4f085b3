"""The figures: error-mask colours no class has, its own legend, legends outside the data, score axes ending at
100 %, a panel that says a metric is undefined, and labels spelled as the config keys are."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mamol.experiments import plots
from mamol.experiments.maps import class_accuracy


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plotting functions save, in order (they are saved as usual too)."""
    figures, save = [], plots._save

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _texts(ax) -> list[str]:
    return [" ".join(t.get_text().split()) for t in ax.texts]


@pytest.mark.parametrize("n_classes", [1, 6, 10, 11, 15, 20, 21, 40, 100])
def test_error_mask_colours_are_no_class_colour(n_classes):
    colours = plots.palette(n_classes)
    for mark in (plots.CORRECT, plots.WRONG):
        distance = np.linalg.norm(colours - np.asarray(mark), axis=1)
        assert distance.min() > 0.3, (mark, n_classes)  # far from every class colour, not merely unequal
    assert np.linalg.norm(np.asarray(plots.CORRECT) - plots.WRONG) > 1.5  # correct and wrong: opposite ends


def test_map_has_an_error_legend_of_its_own(tmp_path, drawn):
    truth = np.full((6, 8), -1)
    truth[1:5, 1:7] = np.arange(24).reshape(4, 6) % 3
    prediction = truth.copy()
    prediction[1, 1:4] = (truth[1, 1:4] + 1) % 3  # three wrong pixels
    path = plots.map_figure(prediction, truth, ["water", "grass", "road"], "complete data", tmp_path / "map.png")
    fig = drawn[0]
    legends = [[t.get_text() for t in legend.get_texts()] for legend in fig.legends]
    assert legends[0] == ["1 water", "2 grass", "3 road", "no label / not predicted"]
    assert legends[1] == ["correct", "wrong", "not scored (no label or no prediction)"]
    assert fig.legends[1].get_title().get_text() == "error mask"
    assert "3 of 24 labelled pixels wrong" in fig.axes[2].get_title()
    error_panel = fig.axes[2].images[0].get_array()  # (H, W, 3) as drawn
    assert (error_panel[1, 1:4] == plots.WRONG).all() and (error_panel[2, 2] == plots.CORRECT).all()
    assert (error_panel[0, 0] == plots.NO_LABEL).all()
    with Image.open(path) as image:
        assert image.size == plots.map_figure_size(6, 8, 3).size


def _inside_an_axes(fig) -> bool:
    return any(ax.get_legend() is not None for ax in fig.axes)


def test_robustness_figure_bounds_legend_and_undefined_panel(tmp_path, drawn):
    ratios = [0.0, 0.5, 1.0]
    curves = {"AUROC": [plots.Curve(plots.type_label("text"), ratios, [math.nan] * 3),
                        plots.Curve(plots.type_label("image"), ratios, [math.nan] * 3)],
              "accuracy": [plots.Curve(plots.type_label("text"), ratios, [99.5, 98.0, 97.0]),
                           plots.Curve(plots.type_label("image"), ratios, [99.5, 60.0, 50.0])]}
    why = "all 4 samples are negative: AUROC needs both classes"
    plots.robustness_figure(curves, {"AUROC": math.nan, "accuracy": 99.5}, "t", tmp_path / "r.png",
                            {"AUROC": why})
    fig = drawn[0]
    auroc, accuracy = fig.axes
    assert _texts(auroc) == [f"AUROC undefined: {why}"] and not auroc.lines
    assert accuracy.get_ylim()[1] == 100.0 and accuracy.get_ylim()[0] < 50.0
    assert not _inside_an_axes(fig) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["text missing", "image missing", "complete data"]


def test_comparison_and_bars_end_at_100_and_say_undefined(tmp_path, drawn):
    x = [0.0, 0.5, 1.0]
    panels = {"a": [plots.Curve("mamol", x, [98.0, 97.0, 99.0], [3.0, 4.0, 5.0]),  # mean + std above 100
                    plots.Curve("lora", x, [90.0, 80.0, 70.0], [1.0, 1.0, 1.0])],
              "b": [plots.Curve("lora", x, [math.nan] * 3), plots.Curve("mamol", x, [math.nan] * 3)]}
    plots.comparison_figure(panels, "OA", "t", tmp_path / "c.png")
    fig = drawn[0]
    assert fig.axes[0].get_ylim()[1] == 100.0 and _texts(fig.axes[1]) == ["OA undefined (NaN) everywhere in "
                                                                           "this panel"]
    assert not _inside_an_axes(fig) and [t.get_text() for t in fig.legends[0].get_texts()] == ["mamol", "lora"]
    colour = {line.get_label(): line.get_color() for line in fig.axes[0].lines}
    assert colour["mamol"] != colour["lora"]

    bars = {"x": [plots.Bar("mamol", 99.0, 4.0, 3), plots.Bar("lora", 60.0, math.nan, 1)],
            "y": [plots.Bar("mamol", math.nan, math.nan, 3)]}
    plots.bar_figure(bars, "AUROC", "t", tmp_path / "b.png")
    fig = drawn[1]
    assert fig.axes[0].get_ylim() == (0.0, 100.0)
    assert _texts(fig.axes[1]) == ["AUROC undefined (NaN) everywhere in this panel"]


def test_labels_are_spelled_as_the_keys():
    assert plots.type_label("hsi") == "hsi missing" and plots.type_label("lidar") == "lidar missing"
    assert plots.type_label("hsi_sar") == "hsi+sar missing" and plots.type_label("both") == "both (mixed)"
    assert plots.type_label("hsi_lidar_sar") == "hsi+lidar+sar (any)"
    assert plots.missing_label(("hsi",)) == "hsi missing" and plots.missing_label(()) == "complete"


def test_class_accuracy_is_a_count_per_class():
    truth = np.array([[0, 0, 0, 1], [1, 2, -1, -1]])
    prediction = np.array([[0, 1, 0, 1], [0, 2, 1, -1]])
    # class a: 2 of 3 right; b: 1 of 2; c: 1 of 1; d: no labelled pixel
    assert class_accuracy(prediction, truth, ["a", "b", "c", "d"]) == {"a": pytest.approx(200 / 3, abs=1e-4),
                                                                        "b": 50.0, "c": 100.0, "d": None}
    prediction[0, 0] = -1  # a pixel without a prediction is not scored
    assert class_accuracy(prediction, truth, ["a", "b", "c", "d"])["a"] == 50.0
