"""Shell-style globs over ``/``-separated paths, as regular expressions.

One translator for the two dialects the tool reads: Go's ``path.Match`` (config-file
keys, matched as desync matches them) and rsync's filter patterns (``tar``/``untar``
include and exclude), which add ``**`` (any text, ``/`` included) and ``[!a-z]`` as a
second spelling of ``[^a-z]``. In both, ``*`` and ``?`` never match a ``/`` and ``\\``
makes the next character literal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


def glob_regex(pattern: str, *, rsync: bool = False) -> str | None:
    """``pattern`` as the text of a regex to ``fullmatch`` against a path, or None when
    the pattern is malformed (an unclosed or empty class, a trailing ``\\``).

    With ``rsync``, a run of two or more ``*`` matches across ``/`` and a class may be
    negated by ``!``; without it (Go), every ``*`` stays within one path element.
    """
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            stars = len(pattern) - i - len(pattern[i:].lstrip("*"))
            if rsync and stars >= 2:
                out.append(".*")
                i += stars
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            parsed = _character_class(pattern, i + 1, bang_negates=rsync)
            if parsed is None:
                return None
            regex, i = parsed
            out.append(regex)
            continue
        elif c == "\\":
            i += 1
            if i == len(pattern):
                return None
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class FilterPattern:
    """One rsync include/exclude pattern (the rules: ``archive/patterns.py``): its
    text as written and what it matches."""

    text: str
    regex: re.Pattern[str]
    directories_only: bool

    def matches(self, path: str, is_dir: bool) -> bool:
        """Whether this pattern names ``path`` (relative, ``/``-separated)."""
        if self.directories_only and not is_dir:
            return False
        return self.regex.fullmatch(path) is not None


def filter_pattern(text: str) -> FilterPattern:
    """``text`` as an rsync filter pattern; ``ValueError`` saying why when it is
    malformed or could never match (here, not in ``archive/``, so a manifest's check
    can say so at the pattern's line)."""
    if not text:
        raise ValueError("empty")
    if "\0" in text:
        raise ValueError("contains a NUL byte")
    anchored = text.startswith("/")
    body = text.lstrip("/")
    directories_only = body.endswith("/")
    body = body.rstrip("/")
    if not body:
        raise ValueError("names the root of the tree, which is always kept")
    if any(part in (".", "..") for part in body.split("/")):
        raise ValueError("'.' and '..' never match (paths are relative to the tree's root)")
    if "//" in body:
        raise ValueError("'//' never matches (paths hold no empty component)")
    everything_below = body.endswith("/***")
    body = body.removesuffix("/***")
    regex = glob_regex(body, rsync=True)
    if regex is None:
        raise ValueError("an unclosed '[' class, an empty class or a trailing '\\'")
    if everything_below:
        regex += "(?:/.*)?"
    if not anchored:  # rsync: the path's last components (its last one if no '/')
        regex = "(?:.*/)?" + regex
    return FilterPattern(text, re.compile(regex, re.DOTALL), directories_only)


def includes_alone(include: Sequence[str], exclude: Sequence[str]) -> str | None:
    """Why include patterns without an exclude pattern are refused (None when there is
    an exclude or no include): they could never change anything, and a user of
    ``huggingface-cli --include`` would expect a filter."""
    if not include or exclude:
        return None
    return (
        f"include pattern {include[0]!r} has no effect without an exclude pattern"
        " (includes only take back what an exclude drops); to keep only what it matches,"
        " also exclude '*' (and include '*/' to enter directories)"
    )


def _character_class(pattern: str, i: int, *, bang_negates: bool) -> tuple[str, int] | None:
    """The class that starts at ``pattern[i]`` (after its ``[``) as a regex, and where
    the pattern goes on; None when malformed (unclosed, empty, a bare ``-``)."""
    negated = pattern.startswith("^", i) or (bang_negates and pattern.startswith("!", i))
    i += negated
    ranges: list[tuple[str, str]] = []
    while not (pattern.startswith("]", i) and ranges):
        low = _class_char(pattern, i)
        if low is None:
            return None
        lo, i = low
        hi = lo
        if pattern.startswith("-", i):
            high = _class_char(pattern, i + 1)
            if high is None:
                return None
            hi, i = high
        ranges.append((lo, hi))
    body = "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges if lo <= hi)
    if negated:
        return f"[^/{body}]", i + 1
    return (f"[{body}]" if body else "(?!)"), i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int] | None:
    """One character of a class (``\\`` escapes the next) and what follows it."""
    if i >= len(pattern) or pattern[i] in "-]":
        return None
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None
    if i + 1 >= len(pattern):  # the class never closes
        return None
    return pattern[i], i + 1
