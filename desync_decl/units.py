"""Byte sizes as people write them: ``64K``, ``20G``, ``1000B``, ``16KiB``.

Binary units (K = 1024), as desync's ``-m`` flag and most disk tools use;
a bare number counts in ``default_unit``.
"""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
_UNITS = {"b": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([bkmgt])(?:i?b)?)?\s*$", re.IGNORECASE)


def parse_size(text: str, default_unit: int = 1) -> int:
    """The number of bytes ``text`` names; ``ValueError`` saying why if it names none."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"'{text}' is not a size (e.g. 64K, 20G, 1000B)")
    unit = _UNITS[m.group(2).lower()] if m.group(2) else default_unit
    return int(m.group(1)) * unit


def human_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``3.0 GiB``: a size as people read it (binary units,
    like the sizes people give: ``parse_size``)."""
    if n < KiB:
        return f"{int(n)} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def counted(n: int, one: str, many: str | None = None) -> str:
    """``1 chunk``, ``2 chunks``, ``3 directories`` (``many`` where adding an s is wrong)."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def human_rate(bytes_per_second: float) -> str:
    """``18.4 MiB/s``."""
    return f"{human_bytes(bytes_per_second)}/s"


def human_duration(seconds: float) -> str:
    """``7s``, ``3m05s``, ``2h01m``: an elapsed time or an ETA, whole seconds."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
