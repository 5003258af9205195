"""Exception types whose messages are shown to users as one line.

The CLI prints ``str(error)`` of any :class:`PropensityError` (and of ``ValueError``
raised while loading config) on stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations


class PropensityError(Exception):
    """Base class for errors caused by user input: config, files, arguments."""


class ConfigError(PropensityError, ValueError):
    """A config key is unknown, has the wrong type, or holds a bad value."""


class InputDataError(PropensityError):
    """A raw feed cannot be ingested at all: missing file, bad header, unknown format."""


class TableNotFoundError(PropensityError):
    """A stage needs a table that an earlier stage has not written yet."""
