"""``cache``: copy the chunks of some indexes from source stores into a target store,
and (``--indexes-to``) the indexes themselves: a mirror of indexes and chunks.

Store to store, in each one's own format: a chunk read compressed from the
source is written compressed without being recompressed, and re-encrypted
when the target has another key. What the target already holds is skipped.

An index is copied as the exact bytes its source holds, with its signature
(``<name>.sig``) when it has one, so a signature made where it was published
still verifies on the mirror; only once its chunks are in the target store
(``fill_cache`` has flushed them), so a host following the mirror never finds
an index whose chunks are not there yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.parallel import ordered_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import Flushable, Store, WriteStore
from desync_decl.stores.index_store import SignedIndex
from desync_decl.stores.keys import UploadCheck
from desync_decl.stores.location import Opener, index_name_of
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
    keys = UploadCheck(target)  # chunks there under another key: said before the first copy

    def copy(id: ChunkID) -> bool:
        try:
            if locks is not None:
                locks.hold_shared("cache")  # taken before the first has_chunk
            if target.has_chunk(id):
                return False
            chunk = source.get_chunk(id)
            keys.before_upload()
            target.store_chunk(chunk)
            return True
        finally:
            progress.advance(1)

    progress.start("cache", len(wanted), unit="chunks")
    with writing(target):  # the store lock the copies take ends with them (store_lock)
        copied = sum(ordered_map(copy, wanted, workers=concurrency))
        progress.finish()
        if isinstance(target, Flushable):
            target.flush()
        confirm(target)  # the lock held while chunks were found present: they still are
    return CacheResult(len(wanted), copied, len(wanted) - copied)


@dataclass(frozen=True)
class MirroredIndexes:
    where: str  # the index store written to, credentials masked
    indexes: int  # index files written there
    signatures: int  # of them, how many with their .sig


def mirror_names(locations: Sequence[str]) -> list[str]:
    """The name each index gets in a mirror: the last element of its location (a path
    or an index-store URL). Two indexes of one name are refused before anything is
    copied: the second would silently replace the first."""
    names = [index_name_of(location) for location in locations]
    seen: dict[str, str] = {}
    for location, name in zip(locations, names, strict=True):
        if name in seen:
            raise DesyncError(f"indexes {seen[name]} and {location} would both be copied as {name}")
        seen[name] = location
    return names


def mirror_indexes(
    opener: Opener, indexes: Sequence[tuple[str, SignedIndex]], to: str
) -> MirroredIndexes:
    """Put each ``(name, index)`` (what ``Opener.read_signed_index`` read) into ``to``, a
    local directory (made if missing) or an index-store URL: the index file's exact
    bytes, then its ``.sig`` when it has one. Each is written atomically; a ``.sig``
    already in ``to`` for an index that now has none is left (a host that checks
    signatures refuses the pair all the same, and HTTP stores cannot delete).

    Called after ``fill_cache`` of the indexes' chunks, inside the caller's
    ``store_lock.writing(target)`` (as ``cli/cache.py`` does), so the indexes appear
    only once their chunks are flushed and no prune of the target runs between."""
    store = opener.index_store(to, create=True)
    signatures = 0
    try:
        for name, signed in indexes:
            store.store_index_bytes(name, signed.data)
            if signed.signature is not None:
                store.store_signature(name, signed.signature)
                signatures += 1
    finally:
        store.close()
    return MirroredIndexes(str(store), len(indexes), signatures)
