"""Stores as a read would find them, for a plan: each chunk is read from the leaf
store ``compose.locate`` finds for it, with what earlier tasks will have written or
removed (``known``).

A plan changes nothing it plans, with one exception: a chunk it had to fetch from
beyond a declared cache (``plan --verify`` lists an archive's entries from its
chunks) is kept in that cache, as the read apply makes would keep it. Thrown away,
it would cross the network a second time when apply extracts it.
"""

from __future__ import annotations

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import ChunkMissing, Store, StoreError
from desync_decl.stores.compose import Cache, Known, locate


class ReadOnly:
    """``stack`` read chunk by chunk from its leaf stores, shown as ``name``; it does
    not own ``stack`` (whoever opened it closes it)."""

    fork_safe = False  # a plan's reads: never forked

    def __init__(self, stack: Store, known: Known, name: str) -> None:
        self.stack, self.known, self.name = stack, known, name

    def __str__(self) -> str:
        return self.name

    def get_chunk(self, id: ChunkID) -> Chunk:
        where = locate(self.stack, id, self.known)
        chunk = where.leaf.get_chunk(id)
        if not where.cached:  # fetched past the caches it was looked for in: keep it there
            for cache in (c for c in where.through if isinstance(c, Cache)):
                try:
                    cache.cache.store_chunk(chunk)
                except StoreError as e:
                    raise StoreError(
                        f"failed to store chunk {id.hex()} in cache {cache.cache}: {e}"
                    ) from e
        return chunk

    def has_chunk(self, id: ChunkID) -> bool:
        try:
            locate(self.stack, id, self.known)
        except ChunkMissing:
            return False
        return True

    def close(self) -> None:
        pass  # the stack's owner closes it
