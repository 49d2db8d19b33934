"""The project's user-facing errors: ``UserError`` and everything derived from it.

``UserError`` is what a person got wrong (an argument, an option, a file, a title), as
opposed to a bug: the command lines print its message on one line and exit with status 2,
and let every other exception through. Each class also derives from the built-in exception
a caller would expect (``ValueError``, ``TypeError``, ``KeyError``, ``FileNotFoundError``).

The errors about data live here too, below :mod:`als.readers`, :mod:`als.datasets`,
:mod:`als.interactions` and :mod:`als.data`, so that each of those can raise them without
importing another; all are importable from :mod:`als.data` too and derive from
:class:`DataError`. Every message is one sentence on one line: the CLI prints ``str(exc)`` as it is.
"""

from __future__ import annotations

__all__ = [
    "UserError",
    "InvalidTypeError",
    "InvalidValueError",
    "UsageError",
    "IdOutOfRangeError",
    "AmbiguousItemError",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "DatasetNotFoundError",
    "EmptyDataError",
    "MissingDataError",
    "UnknownColumnError",
    "UnknownDatasetError",
    "UnknownItemError",
    "UnknownUserError",
    "UnsafeArchiveError",
    "ModelFileError",
    "ModelFitError",
    "TunerUnavailable",
    "IndexUnavailable",
    "ParameterWarning",
]


class UserError(Exception):
    """Base class of the errors that are a user's mistake, not a bug in als."""

    def __str__(self) -> str:
        # KeyError would wrap its message in quotes; every UserError prints it plainly.
        return str(self.args[0]) if self.args else ""


class InvalidValueError(UserError, ValueError):
    """An argument or option has a value it may not have; the message names it."""


class InvalidTypeError(UserError, TypeError):
    """An argument has a type it may not have; the message names it."""


class UsageError(UserError, ValueError):
    """A command line the parser cannot make sense of (unknown option, bad value)."""


class IdOutOfRangeError(InvalidValueError, IndexError):
    """An id outside the model's range.

    A ``ValueError`` like every other bad argument, and an ``IndexError`` because that is
    what implicit raises for one (its ``items=`` check, and NumPy indexing elsewhere).
    """


class DataError(UserError):
    """Base class of the errors als raises about data (not about programming)."""


# --------------------------------------------------------------------------------------------
# Reading files and tables.
# --------------------------------------------------------------------------------------------


class DataFormatError(DataError, ValueError):
    """A line, row or value of a data file cannot be read.

    Attributes
    ----------
    path : str or None
        The file (or ``"DataFrame"``) the bad record came from.
    line_number : int or None
        1-based line number in the file (or row position in a ``DataFrame``).
    line : str or None
        The text of the bad line, without its line ending.
    """

    def __init__(self, message, *, path=None, line_number=None, line=None):
        super().__init__(message)
        self.path = path
        self.line_number = line_number
        self.line = line


class UnknownColumnError(DataError, KeyError):
    """A column name is not in the table; the message lists the available columns."""


class EmptyDataError(DataError, ValueError):
    """A data set is empty, or filtering left nothing."""


class MissingDataError(DataError, KeyError):
    """Arrays or fields that data must have are missing (e.g. id maps in a model file)."""


# --------------------------------------------------------------------------------------------
# Looking up users and items.
# --------------------------------------------------------------------------------------------


class UnknownUserError(DataError, KeyError):
    """A raw user id is not in the data."""


class UnknownItemError(DataError, KeyError):
    """A raw item id or a title is not in the data; ``suggestions`` holds close matches."""

    def __init__(self, message, *, key=None, suggestions=()):
        super().__init__(message)
        self.key = key
        self.suggestions = list(suggestions)


class AmbiguousItemError(UnknownItemError):
    """A title names several items; ``candidates`` holds their raw ids."""

    def __init__(self, message, *, key=None, candidates=()):
        super().__init__(message, key=key)
        self.candidates = list(candidates)


# --------------------------------------------------------------------------------------------
# Finding, downloading and unpacking data sets.
# --------------------------------------------------------------------------------------------


class UnknownDatasetError(DataError, ValueError):
    """A data set name is not in the registry and is not an existing path."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A known data set is in none of the searched places and could not be downloaded.

    Attributes
    ----------
    searched : list of str
        Every folder that was looked at, in order.
    """

    def __init__(self, message, *, searched=()):
        super().__init__(message)
        self.searched = list(searched)


class ChecksumError(DataError, ValueError):
    """A downloaded archive has no known checksum, or its sha256 or md5 does not match."""


class UnsafeArchiveError(DataError, ValueError):
    """An archive has a member with an absolute path, a ``..`` part or a link, or lacks files."""


class ModelFileError(UserError, ValueError):
    """A file that is not a readable model file: truncated, corrupted, foreign or too new."""


class ModelFitError(UserError, RuntimeError):
    """Raised when training produced factors that are not finite."""


class TunerUnavailable(UserError, ImportError):
    """Raised when Optuna is not installed."""


class IndexUnavailable(UserError, ImportError):
    """Raised when the library of an approximate index (Faiss, NMSLib, Annoy) is not installed."""


class ParameterWarning(UserWarning):
    """Warns that an argument was accepted but converted (as implicit's ParameterWarning)."""
