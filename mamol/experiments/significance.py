"""Significance of a report's differences: every method against a reference method, on runs paired by seed.

For one test setting of one group (datasets, training setting), each method's runs are paired with the
reference method's runs of the same seed (reference seed k with method seed k: the same seed draws the same
missing tables and data order, so the pair differs in the method alone). Two kinds of test:

* **McNemar's exact test** on per-sample correctness, from the runs' ``test_predictions.npz``
  (:mod:`mamol.predictions`), aligned by the samples' indices in the test split (runs whose test samples or
  true labels differ are refused, naming both files). Per seed pair, b = samples the reference gets right and
  the method wrong, c = the reverse; p is the exact two-sided binomial test of b out of b + c at 1/2
  (``scipy.stats.binomtest``), 1 when b + c = 0 (no discordant sample: no evidence of a difference).
  **Combined** over seeds: b and c summed over the seed pairs, the same exact test. This treats each seed pair
  as a stratum of one paired sample (Mantel–Haenszel style): every discordant sample of every seed counts once,
  so it assumes the seed pairs are independent replicates, and seeds with more discordant samples weigh more.
  Correct means: the argmax class equals the label for single-label tasks; for multi-label tasks (MM-IMDb) the
  whole 0/1 label set equals the predicted set (exact match), the strictest per-sample notion. A group of
  several datasets pools the samples of every task (aligned by task and index).
* **Paired tests over seeds** on the group's headline metric (values × 100 as the report shows them), on the seeds
  both methods have: Wilcoxon's signed-rank test (``scipy.stats.wilcoxon``, two-sided, zero differences
  dropped as scipy does by default) and the paired t test (``scipy.stats.ttest_rel``). Their p-value is left
  empty, with the reason, for fewer than two pairs or when every difference is zero (and the t test when the
  differences are all equal: zero variance, t undefined).

Runs saved before predictions were (no ``test_predictions.npz``) get no McNemar test ("n/a (no predictions
saved)"); their paired tests over seeds still work. A marker in the report's headline tables flags the
combined McNemar p: ``†`` below 0.05, ``‡`` below 0.01 (:func:`marker`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from mamol.errors import ConfigError, DataError
from mamol.predictions import TaskPredictions, read_predictions

DEFAULT_REFERENCE = "mamol"
NO_PREDICTIONS = "n/a (no predictions saved)"
NO_COMMON_SEED = "n/a (no seed in common)"
MARKERS = ((0.01, "‡"), (0.05, "†"))
"""(threshold, marker): a combined McNemar p below the threshold earns the marker (the first that applies)."""
MARKER_RULE = "† / ‡: combined McNemar test against {reference} (test samples paired seed by seed), p < 0.05 / p < 0.01"


def reference_label(labels: Sequence[str], wanted: str | None = None) -> str:
    """The reference among a group's method ``labels``: ``wanted`` when present, else ``mamol``, else the first."""
    for label in (wanted, DEFAULT_REFERENCE):
        if label is not None and label in labels:
            return label
    return labels[0]


def check_reference(wanted: str | None, labels: Sequence[str]) -> None:
    """ConfigError when an explicitly chosen reference is none of the report's method labels."""
    if wanted is not None and wanted not in labels:
        raise ConfigError(f"reference={wanted!r} is not a method of the report; its methods are {list(labels)}")


def format_p(p: float | None) -> str:
    """A p-value as text: three decimals, scientific below 0.001, empty for none."""
    if p is None:
        return ""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def marker(p: float | None) -> str:
    """``‡`` for p < 0.01, ``†`` for p < 0.05, else empty."""
    for threshold, sign in MARKERS:
        if p is not None and p < threshold:
            return sign
    return ""


# ------------------------------------------------------------------------------------------- McNemar
@dataclass(frozen=True)
class McNemar:
    """Discordant counts of a paired comparison and the exact two-sided p-value."""

    b: int  # reference right, method wrong
    c: int  # reference wrong, method right

    @property
    def p(self) -> float:
        n = self.b + self.c
        return 1.0 if n == 0 else float(stats.binomtest(self.b, n, 0.5).pvalue)

    def __add__(self, other: McNemar) -> McNemar:
        return McNemar(self.b + other.b, self.c + other.c)


