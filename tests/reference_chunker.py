"""A slow, obviously-correct pure-Python chunker: casync's cut rule written out.

Written from shared/spec/casync-formats.md section 4, independently of the C
code, to cross-check it. Far too slow for real use (about 3 MB/s).
"""

from __future__ import annotations

import json
from pathlib import Path

WINDOW = 48


def load_table(path: Path) -> list[int]:
    """The 256 buzhash constants from shared/spec/buzhash_table.json."""
    table = json.loads(path.read_text())
    assert len(table) == 256
    return table


def rol32(x: int, n: int) -> int:
    n &= 31
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF if n else x


def discriminator(cmin: int, cavg: int, cmax: int) -> int:
    d = int(cavg / (-1.42888852e-7 * cavg + 1.33237515))
    return max(cmin, min(cmax, d))


def window_hash(window: bytes, table: list[int]) -> int:
    h = 0
    for j, b in enumerate(window):
        h ^= rol32(table[b], WINDOW - 1 - j)
    return h


def chunk_sizes(data: bytes, cmin: int, cavg: int, cmax: int, table: list[int]) -> list[int]:
    """Sizes of the chunks casync cuts ``data`` into."""
    if cmin == cavg == cmax:
        return [min(cmax, len(data) - p) for p in range(0, len(data), cmax)]
    d = discriminator(cmin, cavg, cmax)
    sizes = []
    pos = 0
    while pos < len(data):
        size = 0
        h = 0
        while True:
            size += 1
            if pos + size == len(data):
                break
            if size >= WINDOW:
                start = pos + size - WINDOW
                if size == WINDOW:
                    h = window_hash(data[start : pos + size], table)
                else:
                    h = (
                        rol32(h, 1)
                        ^ rol32(table[data[start - 1]], WINDOW)
                        ^ table[data[start + WINDOW - 1]]
                    )
            if size >= cmax:
                break
            if size >= WINDOW and size >= cmin and h % d == d - 1:
                break
        sizes.append(size)
        pos += size
    return sizes
