"""The figures of the experiment commands (matplotlib, drawn off-screen on ``Figure`` objects; no pyplot state).

* :func:`robustness_figure` — a grid evaluation: metric against the test missing ratio, one line per missing
  type, the complete-data score marked; one panel per metric (headline first).
* :func:`comparison_figure` — a report: methods against the missing ratio, mean over seeds with a ±std band;
  one panel per (group, missing type).
* :func:`bar_figure` — a report: each method's score at a test setting, bar = mean over seeds, error bar = standard
  deviation; one panel per (group, test setting).
* :func:`map_figure` — a classification map beside the ground truth and an error mask, with a legend of the
  scene's class names in a fixed palette (class k always has the same colour) and one of the error mask's own
  (correct white, wrong black: colours no class has). A georeferenced scene gets map coordinates on its axes and a
  scale bar; a scene over :data:`MAX_PANEL` pixels a side is drawn from every few pixels (bounded memory).

Conventions (:mod:`mamol.figures`): score axes end at exactly 100 %, legends sit outside the data, a label has one
colour in every panel, and a panel whose metric is undefined (NaN) says so in words. Missing settings are
labelled by :func:`type_label` / :func:`missing_label` in the spelling of the config keys and file names (``hsi``,
``lidar``, ``both``). Every figure is saved at ``DPI`` with a size fixed by its content (no tight bounding box),
so a caller can state the expected pixel size (:func:`map_figure_size`).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnchoredOffsetbox, AuxTransformBox, TextArea, VPacker
from matplotlib.patches import Patch, Rectangle

from mamol import figures
from mamol.experiments.georeference import Georeference
from mamol.files import FIGURE_DPI, write_png

DPI = FIGURE_DPI
# Modality acronyms as paper tables typeset them (setting_title); figures and files use the keys themselves.
MODALITY_LABELS = {"hsi": "HSI", "lidar": "LiDAR", "sar": "SAR", "msi": "MSI", "text": "text", "image": "image"}
NO_LABEL = (0.88, 0.88, 0.88)  # pixels without a label (ground truth) or without a prediction
# The error mask's colours: achromatic extremes, which no class colour of palette() comes near (a test checks it).
CORRECT, WRONG = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
LEGEND_ROWS = 0.32  # inches a row of a figure legend under the panels takes


def missing_label(missing: Sequence[str]) -> str:
    """Display text of a set of missing modalities (canonical names): ``("hsi",)`` -> "hsi missing",
    ``("hsi", "sar")`` -> "hsi+sar missing", ``()`` -> "complete". Spelled as the keys and file names are."""
    return "+".join(missing) + " missing" if missing else "complete"


def type_label(kind: str) -> str:
    """Display text of a canonical missing type (:func:`mamol.missing.parse_missing_type`): ``hsi`` -> "hsi
    missing", ``hsi_sar`` -> "hsi+sar missing", ``both`` -> "both (mixed)", ``hsi_lidar_sar`` -> "hsi+lidar+sar
    (any)"; figures, tables and ``grid.md`` use it, so they read as the ``test_type`` / ``grid_types`` keys do."""
    if kind == "both":
        return "both (mixed)"
    if kind == "none":
        return "complete"
    names = kind.split("_")
    return missing_label(names) if len(names) <= 2 else "+".join(names) + " (any)"


def setting_title(kind: str, ratio: float) -> str:
    """A test setting as a paper table typesets it: "Complete" (ratio 0 or type none), else the missing type with
    the modalities as acronyms (the keys' words, case aside: keys are case-insensitive) and the share of test
    samples it applies to: "HSI missing (100 %)", "HSI+SAR missing (100 %)", "Mixed (70 %)"."""
    if ratio == 0 or kind == "none":
        return "Complete"
    names = kind.split("_")
    if kind == "both":
        label = "Mixed"
    else:
        label = "+".join(MODALITY_LABELS.get(n, n) for n in names) + (" missing" if len(names) <= 2 else " (any)")
    return f"{label} ({ratio * 100:g} %)"


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return write_png(fig, path, DPI)