def _aligned(reference: TaskPredictions, other: TaskPredictions, task: str, names: tuple[Path, Path]) -> None:
    a, b = (reference.sorted(), other.sorted())
    problem = None
    if len(a.index) != len(b.index):
        problem = f"task {task!r}: {len(a.index)} vs {len(b.index)} test samples"
    elif not np.array_equal(a.index, b.index):
        i = int(np.flatnonzero(a.index != b.index)[0])
        problem = f"task {task!r}: different test samples (index {a.index[i]} in the first, {b.index[i]} in the second)"
    elif a.label.shape != b.label.shape or not np.array_equal(a.label, b.label):
        if a.label.shape != b.label.shape:
            problem = f"task {task!r}: labels shaped {a.label.shape} vs {b.label.shape}"
        else:
            differ = np.flatnonzero((a.label != b.label).reshape(len(a.index), -1).any(axis=1))
            i = int(differ[0])
            problem = (f"task {task!r}: the true labels differ at {len(differ)} of {len(a.index)} samples (first: "
                       f"index {a.index[i]}, {a.label[i].tolist()} vs {b.label[i].tolist()})")
    if problem:
        raise DataError(f"{names[0]} and {names[1]} cannot be compared sample by sample: {problem}; compare runs "
                        f"tested on the same test split (data_root, datasets, limit_test)")


def mcnemar(reference: Path, other: Path) -> McNemar:
    """McNemar's counts of two runs' ``test_predictions.npz`` on the same test samples (every task pooled);
    DataError naming both files when their tasks, samples or true labels differ."""
    a, b = read_predictions(reference), read_predictions(other)
    if sorted(a) != sorted(b):
        raise DataError(f"{reference} and {other} cannot be compared sample by sample: tasks {sorted(a)} vs "
                        f"{sorted(b)}")
    total = McNemar(0, 0)
    for task in a:
        _aligned(a[task], b[task], task, (Path(reference), Path(other)))
        right_a, right_b = a[task].sorted().correct, b[task].sorted().correct
        total += McNemar(int((right_a & ~right_b).sum()), int((~right_a & right_b).sum()))
    return total


# ------------------------------------------------------------------------------------------- over seeds
@dataclass(frozen=True)
class PairedTests:
    """Wilcoxon signed-rank and paired t p-values over seed pairs (None with ``why`` when undefined)."""

    n: int
    mean_difference: float | None  # method − reference, mean over the pairs
    wilcoxon: float | None
    ttest: float | None
    why: str = ""  # why a p-value is empty


def paired_tests(reference: Sequence[float], other: Sequence[float]) -> PairedTests:
    """The two tests on paired values (same order: seed by seed)."""
    x, y = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    n = len(x)
    if n < 2:
        return PairedTests(n, float(np.mean(y - x)) if n else None, None, None,
                           f"{n} seed{'s' if n != 1 else ''} in common: a paired test needs two or more")
    diff = y - x
    mean = float(diff.mean())
    if np.all(diff == 0):
        return PairedTests(n, mean, None, None, "every difference is zero")
    wilcoxon = _defined(stats.wilcoxon(y, x).pvalue)
    if np.all(diff == diff[0]):
        return PairedTests(n, mean, wilcoxon, None, "the differences are all equal (zero variance): t undefined")
    return PairedTests(n, mean, wilcoxon, _defined(stats.ttest_rel(y, x).pvalue))


def _defined(p: float) -> float | None:
    return None if math.isnan(float(p)) else float(p)


# ------------------------------------------------------------------------------------------- a comparison
@dataclass(frozen=True)
class SeedRun:
    """One run of a method at one test setting, as the tests need it."""

    seed: int
    value: float | None  # the headline metric x 100 (None: not measured)
    predictions: Path | None  # its test_predictions.npz (None: saved before predictions were)


