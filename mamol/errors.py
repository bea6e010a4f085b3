"""The project's error types: a problem with the user's input, reported as one clear line.

Every error raised because of a config value, a data file, a checkpoint or a missing table is a
:class:`MamolError`. Its message names the key or the file, what was expected and what was found. The
command-line entry points (``run.py``, ``datasets/make_arrow.py``) print such an error as one line and exit
with status 2; anything else is a bug and keeps its traceback. The subclasses also derive from the builtin
type a caller would expect (``ValueError``, ``FileNotFoundError``), so ``except ValueError`` still works.
"""
from __future__ import annotations


class MamolError(Exception):
    """A problem with the user's input (config, files, checkpoints): one message, no traceback needed."""


class ConfigError(MamolError, ValueError):
    """A config value that cannot work; the message names the key."""


class DataError(MamolError, ValueError):
    """A data file (raw scene, Arrow split, missing table) that is malformed or does not fit the run."""


class MissingFileError(MamolError, FileNotFoundError):
    """An input file or folder that does not exist; the message says what was expected there."""


class StorageError(MamolError, OSError):
    """A file or folder that cannot be written (full disk, read-only, a file where a folder is expected); the
    message names the path, and nothing half-written is left behind."""


class CheckpointError(MamolError, ValueError):
    """A checkpoint that cannot be read or was made for another dataset, model or backbone."""


class TrainingInterrupted(MamolError):
    """Training stopped by SIGTERM or SIGINT at a batch boundary; ``checkpoint`` resumes it."""

    def __init__(self, signal_name: str, signal_number: int, checkpoint: str, detail: str) -> None:
        super().__init__(f"interrupted by {signal_name} {detail}; resume with resume_from={checkpoint}")
        self.signal_name, self.checkpoint = signal_name, checkpoint
        self.exit_code = 128 + signal_number  # what a shell reports for a process ended by that signal


class CommandInterrupted(MamolError):
    """A command other than training (``predict_map``) stopped by SIGTERM or SIGINT; the message says what it
    had finished and kept."""

    def __init__(self, signal_name: str, signal_number: int, detail: str) -> None:
        super().__init__(f"interrupted by {signal_name} {detail}")
        self.signal_name = signal_name
        self.exit_code = 128 + signal_number
