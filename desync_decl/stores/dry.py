"""A store for a dry run: it keeps nothing and claims every chunk, so an index can be
computed (chunks cut and hashed) without compressing or writing a byte."""

from __future__ import annotations

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import ChunkMissing


class DryStore:
    """A write store that keeps nothing and claims every chunk, so ``tar_index``
    only cuts and hashes (nothing is compressed or written)."""

    fork_safe = False  # never read: a dry run only writes

    def __str__(self) -> str:
        return "nowhere (dry run)"

    def get_chunk(self, id: ChunkID) -> Chunk:
        raise ChunkMissing(id, str(self))

    def has_chunk(self, id: ChunkID) -> bool:
        return True

    def store_chunk(self, chunk: Chunk) -> None:
        pass

    def close(self) -> None:
        pass
