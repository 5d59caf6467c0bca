"""A store replaced whole while reads run: ``--store-file`` re-read on SIGHUP.

Reads lease the current store (``server.stack``), so a swap never closes a
store under a running fetch; the old one closes when its last fetch is done.
"""

from __future__ import annotations

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.server.stack import StoreStack
from desync_decl.stores.base import Store


class SwappableStore:
    def __init__(self, store: Store) -> None:
        self._stack: StoreStack[Store] = StoreStack(store)

    def __str__(self) -> str:
        return str(self._stack.current)

    def get_chunk(self, id: ChunkID) -> Chunk:
        with self._stack.use() as store:
            return store.get_chunk(id)

    def has_chunk(self, id: ChunkID) -> bool:
        with self._stack.use() as store:
            return store.has_chunk(id)

    def swap(self, store: Store) -> None:
        self._stack.swap(store)

    def close(self) -> None:
        self._stack.close()
