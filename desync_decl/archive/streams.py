"""Byte streams between the archive pieces: an iterator of buffers as a reader,
and an index's chunks fetched from a store as one sequential stream."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

from desync_decl.formats.index import Index, IndexChunk
from desync_decl.parallel import ordered_map
from desync_decl.stores.base import Store, plain_of

Buffer = bytes | bytearray | memoryview


class IterReader(io.RawIOBase):
    """A readable stream over an iterator of buffers (e.g. the catar encoder's pieces).

    ``readinto`` fills the caller's buffer as far as the pieces allow, so a
    chunker reading 4 MiB blocks gets full blocks.
    """

    def __init__(self, pieces: Iterable[Buffer]) -> None:
        super().__init__()
        self._pieces = iter(pieces)
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Buffer) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        n = 0
        while n < len(out):
            if not self._left:
                piece = next(self._pieces, None)
                if piece is None:
                    break
                self._left = memoryview(piece).cast("B")
                continue
            k = min(len(self._left), len(out) - n)
            out[n : n + k] = self._left[:k]
            self._left = self._left[k:]
            n += k
        return n


def index_blocks(index: Index, store: Store, *, concurrency: int = 10) -> Iterator[Buffer]:
    """The indexed stream's bytes, chunk by chunk in order; up to 4 x concurrency chunks
    are fetched ahead (memory stays bounded whatever the stream's size)."""

    def fetch(c: IndexChunk) -> Buffer:
        return plain_of(store, c.id, c.size)

    return ordered_map(fetch, iter(index), workers=concurrency)


def index_reader(index: Index, store: Store, *, concurrency: int = 10) -> io.BufferedReader:
    return io.BufferedReader(IterReader(index_blocks(index, store, concurrency=concurrency)))
