"""The figures of the experiment commands (matplotlib, drawn off-screen on ``Figure`` objects; no pyplot state).

* :func:`robustness_figure` — a grid evaluation: metric against the test missing ratio, one line per missing
  type, the complete-data score marked; one panel per metric (headline first).
* :func:`comparison_figure` — a report: methods against the missing ratio, mean over seeds with a ±std band;
  one panel per (group, missing type).
* :func:`bar_figure` — a report: each method's score at a test setting, bar = mean over seeds, error bar = standard
  deviation; one panel per (group, test setting).
* :func:`map_figure` — a classification map beside the ground truth and an error mask, with a legend of the
  scene's class names in a fixed palette (class k always has the same colour).

Every figure is saved at ``DPI`` with a size fixed by its content (no tight bounding box), so a caller can
state the expected pixel size (:func:`map_figure_size`).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mamol.files import FIGURE_DPI, write_png

DPI = FIGURE_DPI
MODALITY_LABELS = {"hsi": "HSI", "lidar": "LiDAR", "sar": "SAR", "msi": "MSI", "text": "text", "image": "image"}
NO_LABEL = (0.88, 0.88, 0.88)  # pixels without a label (ground truth) or without a prediction
CORRECT, WRONG = (0.30, 0.69, 0.31), (0.86, 0.15, 0.15)


def type_label(kind: str) -> str:
    """Legend text of a canonical missing type: ``hsi`` -> "HSI missing", ``both`` -> "mixed" (each missing sample
    lacks one of the two modalities), ``hsi_lidar_sar`` -> "HSI+LiDAR+SAR (any)"."""
    if kind == "both":
        return "mixed"
    if kind == "none":
        return "complete"
    names = kind.split("_")
    return "+".join(MODALITY_LABELS.get(n, n) for n in names) + (" missing" if len(names) <= 2 else " (any)")


def setting_title(kind: str, ratio: float) -> str:
    """A test setting in tables: "Complete" (ratio 0 or type none), else the type's :func:`type_label` with the
    share of test samples it applies to: "HSI missing (100 %)", "Mixed (70 %)"."""
    if ratio == 0 or kind == "none":
        return "Complete"
    label = type_label(kind)
    return f"{label[0].upper()}{label[1:]} ({ratio * 100:g} %)"


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    return write_png(fig, path, DPI)


# ------------------------------------------------------------------------------------------- robustness
@dataclass(frozen=True)
class Curve:
    """One line of a panel: y values (and optional ±band) against x, with a legend label."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    band: Sequence[float] | None = None  # ± half-width around y (a standard deviation)


def robustness_figure(curves: Mapping[str, Sequence[Curve]], complete: Mapping[str, float | None], title: str,
                      path: str | os.PathLike) -> Path:
    """One panel per metric (``curves`` in order, headline first): value (%) against the test missing ratio.

    ``complete[metric]`` is the complete-data score (drawn as a dashed line and a star at ratio 0).
    """
    n = len(curves)
    fig = Figure(figsize=(4.2 * n, 3.6))
    for i, (metric, lines) in enumerate(curves.items()):
        ax = fig.add_subplot(1, n, i + 1)
        for curve in lines:
            ax.plot(curve.x, curve.y, marker="o", markersize=3, linewidth=1.4, label=curve.label)
        score = complete.get(metric)
        if score is not None:
            ax.axhline(score, color="0.4", linestyle="--", linewidth=1, label=f"complete data ({score:.1f})")
            ax.plot([0.0], [score], marker="*", markersize=11, color="black", linestyle="none")
        ax.set_xlabel("missing ratio at test time")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- comparison
