"""The project's one error class for bad input, so a command line can tell it from a bug.

Whatever the input (a raw file, an atomic file, a modality archive, a setting), an ``InputError``
carries a message complete by itself, on one line: the file, the line where there is one, the
field, and what was expected. A command prints ``error: <message>`` and exits 1 for it (2 for a
``UsageError``: a setting or argument whose value is not allowed); anything else is a bug and
keeps its traceback. Importing this module costs nothing (no numpy, no RecBole).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input data; the message names file, line (where there is one) and field."""


class UsageError(InputError):
    """A setting or command-line argument whose value cannot work (exit status 2)."""


class MissingInputError(InputError, FileNotFoundError):
    """A file the input needs is not there (still a ``FileNotFoundError`` for callers that ask)."""


class OutputError(InputError):
    """A file could not be written (disk full, no permission): the message names the file."""


class FolderBusyError(UsageError):
    """Another command is driving the same results folder (exit status 2): the message names the
    folder and that command's process id."""


class TrainingError(InputError):
    """Training produced something no result can be drawn from (every validation row scored the
    same); the message says which epoch and names the settings or data likely at fault."""
