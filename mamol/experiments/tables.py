"""Tables as files: Markdown (readable), CSV (machine-readable) and LaTeX ``booktabs`` (ready for a paper; a tabular
wider than the text is shrunk to ``\\linewidth``, never enlarged: ``\\usepackage{booktabs,graphicx}``).

A table is a header (column names) and rows of cells; cells are written as given (``str``), numbers by the
caller's formatting. Writes are atomic (:func:`mamol.files.atomic_write`).
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mamol.files import atomic_write

Row = Sequence[Any]


class Latex(str):
    """A cell (or note) already written in LaTeX: :func:`latex_booktabs` writes it as it is, unescaped."""


def _text(cell: Any) -> str:
    return "" if cell is None else str(cell)


def markdown(header: Sequence[str], rows: Sequence[Row], align_right_from: int = 1) -> str:
    """A GitHub Markdown table; columns from ``align_right_from`` on are right-aligned (numbers)."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i >= align_right_from else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_text(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Row]) -> Path:
    """Write a CSV file (comma-separated, header first) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_text(c) for c in row] for row in rows])
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "†": r"\textdagger{}", "‡": r"\textdaggerdbl{}", "±": r"\textpm{}", "<": r"\textless{}",
                  ">": r"\textgreater{}", "κ": r"$\kappa$", "×": r"$\times$", "−": r"$-$", "·": r"$\cdot$",
                  "≥": r"$\geq$", "≤": r"$\leq$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


FIT_OPEN = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
"""Opens the box around every tabular: shrunk to the line's width when wider, else its natural size (graphicx)."""
FIT_CLOSE = "}"


def latex_booktabs(header: Sequence[str], rows: Sequence[Row], caption: str, label: str,
                   align_right_from: int = 1, footer: Sequence[Row] = (), notes: Sequence[str] = (),
                   spaced: Sequence[int] = ()) -> str:
    """A ``table`` environment with a ``booktabs`` tabular, placed ``[tbp]`` (needs
    ``\\usepackage{booktabs,graphicx}``): a tabular wider than ``\\linewidth`` (many methods) is scaled down to it,
    a narrower one keeps its size (:data:`FIT_OPEN`).

    Cells, the caption and notes are escaped, except :class:`Latex` ones and those already written as LaTeX math
    (starting and ending with ``$``). ``footer`` rows follow a ``\\midrule`` (e.g. each method's cost under its
    scores); ``notes`` are footnote lines under the tabular, inside the table; rows whose index is in ``spaced`` get
    ``\\addlinespace`` before them (blocks of rows, e.g. one per test setting).
    """
    def cell(value: Any) -> str:
        text = _text(value)
        if isinstance(value, Latex) or (len(text) > 1 and text.startswith("$") and text.endswith("$")):
            return text
        return latex_escape(text)

    def line(row: Row) -> str:
        return " & ".join(cell(c) for c in row) + r" \\"

    spec = "".join("r" if i >= align_right_from else "l" for i in range(len(header)))
    lines = [r"\begin{table}[tbp]", r"\centering", rf"\caption{{{cell(caption)}}}", rf"\label{{{label}}}",
             FIT_OPEN, rf"\begin{{tabular}}{{{spec}}}", r"\toprule", line(header), r"\midrule"]
    for i, row in enumerate(rows):
        lines += [r"\addlinespace"] * (i in spaced) + [line(row)]
    if footer:
        lines += [r"\midrule"] + [line(row) for row in footer]
    lines += [r"\bottomrule", r"\end{tabular}" + FIT_CLOSE]  # no space between them: it would widen the box
    lines += [rf"\par\smallskip{{\footnotesize {cell(note)}}}" for note in notes]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"
