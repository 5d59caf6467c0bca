"""Content-defined chunking with casync's exact cut rule, over the C scanner in ``ext/``.

Python only moves buffers: the per-byte rolling hash runs in C (with the GIL
released), fed with blocks of several MiB, so a chunking thread costs about a
second per GiB while hashing and compression threads use the other core.
"""

from __future__ import annotations

import io
import mmap
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from desync_decl._chunker_cffi import ffi, lib
from desync_decl.errors import UsageError
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.units import MiB

READ_BLOCK_SIZE = 4 * MiB
_DROP_LAG = 16 * MiB  # mapped input pages this far behind the scan are unmapped


def discriminator(sizes: ChunkSizes) -> int:
    """casync's discriminator for ``sizes.avg``, clamped into [min, max]."""
    return max(sizes.min, min(sizes.max, lib.ca_chunker_discriminator(sizes.avg)))


class Chunker:
    """Streaming state of one chunking pass (not thread-safe: one per stream)."""

    def __init__(self, sizes: ChunkSizes = DEFAULT_CHUNK_SIZES) -> None:
        self.sizes = sizes
        self._state = ffi.new("ca_chunker *")
        if lib.ca_chunker_init(self._state, sizes.min, sizes.avg, sizes.max) != 0:
            raise UsageError(f"invalid chunk sizes {sizes}")
        self._cuts_len = 4096
        self._cuts = ffi.new("uint64_t[]", self._cuts_len)

    def scan(self, buf: bytes | bytearray | memoryview) -> list[int]:
        """Chunk end offsets in ``buf``, whose first byte starts the current chunk.

        The bytes after the last offset are an unfinished chunk: pass them
        again, followed by new data, in the next call (they are not re-hashed).
        """
        view = ffi.from_buffer("uint8_t[]", buf)
        cuts: list[int] = []
        base = 0
        while True:
            n = lib.ca_chunker_scan(
                self._state, view + base, len(view) - base, self._cuts, self._cuts_len
            )
            if n == 0:
                return cuts
            found = ffi.unpack(self._cuts, n)
            cuts.extend(base + c for c in found)
            base += found[-1]
            if n < self._cuts_len:
                return cuts


def iter_chunks(
    reader: BinaryIO,
    sizes: ChunkSizes = DEFAULT_CHUNK_SIZES,
    *,
    block_size: int = READ_BLOCK_SIZE,
) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(offset, data)`` for every chunk from the reader's position on, in order.

    ``offset`` counts from that position. A regular file is memory-mapped: chunks
    are views of the page cache, with no buffer allocated or copied (allocating a
    fresh multi-MiB buffer per block made the kernel serialize the worker threads
    on the address-space lock). Other streams are read block by block.
    """
    mapped = _map(reader)
    if mapped is None:
        yield from _iter_read(reader, sizes, block_size)
    else:
        yield from _iter_mapped(*mapped, sizes, block_size)


def _map(reader: BinaryIO) -> tuple[mmap.mmap, int] | None:
    """The whole file mapped read-only and the reader's position, if it is a regular file."""
    try:
        fd = reader.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    position = reader.tell()
    if not stat.S_ISREG(st.st_mode) or st.st_size <= position:
        return None
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ), position


def _iter_mapped(
    mapped: mmap.mmap, position: int, sizes: ChunkSizes, block_size: int
) -> Iterator[tuple[int, memoryview]]:
    """Chunks as views of the mapping; pages far behind are dropped from the mapping.

    Dropping (MADV_DONTNEED) only unmaps them: the page cache keeps the data, and
    a worker still reading a dropped page faults it back in with the same bytes.
    Views stay valid after the generator ends; the mapping goes with the last one.
    """
    chunker = Chunker(sizes)
    view = memoryview(mapped)
    size = len(mapped)
    start = scanned_to = position
    dropped = position & ~(mmap.PAGESIZE - 1)
    while True:
        base = start  # the buffer passed to scan starts at the unfinished chunk
        scanned_to = min(size, max(scanned_to, base) + block_size)
        for end in chunker.scan(view[base:scanned_to]):
            yield start - position, view[start : base + end]
            start = base + end
        if scanned_to == size:
            if start < size:
                yield start - position, view[start:size]
            return
        if start - dropped >= 2 * _DROP_LAG:
            upto = (start - _DROP_LAG) & ~(mmap.PAGESIZE - 1)
            mapped.madvise(mmap.MADV_DONTNEED, dropped, upto - dropped)
            dropped = upto


def _iter_read(
    reader: BinaryIO, sizes: ChunkSizes, block_size: int
) -> Iterator[tuple[int, memoryview]]:
    """Chunks of a stream read block by block (pipes, block devices).

    Each block is a fresh buffer that is never written again once chunks point
    into it, so the views stay valid while worker threads hash them (desync
    #314 corrupted stores by reusing a buffer). Memory: one block plus at most
    ``max`` bytes carried over, and whatever blocks the consumer still holds.
    """
    chunker = Chunker(sizes)
    block_size = max(block_size, sizes.max)
    carry = b""
    offset = 0  # stream offset of carry[0]
    while True:
        block = bytearray(len(carry) + block_size)
        block[: len(carry)] = carry
        filled = len(carry) + _read_into(reader, memoryview(block)[len(carry) :])
        at_eof = filled < len(block)
        view = memoryview(block)[:filled]
        start = 0
        for end in chunker.scan(view):
            yield offset + start, view[start:end]
            start = end
        offset += start
        carry = bytes(view[start:])
        if at_eof:
            if carry:
                yield offset, memoryview(carry)
            return


def _read_into(reader: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` as far as the stream allows; short only at end of stream."""
    total = 0
    while total < len(buf):
        n = reader.readinto(buf[total:])  # type: ignore[attr-defined]  # every binary file has it; typing.BinaryIO omits it
        if not n:
            break
        total += n
    return total
