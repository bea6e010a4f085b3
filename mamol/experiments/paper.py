"""The paper tables of a report: the test settings a paper shows, display names, the best values marked, captions
that state the data, split, missing protocol and training budget, and ``\\label``\\ s unique per report.

* **Which settings** (:func:`parse_settings`, :func:`select_settings`; the ``report_settings`` key):
  ``"compact"`` — complete data, each modality missing from every test sample (ratio 1) and the mixed type
  (``both``; all modalities' type with three or more) at the training ratio; ``"all"`` — every evaluated setting;
  or a list such as ``["complete", "hsi 1", "both 0.7"]``. A chosen setting no run was evaluated at is named in a
  note under the table, never dropped silently.
* **Cells** (:func:`ranked_rows`): mean ± sample std over seeds (× 100); per row the best mean is **bold** and the
  second best underlined, compared as shown (two decimals), so every method tied for best is bold and the next
  value down is second; n goes into the caption when one n holds for the whole table, else into every cell.
* **Captions** (:func:`context`): the datasets (modalities, classes), their split and its sizes (from the Arrow
  metadata each run recorded), the training missing setting and what each test setting means, and the training
  budget (epochs, steps, batch, optimiser, learning rate, ``budget``), naming each method's value where they differ.
* **Labels** (:func:`label_prefix`): ``tab:<prefix>:<table>``, the prefix from ``report_label`` or the report's
  folder (``<exp_name>`` for a sweep, ``<exp_name>-v<n>`` for a report's ``version_<n>``), so two reports
  ``\\input`` into one document do not clash.

The functions take a report group through :class:`Results`, so this module does not depend on the report's reader.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mamol.data import catalogue
from mamol.errors import ConfigError
from mamol.experiments import tables
from mamol.experiments.plots import MODALITY_LABELS, setting_title
from mamol.experiments.tables import Latex

COMPACT, ALL = "compact", "all"
DIGITS = 2  # decimals of a score (× 100); ranks compare the values as shown
METRIC_TITLES = {"OA": "OA", "AA": "AA", "kappa": "κ", "F1_macro": "F1 (macro)", "F1_micro": "F1 (micro)",
                 "F1_weighted": "F1 (weighted)", "F1_samples": "F1 (samples)", "AUROC": "AUROC",
                 "accuracy": "Accuracy", "the_metric": "mean of the tasks' headline metrics"}
ABSENT = "–"  # a method without a value at a setting
PM_LATEX = r"\pm"
UNDEFINED = "undefined"  # a score NaN over the seeds (AUROC on one class, precision of a class never predicted)


class Summary(Protocol):
    """Mean and sample standard deviation (None for one seed) over n seeds (``mamol.experiments.report.Stat``)."""

    n: int
    mean: float
    std: float | None


class Results(Protocol):
    """What a table needs of a report group (``mamol.experiments.report.Group``)."""

    headline: str
    metrics: list[str]
    settings: list[str]
    methods: Mapping[str, Sequence[Any]]

    def stat(self, label: str, setting: str, metric: str) -> Summary | None: ...


# ------------------------------------------------------------------------------------------- names
def metric_title(name: str) -> str:
    """``kappa`` -> "κ", ``F1_macro`` -> "F1 (macro)", ``mmimdb/F1_macro`` -> "mmimdb: F1 (macro)"."""
    task, _, short = name.rpartition("/")
    title = METRIC_TITLES.get(short, short)
    return f"{task}: {title}" if task else title


def setting_name(setting: str) -> str:
    """A report's setting label (``complete``, ``hsi 1``, ``both 0.7``) as tables show it (:func:`setting_title`)."""
    if " " not in setting:
        return setting_title("none", 0.0)
    kind, ratio = setting.rsplit(" ", 1)
    return setting_title(kind, float(ratio))


def dataset_title(name: str) -> str:
    """A dataset in prose: the catalogue's title (``hatememes`` -> "Hateful Memes"), else its name capitalised."""
    entry = catalogue.CATALOGUE.get(name)
    return entry.title if entry is not None and entry.title else name[:1].upper() + name[1:]


def datasets_title(datasets: str) -> str:
    """A report group's datasets (``houston2013+trento``) in prose: "Houston2013 + Trento" (:func:`dataset_title`)."""
    return " + ".join(dataset_title(d) for d in datasets.split("+"))


