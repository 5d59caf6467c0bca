"""The root of every error the tool reports to a user.

``str()`` of a ``DesyncError`` is one line that says what failed and where;
the CLI prints it after ``desync-decl: error:`` without a traceback.
"""


class DesyncError(Exception):
    """An expected failure (bad input, missing data, failing store)."""

    def __reduce__(self) -> tuple[object, ...]:
        """Picklable whatever a subclass's ``__init__`` takes: errors cross the
        pipes of forked workers and must arrive with their type and fields."""
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[DesyncError], args: tuple[object, ...], state: dict) -> DesyncError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class UsageError(DesyncError):
    """A command-line value that cannot be used (e.g. a bad ``-m`` value)."""


class IndexMissing(DesyncError):
    """No index of that name (a local file or an index-store object that does not exist)."""


class FormatError(DesyncError):
    """Bytes that do not follow a casync format; the message names the byte offset."""


def file_error(path: object, error: OSError, action: str = "open") -> DesyncError:
    """One line for a failed file operation: "<path>: no such file", "cannot open <path>: ..."."""
    if isinstance(error, FileNotFoundError):
        return DesyncError(f"{path}: no such file")
    if isinstance(error, IsADirectoryError):
        return DesyncError(f"{path}: is a directory, not a file")
    return DesyncError(f"cannot {action} {path}: {error.strerror or error}")
