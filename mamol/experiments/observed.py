"""Runs recorded by Sacred's file-storage observer (``run.py -F <folder>``), found for ``report``.

``python run.py report with 'report_dirs=["<the -F folder>"]'``: a file-storage observer folder holds one folder
per Sacred run (``<id>/run.json``, ``info.json`` and the run's artifacts: ``test_results.json``, ``grid.json``,
``test_predictions.npz``, ``confusion.*``, ...; :mod:`mamol.observers` writes them). A run's info names the run
folder its artifacts were copied from (``run_dir``). The report reads that folder while it is there (its sweep's
``sweep.json`` gives the method labels of variants) and the observer's copies otherwise (an observer folder
taken to another machine: the label is then the run's ``method``). Reads JSON only; no Sacred import.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mamol.errors import DataError

RESULTS = "test_results.json"


def read_record(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when there is no such file. A file that is there but unreadable, cut
    short or not an object is a DataError naming it: a run record skipped without a word would change a report's
    means without a word."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable run record ({type(err).__name__}: {err}); if its run is still going, "
                        f"report again once it ends, else mend or remove the file") from err
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def run_folders(root: Path) -> list[Path]:
    """The folders of the finished runs the file-storage observer folder ``root`` recorded (completed Sacred runs
    with a ``test_results.json`` artifact), each once: the run folder named by its ``run_dir`` when that holds
    ``test_results.json``, else the observer's own copy. ``[]`` when ``root`` is not an observer folder."""
    records = sorted((p for p in Path(root).glob("*/run.json") if p.parent.name.isdigit()),
                     key=lambda p: int(p.parent.name))
    found: dict[str, Path] = {}  # a run's folder -> where to read it (a later record of the same run wins)
    for path in records:
        record = read_record(path)
        if record.get("status") != "COMPLETED" or RESULTS not in record.get("artifacts", []):
            continue
        real = read_record(path.parent / "info.json").get("run_dir")
        key = str(real or path.parent)
        found[key] = Path(real) if real and (Path(real) / RESULTS).is_file() else path.parent
    return list(found.values())