@dataclass(frozen=True)
class Comparison:
    """One method against the reference at one test setting: McNemar per seed and combined, paired tests."""

    label: str
    reference: str
    seeds: tuple[int, ...]  # seeds both methods have
    per_seed: tuple[tuple[int, McNemar], ...]  # seeds whose two runs both saved predictions
    paired: PairedTests

    @property
    def combined(self) -> McNemar | None:
        if not self.per_seed:
            return None
        return sum((m for _, m in self.per_seed), McNemar(0, 0))

    @property
    def unpredicted(self) -> tuple[int, ...]:
        """Seeds in common whose McNemar test is missing (a run without predictions)."""
        done = {s for s, _ in self.per_seed}
        return tuple(s for s in self.seeds if s not in done)

    @property
    def marker(self) -> str:
        combined = self.combined
        return marker(combined.p if combined else None)

    def mcnemar_text(self) -> tuple[str, str]:
        """(per seed, combined) as table text: ``s0: 0.250 (3/1)``, with b/c in brackets."""
        if not self.seeds:
            return NO_COMMON_SEED, NO_COMMON_SEED
        if not self.per_seed:
            return NO_PREDICTIONS, NO_PREDICTIONS
        per_seed = "; ".join(f"s{s}: {format_p(m.p)} ({m.b}/{m.c})" for s, m in self.per_seed)
        if self.unpredicted:
            per_seed += "; " + "; ".join(f"s{s}: {NO_PREDICTIONS}" for s in self.unpredicted)
        combined = self.combined
        return per_seed, f"{format_p(combined.p)} ({combined.b}/{combined.c})"


def compare(label: str, runs: Sequence[SeedRun], reference: str, reference_runs: Sequence[SeedRun]) -> Comparison:
    """``label``'s runs against the reference's, paired by seed (the first run of a seed when a seed repeats)."""
    mine = {r.seed: r for r in reversed(runs)}
    theirs = {r.seed: r for r in reversed(reference_runs)}
    seeds = tuple(s for s in sorted(theirs) if s in mine)
    per_seed = tuple((s, mcnemar(theirs[s].predictions, mine[s].predictions)) for s in seeds
                     if theirs[s].predictions is not None and mine[s].predictions is not None)
    valued = [s for s in seeds if theirs[s].value is not None and mine[s].value is not None]
    paired = paired_tests([theirs[s].value for s in valued], [mine[s].value for s in valued])
    return Comparison(label, reference, seeds, per_seed, paired)


def table(rows: Sequence[tuple[str, Comparison]], names: Mapping[str, str] | None = None,
          setting_name: Callable[[str], str] = str) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, footnotes) of the p-value table for ``(test setting, comparison)`` rows; methods as ``names``
    shows them (method label -> display name; absent: the label), settings as ``setting_name`` does."""
    def name(label: str) -> str:
        return (names or {}).get(label, label)

    header = ["test setting", "method", "vs", "seeds", "McNemar p per seed (b/c)", "McNemar p combined (b/c)",
              "Wilcoxon p", "paired t p"]
    out, notes = [], []
    for setting, c in rows:
        per_seed, combined = c.mcnemar_text()
        out.append([setting_name(setting), name(c.label), name(c.reference), " ".join(map(str, c.seeds)), per_seed,
                    combined, format_p(c.paired.wilcoxon), format_p(c.paired.ttest)])
        if c.paired.why:
            which = "Wilcoxon and t" if c.paired.wilcoxon is None else "t"
            notes.append(f"{name(c.label)} vs {name(c.reference)} at {setting_name(setting)}: {which} empty, "
                         f"{c.paired.why}.")
    return header, out, notes


CSV_HEADER = ["datasets", "train", "setting", "metric", "reference", "method", "seeds", "mcnemar_seeds",
              "mcnemar_b_per_seed", "mcnemar_c_per_seed", "mcnemar_p_per_seed", "mcnemar_b", "mcnemar_c", "mcnemar_p",
              "mean_difference", "wilcoxon_p", "ttest_p", "note"]


def csv_row(datasets: str, train: str, setting: str, metric: str, c: Comparison) -> list[object]:
    """One row of ``significance.csv`` (empty cells where a test is undefined; ``note`` says why)."""
    def number(value: float | None) -> object:
        return "" if value is None else f"{value:.6g}"

    combined = c.combined
    notes = [c.paired.why] if c.paired.why else []
    if c.unpredicted:
        notes.append(f"seeds {' '.join(map(str, c.unpredicted))}: McNemar {NO_PREDICTIONS}")
    return [datasets, train, setting, metric, c.reference, c.label, " ".join(map(str, c.seeds)),
            " ".join(str(s) for s, _ in c.per_seed), " ".join(str(m.b) for _, m in c.per_seed),
            " ".join(str(m.c) for _, m in c.per_seed), " ".join(f"{m.p:.6g}" for _, m in c.per_seed),
            "" if combined is None else combined.b, "" if combined is None else combined.c,
            "" if combined is None else number(combined.p), number(c.paired.mean_difference),
            number(c.paired.wilcoxon), number(c.paired.ttest), "; ".join(notes)]