def _legend_height(n_entries: int, columns: int) -> float:
    return LEGEND_ROWS * math.ceil(n_entries / max(columns, 1)) + 0.1


# ------------------------------------------------------------------------------------------- robustness
@dataclass(frozen=True)
class Curve:
    """One line of a panel: y values (and optional ±band) against x, with a legend label."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    band: Sequence[float] | None = None  # ± half-width around y (a standard deviation)


def robustness_figure(curves: Mapping[str, Sequence[Curve]], complete: Mapping[str, float | None], title: str,
                      path: str | os.PathLike, undefined: Mapping[str, str] | None = None) -> Path:
    """One panel per metric (``curves`` in order, headline first): value (%) against the test missing ratio.

    ``complete[metric]`` is the complete-data score (drawn as a dashed line and a star at ratio 0). A metric NaN
    at every point gets a panel saying it is undefined, with ``undefined[metric]`` (why) where given. One legend
    (the missing types, the same in every panel) sits under the panels.
    """
    n = max(len(curves), 1)
    labels = [c.label for lines in curves.values() for c in lines]
    colours = figures.label_colours(labels)
    columns = 4
    fig = Figure(figsize=(4.2 * n, 3.6 + _legend_height(len(colours) + 1, columns)), layout="constrained")
    axes = []
    for i, (metric, lines) in enumerate(curves.items()):
        ax = fig.add_subplot(1, n, i + 1)
        axes.append(ax)
        ax.set_title(metric, fontsize=9)
        score = complete.get(metric)
        values = [v for c in lines for v in c.y] + ([] if score is None else [score])
        if not figures.finite(values).size:
            figures.undefined_panel(ax, figures.undefined_text(metric, (undefined or {}).get(metric)))
            continue
        for curve in lines:
            ax.plot(curve.x, curve.y, marker="o", markersize=3, linewidth=1.4, label=curve.label,
                    color=colours[curve.label])
        if score is not None and math.isfinite(score):
            ax.axhline(score, color="0.4", linestyle="--", linewidth=1, label="complete data")
            ax.plot([0.0], [score], marker="*", markersize=11, color="black", linestyle="none")
        ax.set_xlabel("missing ratio at test time")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_xlim(-0.03, 1.03)
        figures.percent_axis(ax, values)
        ax.grid(alpha=0.3)
    figures.legend_below(fig, *figures.unique_handles(axes), columns)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- comparison
def comparison_figure(panels: Mapping[str, Sequence[Curve]], metric: str, title: str,
                      path: str | os.PathLike, columns: int = 3) -> Path:
    """One panel per entry of ``panels`` (title -> one curve per method, mean with a ±std band); one legend of
    the methods (one colour each, in every panel) under the panels."""
    n = max(len(panels), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    colours = figures.label_colours([c.label for lines in panels.values() for c in lines])
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows + _legend_height(len(colours), 4)), layout="constrained")
    axes = []
    for i, (name, lines) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        axes.append(ax)
        ax.set_title(name, fontsize=9)
        values = [v for c in lines for v in c.y]
        if not figures.finite(values).size:
            figures.undefined_panel(ax, figures.undefined_text(metric))
            continue
        for curve in lines:
            x, y = np.asarray(curve.x, float), np.asarray(curve.y, float)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, label=curve.label, color=colours[curve.label])
            if curve.band is not None:
                band = np.nan_to_num(np.asarray(curve.band, float))
                ax.fill_between(x, y - band, y + band, color=colours[curve.label], alpha=0.2, linewidth=0)
                values += list(y - band)
        ax.set_xlabel("missing ratio at test time")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_xlim(-0.03, 1.03)
        figures.percent_axis(ax, values)
        ax.grid(alpha=0.3)
    figures.legend_below(fig, *figures.unique_handles(axes), 4)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


@dataclass(frozen=True)
class Bar:
    """One bar of a panel: a method's mean over seeds, its standard deviation (NaN: one seed) and n."""

    label: str
    mean: float
    std: float
    n: int


