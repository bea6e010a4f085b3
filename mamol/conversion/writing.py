"""A conversion is one unit: its split files carry one conversion id, are put in place together and are checked
together when read.

Writing (``datasets/make_arrow.py``): a converter writes every file of a conversion into a staging folder
beside the target (:func:`staged`), then renames them into place one after another while holding a lock on
the target folder, so two conversions into one folder at once never interleave their renames. A conversion
that fails or is interrupted removes its staging folder and leaves the previous set untouched, unless it was
killed between two renames; then the folder holds files of two conversions, which the readers refuse by their
ids. A staging folder of a killed process (this host, process gone) is removed by the next conversion.

Reading: :func:`mamol.data.arrow.check_one_conversion` compares the ids of a dataset's split files (remote:
also its scene file) and refuses, naming the files and ids, files of different conversions.

The id is a digest of the conversion's metadata (sources, normalisation statistics, split method, seed and
counts) and of what each split holds, so the same conversion run twice gets the same id.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)



def conversion_id(metadata: dict, *contents: bytes) -> str:
    """16 hex digits naming a conversion: its shared ``metadata`` and the ``contents`` of its splits."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True, default=str).encode("utf-8"))
    for content in contents:
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()[:16]


def _staging_prefix(stem: str) -> str:
    return f".{stem}.converting-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(target: Path, stem: str) -> None:
    """Remove staging folders of ``stem`` left in ``target`` by killed conversions on this host, and temporary
    files of interrupted writes of ``stem``'s files (from before staging folders)."""
    host = socket.gethostname()
    for path in target.glob(f"{_staging_prefix(stem)}*"):
        parts = path.name[len(_staging_prefix(stem)):].rsplit("-", 2)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _alive(int(parts[1])):
            log.warning("%s: removing what an interrupted conversion left", path)
            shutil.rmtree(path, ignore_errors=True)
    for path in target.glob(f".{stem}_*.arrow.*.tmp"):
        log.warning("%s: removing a temporary file of an interrupted write", path)
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


@contextlib.contextmanager
def staged(target: str | os.PathLike, stem: str) -> Iterator[Path]:
    """A staging folder in ``target`` for the files of one conversion of ``stem``; when the block succeeds, its
    files are renamed into ``target`` (sorted by name) under a lock on ``target``. The staging folder is removed
    in every case."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    remove_stale(target, stem)
    staging = Path(tempfile.mkdtemp(dir=target, prefix=f"{_staging_prefix(stem)}{socket.gethostname()}-{os.getpid()}-"))
    try:
        yield staging
        with _locked(target):
            for path in sorted(staging.iterdir()):
                os.replace(path, target / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
