"""Include/exclude patterns for ``tar`` and ``untar``, with rsync's rules.

People who ship directory trees already know rsync's ``--include``/``--exclude``, so
the patterns mean what they mean to rsync:

- ``*`` matches any text within one path component (never ``/``), ``?`` one
  character other than ``/``, ``[a-z]``/``[!a-z]``/``[^a-z]`` a class, ``\\`` makes
  the next character literal; ``**`` matches any text, ``/`` included.
- A pattern with no ``/`` (a trailing one aside) and no ``**`` matches the last
  component of a path at any depth: ``*.tmp`` drops ``a.tmp`` and ``x/y/a.tmp``.
- A pattern with a ``/`` inside matches the path's last components at any depth
  (``shards/*.bin`` matches ``shards/a.bin`` and ``m/shards/a.bin``), unless it
  starts with ``/``, which anchors it at the root of the tree (``/config.json``
  matches only the top-level one).
- A trailing ``/`` matches directories only (``cache/``); ``dir/***`` matches
  ``dir`` and everything below it.

The verdict for a path, the exact rule:

1. If a directory above the path is not allowed, neither is the path: excluding a
   directory excludes everything under it, whatever the includes say (rsync never
   descends into an excluded directory).
2. Otherwise, a path that matches an include pattern is allowed;
3. otherwise, a path that matches an exclude pattern is not;
4. otherwise it is allowed.

So includes only take back what an exclude would drop, and order among the flags does
not matter. To keep only the JSON files of a tree, as with rsync:
``--include '*/' --include '*.json' --exclude '*'`` (the first include keeps the
directories, so the walk reaches the files inside). Include patterns with no exclude
pattern could never change anything; ``parse`` refuses them rather than silently keep
everything (a user of ``huggingface-cli --include`` would expect a filter).

On the receiving side (``untar``), a path that is not allowed is neither written
nor deleted, as rsync protects excluded files from ``--delete``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from desync_decl.errors import DesyncError
from desync_decl.globs import FilterPattern, filter_pattern, includes_alone


@dataclass(frozen=True)
class Patterns:
    """A set of include and exclude patterns and the verdict they give a path (the
    rule is in the module's docstring). ``Patterns.parse([], [], ...)`` allows all."""

    include: tuple[FilterPattern, ...]
    exclude: tuple[FilterPattern, ...]
    _directories: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, include: Sequence[str], exclude: Sequence[str], where: str) -> Patterns:
        """The patterns parsed; ``where`` (a flag, a manifest position) starts the
        one-line ``DesyncError`` a bad pattern raises."""
        if isinstance(include, str) or isinstance(exclude, str):
            raise TypeError("include and exclude are sequences of patterns, not one string")
        if (why := includes_alone(include, exclude)) is not None:
            raise DesyncError(f"{where}: {why}")
        return cls(
            tuple(_parsed(p, where) for p in include),
            tuple(_parsed(p, where) for p in exclude),
        )

    @classmethod
    def given(cls, include: Sequence[str], exclude: Sequence[str], where: str) -> Patterns | None:
        """``parse``, or None when no pattern is given: nothing to apply."""
        return cls.parse(include, exclude, where) if include or exclude else None

    @property
    def empty(self) -> bool:
        """Whether these patterns allow every path (nothing to check)."""
        return not self.exclude

    def allows(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` (relative to the tree's root, ``/``-separated) is kept:
        written by ``tar``; written or deleted by ``untar``."""
        if not self.exclude:
            return True
        path = path.strip("/")
        if path in ("", "."):
            return True
        parent, _, _ = path.rpartition("/")
        if parent and not self._directory_allowed(parent):
            return False
        return self._verdict(path, is_dir)

    def _directory_allowed(self, path: str) -> bool:
        """The verdict for directory ``path`` and every directory above it, remembered:
        the entries of a tree come directory by directory."""
        known = self._directories.get(path)
        if known is not None:
            return known
        parent, _, _ = path.rpartition("/")
        allowed = (not parent or self._directory_allowed(parent)) and self._verdict(path, True)
        if len(self._directories) > 65536:
            self._directories.clear()
        self._directories[path] = allowed
        return allowed

    def _verdict(self, path: str, is_dir: bool) -> bool:
        """Rules 2-4 for the path itself (its directories already allowed)."""
        if any(p.matches(path, is_dir) for p in self.include):
            return True
        return not any(p.matches(path, is_dir) for p in self.exclude)

    def as_json(self) -> dict[str, list[str]]:
        """The patterns as written, for plans and reports."""
        return {
            "include": [p.text for p in self.include],
            "exclude": [p.text for p in self.exclude],
        }

    def describe(self) -> str:
        """One line for people: "include '*.json'; exclude '*'" ("" when empty)."""
        parts = [f"include {p.text!r}" for p in self.include]
        parts += [f"exclude {p.text!r}" for p in self.exclude]
        return "; ".join(parts)


def _parsed(text: str, where: str) -> FilterPattern:
    """``text`` parsed, or the one-line error naming ``where``: a typo is caught before
    a tree is written without what it should have matched."""
    try:
        return filter_pattern(text)
    except ValueError as e:
        raise DesyncError(f"{where}: bad pattern {text!r}: {e}") from None
