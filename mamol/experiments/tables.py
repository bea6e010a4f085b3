"""Tables as files: Markdown (readable), CSV (machine-readable) and LaTeX ``booktabs`` (ready for a paper).

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
                  ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_booktabs(header: Sequence[str], rows: Sequence[Row], caption: str, label: str,
                   align_right_from: int = 1, footer: Sequence[Row] = (), notes: Sequence[str] = ()) -> str:
    """A ``table`` environment with a ``booktabs`` tabular (needs ``\\usepackage{booktabs}``).

    Cells are escaped, except those already written as LaTeX math (starting and ending with ``$``). ``footer``
    rows follow a ``\\midrule`` (e.g. each method's cost under its scores); ``notes`` are footnote lines under the
    tabular, inside the table.
    """
    def cell(value: Any) -> str:
        text = _text(value)
        return text if len(text) > 1 and text.startswith("$") and text.endswith("$") else latex_escape(text)

    spec = "".join("r" if i >= align_right_from else "l" for i in range(len(header)))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(cell(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in rows]
    if footer:
        lines += [r"\midrule"] + [" & ".join(cell(c) for c in row) + r" \\" for row in footer]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\smallskip{{\footnotesize {latex_escape(note)}}}" for note in notes]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"
