"""A size limit for a local cache: least recently used chunks are evicted.

desync's caches grow without bound. Here a cache store can be given a limit:
every hit marks the chunk as used (its file's mtime), and once the chunks
written since the last check could have pushed the cache over its limit, the
least recently used ones are deleted until it is back under 90% of it.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import Composite, StoreError, WriteStore
from desync_decl.stores.compose import Known, Location, locate
from desync_decl.stores.tally import ask

HEADROOM = 0.9  # evict down to this share of the limit, so eviction does not run on every write


@runtime_checkable
class _Evictable(WriteStore, Protocol):
    """A local store a size limit can evict from (``LocalStore``)."""

    def remove_chunk(self, id: ChunkID) -> None: ...
    def touch(self, id: ChunkID) -> None: ...
    def usage(self) -> list[tuple[float, int, ChunkID]]: ...


class SizeLimited(Composite):
    """Wraps a local store used as a cache; keeps it at most ``limit`` bytes."""

    def __init__(self, store: object, limit: int) -> None:
        if not isinstance(store, _Evictable):
            raise StoreError(f"a size limit needs a local cache store, not {store}")
        if limit <= 0:
            raise StoreError("a cache size limit must be positive")
        self.store = store
        self.limit = limit
        self._lock = threading.Lock()
        self._budget: int | None = None  # bytes that may still be written before a check

    def __str__(self) -> str:
        return f"{self.store} holding at most {self.limit} bytes"

    @property
    def fork_safe(self) -> bool:
        return False  # usage accounting lives in one process

    def get_chunk(self, id: ChunkID) -> Chunk:
        chunk = ask(self.store, id)
        self.store.touch(id)
        return chunk

    def locate(self, id: ChunkID, known: Known | None = None) -> Location:
        return locate(self.store, id, known)

    def has_chunk(self, id: ChunkID) -> bool:
        return self.store.has_chunk(id)

    def store_chunk(self, chunk: Chunk) -> None:
        self.store.store_chunk(chunk)
        with self._lock:
            if self._budget is None:
                self._budget = self.limit - sum(size for _, size, _ in self.store.usage())
            self._budget -= chunk.held_size()
            if self._budget < 0:
                self._budget = self._evict()

    def _evict(self) -> int:
        """Delete the least recently used chunks; the bytes left before the limit."""
        files = sorted(self.store.usage())
        total = sum(size for _, size, _ in files)
        target = int(self.limit * HEADROOM)
        for _, size, id in files:
            if total <= target:
                break
            self.store.remove_chunk(id)  # already gone is fine
            total -= size
        return self.limit - total

    def close(self) -> None:
        self.store.close()
