"""The hyper-parameter table of a report: the config keys its runs share (one value) and the keys they differ in
(the value of each method), as ``report.md``, ``report.tex`` and ``report_config.csv`` show them.

A run's keys are its config as given (``test_results.json``), less what is not a hyper-parameter: the
result-neutral keys (:data:`mamol.runs.RESULT_NEUTRAL_KEYS`), what a report pools over or shows as rows and
captions (the seed, the datasets, the missing settings, the test settings: ``NOT_POOLED_ON`` of the report),
:data:`NOT_SHOWN`, other methods' keys and other datasets' head sizes, and loss weights of 0. A method key left
``None`` shows the value the run resolved it to (the paper's value for its data kind).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mamol.data.catalogue import natural_entries
from mamol.experiments import tables
from mamol.methods import METHODS
from mamol.runs import identity

NOT_SHOWN = frozenset({"data_root"})
"""Config keys that are not hyper-parameters though they are part of a run's identity: where the data lies."""
CSV_NAME = "report_config.csv"
NOT_A_KEY = "–"  # the method has no such key (another method's option)


@dataclass(frozen=True)
class RunConfig:
    """One run as the table sees it: its column (method label), method, config as given and resolved settings."""

    label: str
    method: str
    config: Mapping[str, Any]
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class HyperTable:
    """Keys with one value over all runs (``shared``), and keys whose value differs (``differing``: per label the
    value of its runs, ``a / b`` when its runs differ too)."""

    labels: list[str]
    shared: dict[str, str]
    differing: dict[str, dict[str, str]]


def _option_keys(method: str) -> dict[str, str]:
    """Config key -> field name of a method's options."""
    return {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(METHODS[method].Options)}


_METHOD_KEYS = {key for name in METHODS for key in _option_keys(name)}
_HEAD_KEYS = {f"{e.name}_class_num": e.name for e in natural_entries()}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def run_values(run: RunConfig, leave_out: frozenset[str]) -> dict[str, str]:
    """The hyper-parameters of one run, as text, by config key."""
    kept = identity(run.config, leave_out | NOT_SHOWN)
    own = _option_keys(run.method) if run.method in METHODS else {}
    resolved = (run.settings.get("method") or {}).get("options") or {}
    datasets = set(run.config.get("datasets") or [])
    out = {}
    for key, value in kept.items():
        if key in _METHOD_KEYS and key not in own:
            continue  # another method's key
        if key in _HEAD_KEYS and _HEAD_KEYS[key] not in datasets:
            continue  # another dataset's head size
        if key == "loss_names" and isinstance(value, dict):
            value = {task: weight for task, weight in value.items() if weight}
        if value is None and key in own and resolved.get(own[key]) is not None:
            value = resolved[own[key]]  # left None: the value the run resolved it to
        out[key] = _text(value)
    return out


def table(runs: Sequence[RunConfig], leave_out: frozenset[str]) -> HyperTable:
    """The table of ``runs`` (columns: their labels in order of first appearance)."""
    labels = list(dict.fromkeys(r.label for r in runs))
    per_label: dict[str, dict[str, list[str]]] = {label: {} for label in labels}
    for run in runs:
        for key, value in run_values(run, leave_out).items():
            values = per_label[run.label].setdefault(key, [])
            if value not in values:
                values.append(value)
    keys = sorted({k for values in per_label.values() for k in values})
    shared, differing = {}, {}
    for key in keys:
        cells = {label: " / ".join(per_label[label].get(key, [NOT_A_KEY])) for label in labels}
        if len(set(cells.values())) == 1 and all(len(per_label[label].get(key, [])) == 1 for label in labels):
            shared[key] = next(iter(cells.values()))
        else:
            differing[key] = cells
    return HyperTable(labels, shared, differing)


def markdown(t: HyperTable, titles: Mapping[str, str]) -> str:
    """Two Markdown tables: the keys the runs differ in (one column per method), then the shared keys."""
    parts = []
    if t.differing:
        parts += [f"Keys the methods differ in ({NOT_A_KEY}: not a key of the method):\n\n", tables.markdown(
            ["key", *[titles[label] for label in t.labels]],
            [[f"`{k}`", *[cells[label] for label in t.labels]] for k, cells in t.differing.items()])]
    parts += [("\n" if parts else "") + "Keys every run shares:\n\n",
              tables.markdown(["key", "value"], [[f"`{k}`", v] for k, v in t.shared.items()])]
    return "".join(parts)


def csv_rows(t: HyperTable) -> tuple[list[str], list[list[str]]]:
    """``report_config.csv``: key, whether every run shares its value, and the value under each method label."""
    rows = [[k, "yes", *[v] * len(t.labels)] for k, v in t.shared.items()]
    rows += [[k, "no", *[cells[label] for label in t.labels]] for k, cells in t.differing.items()]
    return ["key", "shared", *t.labels], rows


def latex(t: HyperTable, titles: Mapping[str, str], caption: str, label: str) -> list[str]:
    """``booktabs`` tables: the differing keys (a value per method; ``–``: not a key of the method), then the shared
    keys, two key–value pairs a row (so a whole config fits a page)."""
    out = []
    if t.differing:
        out.append(tables.latex_booktabs(
            ["Config key", *[titles[lab] for lab in t.labels]],
            [[k, *[cells[lab] for lab in t.labels]] for k, cells in t.differing.items()],
            caption=f"{caption} Keys the methods differ in (–: not a key of the method).", label=f"{label}-differing",
            align_right_from=len(t.labels) + 1))
    pairs = list(t.shared.items())
    half = (len(pairs) + 1) // 2
    rows = [[*pairs[i], *(pairs[i + half] if i + half < len(pairs) else ("", ""))] for i in range(half)]
    out.append(tables.latex_booktabs(["Config key", "Value", "Config key", "Value"], rows,
                                     caption=f"{caption} Keys every run shares.", label=f"{label}-shared",
                                     align_right_from=4))
    return out
