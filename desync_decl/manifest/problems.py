"""Where something is in a manifest file, and what is wrong there.

Lines and columns count from 1, as editors and compilers show them; line 0
means the file as a whole (it could not be read or parsed at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from desync_decl.errors import DesyncError

MAX_PROBLEMS = 100  # reported of one manifest: a file of a million wrong values is not a report

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
    """A manifest that cannot be used; ``problems`` lists what is wrong with it, the
    first ``MAX_PROBLEMS`` in file order and then a line saying there are more."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        if len(self.problems) > MAX_PROBLEMS:
            more = f"… and more problems (only the first {MAX_PROBLEMS} are shown)"
            self.problems[MAX_PROBLEMS:] = [Problem(Position(self.problems[0].position.file), more)]
        super().__init__("\n".join(str(p) for p in self.problems))
