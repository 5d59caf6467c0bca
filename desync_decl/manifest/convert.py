"""Manifest strings to typed values: durations, octal modes, local paths and locations.

Each parser raises ``ValueError`` with a one-line reason; the schema has
already checked the syntax, so these mostly catch values that are out of range.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``30s``, ``1m30s``, ``500ms`` or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"'{value}' is negative")
        return float(value)
    text = str(value)
    parts = list(_DURATION_PART.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        raise ValueError(f"'{text}' is not a duration (e.g. 30s, 1m30s, 500ms)")
    return sum(float(p.group(1)) * _SECONDS[p.group(2)] for p in parts)


def parse_mode(text: str) -> int:
    """Permission bits of a quoted octal mode such as ``"0644"``."""
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise ValueError(f"'{text}' is not an octal mode (e.g. \"0644\")")
    return int(text, 8)


def is_url(location: str) -> bool:
    return bool(_URL.match(location))


def local_path(text: str, base_dir: Path) -> Path:
    """An absolute path: ``~`` expanded, relative paths taken from the manifest's folder."""
    return Path(os.path.normpath(base_dir / os.path.expanduser(text)))


def location(text: str, base_dir: Path) -> str:
    """A URL unchanged, a local path made absolute as ``local_path`` does."""
    return text if is_url(text) else str(local_path(text, base_dir))
