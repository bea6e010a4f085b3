"""Saved test predictions and the report's significance tests: McNemar per seed and combined, Wilcoxon and paired t
over seeds, markers, the cost rows, per-class and train x test tables."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mamol.errors import ConfigError, DataError
from mamol.experiments import significance
from mamol.experiments.report import write_report
from mamol.experiments.significance import McNemar, SeedRun, compare, mcnemar, paired_tests
from mamol.predictions import PREDICTIONS_FILE, TaskPredictions, read_predictions, write_predictions
from tests.helpers import read_csv, read_json, run_command, short_run, tiny_config


def _predictions(path: Path, label, pred, index=None, task: str = "synthetic") -> Path:
    label, pred = np.asarray(label), np.asarray(pred)
    index = np.arange(len(label)) if index is None else np.asarray(index)
    small = np.uint8 if label.ndim == 2 else np.int16
    p = TaskPredictions(index.astype(np.int32), label.astype(small), pred.astype(small),
                        np.zeros(len(label), np.uint8))
    return write_predictions(path, {task: p})


def _pair(tmp: Path, name: str, b: int, c: int, both_right: int = 3, both_wrong: int = 2) -> tuple[Path, Path]:
    """Two prediction files on the same 4-class samples: b only the first right, c only the second."""
    n = b + c + both_right + both_wrong
    label = np.arange(n) % 4
    wrong = (label + 1) % 4
    first = np.concatenate([label[:b], wrong[b:b + c], label[b + c:b + c + both_right], wrong[b + c + both_right:]])
    second = np.concatenate([wrong[:b], label[b:b + c], label[b + c:b + c + both_right], wrong[b + c + both_right:]])
    return _predictions(tmp / f"{name}_ref.npz", label, first), _predictions(tmp / f"{name}_other.npz", label, second)


def test_mcnemar_counts_and_exact_p_by_hand(tmp_path):
    ref, other = _pair(tmp_path, "a", b=3, c=1)
    assert mcnemar(ref, other) == McNemar(3, 1)
    assert McNemar(3, 1).p == pytest.approx(10 / 16)  # P(X <= 1) + P(X >= 3), X ~ Bin(4, 1/2)
    assert McNemar(5, 0).p == pytest.approx(2 / 32)  # all 5 discordant samples one way: 2 * 2**-5
    assert mcnemar(*_pair(tmp_path, "b", b=0, c=0)) == McNemar(0, 0) and McNemar(0, 0).p == 1.0  # none discordant

    # Aligned by the index within the test split, not by row order: the same predictions shuffled count the same.
    saved = read_predictions(other)["synthetic"]
    order = np.random.default_rng(0).permutation(len(saved.index))
    shuffled = write_predictions(tmp_path / "shuffled.npz", {"synthetic": TaskPredictions(
        *(getattr(saved, f)[order] for f in ("index", "label", "pred", "missing_type")))})
    assert mcnemar(ref, shuffled) == McNemar(3, 1)


def test_multilabel_correctness_is_the_exact_label_set(tmp_path):
    label = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]
    exact = _predictions(tmp_path / "exact.npz", label, label)
    one_off = _predictions(tmp_path / "off.npz", label, [[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    assert read_predictions(one_off)["synthetic"].correct.tolist() == [False, True, False, True]
    assert mcnemar(exact, one_off) == McNemar(2, 0)  # one wrong class makes the sample wrong


def test_combined_over_seeds_sums_b_and_c(tmp_path):
    s0, s1 = _pair(tmp_path, "s0", b=5, c=0), _pair(tmp_path, "s1", b=3, c=1)
    reference = [SeedRun(0, 80.0, s0[0]), SeedRun(1, 82.0, s1[0])]
    other = [SeedRun(1, 79.0, s1[1]), SeedRun(0, 77.0, s0[1]), SeedRun(2, 50.0, None)]  # seed 2: no pair
    c = compare("lora", other, "mamol", reference)
    assert c.seeds == (0, 1) and dict(c.per_seed) == {0: McNemar(5, 0), 1: McNemar(3, 1)}
    assert c.combined == McNemar(8, 1)
    assert c.combined.p == pytest.approx(2 * (1 + 9) / 2**9)  # P(X <= 1) twice, X ~ Bin(9, 1/2): 0.039
    assert c.marker == "†"
    assert c.mcnemar_text() == ("s0: 0.062 (5/0); s1: 0.625 (3/1)", "0.039 (8/1)")
    assert significance.marker(0.009) == "‡" and significance.marker(0.05) == ""

    # A run saved before predictions were: no McNemar for its seed, the paired tests still work.
    c = compare("lora", [SeedRun(0, 77.0, None), SeedRun(1, 79.0, s1[1])], "mamol", reference)
    assert dict(c.per_seed) == {1: McNemar(3, 1)} and c.unpredicted == (0,)
    assert "s0: n/a (no predictions saved)" in c.mcnemar_text()[0] and c.paired.n == 2
    c = compare("lora", [SeedRun(0, 77.0, None)], "mamol", reference)
    assert c.mcnemar_text() == (significance.NO_PREDICTIONS, significance.NO_PREDICTIONS) and c.marker == ""
    c = compare("lora", [SeedRun(5, 77.0, s0[1])], "mamol", reference)
    assert c.mcnemar_text()[1] == "n/a (no seed in common)" and c.paired.n == 0 and "0 seeds in common" in c.paired.why


def test_paired_tests_are_scipys_and_empty_when_undefined():
    ref, other = [80.0, 82.5, 85.0, 79.0, 90.0], [81.0, 85.0, 84.0, 83.5, 95.0]
    tests = paired_tests(ref, other)
    assert tests.n == 5 and tests.mean_difference == pytest.approx(np.mean(np.subtract(other, ref)))
    assert tests.wilcoxon == pytest.approx(stats.wilcoxon(other, ref).pvalue)
    assert tests.ttest == pytest.approx(stats.ttest_rel(other, ref).pvalue)
    assert tests.wilcoxon == pytest.approx(0.1875) and not tests.why  # exact: 3 of 32 sign patterns each way
    one = paired_tests([80.0], [81.0])
    assert (one.wilcoxon, one.ttest) == (None, None) and "needs two" in one.why
    same = paired_tests([80.0, 81.0], [80.0, 81.0])
    assert (same.wilcoxon, same.ttest, same.why) == (None, None, "every difference is zero")
    shifted = paired_tests([80.0, 81.0], [82.0, 83.0])
    assert shifted.wilcoxon == pytest.approx(stats.wilcoxon([82, 83], [80, 81]).pvalue) and shifted.ttest is None
    assert "zero variance" in shifted.why


def test_runs_on_other_test_samples_or_labels_are_refused_naming_both_files(tmp_path):
    ref = _predictions(tmp_path / "ref.npz", [0, 1, 2, 3], [0, 1, 2, 3])
    fewer = _predictions(tmp_path / "fewer.npz", [0, 1, 2], [0, 1, 2])
    elsewhere = _predictions(tmp_path / "elsewhere.npz", [0, 1, 2, 3], [0, 1, 2, 3], index=[0, 1, 2, 7])
    relabelled = _predictions(tmp_path / "relabelled.npz", [0, 1, 3, 3], [0, 1, 2, 3])
    other_task = _predictions(tmp_path / "task.npz", [0, 1, 2, 3], [0, 1, 2, 3], task="trento")
    for other, why in ((fewer, "4 vs 3 test samples"), (elsewhere, "index 3 in the first, 7 in the second"),
                       (relabelled, "true labels differ at 1 of 4 samples"), (other_task, "tasks")):
        with pytest.raises(DataError, match=why) as err:
            mcnemar(ref, other)
        assert str(ref) in str(err.value) and str(other) in str(err.value)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.npz: not a predictions file"):
        mcnemar(ref, tmp_path / "broken.npz")


# ------------------------------------------------------------------------------------------- the report
def _run(folder: Path, method: str, seed: int, oa: float, train: float = 0.7, label=None, pred=None,
         classes=(50.0, 70.0)) -> None:
    """A finished run's test_results.json (scores made up), with predictions when ``label`` is given."""
    config = tiny_config("remote", datasets=["synthetic"], seed=seed, method=method, missing_ratio=train)
    folder.mkdir(parents=True)
    results = {
        "config": config, "settings": {"missing": {"train": {"type": "both", "ratio": train}}},
        "tasks": ["synthetic"], "modalities": {"synthetic": ["hsi", "lidar"]},
        "missing": {"missing_type": "both", "missing_ratio": 0.7}, "method": method,
        "metrics": {"OA": oa, "AA": oa, "kappa": oa, "acc_0": classes[0], "acc_1": classes[1]},
        "class_names": {"synthetic": ["water", "trees"]}, "trainable_parameters": 1000 + len(method),
        "wall_time_s": {"fit": 10.0 + seed, "test": 1.0}}
    if label is not None:
        _predictions(folder / PREDICTIONS_FILE, label, pred)
        results["predictions"] = PREDICTIONS_FILE
    (folder / "test_results.json").write_text(json.dumps(results))


