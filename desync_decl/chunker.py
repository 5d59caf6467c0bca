"""Content-defined chunking with casync's exact cut rule, over the C scanner in ``ext/``.

Python only moves buffers: the per-byte rolling hash runs in C (with the GIL
released), fed with blocks of several MiB, so a chunking thread costs about half
a second per GiB while hashing and compression threads use the other core.

A sparse file's holes are not scanned (``iter_pieces``): inside zeros the window
hash is a constant, so the cuts there follow from the chunk sizes alone, and the
chunks wholly inside a hole come out as ``ZeroRun``s that nobody needs to read.
"""

from __future__ import annotations

import io
import mmap
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from desync_decl._chunker_cffi import ffi, lib
from desync_decl.errors import UsageError
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.fsutil import find_holes
from desync_decl.units import MiB

READ_BLOCK_SIZE = (
    2 * MiB
)  # scanned per call; with the drop behind what workers finished, make's peak memory
_DROP_LAG = 16 * MiB  # mapped input pages this far behind the scan are unmapped
_DROP_STEP = 1 * MiB  # ... or, when the consumer says what it finished, that far behind it
WINDOW = 48  # bytes in the rolling hash's window (CA_CHUNKER_WINDOW)


@dataclass(frozen=True, slots=True)
class ZeroRun:
    """``count`` chunks of ``size`` zero bytes each, back to back from ``offset``: the
    chunks inside a hole, which have one id per size and need not be read."""

    offset: int
    size: int
    count: int


