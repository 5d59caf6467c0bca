"""A slow, obviously-correct pure-Python chunker: casync's cut rule written out.

Written from casync's src/cachunker.c (``ca_chunker_scan``: a 48-byte buzhash
window, cut when ``h % d == d - 1`` once a chunk holds ``min`` bytes, or at ``max``)
and src/cachunker.h (``CA_CHUNKER_DISCRIMINATOR_FROM_AVG``), independently of our
C code, to cross-check it. Far too slow for real use (about 3 MB/s).
"""

from __future__ import annotations

import re
from pathlib import Path

WINDOW = 48


def load_table(header: Path) -> list[int]:
    """The 256 buzhash constants (casync's ``buzhash_table``) read from the C
    header our extension compiles, ext/buzhash_table.h; the caller checks their
    fingerprint, so a wrong constant there fails the check, not just both chunkers."""
    table = [int(v, 16) for v in re.findall(r"0x([0-9a-fA-F]{8})U", header.read_text())]
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
