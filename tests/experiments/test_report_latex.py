"""report.tex through a real pdflatex: two reports of a real 2-method × 2-seed sweep ``\\input`` into one document
compile without an error, a label defined twice or a reference left undefined; a sweep of seven method labels gives
tables shrunk to the text width, none overfull (``make test-latex``)."""
from __future__ import annotations

import importlib.util
import re
import shutil

import pytest

from tests.helpers import REPO, run_command, short_run

pytestmark = [pytest.mark.latex,
              pytest.mark.skipif(shutil.which("pdflatex") is None,
                                 reason="pdflatex is not installed (scripts/install_latex.sh; `make test-latex`)")]


def _page_script():
    """``scripts/report_page.py`` as a module (its document and compile steps are the ones tested here)."""
    spec = importlib.util.spec_from_file_location("report_page", REPO / "scripts" / "report_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_reports_compile_in_one_document(small_scene_root, tmp_path):
    sweep = run_command("sweep", "remote", **short_run(small_scene_root, tmp_path), exp_name="sweep", seeds=[0, 1],
                        methods=["mamol", "lora"], grid_types=["hsi", "lidar", "both"], grid_ratios=[0.0, 0.7, 1.0])
    again = run_command("report", report_dirs=[str(sweep)], log_dir=str(tmp_path), exp_name="report",
                        report_settings="all")
    page = _page_script()
    source = tmp_path / "paper" / "paper.tex"
    source.parent.mkdir()
    source.write_text(page.document([sweep / "report.tex", again / "report.tex"]))
    done = page.compile_tex(source)
    log = source.with_suffix(".log").read_text(errors="replace")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "multiply defined" not in log and not re.search(r"Reference `[^']*' on page \d+ undefined", log)
    assert source.with_suffix(".pdf").stat().st_size > 0
    for report, prefix in ((sweep, "sweep"), (again, "report-v0")):  # both reports' tables are in the document
        tex = (report / "report.tex").read_text()
        assert rf"\label{{tab:{prefix}:results-1}}" in tex and r"\mathbf{" in tex and "MaMOL & LoRA" in tex


def test_tables_of_many_methods_fit_the_text_width(small_scene_root, tmp_path):
    """Seven method labels (cheap methods and their variants, one seed, no grid): the results, per-class and
    p-value tables are wider than an article's text, so they are scaled down to it; pdflatex reports no overfull
    box, and a narrow table (the appendix's per-class scores) keeps its natural size."""
    methods = ["mamol", "lora", "linear_probe", {"name": "lora_r2", "method": "lora", "lora_rank": 2},
               {"name": "lora_r4", "method": "lora", "lora_rank": 4},
               {"name": "mamol_r2", "method": "mamol", "adapter_rank": 2},
               {"name": "mamol_r4", "method": "mamol", "adapter_rank": 4}]
    sweep = run_command("sweep", "remote", **short_run(small_scene_root, tmp_path), exp_name="wide", seeds=[0],
                        methods=methods, sweep_grid=False)
    page = _page_script()
    source = tmp_path / "paper" / "paper.tex"
    source.parent.mkdir()
    source.write_text(page.document([sweep / "report.tex"]))
    done = page.compile_tex(source)
    log = source.with_suffix(".log").read_text(errors="replace")
    assert done.returncode == 0, done.stdout[-3000:]
    tex = (sweep / "report.tex").read_text()
    assert r"MaMOL (mamol\_r4)" in tex and r"LoRA (lora\_r2)" in tex  # seven columns by display name
    assert tex.count(r"\resizebox{") == tex.count(r"\begin{tabular}") > 0
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
