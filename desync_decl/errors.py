"""The root of every error the tool reports to a user.

``str()`` of a ``DesyncError`` is one line that says what failed and where;
the CLI prints it after ``desync-decl: error:`` without a traceback.
"""


class DesyncError(Exception):
    """An expected failure (bad input, missing data, failing store)."""


class UsageError(DesyncError):
    """A command-line value that cannot be used (e.g. a bad ``-m`` value)."""


class FormatError(DesyncError):
    """Bytes that do not follow a casync format; the message names the byte offset."""
