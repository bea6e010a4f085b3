"""What a run prints, kept with it: ``console.log`` in every run, command and sweep folder.

A command records from its start (:func:`recorded`); once its folder exists, :func:`save_to` writes what was
recorded so far into ``<folder>/console.log`` and appends every later line as it is printed (line-buffered,
so a killed run keeps what it printed up to its last line). Recordings nest: a sweep's ``console.log`` holds
everything its runs printed, each run's folder only its own part.

What a recording sees: whatever goes through ``sys.stdout`` and ``sys.stderr`` (prints, warnings, progress
bars, log records that reach the console) and, in a command-line process (:func:`setup`), the ``mamol``
log records at INFO that the console does not show. Progress bars redraw a line with ``\\r``: the file keeps
each line's final state only, without terminal escape codes.

:func:`setup` (``run.py``'s command line) also makes the console readable: warnings as one line
(``file:line: Category: message``, no echoed source line) and the lines printed before the first recording
kept for it (the config check, Sacred's warnings).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import logging
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

LOG_FILE = "console.log"
EARLY_LINES = 500  # lines kept from before the first recording (a command line prints a handful)

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal control sequences (cursor moves of nested bars)
_lock = threading.RLock()
_recordings: list[Recording] = []
_early: collections.deque[str] | None = None  # set by setup(): lines printed before any recording
_pending: dict[str, str] = {}  # per stream, the line being printed (not yet ended by "\n")


def final_state(line: str) -> str:
    """What a terminal shows of ``line`` once printed: each part after a carriage return overwrites the start
    of what was there (a progress bar's redraws: its last state; a bar that blanked itself: nothing), without
    control sequences."""
    shown = ""
    for part in _ESCAPE.sub("", line).split("\r"):
        shown = part + shown[len(part):]
    return shown.rstrip()


class _File:
    """An open ``console.log``, shared by the recordings that write into it (each line once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: TextIO | None = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.users = 0

    def write(self, line: str) -> None:
        if self.handle is None:
            return
        try:
            self.handle.write(line + "\n")
        except (OSError, ValueError):  # the folder went away (a failed run's folder is removed): stop writing
            self.handle = None

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self.handle = None


class Recording:
    """The lines printed while it is open: kept in memory until :func:`save_to` names its file."""

    def __init__(self, early: list[str]) -> None:
        self.lines: list[str] = list(early)
        self.file: _File | None = None

    def attach(self, file: _File) -> None:
        self.file = file
        file.users += 1
        self.lines = []

    def close(self) -> None:
        if self.file is not None:
            self.file.release()
            self.file = None


def _add(line: str) -> None:
    with _lock:
        if not _recordings and _early is not None:
            _early.append(line)
        written: set[int] = set()
        for recording in _recordings:
            if recording.file is None:
                recording.lines.append(line)
            elif id(recording.file) not in written:
                written.add(id(recording.file))
                recording.file.write(line)


def _feed(key: str, text: str) -> None:
    """Split what a stream received into finished lines and hand them to the open recordings."""
    with _lock:
        text = _pending.get(key, "") + text
        *lines, rest = text.split("\n")
        if "\r" in rest:  # a bar still redrawing: keep its latest state only
            rest = final_state(rest)
        _pending[key] = rest
        for raw in lines:
            line = final_state(raw)
            if line or "\r" not in raw:  # a bar that cleared itself leaves no empty line
                _add(line)


def _flush_pending() -> None:
    with _lock:
        for key, rest in list(_pending.items()):
            if final_state(rest).strip():
                _add(final_state(rest).rstrip())
            _pending[key] = ""


class Tee:
    """A text stream that writes through to ``stream`` and records each finished line."""

    def __init__(self, stream: TextIO, key: str) -> None:
        self.stream = stream
        self.key = key

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        _feed(self.key, text)
        return written

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # progress bars ask the real terminal
        return self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _tee_streams() -> tuple[TextIO, TextIO] | None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in :class:`Tee`; the streams replaced (None: already wrapped)."""
    if isinstance(sys.stdout, Tee):
        return None
    previous = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = Tee(sys.stdout, "stdout"), Tee(sys.stderr, "stderr")
    return previous


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Record what is printed inside the block (see the module docstring); the file closes at its end."""
    with _lock:
        replaced = _tee_streams()
        early = list(_early) if _early is not None and not _recordings else []
        if _early is not None and not _recordings:
            _early.clear()
        current = Recording(early)
        _recordings.append(current)
    try:
        yield current
    finally:
        with _lock:
            _flush_pending()
            _recordings.remove(current)
            current.close()
            if replaced is not None:
                sys.stdout, sys.stderr = replaced


F = TypeVar("F", bound=Callable[..., Any])


def recorded(fn: F) -> F:
    """Decorator: ``fn`` runs inside :func:`recording` (its folder is named by :func:`save_to`)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with recording():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def save_to(folder: str | Path) -> Path | None:
    """The innermost open recording writes into ``folder/console.log`` from now on (appending; the lines so far
    first), and so do the recordings around it that have no file yet (a command's, whose summary is printed
    after its run returns); the file's path, or None outside a recording."""
    with _lock:
        if not _recordings or _recordings[-1].file is not None:
            return _recordings[-1].file.path if _recordings else None
        unattached = []
        for recording in reversed(_recordings):
            if recording.file is not None:
                break
            unattached.append(recording)
        file = _File(Path(folder) / LOG_FILE)
        for line in unattached[-1].lines:  # the outermost one saw the most
            file.write(line)
        for recording in unattached:
            recording.attach(file)
        return file.path


def folder() -> Path | None:
    """The folder whose ``console.log`` the innermost open recording writes into (None: not saved yet, or outside
    a recording): a command's own folder, once it has made it (the Sacred observers record its files)."""
    with _lock:
        if _recordings and _recordings[-1].file is not None:
            return _recordings[-1].file.path.parent
    return None


# ------------------------------------------------------------------------------------------- command line
def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     line: str | None = None) -> str:
    """``file:line: Category: message`` on one line: the source line Python would echo says nothing new."""
    text = " ".join(str(message).split())
    return f"{filename}:{lineno}: {category.__name__}: {text}\n"


class _CurrentStream:
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is now (a handler made earlier follows a Tee)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()


class _RecordsToFile(logging.Handler):
    """``mamol`` log records the console does not show (below WARNING), written to the open recordings."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:  # shown on the console, hence recorded from there
            return
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        for line in message.splitlines():
            _add(line)


def setup() -> None:
    """A command-line process: record from the start (lines kept for the first recording), warnings on one
    line, and every log handler writing to the console through the recorded streams.

    The ``mamol`` loggers record INFO into ``console.log`` (run folder, checkpoints loaded, sweep progress);
    the console shows WARNING and above, as before.
    """
    global _early
    warnings.formatwarning = one_line_warning
    _tee_streams()
    with _lock:
        if _early is None:
            _early = collections.deque(maxlen=EARLY_LINES)
    real = {}  # id of a real stream -> the name of the sys attribute that now wraps it
    for name in ("stdout", "stderr"):
        for stream in (getattr(sys, f"__{name}__"), getattr(getattr(sys, name), "stream", None)):
            if stream is not None:
                real[id(stream)] = name
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:  # handlers made before (Lightning's): write through the Tee, not past it
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in real:
                handler.setStream(_CurrentStream(real[id(handler.stream)]))
    root = logging.getLogger()
    if not any(isinstance(h, _RecordsToFile) for h in root.handlers):
        console = logging.StreamHandler(_CurrentStream("stderr"))  # what logging's last resort printed
        console.setLevel(logging.WARNING)
        to_file = _RecordsToFile(logging.INFO)
        to_file.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
        root.addHandler(to_file)
        logging.getLogger("mamol").setLevel(logging.INFO)


@contextlib.contextmanager
def session() -> Iterator[None]:
    """:func:`setup` for one command line, undone at its end: the streams, the log handlers (and the streams of
    those made before), the ``mamol`` logger's level, the warning format and the early lines are put back, so
    a caller that runs commands in its own process (tests, a notebook) keeps its own console."""
    global _early
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    streams = [(h, h.stream) for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler)]
    root, package = logging.getLogger(), logging.getLogger("mamol")
    saved = (warnings.formatwarning, sys.stdout, sys.stderr, list(root.handlers), package.level, _early)
    setup()
    try:
        yield
    finally:
        with _lock:
            _flush_pending()
            formatwarning, stdout, stderr, handlers, level, early = saved
            warnings.formatwarning = formatwarning
            for handler, stream in streams:
                handler.setStream(stream)
            root.handlers[:] = handlers
            package.setLevel(level)
            sys.stdout, sys.stderr = stdout, stderr
            _early = early
