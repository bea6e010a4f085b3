"""What every figure of the project shares: percentage axes that end at 100 %, a panel that says a metric is
undefined instead of an empty axis, one colour per label across panels, and legends outside the data.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state) with ``layout="constrained"``, which
makes room for a legend placed ``outside`` the axes without changing the figure's size; they are saved with
:func:`mamol.files.write_png`. Used by :mod:`mamol.experiments.plots`, :mod:`mamol.curves` and
:mod:`mamol.confusion`.
"""
from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

PERCENT_TOP = 100.0
"""Every score is x 100 and at most 100: percentage axes end exactly there."""


def finite(values: Iterable[float]) -> np.ndarray:
    """The finite values (NaN and inf dropped) as a float array."""
    array = np.asarray(list(values), dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def percent_axis(ax: Axes, values: Iterable[float]) -> None:
    """Y limits of a score axis (x 100): the top exactly 100, the bottom a little under the lowest finite value
    (never under 0 for non-negative data; kappa may be negative)."""
    shown = finite(values)
    low = float(shown.min()) if shown.size else 0.0
    bottom = low - max(0.05 * (PERCENT_TOP - low), 1.0)
    if low >= 0:
        bottom = max(bottom, 0.0)
    ax.set_ylim(bottom, PERCENT_TOP)


def undefined_text(metric: str, why: str | None = None) -> str:
    """``AUROC undefined: all 40 test samples are negative ...`` (``why`` from ``TaskMetrics.undefined``), or
    that it is NaN everywhere when no reason is known."""
    return f"{metric} undefined: {why}" if why else f"{metric} undefined (NaN) everywhere in this panel"


def undefined_panel(ax: Axes, text: str) -> None:
    """Write ``text`` across an empty panel (no ticks): a metric that is undefined, or data that are absent."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, textwrap.fill(text, width=38), transform=ax.transAxes, ha="center", va="center",
            fontsize=9, color="0.25")


def label_colours(labels: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per label, in order of first appearance (tab10, then tab20 beyond ten): a method or a missing
    type has the same colour in every panel of a figure."""
    distinct = list(dict.fromkeys(labels))
    cmap = colormaps["tab10"] if len(distinct) <= 10 else colormaps["tab20"]
    colours = cmap.colors
    return {label: tuple(colours[i % len(colours)]) for i, label in enumerate(distinct)}


def legend_below(fig: Figure, handles: Sequence, labels: Sequence[str], columns: int) -> None:
    """A figure legend under every panel, outside the data (needs ``layout="constrained"``)."""
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=max(1, min(columns, len(handles))),
                   fontsize=8, frameon=False)


def unique_handles(axes: Iterable[Axes]) -> tuple[list, list[str]]:
    """(handles, labels) of the lines of ``axes``, each label once, in order of first appearance."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)
