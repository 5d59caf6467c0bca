"""Byte streams between the archive pieces: an iterator of buffers as a reader,
and an index's chunks fetched from a store as one sequential stream."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from desync_decl.formats.index import Index, IndexChunk
from desync_decl.parallel import batches, cpu_workers, ordered_map
from desync_decl.stores.base import Store, plain_of

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

Buffer = bytes | bytearray | memoryview
FETCH_BATCH = 512 * 1024  # bytes of chunks one fetch task gets
READ_BUFFER = 256 * 1024


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

    def readinto(self, b: WriteableBuffer) -> int:
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


def fetch_workers(store: Store, concurrency: int) -> int:
    """Threads that fetch an index's chunks from ``store``: ``concurrency``, but no more
    than one per core for a store of local files (``fork_safe``). Reading those is
    decompressing and hashing what is in the page cache, work for a core, not a wait:
    threads beyond the cores only take turns at the GIL and each holds its own
    decompression buffers (``untar -i`` of /usr/share on 2 cores, 10 threads -> 2:
    4.3-5.2 -> 4.0 CPU s, 77-110 -> 44 MiB peak RSS). A remote store's reads are
    waits, which ``concurrency`` threads overlap."""
    return cpu_workers(concurrency) if store.fork_safe else max(1, concurrency)


def index_blocks(index: Index, store: Store, *, concurrency: int = 10) -> Iterator[Buffer]:
    """The indexed stream's bytes, chunk by chunk in order.

    Chunks are fetched (read, decompressed, verified) by ``fetch_workers`` threads in
    runs of about ``FETCH_BATCH`` bytes: one task per chunk would pay a future and two
    thread wake-ups per 64 KiB. At most 2 x that many runs are fetched ahead, so
    memory stays bounded whatever the stream's size.
    """
    workers = fetch_workers(store, concurrency)

    def fetch(run: list[IndexChunk]) -> list[Buffer]:
        return [plain_of(store, c.id, c.size, index.sizes.max) for c in run]

    runs = batches(iter(index), lambda c: c.size, FETCH_BATCH)
    for blocks in ordered_map(fetch, runs, workers=workers, window=2 * workers):
        yield from blocks


def index_reader(index: Index, store: Store, *, concurrency: int = 10) -> io.BufferedReader:
    return io.BufferedReader(
        IterReader(index_blocks(index, store, concurrency=concurrency)), READ_BUFFER
    )
