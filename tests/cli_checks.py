"""Checks that many CLI tests make of a finished command."""

from __future__ import annotations

from typing import Protocol


class Finished(Protocol):
    """A finished command: its exit code and what it wrote to stderr."""

    code: int
    err: str


def refused(result: Finished, *words: str) -> None:
    """A user error as the project promises it: exit 1 and one line on stderr,
    ``desync-decl: error: ...``, naming each of ``words`` (no traceback)."""
    assert result.code == 1, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("desync-decl: error: "), result.err
    for word in words:
        assert word in lines[0], lines[0]
