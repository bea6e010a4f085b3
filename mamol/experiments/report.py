"""``report``: finished runs aggregated into mean ± std over seeds, per method and test setting, with paired tests.

``python run.py report with 'report_dirs=["result/my_sweep", "result/other/version_3"]'`` searches each folder
for finished runs and groups them (:mod:`mamol.experiments.records`: by datasets and training missing setting,
then by method label and config; runs of different configs are never pooled). For every (group, method, test
setting) the report gives n (seeds), the mean and the sample standard deviation (n − 1 in the denominator; left
empty for a single seed) of every metric × 100, and per run its trainable parameters, wall and CPU time of fitting
and testing (``test_results.json`` records them; CPU time "n/a" for runs recorded before it was).

Paper tables (:mod:`mamol.experiments.paper`): the test settings ``report_settings`` chooses (default "compact":
complete, each modality missing from every test sample, mixed at the training ratio; a chosen setting no run was
evaluated at is named in a note), every summary metric (remote: OA, AA, κ), methods by display name as columns,
best per row bold and second underlined, n in the caption (or in each cell where it differs), captions stating the
data, split, missing protocol and training budget, and ``\\label``\\ s ``tab:<prefix>:...`` unique per report
(``report_label``, else the folder's name). The full grid stays in ``report.csv`` and an appendix of ``report.tex``.

Significance (:mod:`mamol.experiments.significance`): at each test setting runs were tested at (the setting of
``test_results.json``), every method is tested against a reference method (``report_reference``; default
``mamol`` where a group has it, else the group's first method) on runs paired by seed: McNemar's exact test on
per-sample correctness from the saved predictions, per seed and combined over seeds, and Wilcoxon's signed-rank and
the paired t test over seeds on the headline metric. Runs without saved predictions (made before they were saved)
get "n/a (no predictions saved)" for McNemar; their paired tests still work.

Files (in the report's folder):

* ``report.md``: runs, methods (cost), hyper-parameters, then per group the results table (a ``†`` / ``‡`` beside a
  score whose combined McNemar p against the reference is < 0.05 / < 0.01, the rule written under the table; under
  the scores each method's trainable parameters and fit wall and CPU time), per-class accuracy by class name with
  the summary metrics, the p-values, per-class precision / recall / F1 per method with its confusion figures, the
  training × test table of a method trained under several training settings, and the full grid (every evaluated
  setting, one table per metric);
* ``report.tex``: the same results, per-class, p-value and training × test tables as ``booktabs`` floats, then an
  appendix: the hyper-parameters, the headline metric at every evaluated setting, per-class precision / recall / F1;
* ``report.csv``: one row per group, method and test setting: every metric's mean and std, fit wall and CPU time;
* ``report_config.csv``: the hyper-parameters (:mod:`mamol.experiments.hyperparameters`): each config key, whether
  every run shares its value, and its value under each method label;
* ``report_classes.csv``: one row per group, method, tested setting and class;
* ``significance.csv``: one row per group, test setting and method against the reference: McNemar's b, c and p per
  seed and combined, the mean difference, the Wilcoxon and paired t p-values, and a note where one is empty;
* ``comparison.png``: the headline metric against the test missing ratio, one line per method with a ±std band, one
  panel per group and missing type (drawn from grid results);
* ``comparison_bars.png``: the headline metric at each group's tested setting, one bar per method (mean, error bar
  ± std over seeds); ``confusion_<method>.png``: confusion counts summed over seeds.
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mamol import confusion
from mamol.console import recorded, save_to
from mamol.experiments import hyperparameters, paper, plots, significance, tables
from mamol.experiments.records import NOT_POOLED_ON, Group, RunRecord, Stat, collect, group_runs, order_settings
from mamol.experiments.significance import Comparison
from mamol.metrics import CLASS_PREFIX, is_class_metric
from mamol.runs import new_run_folder, write_command_record
from mamol.settings import from_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    """Which folders to aggregate (``report_dirs``) and where the report's own run folder goes."""

    report_dirs: tuple[Path, ...]
    log_dir: Path
    exp_name: str


