"""Which chunks an existing target already holds at the right offset (``--in-place``)."""

from __future__ import annotations

import os

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.formats.index import Index, IndexChunk
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress


def chunks_in_place(
    index: Index, fd: int, size: int, *, workers: int, progress: Progress = NO_PROGRESS
) -> list[bool]:
    """For each chunk of ``index``: does ``fd`` hold it there, given that it had
    ``size`` bytes of data and reads as zeros beyond (it was extended)?

    Reads and hashes every chunk that lies within the existing data, on
    ``workers`` threads, one chunk in memory per thread at a time.
    """
    digest = index.digest
    null = null_chunk_id(index)

    def holds(chunk: IndexChunk) -> bool:
        if chunk.end > size:
            return chunk.start >= size and chunk.id == null
        data = os.pread(fd, chunk.size, chunk.start)
        progress.advance(chunk.size)
        return len(data) == chunk.size and digest.hash(data) == chunk.id

    progress.start("check in place", min(size, index.length))
    found = list(batched_map(holds, index, workers=workers, weight=_size))
    progress.finish()
    return found


def _size(chunk: IndexChunk) -> int:
    return chunk.size
