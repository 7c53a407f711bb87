"""Every error class of the project, in one module, so a command line can tell bad input from a bug.

Whatever the input (a raw file, an atomic file, a modality archive, a setting), an ``InputError``
carries a message complete by itself, on one line: the file, the line where there is one, the
field, and what was expected. A command prints ``error: <message>`` and exits 1 for it (2 for a
``UsageError``: a setting or argument whose value is not allowed); anything else is a bug and
keeps its traceback. The other classes say where the bad input was met: a setting missing from
``properties/`` (``SettingError``), a cell, a tune or a challenge asked for something that can
not work, a record or a raw value that does not parse. Importing this module costs nothing (no
numpy, no RecBole).
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


class SettingError(KeyError):
    """A setting the code needs is in no properties file (or the folder itself is missing)."""

    def __str__(self):  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


class CellError(UsageError):
    """A usage error in what a cell asks for (unknown model, bad name, missing file)."""


class TuneError(UsageError):
    """A usage error reported as ``error: ...`` with exit status 2."""


class ChallengeError(UsageError):
    """A challenge protocol asked for something it can not do (no such round, no task, a label set by hand)."""


class RecordError(InputError):
    """A record that does not hold what the schema promises (named by file and field)."""


class RawFormatError(InputError):
    """A raw input value that cannot be parsed; the message names file, line and field."""


class FastReadFailed(Exception):
    """pyarrow could not read the file as asked; the caller diagnoses (``diagnose_csv``)."""