# ------------------------------------------------------------------------------------------- settings
def parse_settings(choice: str | Sequence[str]) -> tuple[str, ...] | str:
    """``report_settings`` checked: ``"compact"``, ``"all"`` or a list of ``"complete"`` / ``"<type> <ratio>"``
    (ratio in [0, 1]); ConfigError naming the entry otherwise."""
    if isinstance(choice, str):
        if choice in (COMPACT, ALL):
            return choice
        raise ConfigError(f"report_settings={choice!r}: expected 'compact', 'all' or a list of test settings, e.g. "
                          f"'[\"complete\", \"hsi 1\", \"both 0.7\"]'")
    out = []
    for i, entry in enumerate(choice):
        words = str(entry).split()
        ratio = _ratio(words[1]) if len(words) == 2 else None
        if words != ["complete"] and (ratio is None or not 0 <= ratio <= 1):
            raise ConfigError(f"report_settings[{i}]={entry!r}: expected 'complete' or '<missing type> <ratio>' with "
                              f"a ratio in [0, 1], e.g. 'hsi 1' or 'both 0.7'")
        out.append(str(entry))
    if not out:
        raise ConfigError("report_settings=[]: name at least one test setting, or use 'compact' or 'all'")
    return tuple(out)


def _ratio(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def mixed_type(modalities: Sequence[str]) -> str:
    """The type that mixes the modalities' absence: ``both`` for two, all of them (``hsi_lidar_sar``) for more."""
    return "both" if len(modalities) == 2 else "_".join(modalities)


def compact_settings(modalities: Sequence[str], train: str) -> list[str]:
    """Complete, each modality missing at ratio 1 and the mixed type at the training ratio (``train``: the group's
    training setting label, e.g. ``both 0.7``; trained on complete data, the mixed setting is left out). The report
    adds the settings its runs were tested at (:func:`select_settings`)."""
    ratio = 0.0 if " " not in train else float(train.rsplit(" ", 1)[1])
    wanted = ["complete", *[f"{m} 1" for m in modalities]]
    if ratio > 0 and len(modalities) > 1:
        wanted.append(f"{mixed_type(modalities)} {ratio:g}")
    return wanted


def select_settings(choice: str | tuple[str, ...], evaluated: Sequence[str], modalities: Sequence[str],
                    train: str, canonical: Any, tested: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(settings to show, chosen settings no run was evaluated at), in the chosen order. ``canonical(kind,
    modalities)`` spells an explicit entry's type as the report's labels do (``HS`` -> ``hsi``); ``"compact"``
    also shows the settings the runs were tested at (``tested``: those of ``test_results.json``, with the
    significance marks), usually the mixed one at the training ratio already."""
    if choice == ALL:
        return list(evaluated), []
    if choice == COMPACT:
        wanted = compact_settings(modalities, train) + list(tested)
    else:
        wanted = []
        for entry in choice:
            kind, _, ratio = entry.partition(" ")
            ratio_value = float(ratio) if ratio else 0.0
            wanted.append("complete" if ratio_value == 0 or kind == "complete"
                          else f"{canonical(kind, modalities)} {ratio_value:g}")
    wanted = list(dict.fromkeys(wanted))
    return [s for s in wanted if s in evaluated], [s for s in wanted if s not in evaluated]


def absent_note(absent: Sequence[str]) -> list[str]:
    """The note under a table naming chosen settings that no run was evaluated at."""
    if not absent:
        return []
    return [f"Not evaluated, so not shown: {', '.join(setting_name(s) for s in absent)} (evaluate the runs there "
            f"with evaluate_grid, or a sweep with sweep_grid=True and grid_types / grid_ratios that include it)."]


# ------------------------------------------------------------------------------------------- labels
LABEL_CHARACTERS = re.compile(r"^[A-Za-z0-9_.:-]+$")


def label_prefix(folder: Path, given: str | None) -> str:
    """The prefix of a report's ``\\label``\\ s: ``given`` (``report_label``, checked), else from the report folder:
    ``<exp_name>-v<n>`` for ``<exp_name>/version_<n>``, else the folder's name; characters LaTeX labels should not
    hold become ``-``."""
    if given is not None:
        if not LABEL_CHARACTERS.match(given):
            raise ConfigError(f"report_label={given!r}: expected letters, digits and . _ : - only (it prefixes "
                              f"\\label{{}}s in report.tex)")
        return given
    folder = Path(folder)
    match = re.fullmatch(r"version_(\d+)", folder.name)
    name = f"{folder.parent.name}-v{match.group(1)}" if match else folder.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "report"


# ------------------------------------------------------------------------------------------- cells
def ranks(means: Sequence[float | None]) -> list[int | None]:
    """Per value: 0 = best (every value equal to it as shown), 1 = second best, None otherwise (or absent, NaN);
    nothing is ranked among fewer than two values."""
    shown = [None if m is None or math.isnan(m) else round(m, DIGITS) for m in means]
    present = sorted({v for v in shown if v is not None}, reverse=True)
    if sum(v is not None for v in shown) < 2:
        return [None] * len(shown)
    order = {v: i for i, v in enumerate(present[:2])}
    return [None if v is None else order.get(v) for v in shown]


def score(mean: float, std: float | None, latex: bool = False, digits: int = DIGITS) -> str:
    """mean ± std (one seed, ``std`` None: the mean) with ``digits`` decimals, as a cell shows it; a NaN value is
    "undefined" (the whole score when the mean is). ``latex``: the body of a math cell (no ``$``)."""
    def number(value: float) -> str:
        if math.isnan(value):
            return rf"\mbox{{{UNDEFINED}}}" if latex else UNDEFINED
        return f"{value:.{digits}f}"

    if std is None or math.isnan(mean):
        return number(mean)
    return f"{number(mean)} {PM_LATEX if latex else '±'} {number(std)}"


def cell(stat: Summary | None, rank: int | None, latex: bool, with_n: bool, mark: str = "") -> str:
    """A score: mean ± std (one seed: the mean; NaN: "undefined", :func:`score`), bold when ranked best, underlined
    when second, n when asked, and a significance mark (``†``, ``‡``)."""
    if stat is None:
        return ABSENT
    if latex:
        body = score(stat.mean, stat.std, latex=True)
        body = rf"\mathbf{{{body}}}" if rank == 0 else rf"\underline{{{body}}}" if rank == 1 else body
        sign = {"†": r"^{\dagger}", "‡": r"^{\ddagger}"}.get(mark, "")
        return Latex(f"${body}{sign}" + (rf"\;(n={stat.n})" if with_n else "") + "$")
    body = score(stat.mean, stat.std)
    body = f"**{body}**" if rank == 0 else f"<ins>{body}</ins>" if rank == 1 else body
    return body + (f" (n={stat.n})" if with_n else "") + (f" {mark}" if mark else "")


def one_n(stats: Sequence[Summary | None]) -> int | None:
    """The n every present cell shares (None: they differ, or none is present)."""
    counts = {s.n for s in stats if s is not None}
    return counts.pop() if len(counts) == 1 else None


def ranked_rows(rows: Sequence[tuple[list[str], Sequence[Summary | None]]], latex: bool, n: int | None,
                marks: Sequence[Sequence[str]] | None = None) -> list[list[str]]:
    """Table rows: each row's leading cells, then its scores ranked within the row; n in each cell unless one n
    (``n``) holds for the table (then the caption states it)."""
    out = []
    for i, (lead, stats) in enumerate(rows):
        order = ranks([None if s is None else s.mean for s in stats])
        row_marks = marks[i] if marks else [""] * len(stats)
        out.append([*lead, *[cell(s, r, latex, n is None, m) for s, r, m in zip(stats, order, row_marks)]])
    return out


def statistics_sentence(n: int | None) -> str:
    """How the cells are made, for a caption."""
    over = f"over n = {n} seed{'s' * (n != 1)}" if n is not None else "over n seeds (n in each cell)"
    return (f"Scores × 100, mean ± sample standard deviation {over}; per row the best mean is in bold and the second "
            f"best underlined (equal as shown: all bold).")


# ------------------------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class RunFacts:
    """What a caption says of a run, from its ``test_results.json``: its method title, resolved settings and the
    Arrow metadata of each dataset."""

    title: str
    tasks: tuple[str, ...]
    settings: Mapping[str, Any]
    data: Mapping[str, Mapping[str, Any]]  # task -> Arrow metadata (none recorded by older runs)
    modalities: tuple[str, ...]
    limit_test: float


def _data_sentence(facts: RunFacts) -> str:
    parts = []
    for task in facts.tasks:
        meta = facts.data.get(task) or {}
        modalities = " + ".join(MODALITY_LABELS.get(m, m) for m in meta.get("modalities") or facts.modalities)
        classes = meta.get("num_classes")
        parts.append(f"{dataset_title(task)} ({modalities}{f', {classes} classes' if classes else ''})")
    return "Data: " + "; ".join(parts) + "."


def _split_sentence(facts: RunFacts) -> str:
    parts = []
    for task in facts.tasks:
        meta = facts.data.get(task) or {}
        if "counts" in meta:  # a remote scene (mamol.data.convert_remote)
            sizes = " / ".join(str(sum(meta["counts"].get(s, []))) for s in ("train", "val", "test"))
            per_class = meta.get("per_class") or {}
            if meta.get("split_method") == "fixed":
                how = f"the scene's fixed train / test split, val drawn from train ({per_class.get('val')} per class)"
            elif meta.get("split_method") == "release":  # mamol.tasks.data_notes says the same in every record
                how = (f"the release's split, train and test drawn independently, so {meta.get('overlap', '?')} test "
                       f"samples are also training samples")
            else:
                drawn = [f"{per_class[s]}" if per_class.get(s, -1) > 0 else "all remaining" for s in
                         ("train", "val", "test")]
                how = f"a random split, {' / '.join(drawn)} samples per class"
            parts.append(f"{dataset_title(task)}: {how} (seed {meta.get('split_seed')}); train / val / test = "
                         f"{sizes} samples")
        elif "split_samples" in meta:  # an image-text dataset (mamol.data.convert_natural)
            sizes = " / ".join(str(meta["split_samples"].get(s, "?")) for s in ("train", "val", "test"))
            parts.append(f"{dataset_title(task)}: the dataset's own split, train / val / test = {sizes} samples")
        else:
            parts.append(f"{dataset_title(task)}: split not recorded")
    limit = facts.limit_test
    tested = "" if limit == 1.0 else f" Tested on {'a fraction ' if limit < 1 else 'the first batches '}" \
                                     f"(limit_test={limit:g}) of the test split."
    return "Split: " + "; ".join(parts) + "." + tested


def _meaning(setting: str, facts: RunFacts, split: str, both_ratio: float) -> str:
    """What a missing setting does to the samples of ``split``: "70 % of the test samples miss HSI"."""
    if setting == "complete":
        return "every modality present"
    kind, ratio = setting.rsplit(" ", 1)
    names = [MODALITY_LABELS.get(m, m) for m in facts.modalities]
    share = f"{float(ratio) * 100:g} % of the {split} samples"
    if kind == "both":
        return (f"{share} miss one modality ({names[0]} for {(1 - both_ratio) * 100:g} % of them, {names[-1]} for "
                f"{both_ratio * 100:g} %)")
    if len(facts.modalities) > 2 and kind == "_".join(facts.modalities):
        return f"{share} miss one of the partial patterns, drawn uniformly"
    return f"{share} miss {' and '.join(MODALITY_LABELS.get(m, m) for m in kind.split('_'))}"


def _protocol_sentence(facts: RunFacts, train: str, shown: Sequence[str]) -> str:
    missing = facts.settings.get("missing", {})
    both = {split: (missing.get(split) or {}).get("both_ratio", 0.5) for split in ("train", "test")}
    tests = "; ".join(f"{setting_name(s)}: {_meaning(s, facts, 'test', both['test'])}" for s in shown)
    fill = missing.get("fill")
    return (f"Missing modalities: training setting {setting_name(train)} "
            f"({_meaning(train, facts, 'training', both['train'])}); test settings: {tests}"
            + (f"; a missing input is replaced by {fill}." if fill else "."))


BUDGET_KEYS = (("max_epoch", "epochs"), ("max_steps", "steps"), ("batch_size", "batch"),
               ("learning_rate", "learning rate"), ("weight_decay", "weight decay"), ("warmup_steps", "warm-up"))


def _budget_sentence(runs: Sequence[RunFacts]) -> str:
    def value(facts: RunFacts, key: str) -> Any:
        if key == "budget":
            return facts.settings.get("method", {}).get("budget")
        return facts.settings.get("optim", {}).get(key)

    parts = []
    for key, name in (*BUDGET_KEYS, ("budget", "parameter budget")):
        by_title = {f.title: value(f, key) for f in runs}
        values = set(map(str, by_title.values()))
        if values == {"None"}:
            continue
        if len(values) == 1:
            parts.append(f"{name} {_value(next(iter(by_title.values())))}")
        else:
            parts.append(f"{name} " + ", ".join(f"{t} {_value(v)}" for t, v in by_title.items()))
    if not parts:
        return "Training: not recorded."
    schedule = runs[0].settings.get("optim", {}).get("decay_power")
    decay = ("" if schedule is None else "cosine decay" if schedule == "cosine"
             else f"polynomial decay (power {_value(schedule)})")
    return "Training: AdamW, " + ", ".join(parts) + (f", {decay}" if decay else "") + "."


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def context(runs: Sequence[RunFacts], train: str, shown: Sequence[str]) -> str:
    """The sentences a results table's caption adds: data, split, missing protocol, training budget (``runs``: one
    per method, in column order; the first one's data and protocol stand for all, which the grouping ensures)."""
    first = runs[0]
    return " ".join([_data_sentence(first), _split_sentence(first), _protocol_sentence(first, train, shown),
                     _budget_sentence(runs)])


# ------------------------------------------------------------------------------------------- tables
def results_table(group: Results, titles: Sequence[str], shown: Sequence[str], latex: bool,
                  marks: Mapping[tuple[str, str], str] | None = None
                  ) -> tuple[list[str], list[list[str]], int | None, list[int]]:
    """(header, rows, the one n or None, indices of rows that start a setting): every summary metric of the group
    at each shown setting, one column per method."""
    labels = list(group.methods)
    lines, row_marks, starts = [], [], []
    for setting in shown:
        starts.append(len(lines))
        for k, metric in enumerate(group.metrics):
            stats = [group.stat(label, setting, metric) for label in labels]
            lines.append(([setting_name(setting) if k == 0 else "", metric_title(metric)], stats))
            row_marks.append([(marks or {}).get((setting, label), "") if metric == group.headline else ""
                              for label in labels])
    n = one_n([s for _, stats in lines for s in stats])
    return ["Test setting", "Metric", *titles], ranked_rows(lines, latex, n, row_marks), n, starts[1:]


def grid_table(group: Results, titles: Sequence[str], latex: bool) -> tuple[list[str], list[list[str]], int | None]:
    """(header, rows, the one n or None): the headline metric at every evaluated setting, one column per method."""
    labels = list(group.methods)
    lines = [([setting_name(s)], [group.stat(label, s, group.headline) for label in labels]) for s in group.settings]
    n = one_n([s for _, stats in lines for s in stats])
    return ["Test setting", *titles], ranked_rows(lines, latex, n), n


def class_table(group: Results, titles: Sequence[str], setting: str, keys: Sequence[str], names: Sequence[str],
                latex: bool) -> tuple[list[str], list[list[str]], list[list[str]], int | None] | None:
    """(header, class rows, summary rows, the one n or None): each class's accuracy (``keys``, named ``names``) at
    ``setting`` and the summary metrics under them; None when no method has a class accuracy there."""
    labels = list(group.methods)
    lines = [([name], [group.stat(label, setting, key) for label in labels]) for key, name in zip(keys, names)]
    if all(s is None for _, stats in lines for s in stats):
        return None
    summary = [([metric_title(m)], [group.stat(label, setting, m) for label in labels]) for m in group.metrics]
    n = one_n([s for _, stats in lines + summary for s in stats])
    return ["Class", *titles], ranked_rows(lines, latex, n), ranked_rows(summary, latex, n), n


def cost_rows(costs: Sequence[tuple[str, Summary | None, Summary | None]], lead: int, latex: bool
              ) -> list[list[str]]:
    """Rows under a results table: trainable parameters, fit wall time and fit CPU time (s) per method (``costs``:
    (parameters as text, wall, CPU) per column; ``lead`` empty cells pad the row's leading columns)."""
    def seconds(stat: Summary | None) -> str:
        if stat is None:
            return "n/a"
        text = score(stat.mean, stat.std, latex, digits=1)
        return Latex(f"${text}$") if latex else text

    pad = [""] * (lead - 1)
    return [["Trainable parameters", *pad, *[c[0] for c in costs]],
            ["Fit wall time (s)", *pad, *[seconds(c[1]) for c in costs]],
            ["Fit CPU time (s)", *pad, *[seconds(c[2]) for c in costs]]]


def latex_chunks(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, label: str,
                 size: int = 40, **kwargs: Any) -> list[str]:
    """``rows`` as one ``table`` or, past ``size`` rows, several (captions "(part i of k)", labels ``-<i>``), so a
    long grid fits pages without ``longtable`` (which two-column documents refuse)."""
    parts = [rows[i:i + size] for i in range(0, len(rows), size)] or [[]]
    if len(parts) == 1:
        return [tables.latex_booktabs(header, rows, caption=caption, label=label, **kwargs)]
    return [tables.latex_booktabs(header, part, caption=f"{caption} (part {i + 1} of {len(parts)})",
                                  label=f"{label}-{i + 1}", **kwargs) for i, part in enumerate(parts)]
