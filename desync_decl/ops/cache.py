"""``cache``: copy the chunks of some indexes from source stores into a target store.

Store to store, in each one's own format: a chunk read compressed from the
source is written compressed without being recompressed, and re-encrypted
when the target has another key. What the target already holds is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from desync_decl.formats.digest import ChunkID
from desync_decl.parallel import ordered_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import Flushable, Store, WriteStore
from desync_decl.stores.store_lock import confirm, keeper_of, writing


@dataclass(frozen=True)
class CacheResult:
    chunks_total: int  # distinct chunks asked for
    chunks_copied: int  # fetched from the sources and written to the target
    chunks_present: int  # already in the target


def fill_cache(
    ids: Iterable[ChunkID],
    source: Store,
    target: WriteStore,
    *,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
) -> CacheResult:
    """Copy every chunk of ``ids`` the target lacks (network-bound: ``concurrency`` threads)."""
    wanted = sorted(set(ids))

    locks = keeper_of(target)

    def copy(id: ChunkID) -> bool:
        try:
            if locks is not None:
                locks.hold_shared("cache")  # taken before the first has_chunk
            if target.has_chunk(id):
                return False
            target.store_chunk(source.get_chunk(id))
            return True
        finally:
            progress.advance(1)

    progress.start("cache", len(wanted))
    with writing(target):  # the store lock the copies take ends with them (store_lock)
        copied = sum(ordered_map(copy, wanted, workers=concurrency))
        progress.finish()
        if isinstance(target, Flushable):
            target.flush()
        confirm(target)  # the lock held while chunks were found present: they still are
    return CacheResult(len(wanted), copied, len(wanted) - copied)
