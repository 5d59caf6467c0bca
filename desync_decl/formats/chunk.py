"""A chunk in memory: its id plus its plain and/or stored (compressed) bytes.

Either form is produced lazily from the other and then kept, so a chunk copied
from one compressed store to another is never decompressed and recompressed.
"""

from __future__ import annotations

from desync_decl.formats import chunkfile
from desync_decl.formats.digest import ChunkID

MAX_PLAIN_SIZE = 128 * 1024 * 1024  # casync's upper bound for a chunk


class Chunk:
    __slots__ = ("_plain", "_stored", "id")

    def __init__(
        self,
        id: ChunkID,
        *,
        plain: bytes | memoryview | None = None,
        stored: bytes | None = None,
    ) -> None:
        if plain is None and stored is None:
            raise ValueError("a chunk needs its plain or its stored bytes")
        self.id = id
        self._plain = plain
        self._stored = stored

    def held_size(self) -> int:
        """Size of the form a store wrote: the stored bytes if made, else the plain ones."""
        held = self._stored if self._stored is not None else self._plain
        assert held is not None  # __init__ refuses a chunk with neither
        return len(held)

    def plain(self, limit: int = MAX_PLAIN_SIZE) -> bytes | memoryview:
        """The uncompressed bytes (raises ``chunkfile.DecodeError`` on bad stored data)."""
        if self._plain is None:
            assert self._stored is not None
            self._plain = chunkfile.decompress(self._stored, limit)
        return self._plain

    def stored(self) -> bytes:
        """The compressed bytes as a ``.cacnk`` file holds them."""
        if self._stored is None:
            assert self._plain is not None
            self._stored = chunkfile.compress(self._plain)
        return self._stored

    def __repr__(self) -> str:
        return f"Chunk({self.id.hex()})"
