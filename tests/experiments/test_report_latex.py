"""report.tex through a real pdflatex: two reports of a real 2-method × 2-seed sweep ``\\input`` into one document
compile without an error, a label defined twice or a reference left undefined (``make test-latex``)."""
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
