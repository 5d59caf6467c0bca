"""``chop``: cut a local file at an index's offsets and store the chunks a store lacks.

Each piece is hashed and must match the index (a file that changed since the
index was made is an error, not a silently corrupt store). A piece wholly inside
one of the file's holes is not read: it is zeros, so it must be the zero chunk of
its size, whose id is computed (and whose chunk is stored) once per size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index, IndexChunk
from desync_decl.fsutil import find_holes, within_holes
from desync_decl.ops.make import ChunkStorer, ZeroChunks
from desync_decl.ops.source import chunk_mismatch, open_source, read_chunk
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import WriteStore


@dataclass(frozen=True)
class ChopResult:
    chunks_total: int
    chunks_stored: int
    bytes_stored: int


def chop(
    index: Index,
    source: str | os.PathLike,
    store: WriteStore,
    *,
    ignore: Set[ChunkID] = frozenset(),
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
) -> ChopResult:
    digest = index.digest
    path = Path(source)
    with ChunkStorer(store, "chop") as storer, open_source(path) as (reader, size):
        if size < index.length:
            raise DesyncError(f"{path} has {size} bytes, the index describes {index.length}")
        fd = reader.fileno()
        holes = find_holes(fd, 0, index.length)
        zeros = ZeroChunks(digest)

        def cut(c: IndexChunk) -> None:
            if within_holes(holes, c.start, c.end):
                chunk = zeros.chunk(c.size)
                if chunk.id != c.id:
                    raise chunk_mismatch(path, c)
                storer.add(chunk)
            else:
                storer.add(Chunk(c.id, plain=read_chunk(fd, path, c, digest)))
            progress.advance(c.size)

        progress.start("chop", index.length)
        for _ in batched_map(
            cut, _wanted(index, ignore), workers=concurrency, weight=lambda c: c.size
        ):
            pass
        progress.finish()
        storer.flush()
    return ChopResult(len(index), storer.stored, storer.bytes_stored)


def _wanted(index: Index, ignore: Set[ChunkID]) -> Iterator[IndexChunk]:
    seen: set[ChunkID] = set(ignore)
    for c in index:
        if c.id not in seen:
            seen.add(c.id)
            yield c
