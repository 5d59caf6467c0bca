"""Stores as a read would find them, without a cache keeping what passes through (a
plan writes nothing): each chunk is read from the leaf store ``compose.locate``
finds for it, with what earlier tasks will have written or removed (``known``)."""

from __future__ import annotations

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import ChunkMissing, Store
from desync_decl.stores.compose import Known, locate


class ReadOnly:
    """``stack`` read chunk by chunk from its leaf stores, shown as ``name``; it does
    not own ``stack`` (whoever opened it closes it)."""

    fork_safe = False  # a plan's reads: never forked

    def __init__(self, stack: Store, known: Known, name: str) -> None:
        self.stack, self.known, self.name = stack, known, name

    def __str__(self) -> str:
        return self.name

    def get_chunk(self, id: ChunkID) -> Chunk:
        return locate(self.stack, id, self.known).leaf.get_chunk(id)

    def has_chunk(self, id: ChunkID) -> bool:
        try:
            locate(self.stack, id, self.known)
        except ChunkMissing:
            return False
        return True

    def close(self) -> None:
        pass  # the stack's owner closes it
