"""``cat``: stream a byte range of a blob from its chunks, in order.

Unlike desync's strictly sequential reader, upcoming chunks are fetched ahead
by a small pool (bounded), so high-latency stores stream at full speed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import BinaryIO

from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index, IndexChunk
from desync_decl.parallel import ordered_map
from desync_decl.stores.base import Store, plain_of


def cat(
    index: Index,
    store: Store,
    out: BinaryIO,
    *,
    offset: int = 0,
    length: int = 0,
    concurrency: int = 10,
) -> int:
    """Write ``length`` bytes from ``offset`` (0 = to the end); returns bytes written."""
    if offset < 0 or length < 0:
        raise DesyncError("offset and length must not be negative")
    if offset > index.length:
        raise DesyncError(f"offset {offset} is beyond the end of the blob ({index.length} bytes)")
    end = index.length if length == 0 else min(index.length, offset + length)
    first = bisect.bisect_right(index.ends, offset)
    chunks = (index.chunk(i) for i in range(first, len(index)))

    def fetch(c: IndexChunk) -> tuple[IndexChunk, bytes | memoryview]:
        return c, plain_of(store, c.id, c.size)

    written = 0
    for c, data in ordered_map(fetch, _until(chunks, end), workers=concurrency):
        lo = max(offset, c.start) - c.start
        hi = min(end, c.end) - c.start
        out.write(memoryview(data)[lo:hi])
        written += hi - lo
    return written


def _until(chunks: Iterator[IndexChunk], end: int) -> Iterator[IndexChunk]:
    for c in chunks:
        if c.start >= end:
            return
        yield c
