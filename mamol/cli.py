"""What the command-line entry points share: a project error is one line, a bug keeps its traceback.

``run.py`` and ``datasets/make_arrow.py`` print a :class:`~mamol.errors.MamolError` as ``error: <message>``
on stderr and exit with status 2 (an interrupted training run: 128 + the signal number). Everything else is
a bug and keeps its traceback; so does a project error with ``debug=True`` (``run.py``) or ``--debug``.
"""
from __future__ import annotations

import difflib
import functools
import logging
import sys
from collections.abc import Callable, Collection
from typing import Any, TextIO

from mamol.errors import ConfigError, MamolError

EXIT_ERROR = 2


class ProjectExit(BaseException):
    """Carries a project error out through Sacred, which catches every ``Exception`` to print a traceback."""

    def __init__(self, error: MamolError) -> None:
        super().__init__(str(error))
        self.error = error


def exit_code(error: MamolError) -> int:
    """2 for bad input; 128 + signal number for an interrupted run (as a shell reports a killed process)."""
    return int(getattr(error, "exit_code", EXIT_ERROR))


def print_error(error: MamolError, stream: TextIO | None = None) -> int:
    """Print ``error: <message>`` (one line) and return the exit status."""
    message = " ".join(str(error).split())  # one line, whatever the message holds
    print(f"error: {message}", file=stream or sys.stderr, flush=True)
    return exit_code(error)


def one_line_errors(active: Callable[[], bool]) -> Callable:
    """Decorator for Sacred commands: a project error leaves as :class:`ProjectExit` when ``active()``."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except MamolError as err:
                if not active():
                    raise
                raise ProjectExit(err) from err
        return wrapper
    return decorate


def suggestion(name: str, choices: Collection[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_names(keys: Collection[str], named: Collection[str], known_keys: Collection[str],
                known_named: Collection[str]) -> None:
    """ConfigError for the first unknown config key or named config, with the closest valid name."""
    for key in keys:
        if key not in known_keys:
            raise ConfigError(f"unknown config key {key!r}{suggestion(key, known_keys)} "
                              f"(python run.py print_config lists every key)")
    for name in named:
        if name not in known_named and not name.endswith((".json", ".yaml", ".yml", ".pickle")):
            raise ConfigError(f"unknown named config {name!r}{suggestion(name, known_named)}; known: "
                              f"{', '.join(sorted(known_named))}")


class DropLine(logging.Filter):
    """Drops log records whose message starts with ``prefix`` (Sacred's "Failed after": the error line says it)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