def test_report_carries_the_notes_of_the_runs_data(tmp_path):
    """A run on a --split release conversion says so in test_results.json; the report repeats it, once."""
    note = "synthetic: test pixels overlap training pixels (release split): 12 of 40 test pixels are also training"
    for seed in (0, 1):
        _run(tmp_path / "runs" / f"mamol{seed}", "mamol", seed, 80.0)
        path = tmp_path / "runs" / f"mamol{seed}" / "test_results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "notes": [note]}))
    write_report([tmp_path / "runs"], tmp_path / "out")
    assert (tmp_path / "out" / "report.md").read_text().count(f"**Note: {note}.**") == 1


def test_runs_on_two_conversions_of_a_dataset_are_refused(tmp_path):
    """Runs made on different conversions of one dataset (data re-converted with another split under the same name)
    test on different test sets: the report refuses to average or pair them, naming both, instead of mixing them."""
    for seed, conversion in ((0, "aaaa"), (1, "aaaa"), (2, "bbbb")):
        folder = tmp_path / "runs" / f"mamol{seed}"
        _run(folder, "mamol", seed, 80.0)
        path = folder / "test_results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()),
                                    "dataset": {"synthetic": {"conversion_id": conversion}}}))
    with pytest.raises(DataError, match=r"runs on 'synthetic' come from 2 different conversions .*aaaa: .*mamol0.*"
                                        r"bbbb: .*mamol2"):
        write_report([tmp_path / "runs"], tmp_path / "out")
    write_report([tmp_path / "runs" / "mamol0", tmp_path / "runs" / "mamol1"], tmp_path / "one")  # one conversion


