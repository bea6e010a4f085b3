"""A lock file that works on shared storage: the one lock the project takes across processes and nodes.

``fcntl.flock`` is not honoured by every network file system a cluster mounts, so the lock is the file's
existence: it is created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3+) and holds its
owner (host, pid, a random token) and the time it was taken, as JSON. Releasing removes it, if still ours.

A lock whose owner is gone is taken over: on the owner's host when its pid no longer runs, on another host
when it is older than ``stale_after`` seconds (its pid cannot be checked from here). Two waiters may judge
the same lock stale at once; only the one that wins a short second lock (``<lock>.break``, also ``O_EXCL``)
removes it, after checking that the file still holds the stale owner's token, so a fresh lock taken in
between is never removed. A waiter logs who holds the lock every ``warn_after`` seconds, and with a
``timeout`` gives up with a :class:`LockTimeout` naming the owner.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mamol.errors import ConfigError

log = logging.getLogger(__name__)

UNWRITTEN_GRACE_S = 10.0
"""An owner writes its record right after creating the file: an empty or unreadable lock file older than
this (seconds) was left by a process that died in between, and is stale."""


class LockTimeout(TimeoutError):
    """The lock was still held by another owner after ``timeout`` seconds; the message names the owner."""


@dataclass(frozen=True)
class Owner:
    """Who holds a lock file, as recorded in it."""

    host: str
    pid: int
    time: float  # seconds since the epoch when the lock was taken
    token: str  # random, tells two owners with the same host and pid apart

    def describe(self) -> str:
        age = time.time() - self.time
        return f"host {self.host}, pid {self.pid}, taken {age:.0f} s ago"


def _read_owner(path: Path) -> Owner | None:
    """The lock file's owner; None when it cannot be read as one (being written, or corrupt)."""
    try:
        record = json.loads(path.read_text())
        return Owner(str(record["host"]), int(record["pid"]), float(record["time"]), str(record["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        return True
    return True


class FileLock:
    """Exclusive lock on ``path`` across processes and hosts (see the module docstring).

    ``stale_after``: seconds after which a lock taken on another host counts as abandoned (keep it well above
    the longest time the lock is held). ``timeout``: seconds to wait before :class:`LockTimeout`; None waits
    for ever. ``warn_after``: seconds between log lines naming the owner while waiting.
    """

    def __init__(self, path: str | os.PathLike, *, stale_after: float = 600.0, timeout: float | None = None,
                 warn_after: float = 30.0, poll: float = 0.05) -> None:
        self.path = Path(path)
        self.stale_after, self.timeout, self.warn_after, self.poll = stale_after, timeout, warn_after, poll
        self.owner: Owner | None = None  # ours while held

    def _try_create(self, path: Path, owner: Owner) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({"host": owner.host, "pid": owner.pid, "time": owner.time, "token": owner.token}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def is_stale(self, owner: Owner | None) -> bool:
        """Whether a lock file with this ``owner`` record (None: unreadable) was abandoned."""
        if owner is None:
            try:
                return time.time() - self.path.stat().st_mtime > UNWRITTEN_GRACE_S
            except FileNotFoundError:
                return False
        if owner.host == socket.gethostname():
            return not _pid_alive(owner.pid)
        return time.time() - owner.time > self.stale_after

    def _break(self, stale: Owner | None) -> bool:
        """Remove the lock file judged stale, unless another waiter has already replaced it; False when
        another waiter is doing so."""
        breaker = self.path.with_name(self.path.name + ".break")
        me = Owner(socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex)
        if not self._try_create(breaker, me):
            with contextlib.suppress(FileNotFoundError):  # a breaker left by a process that died holding it
                if time.time() - breaker.stat().st_mtime > UNWRITTEN_GRACE_S:
                    breaker.unlink()
            return False
        try:
            current = _read_owner(self.path)
            # Still the abandoned one, not a lock taken since (an unreadable one: still old, not one being written)
            if current == stale and self.is_stale(current):
                log.warning("lock %s: taking over from %s, which is gone", self.path,
                            stale.describe() if stale else "an owner that never wrote its record")
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            breaker.unlink()
        return True

    def acquire(self) -> None:
        """Wait until the lock is ours (taking over a stale one); :class:`LockTimeout` after ``timeout``."""
        start = last_warning = time.monotonic()
        while True:
            owner = Owner(socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex)
            if self._try_create(self.path, owner):
                self.owner = owner
                return
            holder = _read_owner(self.path)
            if self.is_stale(holder) and self._break(holder):
                continue
            now = time.monotonic()
            held_by = holder.describe() if holder else "an owner still writing its record"
            if self.timeout is not None and now - start > self.timeout:
                raise LockTimeout(f"lock {self.path} is still held by {held_by} after {self.timeout:g} s; if "
                                  f"that process is gone, delete {self.path}")
            if now - last_warning > self.warn_after:
                log.warning("waiting %.0f s for lock %s, held by %s (if that process is gone, delete the file)",
                            now - start, self.path, held_by)
                last_warning = now
            time.sleep(self.poll)

    def release(self) -> None:
        """Remove the lock file if it is still ours (a lock taken over as stale is left to its new owner)."""
        if self.owner is None:
            return
        current = _read_owner(self.path)
        if current == self.owner:
            self.path.unlink()
        elif self.path.exists():
            log.warning("lock %s was taken over by another process while held by this one", self.path)
        self.owner = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


WORK_STALE_AFTER_S = 3 * 24 * 3600.0
"""A lock held for a whole sweep or run, taken on another host, counts as abandoned after three days (its pid
cannot be checked from here); on the same host, as soon as its process is gone."""


@contextlib.contextmanager
def held_or_refused(path: str | os.PathLike, what: str) -> Iterator[FileLock]:
    """Hold the lock at ``path`` while ``what`` (e.g. "sweep folder x") is worked on; a ConfigError naming the
    owner when another live process holds it, instead of two processes writing into the same folder."""
    lock = FileLock(path, stale_after=WORK_STALE_AFTER_S, timeout=0.0)
    try:
        lock.acquire()
    except LockTimeout as err:
        holder = _read_owner(Path(path))
        owner = holder.describe() if holder else "a process still writing its record"
        raise ConfigError(f"{what} is in use by another process ({owner}): wait until it ends; if that process "
                          f"is gone, delete {path}") from err
    try:
        yield lock
    finally:
        lock.release()