@dataclass(frozen=True)
class TableOptions:
    """How a report's tables are made (``report`` and ``sweep``; :mod:`mamol.experiments.paper`)."""

    report_reference: str | None  # the method the others are tested against (None: mamol, else the first)
    report_settings: Literal["compact", "all"] | tuple[str, ...]  # the paper tables' test settings
    report_label: str | None  # prefix of report.tex's labels (None: from the report's folder)


def table_options(config: Mapping[str, Any]) -> TableOptions:
    """The table keys of ``config``, typed and checked (ConfigError naming the key), before any run or folder."""
    options = from_config(TableOptions, config)
    paper.parse_settings(options.report_settings)
    if options.report_label is not None:
        paper.label_prefix(Path(), options.report_label)
    return options


# ------------------------------------------------------------------------------------------- outputs
Marks = Mapping[tuple[str, str], str]  # (test setting, method label) -> significance marker


def _cell(stat: Stat | None, latex: bool, mark: str = "") -> str:
    """A full-grid or training × test cell: unranked, n in the cell, empty where the method has no value."""
    return "" if stat is None else paper.cell(stat, None, latex, with_n=True, mark=mark)


def _pivot(group: Group, metric: str, latex: bool = False, marks: Marks | None = None,
           settings: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    header = ["test setting", *group.methods]
    rows = []
    for setting in group.settings if settings is None else settings:
        cells = [_cell(group.stat(label, setting, metric), latex, (marks or {}).get((setting, label), ""))
                 for label in group.methods]
        rows.append([setting, *cells])
    return header, rows


def _cost_rows(group: Group, lead: int, latex: bool) -> list[list[str]]:
    """The rows under a results table: each method's trainable parameters, fit wall time and fit CPU time."""
    return paper.cost_rows([group.cost(label) for label in group.methods], lead, latex)


def _marks(comparisons: Sequence[tuple[str, Comparison]]) -> dict[tuple[str, str], str]:
    return {(setting, c.label): c.marker for setting, c in comparisons if c.marker}


def _class_keys(group: Group, setting: str) -> tuple[list[str], list[str]]:
    """(per-class accuracy keys, class names as rows show them: ``3 Healthy grass``) at ``setting``."""
    runs = [r for rs in group.methods.values() for r in rs if setting in r.settings]
    keys = list(dict.fromkeys(k for r in runs for k in r.settings[setting] if is_class_metric(k)))
    names = {task: n for r in runs for task, n in r.class_names.items()}
    several = any("/" in k for k in keys)

    def name(key: str) -> str:
        task, _, short = key.rpartition("/")
        index = int(short.removeprefix(CLASS_PREFIX))
        task = task or next(iter(names), "")
        known = names.get(task, [])
        text = f"{index + 1} {known[index]}" if index < len(known) else short
        return f"{task}: {text}" if several else text

    keys.sort(key=lambda k: (k.rpartition("/")[0], int(k.rpartition("/")[2].removeprefix(CLASS_PREFIX))))
    return keys, [name(k) for k in keys]


SCORE_TITLES = {"precision": "precision", "recall": "recall (= accuracy)", "f1": "F1", "support": "support"}


def _scores_table(group: Group, label: str, setting: str, latex: bool = False
                  ) -> tuple[list[str], list[list[str]]] | None:
    """Per-class precision, recall and F1 (mean ± std over seeds, × 100) and mean support of one method at a
    tested setting; None when its runs recorded no per-class scores."""
    scores = group.class_scores(label, setting)
    if not scores:
        return None
    several = len({task for task, *_ in scores}) > 1
    rows = []
    for task, k, name, stats in scores:
        cells = [stats[s].latex() if latex else stats[s].text() for s in confusion.SCORES]
        rows.append([f"{task}: {k + 1} {name}" if several else f"{k + 1} {name}", *cells,
                     f"{stats['support'].mean:g}"])
    n = scores[0][3]["f1"].n
    return [f"class (n={n})", *[SCORE_TITLES[s] for s in confusion.SCORES], "support"], rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def _confusion_figures(groups: Sequence[Group], folder: Path) -> dict[tuple[int, str, str, str], Path]:
    """``confusion_<method>.png`` per method of each group's tested setting, counts summed over seeds (the group,
    setting and task are added to the name when the report holds several); key (group index, setting, method,
    task)."""
    several_groups = len(groups) > 1
    out = {}
    for i, g in enumerate(groups):
        for setting in g.tested:
            for label in g.methods:
                summed = g.summed_confusion(label, setting)
                for task, c in summed.items():
                    parts = [label] + [f"{g.datasets}_{g.train}"] * several_groups
                    parts += [setting] * (len(g.tested) > 1) + [task] * (len(summed) > 1)
                    seeds = sum(1 for r in g.methods[label] if r.tested == setting and r.predictions is not None)
                    title = (f"{label} · {g.title} · test {setting} · {task}: summed over {seeds} seed(s); "
                             f"shading: share of the true class")
                    path = folder / f"confusion_{'_'.join(_slug(p) for p in parts)}.png"
                    out[(i, setting, label, task)] = confusion.confusion_figure(c, title, path)
    return out


def _run_links(group: Group, label: str, setting: str, folder: Path) -> str:
    """Markdown links from the report's folder to each run's confusion figure, by seed."""
    links = [f"[seed {r.seed}{'' if len(r.figures) == 1 else f' {task}'}]({os.path.relpath(path, folder)})"
             for r in group.methods[label] if r.tested == setting for task, path in r.figures.items()]
    return ("Each run's confusion matrix: " + ", ".join(links) + ".\n") if links else ""


def _classes_csv(groups: Sequence[Group]) -> tuple[list[str], list[list[Any]]]:
    """``report_classes.csv``: one row per group, method, tested setting and class (its name in ``class``):
    mean and std over seeds of the per-class accuracy, precision, recall and F1, and the mean support."""
    header = ["datasets", "train", "method", "setting", "task", "class_index", "class", "n", "seeds", "support",
              *[f"{m}_{part}" for m in ("accuracy", *confusion.SCORES) for part in ("mean", "std")]]
    rows = []
    for g in groups:
        for setting in g.tested:
            for label in g.methods:
                for task, k, name, stats in g.class_scores(label, setting):
                    several = any("/" in m for r in g.methods[label] for m in r.settings.get(setting, {}))
                    acc = g.stat(label, setting, f"{task + '/' if several else ''}{CLASS_PREFIX}{k}")
                    row: list[Any] = [g.datasets, g.train, label, setting, task, k, name, stats["f1"].n,
                                      " ".join(map(str, stats["f1"].seeds)), f"{stats['support'].mean:g}"]
                    for s in (acc, *(stats[m] for m in confusion.SCORES)):
                        row += ["", ""] if s is None else [
                            "" if math.isnan(s.mean) else round(s.mean, 6),
                            "" if s.std is None or math.isnan(s.std) else round(s.std, 6)]
                    rows.append(row)
    return header, rows


def _cross_tables(groups: Sequence[Group], latex: bool = False) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(datasets, method label, header, rows) per method trained under several training settings on the same
    datasets: rows = training setting, columns = test settings (both by name, :func:`paper.setting_name`), cells =
    the headline metric (mean ± std over seeds)."""
    by_key: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        for label in g.methods:
            by_key.setdefault((g.datasets, label), []).append(g)
    out = []
    for (datasets, label), gs in by_key.items():
        if len({g.train for g in gs}) < 2:
            continue
        settings = order_settings([r for g in gs for r in g.methods[label]])
        rows = [[paper.setting_name(g.train), *[_cell(g.stat(label, s, g.headline), latex) for s in settings]]
                for g in gs]
        out.append((datasets, label, ["Training / test", *map(paper.setting_name, settings)], rows))
    return out


def _bars(groups: Sequence[Group], path: Path) -> Path | None:
    """``comparison_bars.png``: the headline metric at each group's tested settings, per method (mean, ±std)."""
    panels: dict[str, list[plots.Bar]] = {}
    for g in groups:
        for setting in g.tested:
            bars = []
            for label in g.methods:
                stat = g.stat(label, setting, g.headline)
                if stat is not None:
                    bars.append(plots.Bar(label, stat.mean, math.nan if stat.std is None else stat.std, stat.n))
            if bars:
                panels[f"{g.title} · test {setting}"] = bars
    if not panels:
        return None
    metric = groups[0].headline if len({g.headline for g in groups}) == 1 else "headline metric"
    return plots.bar_figure(panels, metric, "mean over seeds, error bar: ± standard deviation", path)


def _runs_table(records: Sequence[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    header = ["run", "method", "datasets", "train", "seed", "trainable parameters", "fit wall (s)", "fit CPU (s)",
              "test wall (s)", "test CPU (s)", "headline (tested setting)"]
    rows = []
    for r in records:
        value = r.settings[r.tested].get(r.headline)
        times = [r.fit_s, r.fit_cpu_s, r.test_s, r.test_cpu_s]
        rows.append([r.name, r.label, "+".join(r.datasets), r.train, r.seed,
                     "" if r.parameters is None else f"{r.parameters:,}",
                     *["n/a" if t is None else f"{t:.1f}" for t in times],
                     "" if value is None else f"{r.headline} {paper.score(value, None)} ({r.tested})"])
    return header, rows


def _methods_table(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    header = ["datasets", "train", "method", "seeds", "trainable parameters", "fit wall time (s)", "fit CPU time (s)"]
    rows = []
    for g in groups:
        for label, runs in g.methods.items():
            params, wall, cpu = g.cost(label)
            rows.append([g.datasets, g.train, label, str(len(runs)), params,
                         *["n/a" if t is None else t.text(1) for t in (wall, cpu)]])
    return header, rows


def _csv_rows(groups: Sequence[Group]) -> tuple[list[str], list[list[Any]]]:
    metrics = list(dict.fromkeys(m for g in groups for m in g.metrics))
    header = ["datasets", "train", "method", "setting", "n", "seeds", "trainable_parameters", "fit_s_mean",
              "fit_s_std", "fit_cpu_s_mean", "fit_cpu_s_std",
              *[f"{m}_{part}" for m in metrics for part in ("mean", "std")]]
    rows = []
    for g in groups:
        for label in g.methods:
            params, wall, cpu = g.cost(label)
            times = ["" if part is None else round(part, 3)
                     for t in (wall, cpu) for part in ((None, None) if t is None else (t.mean, t.std))]
            for setting in g.settings:
                stats = {m: g.stat(label, setting, m) for m in metrics}
                present = [s for s in stats.values() if s is not None]
                if not present:
                    continue
                row: list[Any] = [g.datasets, g.train, label, setting, present[0].n,
                                  " ".join(map(str, present[0].seeds)), params.replace(",", ""), *times]
                for m in metrics:
                    s = stats[m]
                    row += ["", ""] if s is None else [round(s.mean, 6), "" if s.std is None else round(s.std, 6)]
                rows.append(row)
    return header, rows


def _comparison(groups: Sequence[Group], path: Path) -> Path | None:
    panels: dict[str, list[plots.Curve]] = {}
    for g in groups:
        kinds = list(dict.fromkeys(k for runs in g.methods.values() for r in runs for k in r.curves))
        for kind in kinds:
            curves = []
            for label, runs in g.methods.items():
                ratios = sorted({ratio for r in runs for ratio in r.curves.get(kind, {})})
                stats = [Stat.of(*zip(*[(r.curves[kind][x][g.headline], r.seed) for r in runs
                                        if x in r.curves.get(kind, {})])) for x in ratios]
                if stats:
                    curves.append(plots.Curve(label, ratios, [s.mean for s in stats],
                                              [math.nan if s.std is None else s.std for s in stats]))
            panels[f"{g.title} · test: {plots.type_label(kind)}"] = curves
    if not panels:
        return None
    metric = groups[0].headline if len({g.headline for g in groups}) == 1 else "headline metric"
    return plots.comparison_figure(panels, metric, "mean over seeds, band: ± standard deviation", path)


NOTE = ("Scores x 100: mean ± sample standard deviation over seeds (n - 1 in the denominator; one seed: the value "
        "alone), n = runs (seeds). The results tables show the test settings `report_settings` chooses (default: "
        "complete, each modality missing from every test sample, mixed at the training ratio), best per row in bold "
        "and second underlined; the full grid follows at the end. Costs: trainable parameters, fit wall and CPU "
        "time (n/a: runs recorded before CPU time was).\n")


@dataclass
class Sections:
    """What one group adds to the report's files."""

    md: list[str] = field(default_factory=list)
    tex: list[str] = field(default_factory=list)  # the paper tables
    appendix: list[str] = field(default_factory=list)  # report.tex's appendix: the full grid, per-class scores
    grid_md: list[str] = field(default_factory=list)  # report.md's full grid
    significance: list[list[Any]] = field(default_factory=list)  # significance.csv rows
    text: list[str] = field(default_factory=list)  # the console summary


def _sections(g: Group, i: int, choice: str | tuple[str, ...], prefix: str, reference: str | None, folder: Path,
              confusions: Mapping[tuple[int, str, str, str], Path]) -> Sections:
    out = Sections()
    shown, absent = g.selection(choice)
    titles, context = g.titles, g.caption_context(shown)
    comparisons = g.comparisons(reference)
    marks = _marks(comparisons)
    names = dict(zip(g.methods, titles))  # method label -> display name
    rule = (significance.MARKER_RULE.format(reference=names[comparisons[0][1].reference]) + "; McNemar needs the "
            "runs' test_predictions.npz, so only the settings runs were tested at (not grid points) can be marked."
            if comparisons else "")
    notes = paper.absent_note(absent) + ([rule] if rule else [])
    results = f"tab:{prefix}:results-{i + 1}"
    metrics = ", ".join(paper.metric_title(m) for m in g.metrics)
    header, rows, n, starts = paper.results_table(g, titles, shown, latex=False, marks=marks)
    out.md += [f"\n## {g.title}\n\n### Results: {metrics}\n\n{paper.statistics_sentence(n)} {context}\n\n",
               tables.markdown(header, rows + _cost_rows(g, 2, latex=False), align_right_from=2)]
    out.md += ["\n" + "".join(f"- {note}\n" for note in notes)] if notes else []
    header, rows, n, starts = paper.results_table(g, titles, shown, latex=True, marks=marks)
    out.tex.append(tables.latex_booktabs(
        header, rows, caption=f"{metrics} of each method, {g.plain_title}. {paper.statistics_sentence(n)} {context} "
        f"Below: trainable parameters, fit wall and CPU time (s).", label=results, align_right_from=2,
        footer=_cost_rows(g, 2, latex=True), notes=notes, spaced=starts))
    same = rf" Data, split, missing protocol and training as in Table~\ref{{{results}}}."
    class_settings = [s for s in g.tested if s in shown] or [s for s in shown if _class_keys(g, s)[0]][:1]
    for j, setting in enumerate(class_settings):
        for latex in (False, True):
            made = paper.class_table(g, titles, setting, *_class_keys(g, setting), latex=latex)
            if made is None:
                break
            header, rows, summary, n = made
            what = f"Per-class accuracy at test setting {paper.setting_name(setting)}, {g.plain_title}"
            if latex:
                out.tex.append(tables.latex_booktabs(
                    header, rows, caption=tables.Latex(tables.latex_escape(
                        f"{what}; below, the summary metrics there. {paper.statistics_sentence(n)}") + same),
                    label=f"tab:{prefix}:classes-{i + 1}-{j + 1}", footer=summary))
            else:
                out.md += [f"\n### {what}\n\n{paper.statistics_sentence(n)}\n\n",
                           tables.markdown(header, rows + summary)]
    if comparisons:
        ref = names[comparisons[0][1].reference]
        head, sig_rows, sig_notes = significance.table(comparisons, names, paper.setting_name)
        out.md += [f"\n### Significance against {ref} ({paper.metric_title(g.headline)})\n\n",
                   tables.markdown(head, sig_rows, align_right_from=3)]
        out.md += ["\n" + "".join(f"- {n}\n" for n in sig_notes)] if sig_notes else []
        out.tex.append(tables.latex_booktabs(  # without the per-seed McNemar column (report.md has it): narrower
            ["Test setting", "Method", "Seeds", "McNemar p (b/c)", "Wilcoxon p", "Paired t p"],
            [[*row[:2], *row[3:4], *row[5:]] for row in sig_rows],
            caption=f"p-values against {ref}, {g.plain_title}: McNemar (exact, on the test samples "
            f"of all seeds, paired seed by seed; b/c = samples only {ref} / only the method gets "
            f"right; per seed in report.md), Wilcoxon signed-rank and paired t over seeds on "
            f"{paper.metric_title(g.headline)}.", label=f"tab:{prefix}:significance-{i + 1}", align_right_from=2,
            notes=sig_notes))
        out.significance += [significance.csv_row(g.datasets, g.train, setting, g.headline, c)
                             for setting, c in comparisons]
    for j, setting in enumerate(g.tested):
        for m, (label, title) in enumerate(zip(g.methods, titles)):
            scores = _scores_table(g, label, setting)
            if scores is None:
                continue
            out.md += [f"\n### {title}: per-class precision, recall and F1 (test {paper.setting_name(setting)})\n\n",
                       tables.markdown(*scores), "\n" + _run_links(g, label, setting, folder)]
            figures = [p for (gi, s, lab, _), p in confusions.items() if (gi, s, lab) == (i, setting, label)]
            out.md += [f"\n![summed confusion matrix of {label}]({p.name})\n" for p in figures]
            out.appendix.append(tables.latex_booktabs(
                *_scores_table(g, label, setting, latex=True), caption=tables.Latex(tables.latex_escape(
                    f"{title}: per-class precision, recall and F1 at test setting {paper.setting_name(setting)}, "
                    f"mean and standard deviation over seeds, {g.plain_title}; support: test samples of the class.")
                    + same), label=f"tab:{prefix}:prf-{i + 1}-{j + 1}-{m + 1}"))
    header, rows, n = paper.grid_table(g, titles, latex=True)
    out.appendix += paper.latex_chunks(header, rows, caption=tables.Latex(tables.latex_escape(
        f"{paper.metric_title(g.headline)} at every evaluated test setting, {g.plain_title}. "
        f"{paper.statistics_sentence(n)}") + same), label=f"tab:{prefix}:grid-{i + 1}")
    for metric in g.metrics:
        out.grid_md += [f"\n### {g.title}: {metric}\n\n", tables.markdown(*_pivot(g, metric))]
    plain_header, plain_rows = _pivot(g, g.headline, marks=marks, settings=shown)
    widths = [max(len(str(c)) for c in col) for col in zip(plain_header, *plain_rows)]
    out.text += [f"{g.title}: {g.headline} (x100, mean ± std over seeds)"]
    out.text += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [plain_header, *plain_rows]]
    return out


def write_report(dirs: Sequence[Path], folder: Path, reference: str | None = None,
                 settings: str | Sequence[str] = paper.COMPACT, label: str | None = None) -> str:
    """Aggregate the runs under ``dirs`` into ``folder``; returns the headline tables as text.

    ``reference``: the method every other one is tested against (default: ``mamol`` where a group has it, else
    the group's first method; :mod:`mamol.experiments.significance`). ``settings``: the test settings of the paper
    tables (``report_settings``: "compact", "all" or a list); ``label``: the prefix of ``report.tex``'s labels
    (``report_label``; None: from ``folder``'s name) (:mod:`mamol.experiments.paper`).
    """
    choice = paper.parse_settings(settings)
    prefix = paper.label_prefix(folder, label)
    records = collect([Path(d) for d in dirs])
    groups = group_runs(records)
    significance.check_reference(reference, list(dict.fromkeys(label for g in groups for label in g.methods)))
    folder.mkdir(parents=True, exist_ok=True)
    caveats = "".join(f"**Note: {n}.**\n\n" for n in dict.fromkeys(n for r in records for n in r.notes))
    md = [f"# Report\n\n{len(records)} runs from {', '.join(str(d) for d in dirs)}.\n\n{caveats}{NOTE}\n## Runs\n\n",
          tables.markdown(*_runs_table(records), align_right_from=4), "\n## Methods\n\n",
          tables.markdown(*_methods_table(groups), align_right_from=3)]
    tex = [f"% {len(records)} runs from {', '.join(str(d) for d in dirs)}; labels tab:{prefix}:...\n"
           f"% needs \\usepackage{{booktabs,graphicx}} only (graphicx shrinks a tabular wider than the text); "
           f"\\input it (labels are unique per report); written by "
           f"`run.py report` or `run.py sweep`\n"]
    appendix = [f"% Appendix of report {prefix}: the hyper-parameters, every evaluated test setting and the "
                f"per-class scores\n"]
    separated = [w for g in groups for w in g.warnings]
    if separated:
        md.append("\n## Warnings\n\n" + "".join(f"- {w}\n" for w in separated))
    hyper = hyperparameters.table([hyperparameters.RunConfig(label, r.method, r.config, r.facts.settings)
                                   for g in groups for label, runs in g.methods.items() for r in runs],
                                  NOT_POOLED_ON)
    titles = {label: title for g in groups for label, title in zip(g.methods, g.titles)}
    md += ["\n## Hyper-parameters\n\nThe config keys of the runs (`report_config.csv`), less result-neutral keys, the "
           "seed, datasets and missing settings (in the captions) and other methods' keys.\n\n",
           hyperparameters.markdown(hyper, titles)]
    appendix += hyperparameters.latex(hyper, titles, caption="Hyper-parameters of the runs (config as given; "
                                      "report_config.csv).", label=f"tab:{prefix}:config")
    confusions = _confusion_figures(groups, folder)
    sections = [_sections(g, i, choice, prefix, reference, folder, confusions) for i, g in enumerate(groups)]
    md += [part for sec in sections for part in sec.md]
    tex += [part for sec in sections for part in sec.tex]
    appendix += [part for sec in sections for part in sec.appendix]
    cross = _cross_tables(groups)
    if cross:
        md.append("\n## Training × test settings\n\nThe headline metric of each method trained under each training "
                  "setting (rows) at each test setting (columns).\n")
        latex_cross = _cross_tables(groups, latex=True)
        for k, ((datasets, label, header, rows), (*_, latex_rows)) in enumerate(zip(cross, latex_cross)):
            data = paper.datasets_title(datasets)
            md += [f"\n### {data}: {titles[label]}\n\n", tables.markdown(header, rows)]
            headline = {paper.metric_title(g.headline) for g in groups if g.datasets == datasets and label in g.methods}
            metric = headline.pop() if len(headline) == 1 else "the headline metric"
            tex.append(tables.latex_booktabs(
                header, latex_rows, caption=f"{titles[label]} on {data}: {metric} by training setting (rows) and test "
                f"setting (columns), mean and standard deviation over seeds.", label=f"tab:{prefix}:cross-{k + 1}"))
    md.append("\n## Full grid\n\nEvery evaluated test setting, every metric (also in `report.csv`).\n")
    md += [part for sec in sections for part in sec.grid_md]
    figure = _comparison(groups, folder / "comparison.png")
    if figure is None:
        md.append("\nNo run has grid results (`grid.json`), so there is no comparison plot.\n")
    else:
        md.append("\n![comparison](comparison.png)\n")
    bars = _bars(groups, folder / "comparison_bars.png")
    if bars is not None:
        md.append("\n![comparison at the tested settings](comparison_bars.png)\n")
    tables.write_text(folder / "report.md", "".join(md))
    tables.write_csv(folder / "report.csv", *_csv_rows(groups))
    tables.write_text(folder / "report.tex", "\n".join(tex + appendix))
    tables.write_csv(folder / hyperparameters.CSV_NAME, *hyperparameters.csv_rows(hyper))
    written = ["report.md", "report.csv", "report.tex", hyperparameters.CSV_NAME]
    class_header, class_rows = _classes_csv(groups)
    if class_rows:
        tables.write_csv(folder / "report_classes.csv", class_header, class_rows)
        written.append("report_classes.csv")
    csv_rows = [row for sec in sections for row in sec.significance]
    if csv_rows:
        tables.write_csv(folder / "significance.csv", significance.CSV_HEADER, csv_rows)
        written.append("significance.csv")
    written += [f.name for f in (figure, bars, *confusions.values()) if f is not None]
    text = [line for sec in sections for line in sec.text]
    return "\n".join(text) + f"\nreport written to {folder} ({', '.join(written)})"


@recorded
def command(config: Mapping[str, Any]) -> str:
    """``python run.py report with 'report_dirs=[...]'``: the report in a new run folder."""
    options = from_config(ReportOptions, config)
    how = table_options(config)  # bad keys and folders are refused before the output folder is created
    collect(options.report_dirs)
    folder = new_run_folder(options.log_dir, options.exp_name)
    save_to(folder)
    write_command_record(folder, "report", config)
    return write_report(options.report_dirs, folder, how.report_reference, how.report_settings, how.report_label)