def test_report_tables_of_significance_cost_classes_and_training_settings(tmp_path):
    label = np.arange(20) % 2
    right, wrong = label.copy(), 1 - label
    mostly = np.where(np.arange(20) < 12, wrong, right)  # wrong on 12 samples the reference gets right
    runs = tmp_path / "runs"
    for seed, (oa_ref, oa_lora, oa_mmp) in enumerate([(80.0, 70.0, 60.0), (84.0, 71.0, 58.0)]):
        _run(runs / f"mamol{seed}", "mamol", seed, oa_ref, label=label, pred=right, classes=(90.0 + seed, 70.0))
        _run(runs / f"lora{seed}", "lora", seed, oa_lora, label=label, pred=mostly)
        _run(runs / f"mmp{seed}", "mmp", seed, oa_mmp)  # saved before predictions were
        _run(runs / f"other_train{seed}", "mamol", seed, 66.0 + seed, train=0.3)
    text = write_report([runs], tmp_path / "out")
    assert "significance.csv" in text and "comparison_bars.png" in text
    out = tmp_path / "out"
    rows = {(r["train"], r["method"]): r for r in read_csv(out / "significance.csv")}
    assert set(rows) == {("both 0.7", "lora"), ("both 0.7", "mmp")}  # train 0.3 has one method: nothing to test
    lora, mmp = rows[("both 0.7", "lora")], rows[("both 0.7", "mmp")]
    assert (lora["reference"], lora["seeds"], lora["mcnemar_b_per_seed"], lora["mcnemar_c_per_seed"]) == (
        "mamol", "0 1", "12 12", "0 0")
    assert (lora["mcnemar_b"], lora["mcnemar_c"]) == ("24", "0")
    assert float(lora["mcnemar_p"]) == pytest.approx(2 * 0.5**24, rel=1e-5)
    assert float(lora["mean_difference"]) == pytest.approx(-11.5)
    assert lora["wilcoxon_p"] == f"{stats.wilcoxon([70.0, 71.0], [80.0, 84.0]).pvalue:.6g}"
    assert lora["ttest_p"] == f"{stats.ttest_rel([70.0, 71.0], [80.0, 84.0]).pvalue:.6g}"
    assert mmp["mcnemar_p"] == "" and "no predictions saved" in mmp["note"] and mmp["ttest_p"] != ""

    md, tex = (out / "report.md").read_text(), (out / "report.tex").read_text()
    # lora: p < 0.01, second best (underlined); n = 2 for the whole table, so in the caption
    assert "<ins>70.50 ± 0.71</ins> ‡" in md and r"$\underline{70.50 \pm 0.71}^{\ddagger}$" in tex
    assert "| 59.00 ± 1.41 |" in md  # mmp: no McNemar, no marker, third
    # Methods and settings by name in the rule and the p-value tables (significance.csv keeps the labels).
    assert "† / ‡: combined McNemar test against MaMOL (" in md and "against mamol" not in md
    assert r"\textdagger{} / \textdaggerdbl{}: combined McNemar test against MaMOL (" in tex
    assert "### Significance against MaMOL (OA)" in md and "| Mixed (70 %) | LoRA | MaMOL | 0 1 |" in md
    assert "| Trainable parameters |  | 1,004 | 1,005 | 1,003 |" in md and "| Fit wall time (s) |  | 10.5 ± 0.7 |" in md
    assert "s0: 4.9e-04 (12/0); s1: 4.9e-04 (12/0)" in md and "1.2e-07 (24/0)" in md
    assert "n/a (no predictions saved)" in md
    assert r"\midrule" + "\nTrainable parameters &  & 1,004 & 1,005 & 1,003 \\\\" in tex
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == tex.count(r"\bottomrule")
    # Per-class accuracy at the tested setting, by class name (columns: lora, mamol, mmp).
    assert "| 1 water | <ins>50.00 ± 0.00</ins> | **90.50 ± 0.71** | <ins>50.00 ± 0.00</ins> |" in md  # tied second
    # Per-class precision / recall / F1 from the saved predictions (lora: 12 of 20 wrong, the same in both seeds):
    # water (label 0): 4 of 10 right, predicted 4 + 6 times -> P 40, R 40; the run's confusion figure is linked.
    assert "### LoRA: per-class precision, recall and F1 (test Mixed (70 %))" in md
    assert "| 1 water | 40.00 ± 0.00 | 40.00 ± 0.00 | 40.00 ± 0.00 | 10 |" in md
    assert "![summed confusion matrix of lora](confusion_lora_synthetic_both_0.7.png)" in md
    assert (out / "confusion_lora_synthetic_both_0.7.png").stat().st_size > 0
    classes = {(r["train"], r["method"], r["class"]): r for r in read_csv(out / "report_classes.csv")}
    water = classes[("both 0.7", "mamol", "water")]
    assert (water["accuracy_mean"], water["recall_mean"], water["precision_mean"], water["n"]) == (
        "90.5", "100.0", "100.0", "2")  # made-up acc_0 beside the scores counted from the predictions
    # Training x test settings of mamol, the only method trained under both, by display names.
    assert "### Synthetic: MaMOL" in md and "| Mixed (30 %) | 66.50 ± 0.71 (n=2) |" in md
    assert "| Mixed (70 %) | 82.00 ± 2.83 (n=2) |" in md and "| Training / test | Mixed (70 %) |" in md
    assert r"MaMOL on Synthetic: OA by training setting" in tex and r"Mixed (70 \%) & $82.00 \pm 2.83\;(n=2)$" in tex
    assert (out / "comparison_bars.png").stat().st_size > 0

    write_report([runs], tmp_path / "vs_lora", reference="lora")
    assert {r["reference"] for r in read_csv(tmp_path / "vs_lora" / "significance.csv")} == {"lora"}
    with pytest.raises(ConfigError, match=r"reference='dcp' is not a method of the report; its methods are"):
        write_report([runs], tmp_path / "none", reference="dcp")


