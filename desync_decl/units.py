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
