"""``cat``: stream a byte range of a blob from its chunks, in order.

Unlike desync's strictly sequential reader, upcoming chunks are fetched ahead
by a small pool (bounded), so high-latency stores stream at full speed; the
null chunk comes from memory and a chunk repeated in the blob is fetched once
while it stays in the reader's cache.
"""

from __future__ import annotations

from typing import BinaryIO

from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index
from desync_decl.ops.blobreader import BlobReader
from desync_decl.stores.base import Store


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
    written = 0
    for piece in BlobReader(index, store).pieces(offset, end, workers=concurrency):
        out.write(piece)
        written += len(piece)
    return written