def bar_figure(panels: Mapping[str, Sequence[Bar]], metric: str, title: str, path: str | os.PathLike,
               columns: int = 3) -> Path:
    """One panel per entry of ``panels`` (title -> one bar per method, with a ±std error bar and n under it); a
    method has one colour in every panel, its name under its bar (no legend over the bars)."""
    n = max(len(panels), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    most = max((len(bars) for bars in panels.values()), default=1)
    colours = figures.label_colours([b.label for bars in panels.values() for b in bars])
    fig = Figure(figsize=(max(3.6, 0.9 * most + 1.6) * cols, 3.6 * rows), layout="constrained")
    for i, (name, bars) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(name, fontsize=9)
        means = np.asarray([b.mean for b in bars], float)
        if not figures.finite(means).size:
            figures.undefined_panel(ax, figures.undefined_text(metric))
            continue
        x = np.arange(len(bars))
        stds = np.nan_to_num(np.asarray([b.std for b in bars], float))  # one seed: no error bar
        ax.bar(x, np.nan_to_num(means), yerr=stds, capsize=4, color=[colours[b.label] for b in bars],
               edgecolor="0.2", linewidth=0.6)
        for k in np.flatnonzero(~np.isfinite(means)):  # a method whose score is undefined here: said at its place
            ax.text(x[k], 0.5, "undefined", rotation=90, ha="center", va="bottom", fontsize=7, color="0.25")
        ax.set_xticks(x, [f"{b.label}\n(n={b.n})" for b in bars], fontsize=8)
        ax.set_ylabel(f"{metric} (%)")
        figures.percent_axis(ax, [0.0, *(means - stds)])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- maps
MAX_PANEL = 2048
"""Longest side of a map panel, in figure pixels. A larger scene is drawn from every ``step``-th pixel of every
``step``-th row (nearest neighbour, so class colours stay exact): a map's memory and PNG stay bounded whatever the
scene's size (2,000 × 8,000 pixels: step 4, panels of 500 × 2,000)."""
COORDINATE_MARGIN = (40, 34)  # figure pixels left of and under each panel of a georeferenced map: ticks, axis label
TICK_CHAR = 4  # figure pixels a character of a tick label (6 pt) takes along its axis
NOTE = 16  # height of the line naming a georeferenced map's CRS, above the legends


def palette(n_classes: int) -> np.ndarray:
    """(K, 3) RGB in [0, 1]: tab10 up to 10 classes, tab20's dark then light shades up to 20 (class k keeps its
    colour whatever K is, within each range; tab20's light grey swapped for a rose of tab20b), evenly spaced saturated
    hues beyond. Never white or black, which the error mask uses (:data:`CORRECT`, :data:`WRONG`), nor near the grey
    of unlabelled pixels (:data:`NO_LABEL`)."""
    if n_classes <= 10:
        return np.asarray(colormaps["tab10"].colors)[:n_classes, :3]
    if n_classes <= 20:
        shades = np.asarray(colormaps["tab20"].colors)[:, :3].copy()
        shades[15] = colormaps["tab20b"].colors[14][:3]  # tab20's light grey reads as "no label" (NO_LABEL)
        return np.concatenate([shades[0::2], shades[1::2]])[:n_classes]
    return colormaps["hsv"](np.linspace(0, 1, n_classes, endpoint=False))[:, :3]


def rgb_bytes(rgb: Sequence[float] | np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> uint8 0..255 (rounded), any leading shape."""
    return np.round(np.asarray(rgb, dtype=np.float64) * 255).astype(np.uint8)


def palette_bytes(n_classes: int) -> np.ndarray:
    """(K, 3) uint8: :func:`palette` in 0..255, the colours of the PNG maps' pixels and of the GeoTIFF maps'
    colour table alike."""
    return rgb_bytes(palette(n_classes))


def colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W) labels (-1 = none) -> (H, W, 3) uint8 RGB; ``colours`` (K, 3) uint8 (:func:`palette_bytes`)."""
    rgb = np.empty((*labels.shape, 3), dtype=np.uint8)
    rgb[:] = rgb_bytes(NO_LABEL)
    known = labels >= 0
    rgb[known] = colours[labels[known]]
    return rgb


ERROR_ENTRIES = ((CORRECT, "correct"), (WRONG, "wrong"), (NO_LABEL, "not scored (no label or no prediction)"))
"""The error mask's legend: colour and text of each kind of pixel."""


@dataclass(frozen=True)
class MapLayout:
    """Pixel geometry of a map figure: panel size, arrangement and the legend strip (all in pixels)."""

    scale: int  # screen pixels per scene pixel
    vertical: bool  # panels stacked (wide scenes) or side by side
    panel: tuple[int, int]  # (width, height) of one panel
    title: int  # height above each panel
    legend: int  # height of the legend strip: the class legend, then the error mask's
    size: tuple[int, int]  # (width, height) of the whole figure
    per_row: int = 1  # legend entries per row
    errors: int = 0  # height of the error mask's legend, at the bottom of the strip
    step: int = 1  # every step-th scene pixel is drawn (scenes over MAX_PANEL pixels a side)
    axes: tuple[int, int] = (0, 0)  # (left, under) each panel: its coordinate ticks and labels
    note: int = 0  # height of the CRS line between the panels and the legend strip


def map_figure_size(height: int, width: int, n_classes: int, coordinates: bool = False) -> MapLayout:
    """The layout (and so the PNG size) of :func:`map_figure` for a ``height`` × ``width`` scene; ``coordinates``:
    with map-coordinate axes (a north-up georeference)."""
    longest = max(height, width)
    step = math.ceil(longest / MAX_PANEL)
    scale = max(1, 320 // longest)
    panel = (math.ceil(width / step) * scale, math.ceil(height / step) * scale)
    vertical = width >= 1.5 * height
    title, margin = 24, 8
    left, under = COORDINATE_MARGIN if coordinates else (0, 0)
    if vertical:
        fig_w = left + panel[0] + 2 * margin
        body = 3 * (panel[1] + title + under) + margin
    else:
        fig_w = 3 * (left + panel[0]) + 4 * margin
        body = panel[1] + title + under + margin
    note = NOTE if coordinates else 0
    per_row = max(1, fig_w // 150)
    classes = 18 * math.ceil((n_classes + 1) / per_row) + 16  # the classes and the no-label entry
    errors = 18 * math.ceil(len(ERROR_ENTRIES) / max(1, fig_w // 220)) + 20  # its title and entries
    return MapLayout(scale, vertical, panel, title, classes + errors, (fig_w, body + note + classes + errors),
                     per_row, errors, step, (left, under), note)


def scale_bar_length(width_m: float) -> float:
    """Length in metres of a map's scale bar: 1, 2 or 5 × 10^k, the nearest (by ratio) to a fifth of the
    map's width ``width_m``."""
    target = width_m / 5
    k = math.floor(math.log10(target))
    lengths = [float(f"{m}e{j}") for j in (k, k + 1) for m in (1, 2, 5)]
    return min(lengths, key=lambda length: abs(math.log(length / target)))


def _length_text(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def _ticks(low: float, high: float, room: int) -> tuple[list[float], list[str]]:
    """Tick values between ``low`` and ``high`` (map units) over ``room`` figure pixels: multiples of the
    smallest 1, 2, 2.5 or 5 × 10^k whose labels do not touch, labelled with the decimals they need; none whose
    label would stick out past an end (into the next panel's title or off the figure)."""
    low, high = min(low, high), max(low, high)
    span, top = high - low, math.floor(math.log10(high - low))
    for spacing, decimals in ((float(f"{m}e{k}"), max(0, -k + (m == 2.5))) for k in range(top - 3, top + 2)
                              for m in (1, 2, 2.5, 5)):
        longest = max(len(f"{v:.{decimals}f}") for v in (low, high))
        if spacing / span * room >= TICK_CHAR * longest + 8:
            break
    values = [spacing * i for i in range(math.ceil(low / spacing), math.floor(high / spacing) + 1)]
    labels = {v: f"{v:.{decimals}f}" for v in values}
    half = {v: TICK_CHAR * len(text) / 2 for v, text in labels.items()}  # figure pixels
    inside = [v for v in values if half[v] <= (v - low) / span * room <= room - half[v]]
    return inside, [labels[v] for v in inside]


def _coordinate_axes(ax: Axes, grid: Georeference, layout: MapLayout) -> None:
    """Easting / northing (projected CRS) or longitude / latitude (geographic) ticks and labels on a panel whose
    data coordinates are the CRS's (the image's ``extent``)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    pw, ph = layout.panel
    if grid.unit_metres is None:
        names = ("longitude (°)", "latitude (°)")
    else:
        unit = grid.crs.linear_units
        unit = "m" if unit in ("metre", "meter") else unit
        names = (f"easting ({unit})", f"northing ({unit})")
    ax.set_xticks(*_ticks(x0, x1, pw), fontsize=6)
    ax.set_yticks(*_ticks(y0, y1, ph), fontsize=6, rotation=90, va="center")
    ax.tick_params(length=2, pad=1.5)
    ax.set_xlabel(names[0], fontsize=7, labelpad=1)
    ax.set_ylabel(names[1], fontsize=7, labelpad=1)


def _scale_bar(ax: Axes, grid: Georeference, layout: MapLayout) -> None:
    """A black-and-white bar of :func:`scale_bar_length` in the panel's lower right corner, with its length, in
    a white box (it reads over any class colour). Projected CRSs only (:attr:`Georeference.unit_metres`)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    metres = scale_bar_length(abs(x1 - x0) * grid.unit_metres)
    length = metres / grid.unit_metres  # in CRS units: the axes' data units
    parts = 5 if f"{metres:e}".startswith("5") else 4
    thick = 4 * abs(y1 - y0) / layout.panel[1]  # 4 figure pixels, in data units
    bar = AuxTransformBox(ax.transData)
    for i in range(parts):
        bar.add_artist(Rectangle((i * length / parts, 0.0), length / parts, thick, linewidth=0.5,
                                 facecolor="black" if i % 2 == 0 else "white", edgecolor="black"))
    text = TextArea(_length_text(metres), textprops={"fontsize": 6})
    box = AnchoredOffsetbox("lower right", child=VPacker(children=[text, bar], align="center", pad=0, sep=1.5),
                            pad=0.25, borderpad=0.4, frameon=True)
    box.patch.set(facecolor="white", edgecolor="0.4", linewidth=0.5, alpha=0.9)
    box.set_label("scale bar")
    ax.add_artist(box)


def _error_counts(prediction: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(labelled pixels with a prediction, those predicted wrong), a block of rows at a time (bounded memory)."""
    rows = max(1, 2 ** 20 // max(prediction.shape[1], 1))
    scored = wrong = 0
    for start in range(0, prediction.shape[0], rows):
        p, t = prediction[start:start + rows], truth[start:start + rows]
        mine = (t >= 0) & (p >= 0)
        scored += int(np.count_nonzero(mine))
        wrong += int(np.count_nonzero(mine & (p != t)))
    return scored, wrong


def map_figure(prediction: np.ndarray, truth: np.ndarray, class_names: Sequence[str], title: str,
               path: str | os.PathLike, georeference: Mapping[str, Any] | None = None) -> Path:
    """Prediction, ground truth and error mask of a (H, W) label raster (-1 = none), with a class legend and the
    error mask's own legend (correct / wrong / not scored).

    Scenes over :data:`MAX_PANEL` pixels a side are drawn from every ``step``-th pixel (uint8 colours, never a
    full-resolution array), so memory stays bounded; the error count in the title is over every pixel.

    With a ``georeference`` (the Arrow metadata's, :class:`~mamol.experiments.georeference.Georeference`) of a
    north-up grid, each panel's axes carry map coordinates and a line under the panels names the CRS. A projected
    CRS gives easting / northing in its unit and a scale bar in each panel; a geographic CRS gives longitude /
    latitude and no scale bar, since a degree of longitude has no fixed length in metres (111 km at the
    equator, shrinking with the cosine of latitude). A rotated or sheared grid is drawn as without one
    (pixel axes off); a georeference of another size than the map is refused (DataError).
    """
    h, w = prediction.shape
    grid = None if georeference is None else Georeference.from_metadata(georeference)
    if grid is not None:
        grid.check_shape(prediction.shape, Path(path).name)
    coordinates = grid is not None and grid.north_up
    layout = map_figure_size(h, w, len(class_names), coordinates)
    step = layout.step
    shown, known = prediction[::step, ::step], truth[::step, ::step]  # views: nearest neighbour, exact colours
    colours = palette_bytes(len(class_names))
    errors = np.empty((*shown.shape, 3), dtype=np.uint8)
    errors[:] = rgb_bytes(NO_LABEL)
    scored = (known >= 0) & (shown >= 0)
    errors[scored & (shown == known)] = rgb_bytes(CORRECT)
    errors[scored & (shown != known)] = rgb_bytes(WRONG)
    n_scored, wrong = _error_counts(prediction, truth)
    panels = [(colourise(shown, colours), title),
              (colourise(known, colours), "ground truth"),
              (errors, f"errors: {wrong} of {n_scored} labelled pixels wrong (black)")]
    fig_w, fig_h = layout.size
    fig = Figure(figsize=(fig_w / DPI, fig_h / DPI))
    pw, ph = layout.panel
    margin, (left_of, under) = 8, layout.axes
    for i, (image, name) in enumerate(panels):
        if layout.vertical:
            left, top = margin + left_of, layout.title + i * (ph + layout.title + under)
        else:
            left, top = margin + left_of + i * (pw + left_of + margin), layout.title
        ax = fig.add_axes((left / fig_w, 1 - (top + ph) / fig_h, pw / fig_w, ph / fig_h))
        if coordinates:
            # The drawn image covers whole blocks of step pixels: its extent is theirs (up to step - 1 pixels past
            # the scene's edge), so a figure pixel is a block and the coordinates stay exact.
            a, _, c, _, e, f = grid.transform
            ax.imshow(image, interpolation="nearest", aspect="auto",
                      extent=(c, c + a * image.shape[1] * step, f + e * image.shape[0] * step, f))
            _coordinate_axes(ax, grid, layout)
            if grid.unit_metres is not None:
                _scale_bar(ax, grid, layout)
        else:
            ax.imshow(image, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
        for spine in ax.spines.values():  # a thin frame: the white of correct pixels keeps an edge
            spine.set_linewidth(0.5)
            spine.set_color("0.5")
        ax.set_title(name, fontsize=8, pad=3)
    if coordinates:
        why = "" if grid.unit_metres is not None else "; no scale bar: a degree of longitude has no fixed length"
        fig.text(margin / fig_w, (layout.legend + layout.note - 3) / fig_h, f"coordinates: {grid.crs_name}{why}",
                 fontsize=7, va="top", ha="left", color="0.2")
    handles = [Patch(color=colours[k] / 255, label=f"{k + 1} {name}") for k, name in enumerate(class_names)]
    handles.append(Patch(color=NO_LABEL, label="no label / not predicted"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, layout.legend / fig_h),
               ncol=layout.per_row, fontsize=7, frameon=False, handlelength=1.2, columnspacing=1.0,
               borderaxespad=0.2)
    marks = [Patch(facecolor=colour, edgecolor="0.4", linewidth=0.5, label=text) for colour, text in ERROR_ENTRIES]
    fig.legend(handles=marks, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=max(1, min(3, fig_w // 220)),
               fontsize=7, frameon=False, handlelength=1.2, columnspacing=1.0, borderaxespad=0.3,
               title="error mask", title_fontsize=7)
    return _save(fig, path)
