"""Stores built from stores: routers, failover groups, caches.

The three error kinds drive them (desync's rules): a ``Router`` moves to the
next store only when a chunk is missing; a ``FailoverGroup`` switches member
only when a store fails (never on missing: members hold the same content); a
``Cache`` fetches upstream on a miss and writes what it fetched into the cache,
and with ``repair`` an invalid cached chunk counts as a miss and is overwritten.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, Store, StoreError, WriteStore


def _fork_safe(stores: Sequence[object]) -> bool:
    return all(getattr(s, "fork_safe", False) for s in stores)


class Router:
    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise ValueError("a router needs at least one store")
        self.stores = list(stores)

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self.stores)

    @property
    def fork_safe(self) -> bool:
        return _fork_safe(self.stores)

    def get_chunk(self, id: ChunkID) -> Chunk:
        for store in self.stores:
            try:
                return store.get_chunk(id)
            except ChunkMissing:
                continue
        raise ChunkMissing(id, f"all stores ({self})" if len(self.stores) > 1 else str(self))

    def has_chunk(self, id: ChunkID) -> bool:
        return any(store.has_chunk(id) for store in self.stores)

    def close(self) -> None:
        for store in self.stores:
            store.close()


class FailoverGroup:
    """Equivalent stores (``-s "a|b"``): one is active; a failing one hands over to the next.

    No fail-back: the group stays on the new member until that one fails too.
    """

    def __init__(self, members: Sequence[Store]) -> None:
        if not members:
            raise ValueError("a failover group needs at least one store")
        self.members = list(members)
        self._active = 0
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.members)

    @property
    def fork_safe(self) -> bool:
        return _fork_safe(self.members)

    def get_chunk(self, id: ChunkID) -> Chunk:
        return self._try(lambda store: store.get_chunk(id))

    def has_chunk(self, id: ChunkID) -> bool:
        return self._try(lambda store: store.has_chunk(id))

    def _try(self, call):  # type: ignore[no-untyped-def]
        last: DesyncError | None = None
        for _ in self.members:
            active = self._active
            try:
                return call(self.members[active])
            except ChunkMissing:
                raise
            except (StoreError, ChunkInvalid) as e:
                last = e
                with self._lock:
                    if self._active == active:  # not already switched by another request
                        self._active = (active + 1) % len(self.members)
        assert last is not None
        raise last

    def close(self) -> None:
        for store in self.members:
            store.close()


class Cache:
    """Read-through, write-back cache in front of ``upstream`` (``-c``)."""

    def __init__(self, upstream: Store, cache: WriteStore, *, repair: bool = True) -> None:
        self.upstream, self.cache, self.repair = upstream, cache, repair

    def __str__(self) -> str:
        return f"{self.upstream} (cache {self.cache})"

    @property
    def fork_safe(self) -> bool:
        return _fork_safe([self.upstream, self.cache])

    def get_chunk(self, id: ChunkID) -> Chunk:
        try:
            return self.cache.get_chunk(id)
        except ChunkMissing:
            pass
        except ChunkInvalid:
            if not self.repair:
                raise
        chunk = self.upstream.get_chunk(id)
        try:
            self.cache.store_chunk(chunk)
        except StoreError as e:
            raise StoreError(f"failed to store chunk {id.hex()} in cache {self.cache}: {e}") from e
        return chunk

    def has_chunk(self, id: ChunkID) -> bool:
        return self.cache.has_chunk(id) or self.upstream.has_chunk(id)

    def close(self) -> None:
        self.upstream.close()
        self.cache.close()


def single_or_router(stores: Sequence[Store]) -> Store:
    return stores[0] if len(stores) == 1 else Router(stores)
