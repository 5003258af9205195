"""The one error policy: every error a user can cause is a :class:`PropensityError` with a one-line message.

The message says what was wrong and what to do. The CLI prints it on stderr as
``propensity <verb>: error: <message>`` and exits with code 2, without a traceback.
Any other exception is a bug and surfaces with its traceback (exit code 1). Errors are
chained with ``raise ... from e`` so the cause stays available with ``-v``.
"""

from __future__ import annotations


class PropensityError(Exception):
    """Base class for errors caused by user input: config, files, arguments, missing prerequisites."""


class ConfigError(PropensityError, ValueError):
    """A config key is unknown, has the wrong type, or holds a bad value."""


class UsageError(PropensityError, ValueError):
    """A command-line argument or a library call's argument is bad (a port, a date, a size)."""


class InputDataError(PropensityError):
    """A raw feed cannot be ingested at all: missing file, bad header, unknown format."""


class TableNotFoundError(PropensityError):
    """A stage needs a table that an earlier stage has not written yet."""


class DataNotReadyError(PropensityError):
    """A stage's input exists but lacks what it needs (no rows, a snapshot not built yet)."""


class ModelNotFoundError(PropensityError):
    """The model to use cannot be found in the registry, or is not a propensity model."""


class ModelOutputError(PropensityError):
    """A model produced values its output table refuses (scores outside [0, 1], NaN)."""


class SqlError(PropensityError):
    """An analyst's query failed to parse or run, or was refused."""


class StorageBusyError(PropensityError):
    """Another process kept a table's write lock under ``storage.root`` longer than this one may wait."""
