"""Where something is in a manifest file, and what is wrong there.

Lines and columns count from 1, as editors and compilers show them; line 0
means the file as a whole (it could not be read or parsed at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from desync_decl.errors import DesyncError

# A place in the loaded data: mapping keys and list indexes from the root,
# e.g. ("tasks", 2, "extract", "stores", 0).
DataPath = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Position:
    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file

    def short(self) -> str:
        """``LINE:COL``, to point at another place in the same file."""
        return f"{self.line}:{self.column}"


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a manifest: ``FILE:LINE:COL: message``."""

    position: Position
    message: str
    path: DataPath | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.position}: {self.message}"


class ManifestError(DesyncError):
    """A manifest that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))
