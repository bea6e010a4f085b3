"""Paper tables of a report: compact settings, display names, best bold / second underlined, captions, labels unique
per report, the hyper-parameter table, and CPU time beside wall time (runs recorded before it: n/a)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mamol.errors import ConfigError
from mamol.experiments import paper
from mamol.experiments.plots import setting_title
from mamol.experiments.records import canonical_type
from mamol.experiments.report import write_report
from mamol.methods import display_name
from mamol.runs import RunClock
from tests.helpers import read_csv, run_command, run_settings

CLASSES = ["Healthy grass", "Stressed grass", "Trees"]
META = {"houston2013": {"modalities": ["hsi", "lidar"], "num_classes": 3, "class_names": CLASSES,
                        "split_method": "random", "split_seed": 3, "per_class": {"train": 20, "val": 10, "test": -1},
                        "counts": {"train": [20, 20, 20], "val": [10, 10, 10], "test": [100, 50, 30]}}}


def _run(folder: Path, tmp: Path, method: str, seed: int, oa: dict[str, float], cpu: bool = True, **updates) -> None:
    """A finished run's files as train.run and evaluate_grid write them (scores made up): ``test_results.json`` at
    both 0.7 (``oa["both 0.7"]``) and ``grid.json`` with the other settings of ``oa`` (``"hsi 1"``, ...)."""
    s = run_settings(tmp, "remote", datasets=["houston2013"], method=method, seed=seed, **updates)
    def metrics(value: float) -> dict[str, float]:
        return {"OA": value, "AA": value - 1, "kappa": value - 2, **{f"acc_{k}": value + k for k in range(3)}}
    folder.mkdir(parents=True)
    (folder / "test_results.json").write_text(json.dumps({
        "config": s.config, "settings": s.to_dict(), "tasks": ["houston2013"], "method": method,
        "modalities": {"houston2013": ["hsi", "lidar"]}, "missing": {"missing_type": "both", "missing_ratio": 0.7},
        "metrics": metrics(oa["both 0.7"]), "class_names": {"houston2013": CLASSES}, "dataset": META,
        "limit_test": 1.0, "trainable_parameters": 1000 + len(method), "wall_time_s": {"fit": 10.0 + seed, "test": 1.0},
        **({"cpu_time_s": {"fit": 8.0 + 2 * seed, "test": 0.5}} if cpu else {})}))
    rows = [{"type": "none" if setting == "complete" else setting.split()[0],
             "ratio": 0.0 if setting == "complete" else float(setting.split()[1]), "metrics": metrics(value)}
            for setting, value in oa.items() if setting != "both 0.7"]
    (folder / "grid.json").write_text(json.dumps({"rows": rows}))


def _table(tex: str, label: str) -> str:
    """The ``table`` environment of report.tex holding ``\\label{label}``."""
    at = tex.index(rf"\label{{{label}}}")
    return tex[tex.rindex(r"\begin{table}", 0, at):tex.index(r"\end{table}", at)]


SCORES = {"mamol": [{"complete": 90.0, "hsi 1": 60.0, "both 0.7": 80.0, "hsi 0.5": 70.0},
                    {"complete": 92.0, "hsi 1": 62.0, "both 0.7": 82.0, "hsi 0.5": 72.0}],
          "lora": [{"complete": 91.0, "hsi 1": 50.0, "both 0.7": 80.0, "hsi 0.5": 65.0},
                   {"complete": 91.0, "hsi 1": 52.0, "both 0.7": 82.0, "hsi 0.5": 66.0}]}


@pytest.fixture()
def runs(tmp_path) -> Path:
    """2 methods x 2 seeds; grids without ``lidar 1`` (a compact setting not evaluated); the lora runs were
    recorded before CPU time was; the methods differ in ``learning_rate``."""
    for position, (method, scores) in enumerate(SCORES.items()):  # folders in this order: columns in this order
        for seed, oa in enumerate(scores):
            _run(tmp_path / "sweep" / f"{position}-{method}-{seed}" / "version_0", tmp_path, method, seed, oa,
                 cpu=method == "mamol", learning_rate=1e-3 if method == "mamol" else 1e-4)
    return tmp_path / "sweep"


def test_compact_settings_and_an_explicit_list():
    evaluated = ["complete", "hsi 0.5", "hsi 1", "lidar 1", "both 0.7", "both 1"]
    assert paper.compact_settings(["hsi", "lidar"], "both 0.7") == ["complete", "hsi 1", "lidar 1", "both 0.7"]
    assert paper.compact_settings(["hsi", "lidar", "sar"], "hsi_lidar_sar 0.5")[-1] == "hsi_lidar_sar 0.5"
    assert paper.compact_settings(["hsi", "lidar"], "complete") == ["complete", "hsi 1", "lidar 1"]
    assert paper.select_settings("compact", evaluated[:3], ["hsi", "lidar"], "both 0.7", canonical_type) == (
        ["complete", "hsi 1"], ["lidar 1", "both 0.7"])
    assert paper.select_settings("all", evaluated, ["hsi", "lidar"], "both 0.7", canonical_type) == (evaluated, [])
    chosen = paper.parse_settings(["HS 1.0", "both 0.70", "complete", "sar 1"])
    assert paper.select_settings(chosen, evaluated, ["hsi", "lidar"], "both 0.7", canonical_type) == (
        ["hsi 1", "both 0.7", "complete"], ["sar 1"])
    for bad, message in (("some", "report_settings='some': expected 'compact', 'all'"),
                         (["hsi"], r"report_settings\[0\]='hsi': expected 'complete' or '<missing type> <ratio>'"),
                         (["hsi 2"], r"report_settings\[0\]='hsi 2'"), ([], r"report_settings=\[\]")):
        with pytest.raises(ConfigError, match=message):
            paper.parse_settings(bad)


def test_best_bold_second_underlined_with_ties():
    assert paper.ranks([90.0, 90.001, 80.0, 70.0]) == [0, 0, 1, None]  # equal as shown (two decimals): both best
    assert paper.ranks([50.0, 50.0]) == [0, 0] and paper.ranks([50.0, None]) == [None, None]
    assert paper.ranks([float("nan"), 3.0, 2.0]) == [None, 0, 1]

    class S:
        n, mean, std = 2, 55.0, 7.071

    assert paper.cell(S, 0, latex=True, with_n=False) == r"$\mathbf{55.00 \pm 7.07}$"
    assert paper.cell(S, 1, latex=True, with_n=True, mark="†") == r"$\underline{55.00 \pm 7.07}^{\dagger}\;(n=2)$"
    assert paper.cell(S, 0, latex=False, with_n=True) == "**55.00 ± 7.07** (n=2)"
    assert paper.cell(S, 1, latex=False, with_n=False) == "<ins>55.00 ± 7.07</ins>"
    assert paper.cell(None, None, latex=True, with_n=False) == paper.ABSENT


def test_an_undefined_score_is_written_as_such_and_never_ranked(runs, tmp_path):
    """A metric NaN over the seeds (AUROC on one class, precision of a class never predicted) reads "undefined" in
    report.md and report.tex, never "nan", and the other methods are ranked without it."""
    class S:
        def __init__(self, mean: float, std: float | None = 1.0):
            self.n, self.mean, self.std = 2, mean, std

    rows = paper.ranked_rows([(["AA"], [S(float("nan")), S(70.0), S(80.0)])], latex=False, n=2)
    assert rows == [["AA", paper.UNDEFINED, "<ins>70.00 ± 1.00</ins>", "**80.00 ± 1.00**"]]
    tex_rows = paper.ranked_rows([(["AA"], [S(80.0), S(float("nan"), None), S(70.0)])], latex=True, n=None)
    assert tex_rows == [["AA", r"$\mathbf{80.00 \pm 1.00}\;(n=2)$", r"$\mbox{undefined}\;(n=2)$",
                         r"$\underline{70.00 \pm 1.00}\;(n=2)$"]]
    assert paper.score(5.0, float("nan")) == "5.00 ± undefined"

    path = runs / "1-lora-0" / "version_0" / "test_results.json"  # lora's AA undefined in one seed
    tested = json.loads(path.read_text())
    tested["metrics"]["AA"] = float("nan")
    path.write_text(json.dumps(tested))
    folder = tmp_path / "out"
    write_report([runs], folder)
    md, tex = (folder / "report.md").read_text(), (folder / "report.tex").read_text()
    assert "|  | AA | 80.00 ± 1.41 | undefined |" in md  # one defined value: nothing to rank against
    assert r" & AA & $80.00 \pm 1.41$ & $\mbox{undefined}$ \\" in _table(tex, "tab:out:results-1")
    assert not re.search(r"\bnan\b", md + tex, re.IGNORECASE)


def test_display_names_of_methods_settings_and_metrics():
    assert display_name("mamol", "mamol") == "MaMOL" and display_name("moe_lora", "moe_lora") == "MoE-LoRA"
    assert display_name("mamol_r4", "mamol") == "MaMOL (mamol_r4)"
    assert display_name("mamol (max_epoch=3)", "mamol") == "MaMOL (max_epoch=3)"
    assert display_name("mamol_r4 (max_epoch=3)", "mamol") == "MaMOL (mamol_r4, max_epoch=3)"
    assert display_name("mine", "not_a_method") == "mine"
    assert [setting_title("none", 0), setting_title("hsi", 1.0), setting_title("both", 0.7)] == [
        "Complete", "HSI missing (100 %)", "Mixed (70 %)"]
    assert paper.setting_name("lidar 0.5") == "LiDAR missing (50 %)" and paper.setting_name("complete") == "Complete"
    assert [paper.metric_title(m) for m in ("kappa", "F1_macro", "mmimdb/AUROC")] == [
        "κ", "F1 (macro)", "mmimdb: AUROC"]


def test_the_paper_tables_of_a_report(runs, tmp_path):
    folder = tmp_path / "out" / "version_0"
    text = write_report([runs], folder)
    tex, md = (folder / "report.tex").read_text(), (folder / "report.md").read_text()
    results = _table(tex, "tab:out-v0:results-1")
    # compact: complete, HSI missing at 1, mixed at the training ratio; LiDAR missing at 1 was not evaluated
    assert [line.split(" & ")[0] for line in results.splitlines() if " & OA & " in line] == [
        "Complete", r"HSI missing (100 \%)", r"Mixed (70 \%)"]
    assert r"Not evaluated, so not shown: LiDAR missing (100 \%)" in results
    assert "hsi 0.5" not in results and "HSI missing (50" not in results  # a grid point, in the appendix
    assert r"Test setting & Metric & MaMOL & LoRA \\" in results
    assert r"Complete & OA & $\mathbf{91.00 \pm 1.41}$ & $\underline{91.00 \pm 0.00}$" not in results
    assert r"Complete & OA & $\mathbf{91.00 \pm 1.41}$ & $\mathbf{91.00 \pm 0.00}$ \\" in results  # a tie
    assert r"HSI missing (100 \%) & OA & $\mathbf{61.00 \pm 1.41}$ & $\underline{51.00 \pm 1.41}$ \\" in results
    assert r" & $\kappa$ & " in results
    # the caption: statistics with n, data, split, missing protocol and training budget (differing per method)
    caption = results[:results.index(r"\begin{tabular}")]
    for words in ("over n = 2 seeds", "Houston2013 (HSI + LiDAR, 3 classes)", "20 / 10 / all remaining samples per "
                  "class (seed 3); train / val / test = 60 / 30 / 180 samples", r"training setting Mixed (70 \%)",
                  r"HSI missing (100 \%): 100 \% of the test samples miss HSI", "learning rate MaMOL 0.001, LoRA "
                  "0.0001", "batch 128", "epochs 201"):
        assert words in caption.replace("\n", " "), words
    # costs: wall and CPU time; the lora runs have no CPU time (recorded before it was)
    assert r"Fit wall time (s) &  & $10.5 \pm 0.7$ & $10.5 \pm 0.7$ \\" in results
    assert r"Fit CPU time (s) &  & $9.0 \pm 1.4$ & n/a \\" in results
    assert "| Fit CPU time (s) |  | 9.0 ± 1.4 | n/a |" in md
    runs_rows = {r.split(" | ")[0].strip("| "): r for r in md.splitlines() if r.startswith(("| 0-", "| 1-"))}
    assert "| 11.0 | 10.0 | 1.0 | 0.5 |" in runs_rows["0-mamol-1/version_0"]
    assert "| 11.0 | n/a | 1.0 | n/a |" in runs_rows["1-lora-1/version_0"]
    csv = {(r["method"], r["setting"]): r for r in read_csv(folder / "report.csv")}
    assert (csv[("mamol", "complete")]["fit_cpu_s_mean"], csv[("lora", "complete")]["fit_cpu_s_mean"]) == ("9.0", "")
    assert len(csv) == 2 * 4  # the full grid stays in the CSV
    # per-class accuracy by class name at the tested setting, summary metrics under it; the full grid in the appendix
    assert r"\label{tab:out-v0:classes-1-1}" in tex and r"3 Trees & $\mathbf{83.00 \pm 1.41}$" in tex
    grid = tex[tex.index(r"\label{tab:out-v0:grid-1}"):]
    assert r"HSI missing (50 \%) & $\mathbf{71.00 \pm 1.41}$ & $\underline{65.50 \pm 0.71}$ \\" in grid
    assert "**91.00 ± 1.41** | **91.00 ± 0.00**" in md and "### Per-class accuracy at test setting Mixed (70 %)" in md
    assert "OA" in text and "lidar 1" not in text.split("report written")[0]


def test_labels_are_unique_per_report_and_settings_chosen_by_key(runs, tmp_path):
    first = run_command("report", report_dirs=[str(runs)], log_dir=str(tmp_path), exp_name="report")
    second = run_command("report", report_dirs=[str(runs)], log_dir=str(tmp_path), exp_name="report",
                         report_settings="all", report_label="appendix")
    labels = [re.findall(r"\\label\{([^}]*)\}", (f / "report.tex").read_text()) for f in (first, second)]
    assert all(label.startswith("tab:report-v0:") for label in labels[0])
    assert all(label.startswith("tab:appendix:") for label in labels[1])
    assert len(set(labels[0])) == len(labels[0]) and not set(labels[0]) & set(labels[1])
    results = _table((second / "report.tex").read_text(), "tab:appendix:results-1")
    assert r"HSI missing (50 \%) & OA" in results and "Not evaluated" not in results  # "all": every evaluated one
    with pytest.raises(ConfigError, match=r"report_label='a b': expected letters, digits"):
        run_command("report", report_dirs=[str(runs)], log_dir=str(tmp_path), exp_name="bad", report_label="a b")
    assert not (tmp_path / "bad").exists()  # refused before the report's folder was made


def test_the_hyper_parameter_table(runs, tmp_path):
    folder = tmp_path / "out"
    write_report([runs], folder)
    rows = {r["key"]: r for r in read_csv(folder / "report_config.csv")}
    assert (rows["learning_rate"]["shared"], rows["learning_rate"]["mamol"], rows["learning_rate"]["lora"]) == (
        "no", "0.001", "0.0001")
    assert (rows["adapter_rank"]["mamol"], rows["adapter_rank"]["lora"]) == ("8", "–")  # resolved; not lora's key
    assert (rows["lora_rank"]["shared"], rows["lora_rank"]["mamol"]) == ("no", "–")
    assert rows["batch_size"]["shared"] == "yes" and rows["batch_size"]["lora"] == "128"
    assert rows["loss_names"]["mamol"] == '{"remote": 1}'  # weights of 0 (other datasets) left out
    for noise in ("seed", "num_workers", "exp_name", "log_dir", "data_root", "datasets", "test_ratio", "prompt_length",
                  "mmimdb_class_num", "report_settings"):
        assert noise not in rows, noise
    md, tex = (folder / "report.md").read_text(), (folder / "report.tex").read_text()
    assert "| `learning_rate` | 0.001 | 0.0001 |" in md and "| `batch_size` | 128 |" in md
    assert r"learning\_rate & 0.001 & 0.0001 \\" in tex and r"\label{tab:out:config-shared}" in tex


def test_cpu_time_of_a_stage_counts_the_process_and_its_ended_children():
    clock = RunClock()
    before = time.process_time()
    clock.on_fit_start(None, None)
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)  # a worker's work
    clock.teardown(None, None, "fit")
    own = time.process_time() - before  # this process's CPU time over the stage (and a little more)
    clock.teardown(None, None, "test")  # a stage that never started stays None
    assert clock.cpu_seconds["test"] is None and clock.seconds["test"] is None
    # the child's CPU time is counted too, although this process only waited for it
    assert clock.cpu_seconds["fit"] > own + 0.001 and clock.seconds["fit"] > 0


def test_a_real_run_records_cpu_time(trained):
    assert trained.report["cpu_time_s"]["fit"] > 0 and trained.report["cpu_time_s"]["test"] > 0
    assert trained.report["wall_time_s"]["fit"] > 0
