"""Atomic file writes: the one helper every writer of the project uses.

A file is written to a temporary name in its target folder, flushed to disk and renamed into place only
when complete, so an interrupted or failed write never leaves a file that looks valid. The temporary file is
created private (0600) by :func:`tempfile.mkstemp`; before the rename it gets the permissions an ordinary
``open()`` would give (0666 minus the process umask), so collaborators sharing a folder can read outputs.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mamol.errors import StorageError

_STORAGE_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file stands where a folder is expected",
    errno.EEXIST: "a file stands where a folder is expected",
    errno.EISDIR: "a folder stands where a file is expected",
}


def storage_error(err: OSError, what: str) -> StorageError | None:
    """The project error for a failed write of ``what`` (a path or a key=value), or None when ``err`` is not
    about storage (then it is a bug and keeps its traceback)."""
    reason = _STORAGE_REASONS.get(err.errno or 0)
    if reason is None:
        return None
    where = err.filename2 or err.filename
    detail = f" ({where})" if where and str(where) not in what else ""
    return StorageError(f"cannot write {what}{detail}: {reason}")


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn a storage failure (full disk, read-only, file in the way) inside the block into a StorageError."""
    try:
        yield
    except StorageError:
        raise
    except OSError as err:
        converted = storage_error(err, what)
        if converted is None:
            raise
        raise converted from err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it to ``path`` when the block succeeds.

    On an exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is untouched; a
    full disk, a read-only folder or a file in the way is a :class:`~mamol.errors.StorageError` naming ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens files for writing ('w' or 'wb'), got mode {mode!r}")
    path = Path(path)
    with storage_errors(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            try:
                yield handle
            except OSError as err:  # the caller's writes: only a full disk is about this file
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise storage_error(err, str(path)) from err
            with storage_errors(str(path)):
                handle.flush()
                os.fsync(handle.fileno())
        with storage_errors(str(path)):
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


FIGURE_DPI = 100
"""Every figure is saved at this resolution (a figure's pixel size is its size in inches × 100)."""


def write_png(figure: Any, path: str | os.PathLike, dpi: int = FIGURE_DPI) -> Path:
    """Save a matplotlib ``Figure`` as PNG atomically (no tight bounding box: the size is the figure's own)."""
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    return Path(path)