def test_a_sweep_reports_mcnemar_and_paired_tests_from_saved_predictions(small_scene_root, tmp_path):
    """2 seeds x 2 methods, trained for real (tiny CLIP, one epoch): each run saves its test predictions, whose
    accuracy is its OA, and the report tests mamol_r4 against mamol with them."""
    updates = {**short_run(small_scene_root, tmp_path), "exp_name": "sweep", "seeds": [0, 1], "sweep_grid": False,
               "methods": ["mamol", {"name": "mamol_r4", "method": "mamol", "adapter_rank": 4}]}
    folder = run_command("sweep", "remote", **updates)
    runs = {(label, seed): folder / f"{label}-synthetic-train_both0.7-seed{seed}" / "version_0"
            for label in ("mamol", "mamol_r4") for seed in (0, 1)}
    saved = {}
    for key, run in runs.items():
        tested = read_json(run / "test_results.json")
        assert tested["predictions"] == PREDICTIONS_FILE
        p = read_predictions(run / PREDICTIONS_FILE)["synthetic"]
        assert p.index.tolist() == list(range(24))  # every test sample once, by its index in the split
        assert 100 * p.correct.mean() == pytest.approx(tested["metrics"]["OA"], abs=1e-3)
        assert p.index.dtype == np.int32 and p.label.dtype == p.pred.dtype == np.int16
        saved[key] = (p, tested)

    def counts(seed: int) -> McNemar:
        ref, other = saved[("mamol", seed)][0].correct, saved[("mamol_r4", seed)][0].correct
        return McNemar(int((ref & ~other).sum()), int((~ref & other).sum()))

    combined = counts(0) + counts(1)
    oa = {key: tested["metrics"]["OA"] for key, (_, tested) in saved.items()}
    x, y = [oa[("mamol", s)] for s in (0, 1)], [oa[("mamol_r4", s)] for s in (0, 1)]
    md, tex = (folder / "report.md").read_text(), (folder / "report.tex").read_text()
    for text in (md, tex.replace(r"\textpm{}", "±")):
        per_seed = f"s0: {significance.format_p(counts(0).p)} ({counts(0).b}/{counts(0).c}); " \
                   f"s1: {significance.format_p(counts(1).p)} ({counts(1).b}/{counts(1).c})"
        assert (per_seed in text) == (text is md)  # per seed in report.md; report.tex keeps the combined test
        assert f"{significance.format_p(combined.p)} ({combined.b}/{combined.c})" in text
        paired = paired_tests(x, y)
        for p in (paired.wilcoxon, paired.ttest):
            if p is not None:
                assert significance.format_p(p) in text
        for label in ("mamol", "mamol_r4"):
            assert f"{saved[(label, 0)][1]['trainable_parameters']:,}" in text
    row = read_csv(folder / "significance.csv")[0]
    assert (row["method"], row["reference"], row["mcnemar_b"], row["mcnemar_c"]) == (
        "mamol_r4", "mamol", str(combined.b), str(combined.c))