Piece = tuple[int, memoryview] | ZeroRun  # a chunk's offset and bytes, or zero chunks


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

    def skip_zeros(self, done: int, zeros: int) -> tuple[int, int, int]:
        """Move past ``zeros`` zero bytes that follow the ``done`` bytes of the current
        chunk, without reading them; ``(first, step, count)``: they hold ``count`` cuts,
        ``first + i * step`` bytes after the current chunk's start.

        Only valid when every window the scan would test in them lies inside the
        zeros: scan their first ``WINDOW`` bytes (and up to the chunk's first tested
        length) first. After it, pass the following bytes from the current chunk's
        start (the last cut, or the old start if there was none) to ``scan``.
        """
        out = ffi.new("uint64_t[2]")
        count = lib.ca_chunker_skip_zeros(self._state, done, zeros, out, out + 1)
        return out[0], out[1], count


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
    on the address-space lock). Other streams are read block by block. Every byte
    is scanned; ``iter_pieces`` skips holes.
    """
    mapped = _map(reader)
    if mapped is None:
        yield from _iter_read(reader, sizes, block_size)
        return
    for piece in _iter_mapped(*mapped, sizes, block_size, holes=()):
        assert not isinstance(piece, ZeroRun)  # only holes make them
        yield piece


def iter_pieces(
    reader: BinaryIO,
    sizes: ChunkSizes = DEFAULT_CHUNK_SIZES,
    *,
    block_size: int = READ_BLOCK_SIZE,
    holes: Sequence[tuple[int, int]] | None = None,
    finished: Callable[[], int] | None = None,
) -> Iterator[Piece]:
    """``iter_chunks`` that skips a sparse file's holes: the chunks wholly inside a
    hole come as ``ZeroRun``s, computed without reading or hashing the hole.

    The cuts are the same as ``iter_chunks``'s. ``holes`` (sorted, disjoint
    ``(first, stop)`` file offsets that read as zeros) defaults to what
    ``SEEK_HOLE`` finds; a caller may name zero ranges of its own. ``finished``
    says how many bytes from the start the consumer is done with (every piece
    before that offset processed): the mapped input's pages are then dropped right
    behind it instead of a fixed lag behind the scan, which keeps make's peak memory
    at the pieces in flight whatever the number of workers.
    """
    mapped = _map(reader)
    if mapped is None:
        yield from _iter_read(reader, sizes, block_size)
        return
    data, position = mapped
    if holes is None:
        holes = find_holes(reader.fileno(), position, len(data))
    yield from _iter_mapped(data, position, sizes, block_size, holes, finished)


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


class _MappedScan:
    """One pass of the chunker over a mapped file, hole by hole.

    ``start`` is the current chunk's first byte and ``scanned_to`` how far the
    chunker has looked, both file offsets; ``position`` is where the caller's
    offsets count from. Pages far behind are dropped from the mapping.
    """

    def __init__(
        self,
        mapped: mmap.mmap,
        position: int,
        sizes: ChunkSizes,
        block_size: int,
        finished: Callable[[], int] | None = None,
    ) -> None:
        self.mapped, self.position, self.block_size = mapped, position, block_size
        self.finished = finished
        self.chunker = Chunker(sizes)
        self.first_test = max(sizes.min, WINDOW)
        self.view = memoryview(mapped)
        self.start = self.scanned_to = position
        self.dropped = position & ~(mmap.PAGESIZE - 1)

    def scan_to(self, limit: int) -> Iterator[Piece]:
        """Scan every byte up to ``limit``, in blocks; yield the chunks that end there."""
        while self.scanned_to < limit:
            base = self.start  # the buffer passed to scan starts at the unfinished chunk
            self.scanned_to = min(limit, self.scanned_to + self.block_size)
            for end in self.chunker.scan(self.view[base : self.scanned_to]):
                yield self.start - self.position, self.view[self.start : base + end]
                self.start = base + end
            self.drop()

    def skip_hole(self, first: int, stop: int) -> Iterator[Piece]:
        """Chunk the zeros of ``[first, stop)``, reading only what a window needs."""
        # Scanned: the hole's first WINDOW bytes, and up to the chunk's first tested
        # length; from there on every window tested holds only zeros.
        yield from self.scan_to(min(stop, max(first + WINDOW, self.start + self.first_test)))
        if self.scanned_to == stop:
            return
        at, step, count = self.chunker.skip_zeros(
            self.scanned_to - self.start, stop - self.scanned_to
        )
        self.scanned_to = stop
        if not count:
            return
        if self.start < first:  # the chunk began before the hole: it holds data
            yield self.start - self.position, self.view[self.start : self.start + at]
        elif at != step:
            yield ZeroRun(self.start - self.position, at, 1)
        else:
            at, count = 0, count + 1  # its first chunk is like the others
        if count > 1:
            yield ZeroRun(self.start + at - self.position, step, count - 1)
        self.start += at + (count - 1) * step
        self.drop()

    def drop(self) -> None:
        """Unmap the pages behind what the consumer finished, or far behind the scan
        when it does not say (``_iter_mapped`` says why either is safe)."""
        if self.finished is None:
            behind, step = self.start - _DROP_LAG, _DROP_LAG
        else:
            behind, step = min(self.start, self.position + self.finished()), _DROP_STEP
        upto = behind & ~(mmap.PAGESIZE - 1)
        if upto - self.dropped >= step:
            self.mapped.madvise(mmap.MADV_DONTNEED, self.dropped, upto - self.dropped)
            self.dropped = upto


def _iter_mapped(
    mapped: mmap.mmap,
    position: int,
    sizes: ChunkSizes,
    block_size: int,
    holes: Sequence[tuple[int, int]],
    finished: Callable[[], int] | None = None,
) -> Iterator[Piece]:
    """Chunks as views of the mapping, and the zero chunks of ``holes`` as ``ZeroRun``s.

    Dropping (MADV_DONTNEED) only unmaps pages: the page cache keeps the data, and
    a worker still reading a dropped page faults it back in with the same bytes.
    Views stay valid after the generator ends; the mapping goes with the last one.
    """
    scan = _MappedScan(mapped, position, sizes, block_size, finished)
    size = len(mapped)
    tail_is_zero = False
    for first, stop in holes:
        first, stop = max(first, scan.scanned_to), min(stop, size)  # the part not scanned
        if first >= stop:
            continue
        yield from scan.scan_to(first)
        yield from scan.skip_hole(first, stop)
        tail_is_zero = stop == size and scan.start >= first
    yield from scan.scan_to(size)
    if scan.start < size:
        offset = scan.start - position
        if tail_is_zero:  # the last chunk lies in a hole that ends the file
            yield ZeroRun(offset, size - scan.start, 1)
        else:
            yield offset, scan.view[scan.start : size]


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
