"""The figures: error-mask colours no class has, its own legend, legends outside the data, score axes ending at
100 %, a panel that says a metric is undefined, and labels spelled as the config keys are."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from rasterio.crs import CRS

from mamol.errors import DataError
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
    # unlabelled pixels are light grey on maps: a class colour near that grey must be visibly coloured (tab20's
    # light grey, 0.17 from it and without any hue, once passed for "no label")
    near = np.linalg.norm(colours - np.asarray(plots.NO_LABEL), axis=1) < 0.3
    assert (np.ptp(colours[near], axis=1) > 0.1).all(), n_classes


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
    error_panel = fig.axes[2].images[0].get_array()  # (H, W, 3) uint8 as drawn
    assert (error_panel[1, 1:4] == plots.rgb_bytes(plots.WRONG)).all()
    assert (error_panel[2, 2] == plots.rgb_bytes(plots.CORRECT)).all()
    assert (error_panel[0, 0] == plots.rgb_bytes(plots.NO_LABEL)).all()
    # Without a georeference: pixel axes off, no scale bar, no CRS line.
    assert not any(_scale_bars(ax) or len(ax.get_xticks()) or len(ax.get_yticks()) for ax in fig.axes)
    assert not fig.texts
    with Image.open(path) as image:
        assert image.size == plots.map_figure_size(6, 8, 3).size
    # Drawn pixel for pixel: each scene pixel a scale × scale block of its class colour (nothing blended).
    layout = plots.map_figure_size(6, 8, 3)
    (pw, ph), k = layout.panel, layout.scale
    with Image.open(path) as image:
        png = np.asarray(image.convert("RGB"))
    expected = np.repeat(np.repeat(plots.colourise(prediction, plots.palette_bytes(3)), k, 0), k, 1)
    top, left = layout.title, 8
    np.testing.assert_array_equal(png[top + 1:top + ph - 1, left + 1:left + pw - 1], expected[1:-1, 1:-1])


def _scale_bars(ax) -> list:
    return [a for a in ax.artists if a.get_label() == "scale bar"]


def _geo(crs: str, pixel: float, origin: tuple[float, float], height: int, width: int) -> dict:
    """A north-up georeference as the Arrow metadata keeps it."""
    return {"crs": CRS.from_string(crs).to_wkt(), "transform": [pixel, 0.0, origin[0], 0.0, -pixel, origin[1]],
            "height": height, "width": width}


def _labels(h: int, w: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(-1, n_classes, (h, w)).astype(np.int16)
    prediction = np.where(rng.random((h, w)) < 0.2, rng.integers(0, n_classes, (h, w)), truth).astype(np.int16)
    return prediction, truth


@pytest.mark.parametrize("max_panel", [plots.MAX_PANEL, 45])  # 45: the 90-pixel scene drawn every 2nd pixel
def test_georeferenced_map_has_coordinates_and_a_scale_bar(tmp_path, drawn, monkeypatch, max_panel):
    monkeypatch.setattr(plots, "MAX_PANEL", max_panel)
    h, w, pixel, (x0, y0) = 40, 90, 2.0, (271000.0, 3290000.0)  # UTM 15N, 2 m pixels: 180 m × 80 m
    prediction, truth = _labels(h, w, 3)
    path = plots.map_figure(prediction, truth, ["water", "grass", "road"], "complete data", tmp_path / "map.png",
                            _geo("EPSG:32615", pixel, (x0, y0), h, w))
    fig, layout = drawn[0], plots.map_figure_size(h, w, 3, coordinates=True)
    assert layout.step == math.ceil(w / max_panel)
    per_pixel = layout.scale / layout.step  # figure pixels per scene pixel
    for ax in fig.axes:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("easting (m)", "northing (m)")
        origin = ax.transData.transform((x0, y0))  # the scene's top-left corner, in figure pixels
        for axis, start, along in ((ax.xaxis, x0, 0), (ax.yaxis, y0, 1)):
            values, texts = axis.get_ticklocs(), [t.get_text() for t in axis.get_ticklabels()]
            assert len(values) >= 1 and [float(t) for t in texts] == list(values)
            assert all(v % 5 == 0 for v in values) and len(set(np.diff(values))) <= 1  # round, evenly spaced
            for value in values:  # map coordinates: k pixels from the origin, inside the scene, drawn there
                k = (value - start) / (pixel if along == 0 else -pixel)
                assert 0 <= k <= (w if along == 0 else h)
                drawn_at = ax.transData.transform((value, y0) if along == 0 else (x0, value))[along]
                assert abs(drawn_at - origin[along]) == pytest.approx(k * per_pixel)  # where that pixel is drawn
        (bar,) = _scale_bars(ax)
        aux, text = bar.get_child().get_children()[::-1]
        assert text.get_text() == "50 m"  # 1-2-5 × 10^k nearest a fifth of 180 m
        metres = sum(r.get_width() for r in aux.get_children())
        length = ax.transData.transform((x0 + metres, y0))[0] - origin[0]  # figure pixels
        assert metres == pytest.approx(50.0) and length == pytest.approx(50.0 / pixel * per_pixel)
    assert [t.get_text() for t in fig.texts] == ["coordinates: WGS 84 / UTM zone 15N (EPSG:32615)"]
    with Image.open(path) as image:
        assert image.size == layout.size


def test_geographic_map_has_lon_lat_and_no_scale_bar(tmp_path, drawn):
    prediction, truth = _labels(30, 50, 2)
    plots.map_figure(prediction, truth, ["a", "b"], "t", tmp_path / "map.png",
                     _geo("EPSG:4326", 1e-4, (-95.37, 29.76), 30, 50))
    fig = drawn[0]
    for ax in fig.axes:
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("longitude (°)", "latitude (°)") and not _scale_bars(ax)
        assert all(-95.37 <= v <= -95.365 for v in ax.get_xticks()) and len(ax.get_xticks()) >= 2
    assert "no scale bar" in fig.texts[0].get_text() and "EPSG:4326" in fig.texts[0].get_text()
    with pytest.raises(DataError, match=r"odd.png: the map is 30×50, the scene's georeference describes 30×51"):
        plots.map_figure(prediction, truth, ["a", "b"], "t", tmp_path / "odd.png",
                         _geo("EPSG:4326", 1e-4, (-95.37, 29.76), 30, 51))


def test_scale_bar_is_a_round_length_near_a_fifth_of_the_width():
    assert [plots.scale_bar_length(w) for w in (180, 400, 4000, 0.9, 2600)] == [50, 100, 1000, 0.2, 500]


def test_a_large_map_draws_in_bounded_memory(tmp_path, drawn):
    h, w = 2000, 8000
    prediction, truth = _labels(h, w, 6)
    wrong = int(((truth >= 0) & (prediction >= 0) & (prediction != truth)).sum())
    full_panel = h * w * 3 * 8  # bytes of one full-resolution float64 RGB panel (the former drawing)
    tracemalloc.start()
    try:
        path = plots.map_figure(prediction, truth, [f"c{k}" for k in range(6)], "t", tmp_path / "big.png",
                                _geo("EPSG:32615", 0.5, (271000.0, 3290000.0), h, w))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < full_panel / 2, peak / 2 ** 20
    layout = plots.map_figure_size(h, w, 6, coordinates=True)
    assert layout.step == 4 and max(layout.panel) <= plots.MAX_PANEL
    fig = drawn[0]
    shown = fig.axes[0].images[0].get_array()  # every 4th pixel, its exact class colour
    assert shown.dtype == np.uint8 and shown.shape == (500, 2000, 3)
    np.testing.assert_array_equal(shown, plots.colourise(prediction[::4, ::4], plots.palette_bytes(6)))
    assert f"errors: {wrong} of " in fig.axes[2].get_title()  # counted over every pixel, not the drawn ones
    assert _scale_bars(fig.axes[0])[0].get_child().get_children()[0].get_text() == "1 km"
    with Image.open(path) as image:
        assert image.size == layout.size


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
