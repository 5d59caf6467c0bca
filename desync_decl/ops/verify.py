"""``verify`` (every chunk of a store hashes to its id) and ``verify-index``
(a file matches an index)."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index, IndexChunk
from desync_decl.ops.source import open_source, read_chunk
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, PruneStore


@dataclass(frozen=True)
class BadChunk:
    id: ChunkID
    why: str
    removed: bool


def verify_store(
    store: PruneStore,
    *,
    repair: bool = False,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
    only: Collection[ChunkID] | None = None,
) -> list[BadChunk]:
    """Every chunk whose data does not decode or hash to its id; ``repair`` deletes them.
    ``only``: these chunks, not the store's listing (a plan's bad chunks, read again
    before they are deleted: the rest were read once already in this run)."""

    def check(id: ChunkID) -> BadChunk | None:
        try:
            store.get_chunk(id)
        except ChunkMissing:  # deleted meanwhile
            return None
        except ChunkInvalid as e:
            if repair:
                store.remove_chunk(id)
            return BadChunk(id, e.why, repair)
        finally:
            progress.advance(1)
        return None

    progress.start("verify", 0 if only is None else len(only), unit="chunks")
    ids = store.iter_chunk_ids() if only is None else iter(sorted(only))
    # reading + hashing is CPU work: batches on as many threads as cores (sizes
    # are unknown before reading, so a batch is 16 chunks of a typical 64 KiB)
    bad = [b for b in batched_map(check, ids, workers=concurrency, weight=lambda _: 1 << 16) if b]
    progress.finish()
    return bad


def verify_index(
    index: Index,
    path: str | os.PathLike,
    *,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
) -> None:
    """Raise naming the first chunk of ``path`` that differs from ``index``."""
    digest = index.digest
    file = Path(path)
    with open_source(file) as (reader, size):
        if size != index.length:
            raise DesyncError(f"{file} has {size} bytes, the index describes {index.length}")
        fd = reader.fileno()

        def check(c: IndexChunk) -> None:
            read_chunk(fd, file, c, digest)  # raises for the first chunk that differs
            progress.advance(c.size)

        progress.start("verify-index", index.length)
        for _ in batched_map(check, index, workers=concurrency, weight=lambda c: c.size):
            pass
        progress.finish()
