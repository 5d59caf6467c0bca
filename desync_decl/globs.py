"""Shell-style globs over ``/``-separated paths, as regular expressions.

One translator for the two dialects the tool reads: Go's ``path.Match`` (config-file
keys, matched as desync matches them) and rsync's filter patterns (``tar``/``untar``
include and exclude), which add ``**`` (any text, ``/`` included) and ``[!a-z]`` as a
second spelling of ``[^a-z]``. In both, ``*`` and ``?`` never match a ``/`` and ``\\``
makes the next character literal.
"""

from __future__ import annotations

import re


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
