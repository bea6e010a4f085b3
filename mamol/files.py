"""Atomic file writes: the one helper every writer of the project uses.

A file is written to a temporary name in its target folder, flushed to disk and renamed into place only
when complete, so an interrupted or failed write never leaves a file that looks valid. The temporary file is
created private (0600) by :func:`tempfile.mkstemp`; before the rename it gets the permissions an ordinary
``open()`` would give (0666 minus the process umask), so collaborators sharing a folder can read outputs.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it to ``path`` when the block succeeds.

    On an exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens files for writing ('w' or 'wb'), got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (values JSON cannot hold are written with ``str``)."""
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, default=str)
    return Path(path)