def comparison_figure(panels: Mapping[str, Sequence[Curve]], metric: str, title: str,
                      path: str | os.PathLike, columns: int = 3) -> Path:
    """One panel per entry of ``panels`` (title -> one curve per method, mean with a ±std band)."""
    n = max(len(panels), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    for i, (name, lines) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for curve in lines:
            x, y = np.asarray(curve.x, float), np.asarray(curve.y, float)
            (line,) = ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, label=curve.label)
            if curve.band is not None:
                band = np.nan_to_num(np.asarray(curve.band, float))
                ax.fill_between(x, y - band, y + band, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("missing ratio at test time")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
    """One panel per entry of ``panels`` (title -> one bar per method, with a ±std error bar and n under it)."""
    n = max(len(panels), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    most = max((len(bars) for bars in panels.values()), default=1)
    fig = Figure(figsize=(max(3.6, 0.9 * most + 1.6) * cols, 3.6 * rows))
    colours = colormaps["tab10"].colors
    for i, (name, bars) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        x = np.arange(len(bars))
        means = np.asarray([b.mean for b in bars], float)
        stds = np.nan_to_num(np.asarray([b.std for b in bars], float))  # one seed: no error bar
        ax.bar(x, means, yerr=stds, capsize=4, color=[colours[k % len(colours)] for k in range(len(bars))],
               edgecolor="0.2", linewidth=0.6)
        ax.set_xticks(x, [f"{b.label}\n(n={b.n})" for b in bars], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- maps
def palette(n_classes: int) -> np.ndarray:
    """(K, 3) RGB in [0, 1]: tab10 up to 10 classes, tab20's dark then light shades up to 20 (class k keeps its
    colour whatever K is, within each range), evenly spaced hues beyond."""
    if n_classes <= 10:
        return np.asarray(colormaps["tab10"].colors)[:n_classes, :3]
    if n_classes <= 20:
        shades = np.asarray(colormaps["tab20"].colors)[:, :3]
        return np.concatenate([shades[0::2], shades[1::2]])[:n_classes]
    return colormaps["hsv"](np.linspace(0, 1, n_classes, endpoint=False))[:, :3]


def colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W) labels (-1 = none) -> (H, W, 3) RGB."""
    rgb = np.empty((*labels.shape, 3))
    rgb[:] = NO_LABEL
    known = labels >= 0
    rgb[known] = colours[labels[known]]
    return rgb


@dataclass(frozen=True)
class MapLayout:
    """Pixel geometry of a map figure: panel size, arrangement and the legend strip (all in pixels)."""

    scale: int  # screen pixels per scene pixel
    vertical: bool  # panels stacked (wide scenes) or side by side
    panel: tuple[int, int]  # (width, height) of one panel
    title: int  # height above each panel
    legend: int  # height of the legend strip
    size: tuple[int, int]  # (width, height) of the whole figure


def map_figure_size(height: int, width: int, n_classes: int) -> MapLayout:
    """The layout (and so the PNG size) of :func:`map_figure` for a ``height`` × ``width`` scene."""
    scale = max(1, 320 // max(height, width))
    panel = (width * scale, height * scale)
    vertical = width >= 1.5 * height
    title, margin = 24, 8
    if vertical:
        fig_w = panel[0] + 2 * margin
        body = 3 * (panel[1] + title) + margin
    else:
        fig_w = 3 * panel[0] + 4 * margin
        body = panel[1] + title + margin
    per_row = max(1, fig_w // 150)
    legend = 18 * math.ceil((n_classes + 1) / per_row) + 16  # the classes and the no-label entry
    return MapLayout(scale, vertical, panel, title, legend, (fig_w, body + legend))


def map_figure(prediction: np.ndarray, truth: np.ndarray, class_names: Sequence[str], title: str,
               path: str | os.PathLike) -> Path:
    """Prediction, ground truth and error mask of a (H, W) label raster (-1 = none), with a class legend."""
    h, w = prediction.shape
    layout = map_figure_size(h, w, len(class_names))
    colours = palette(len(class_names))
    errors = np.empty((h, w, 3))
    errors[:] = NO_LABEL
    scored = (truth >= 0) & (prediction >= 0)
    errors[scored & (prediction == truth)] = CORRECT
    errors[scored & (prediction != truth)] = WRONG
    n_scored = int(scored.sum())
    wrong = int((scored & (prediction != truth)).sum())
    panels = [(colourise(prediction, colours), title),
              (colourise(truth, colours), "ground truth"),
              (errors, f"errors: {wrong} of {n_scored} labelled pixels (red)")]
    fig_w, fig_h = layout.size
    fig = Figure(figsize=(fig_w / DPI, fig_h / DPI))
    pw, ph = layout.panel
    margin = 8
    for i, (image, name) in enumerate(panels):
        if layout.vertical:
            left, top = margin, layout.title + i * (ph + layout.title)
        else:
            left, top = margin + i * (pw + margin), layout.title
        ax = fig.add_axes((left / fig_w, 1 - (top + ph) / fig_h, pw / fig_w, ph / fig_h))
        ax.imshow(image, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        ax.set_title(name, fontsize=8, pad=3)
    handles = [Patch(color=colours[k], label=f"{k + 1} {name}") for k, name in enumerate(class_names)]
    handles.append(Patch(color=NO_LABEL, label="no label / not predicted"))
    per_row = max(1, fig_w // 150)
    fig.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=7, frameon=False,
               handlelength=1.2, columnspacing=1.0, borderaxespad=0.2)
    return _save(fig, path)
