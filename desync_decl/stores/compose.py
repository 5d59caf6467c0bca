"""Stores built from stores. ``Router``: several ``-s`` stores tried in order.

A router moves to the next store only when a chunk is missing; an invalid
chunk or a failing store stops the request (desync's StoreRouter), because
silently skipping a broken store would hide it.
"""

from __future__ import annotations

from collections.abc import Sequence

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import ChunkMissing, Store


class Router:
    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise ValueError("a router needs at least one store")
        self.stores = list(stores)

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self.stores)

    @property
    def fork_safe(self) -> bool:
        return all(getattr(s, "fork_safe", False) for s in self.stores)

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


def single_or_router(stores: Sequence[Store]) -> Store:
    return stores[0] if len(stores) == 1 else Router(stores)
