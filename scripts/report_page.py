#!/usr/bin/env python3
"""docs/report_table.png: the first page of a report's ``report.tex`` compiled by pdflatex, as a paper would show it.

    python scripts/report_page.py [--out docs/report_table.png] [--work report_page_out]

Generates a small synthetic HSI + LiDAR scene, converts it (``datasets/make_arrow.py``), runs a 2-method × 2-seed
sweep on a tiny randomly initialised CLIP on the CPU (``run.py sweep``; its report is written into the sweep
folder), puts the report's ``report.tex`` into a minimal ``article`` with :func:`document` and renders page 1 with
``pdftoppm``. Needs pdflatex and pdftoppm (``scripts/install_latex.sh``); a few minutes on a laptop. The scores are
those of a tiny random backbone after a few epochs: the picture shows the layout, not the method's accuracy.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[margin=1.6cm]{geometry}
\usepackage{booktabs,graphicx}
\begin{document}
"""


def document(reports: Sequence[Path]) -> str:
    """A minimal LaTeX document that ``\\input``\\ s each ``report.tex`` in ``reports`` (paths relative to where it
    is compiled, or absolute), each on its own pages."""
    body = "\n\\clearpage\n".join(f"\\input{{{Path(p).as_posix()}}}" for p in reports)
    return PREAMBLE + body + "\n\\end{document}\n"


def compile_tex(source: Path, runs: int = 2) -> subprocess.CompletedProcess:
    """pdflatex ``source`` in its folder ``runs`` times (the second resolves cross-references); the last run's
    result (its log is ``source`` with ``.log``)."""
    for _ in range(runs):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", source.name],
                              cwd=source.parent, capture_output=True, text=True)
        if done.returncode != 0:
            return done
    return done


def _run(cmd: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report_table.png")
    parser.add_argument("--work", type=Path, default=REPO / "report_page_out", help="scene, runs and the document")
    parser.add_argument("--dpi", type=int, default=80)
    args = parser.parse_args(argv)
    for tool in ("pdflatex", "pdftoppm"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed; run scripts/install_latex.sh", file=sys.stderr)
            return 1
    work = args.work.resolve()
    sys.path.insert(0, str(REPO))
    from mamol.data.synthetic import make_synthetic_scene

    make_synthetic_scene(work / "scene", height=60, width=80, hsi_bands=16, n_classes=6, seed=0)
    _run([sys.executable, "datasets/make_arrow.py", "--dataset", "synthetic", "--root", str(work / "scene"),
          "--target", str(work / "arrow"), "--train-per-class", "40", "--val-per-class", "20",
          "--test-per-class", "60", "--seed", "0"])
    _run([sys.executable, "run.py", "sweep", "with", "remote", f"data_root={work / 'arrow'}", "datasets=['synthetic']",
          "vit=tiny", "clip_random_init=True", "num_gpus=0", "num_workers=0", "batch_size=64", "per_gpu_batchsize=64",
          f"log_dir={work / 'runs'}", f"missing_table_root={work / 'tables'}", "max_epoch=4",
          "check_val_every_n_epoch=2", "learning_rate=2e-3", "exp_name=paper", "seeds=[0, 1]",
          "methods=['mamol', 'lora']", "grid_ratios=[0.0, 0.7, 1.0]"])
    source = work / "document.tex"
    source.write_text(document([work / "runs" / "paper" / "report.tex"]))
    done = compile_tex(source)
    if done.returncode != 0:
        print(done.stdout[-3000:], file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _run(["pdftoppm", "-png", "-r", str(args.dpi), "-f", "1", "-l", "1", "-singlefile", str(source.with_suffix(".pdf")),
          str(args.out.with_suffix(""))])
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
