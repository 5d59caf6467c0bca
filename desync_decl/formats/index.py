"""The casync index format shared by .caibx (blob) and .caidx (archive) files.

Layout (all u64 little-endian): a 48-byte INDEX header (size, type, feature
flags, min, avg, max), a TABLE header whose size is all ones, one 40-byte item
per chunk (chunk *end* offset + 32-byte id), and a 40-byte tail. The reader
checks everything casync checks and names the byte offset of the first problem.

An index keeps its table compactly (an ``array`` of end offsets and one
``bytes`` of ids, 40 bytes per chunk), so large images stay cheap to hold. An
``Index`` may also be a window of a larger one (``origin``): extract plans and writes
a large image a window at a time, at the window's offsets in the blob.
"""

from __future__ import annotations

import io
import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from desync_decl.errors import FormatError, UsageError
from desync_decl.formats import flags as ff
from desync_decl.formats.chunk_sizes import MAX_CHUNK_SIZE, ChunkSizes
from desync_decl.formats.digest import ID_SIZE, ChunkID, Digest

CA_FORMAT_INDEX = 0x96824D9C7B129FF9
CA_FORMAT_TABLE = 0xE75B9E112F17417D
CA_FORMAT_TABLE_TAIL_MARKER = 0x4B4F050E5549ECD1
HEADER_SIZE = 48
TABLE_HEADER_SIZE = 16
ITEM_SIZE = 40
TAIL_SIZE = 40
_U64_MAX = 0xFFFFFFFFFFFFFFFF

_HEADER = struct.Struct("<6Q")
_TABLE_HEADER = struct.Struct("<2Q")
_TAIL = struct.Struct("<5Q")
_ITEM = struct.Struct("<Q32s")
_END = struct.Struct("<Q")
_RUN_STEP = 4096  # chunks of a run added at a time (their ids: 128 KiB)


class IndexChunk(NamedTuple):
    """One table entry, with the start offset and size the file does not store.

    A NamedTuple, not a dataclass: one is made per chunk on every pass over an
    index, and tuples are several times cheaper to create.
    """

    start: int
    size: int
    id: ChunkID

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class Index:
    """An index: header fields plus the chunk table (end offsets and ids).

    ``origin``: where its first chunk starts in the blob, 0 but for a window of a
    larger index (``windows``): its end offsets are the blob's, so a plan made of a
    window writes at the right offsets; its positions count from its first chunk."""

    flags: int
    sizes: ChunkSizes
    ends: array = field(default_factory=lambda: array("Q"))
    ids: bytes = b""
    origin: int = 0

    @classmethod
    def from_chunks(
        cls, flags: int, sizes: ChunkSizes, chunks: Iterable[tuple[int, bytes]]
    ) -> Index:
        """Build from ``(size, id)`` pairs in file order."""
        table = IndexTable()
        table.extend(chunks)
        return table.index(flags, sizes)

    @property
    def digest(self) -> Digest:
        return Digest.from_flags(self.flags)

    @property
    def length(self) -> int:
        """Size of the blob (or catar stream) the index describes; of a window, where
        its last chunk ends."""
        return self.ends[-1] if self.ends else self.origin

    def __len__(self) -> int:
        return len(self.ends)

    def id(self, i: int) -> ChunkID:
        return ChunkID(self.ids[i * ID_SIZE : (i + 1) * ID_SIZE])

    def start(self, i: int) -> int:
        """Where chunk ``i`` starts (the table holds only end offsets)."""
        return self.ends[i - 1] if i else self.origin

    def chunk(self, i: int) -> IndexChunk:
        start = self.start(i)
        return IndexChunk(start, self.ends[i] - start, self.id(i))

    def __iter__(self) -> Iterator[IndexChunk]:
        start = self.origin
        ids = self.ids
        for i, end in enumerate(self.ends):
            yield IndexChunk(start, end - start, ChunkID(ids[i * ID_SIZE : (i + 1) * ID_SIZE]))
            start = end

    def windows(self, chunks: int) -> Iterator[Index]:
        """The index in windows of ``chunks`` chunks (the last may hold fewer): itself
        when it holds no more. Each is a copy of its part of the table."""
        n = len(self)
        if n <= chunks:
            yield self
            return
        for first in range(0, n, chunks):
            last = min(first + chunks, n)
            ids = self.ids[first * ID_SIZE : last * ID_SIZE]
            yield Index(self.flags, self.sizes, self.ends[first:last], ids, self.start(first))

    def unique_ids(self) -> set[ChunkID]:
        ids = self.ids
        return {ChunkID(ids[i : i + ID_SIZE]) for i in range(0, len(ids), ID_SIZE)}

    def file_digest(self) -> str:
        """``<digest>:<hex>`` of the encoded index: its content address, e.g. for pinning."""
        hasher = self.digest.hasher()
        for piece in self.pieces():
            hasher.update(piece)
        return f"{self.digest.value}:{hasher.hexdigest()}"

    def encode(self) -> bytes:
        """The index file's bytes, exactly as casync writes them. Gathered in a
        ``BytesIO``, whose ``getvalue()`` hands over its buffer: a large index is held
        once, not twice (a ``bytearray`` would need a copy to become ``bytes``)."""
        out = io.BytesIO()
        for piece in self.pieces():
            out.write(piece)
        return out.getvalue()

    def pieces(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The index file's bytes in pieces of about ``size``: what writes and hashes a
        large index without holding its bytes whole beside its table."""
        n = len(self)
        yield _head(self.flags, self.sizes)
        ids, end_of, per_piece = memoryview(self.ids), _END.pack, max(1, size // ITEM_SIZE)
        for first in range(0, n, per_piece):
            out = io.BytesIO()
            for i in range(first, min(first + per_piece, n)):
                out.write(end_of(self.ends[i]))
                out.write(ids[i * ID_SIZE : (i + 1) * ID_SIZE])
            yield out.getvalue()
        yield _tail(n)


def _head(flags: int, sizes: ChunkSizes) -> bytes:
    """An index file's header and its table's header (the table runs to the tail)."""
    return _HEADER.pack(
        HEADER_SIZE, CA_FORMAT_INDEX, flags, sizes.min, sizes.avg, sizes.max
    ) + _TABLE_HEADER.pack(_U64_MAX, CA_FORMAT_TABLE)


def _tail(chunks: int) -> bytes:
    """The tail of an index file of ``chunks`` chunks: it states the table's size."""
    table_size = TABLE_HEADER_SIZE + chunks * ITEM_SIZE + TAIL_SIZE
    return _TAIL.pack(0, 0, HEADER_SIZE, table_size, CA_FORMAT_TABLE_TAIL_MARKER)


def _run_ends(end: int, size: int, count: int) -> Iterator[array]:
    """The end offsets of ``count`` chunks of ``size`` after ``end``, ``_RUN_STEP`` at a
    time (a 64 GiB hole is 262,144 chunks: never one object per chunk)."""
    for first in range(0, count, _RUN_STEP):
        n = min(_RUN_STEP, count - first)
        yield array("Q", range(end + size, end + size * n + 1, size))
        end += size * n


WINDOW_CHUNKS = 1 << 16  # chunks extract plans and writes at a time: 4 GiB at 64 KiB each


class Windowed(Protocol):
    """An index as ``extract`` goes through it: header fields and sizes, its table a
    window at a time (an ``Index``, or ``stores.index_file.IndexFile``: a file read
    back in windows)."""

    flags: int
    sizes: ChunkSizes

    @property
    def digest(self) -> Digest: ...

    @property
    def length(self) -> int: ...

    def __len__(self) -> int: ...

    def windows(self, chunks: int) -> Iterator[Index]: ...


class IndexTable:
    """A chunk table growing in file order, 40 bytes per chunk from the start: make
    adds each chunk as its worker returns it, so an image's table costs 0.6 MiB per GiB,
    not the ~160 bytes per chunk a list of ``(size, id)`` tuples held until the end.
    The ids gather in a ``BytesIO``, whose ``getvalue()`` hands over its buffer without
    a copy (a ``bytearray`` would need one to become the index's ``bytes``).

    ``expected``: how many chunks the table will hold, when known (an index file's
    size says it): both buffers are then allocated once at their size and filled in
    place. Grown as items came, reading a 64 GiB image's 10 MiB table took 19 MiB of
    RSS (buffers moved as they grew, around the pieces of the file being read)."""

    def __init__(self, expected: int = 0) -> None:
        self.ends, self._ids, self._end = array("Q", [0]) * expected, io.BytesIO(), 0
        self._n = 0  # chunks added
        if expected:  # sized exactly (one byte over, trimmed in place by getvalue())
            self._ids.seek(expected * ID_SIZE)
            self._ids.write(b"\0")
            self._ids.seek(0)

    def add(self, size: int, cid: bytes) -> None:
        self._end += size
        if self._n < len(self.ends):
            self.ends[self._n] = self._end
        else:
            self.ends.append(self._end)
        self._n += 1
        self._ids.write(cid)

    def extend(self, chunks: Iterable[tuple[int, bytes]]) -> None:
        for size, cid in chunks:
            self.add(size, cid)

    def add_run(self, size: int, cid: bytes, count: int) -> None:
        """``count`` chunks of one id back to back (a hole's zero chunks), added without
        a pair per chunk: a 64 GiB hole is 262,144 of them."""
        for ends in _run_ends(self._end, size, count):
            n = len(ends)
            self.ends[self._n : self._n + n] = ends
            self._n += n
            self._end = ends[-1]
            self._ids.write(cid * n)

    def add_items(self, items: bytes) -> None:
        """Whole 40-byte table items as an index file holds them (end offset, id),
        taken as they are: for a table read back from a file checked before
        (``stores.index_file``), not for bytes that were never checked."""
        with memoryview(items) as view, view.cast("Q") as words:
            ends = array("Q", words[:: ITEM_SIZE // _END.size].tobytes())
            if sys.byteorder != "little":
                ends.byteswap()
            self.ends[self._n : self._n + len(ends)] = ends
            self._n += len(ends)
            for at in range(_END.size, len(items), ITEM_SIZE):
                self._ids.write(view[at : at + ID_SIZE])
        if ends:
            self._end = ends[-1]

    def index(self, flags: int, sizes: ChunkSizes, origin: int = 0) -> Index:
        """The table as an ``Index`` (``origin``: where its first chunk starts, for a
        window of a larger index whose items were added)."""
        if self._n < len(self.ends):  # fewer than expected (the tail's slot): trimmed in place
            del self.ends[self._n :]
        self._ids.truncate(self._n * ID_SIZE)
        return Index(flags, sizes, self.ends, self._ids.getvalue(), origin)


class TableSink(Protocol):
    """Where make puts the chunks of an index, in file order: ``IndexTable`` (held)
    or ``IndexWriter`` (written as they come)."""

    def add(self, size: int, cid: bytes) -> None: ...

    def add_run(self, size: int, cid: bytes, count: int) -> None: ...


class Written(NamedTuple):
    """What an ``IndexWriter`` wrote: the index without its table."""

    chunks: int
    length: int  # of the blob the index describes
    file_digest: str  # ``Index.file_digest()`` of the bytes written


class IndexWriter:
    """An index written to ``write`` as its chunks come, hashed on the way: nothing per
    chunk is held, so make's memory is the same for any size of input (a 64 GiB
    image's table held whole was 10 MiB). The format needs no count up front: the
    table header says "to the tail", and the tail, written by ``finish``, states the
    table's size. The bytes are those ``Index.pieces`` gives for the same chunks."""

    def __init__(
        self, write: Callable[[bytes], object], flags: int, sizes: ChunkSizes, piece: int = 1 << 16
    ) -> None:
        self._write, self._piece = write, piece
        digest = Digest.from_flags(flags)
        self._hasher, self._digest_name = digest.hasher(), digest.value
        self._out = io.BytesIO()
        self.chunks, self.length = 0, 0
        self._out.write(_head(flags, sizes))

    def add(self, size: int, cid: bytes) -> None:
        self.length += size
        self.chunks += 1
        self._out.write(_END.pack(self.length))
        self._out.write(cid)
        if self._out.tell() >= self._piece:
            self._flush()

    def add_run(self, size: int, cid: bytes, count: int) -> None:
        """``count`` chunks of one id (a hole's): items made ``_RUN_STEP`` at a time, the
        end offsets set in place at their stride, not packed one by one."""
        self._flush()
        item = bytes(_END.size) + cid
        for ends in _run_ends(self.length, size, count):
            n = len(ends)
            self.length = ends[-1]
            if sys.byteorder != "little":
                ends.byteswap()
            items = bytearray(item * n)
            with memoryview(items) as view, view.cast("Q") as words:
                words[:: ITEM_SIZE // _END.size] = ends
            self.chunks += n
            self._hasher.update(items)
            self._write(items)

    def finish(self) -> Written:
        """Write the tail (and what is buffered); nothing may be added after."""
        self._out.write(_tail(self.chunks))
        self._flush()
        return Written(self.chunks, self.length, f"{self._digest_name}:{self._hasher.hexdigest()}")

    def _flush(self) -> None:
        data = self._out.getvalue()
        self._out = io.BytesIO()
        if data:
            self._hasher.update(data)
            self._write(data)


MIN_SIZE = HEADER_SIZE + TABLE_HEADER_SIZE + TAIL_SIZE  # an index of no chunks
_FIRST_ITEM = HEADER_SIZE + TABLE_HEADER_SIZE
_Fail = Callable[[int, str], FormatError]


def decode(data: bytes, source: str = "index") -> Index:
    """Parse index bytes, validating what casync validates; errors name ``source`` and offset."""
    fail = _failure(source)
    if len(data) < MIN_SIZE:
        raise _truncated(len(data), fail)
    flags, sizes = _check_header(data, fail)
    table = IndexTable(_items_in(len(data)))
    view = memoryview(data)[: len(data) - (len(data) - _FIRST_ITEM) % ITEM_SIZE]
    tail_at, _ = _check_items(view[_FIRST_ITEM:], _FIRST_ITEM, 0, sizes.max, fail, table)
    if tail_at is None:
        raise fail(len(data), "file is truncated (no table tail)")
    _check_tail(view[tail_at : tail_at + TAIL_SIZE], tail_at, len(data), fail)
    return table.index(flags, sizes)


class Checker:
    """Index bytes checked as they arrive (an upload, a file read in pieces), exactly as
    ``decode`` checks them: a 1 GiB index is checked in the memory of one piece, and
    read (``keep``) in the memory of its compact table, never also of its bytes.

    ``feed`` raises ``FormatError`` as soon as the bytes so far cannot be an index,
    ``finish`` when they end before a whole one."""

    def __init__(self, source: str = "index", *, keep: bool = False, size: int = 0) -> None:
        """``size``: the bytes that will be fed, when known (a file's size): a kept
        table is then allocated once (``IndexTable``'s ``expected``). Never more may
        be fed."""
        self.fail = _failure(source)
        self.table = IndexTable(_items_in(size)) if keep else None
        self.header: tuple[int, ChunkSizes] | None = None
        self.size = 0  # bytes fed
        self.pending = bytearray()  # bytes not checked yet: the head, then part of an item
        self.at = 0  # the file offset of pending[0]
        self.max_chunk: int | None = None  # known once the header is checked
        self.last_end = 0
        self.tail: tuple[bytes, int] | None = None  # the tail's bytes and offset, once seen

    def feed(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.tail is not None:
            return  # bytes after the tail: counted for finish()
        self.pending += data
        if self.max_chunk is None:
            if len(self.pending) < MIN_SIZE:
                return
            self.header = _check_header(self.pending, self.fail)
            self.max_chunk = self.header[1].max
            del self.pending[:_FIRST_ITEM]
            self.at = _FIRST_ITEM
        whole = len(self.pending) - len(self.pending) % ITEM_SIZE
        with memoryview(self.pending) as view:
            items = view[:whole]
            tail_at, self.last_end = _check_items(
                items, self.at, self.last_end, self.max_chunk, self.fail, self.table
            )
            if tail_at is not None:
                start = tail_at - self.at
                self.tail = (bytes(items[start : start + TAIL_SIZE]), tail_at)
            items.release()
        if self.tail is not None:
            self.pending = bytearray()
            return
        del self.pending[:whole]
        self.at += whole

    def finish(self) -> None:
        if self.max_chunk is None:
            raise _truncated(self.size, self.fail)
        if self.tail is None:
            raise self.fail(self.size, "file is truncated (no table tail)")
        tail, tail_at = self.tail
        _check_tail(tail, tail_at, self.size, self.fail)

    def index(self) -> Index:
        """The index fed, once ``finish`` passed (only when made with ``keep``)."""
        assert self.table is not None and self.header is not None, "not kept, or not finished"
        return self.table.index(*self.header)


def _items_in(size: int) -> int:
    """Whole 40-byte items after the header in ``size`` bytes of an index: its chunks
    and its tail, if it is one (never fewer than its chunks)."""
    return max(0, size - _FIRST_ITEM) // ITEM_SIZE


def _failure(source: str) -> _Fail:
    def fail(offset: int, what: str) -> FormatError:
        return FormatError(f"{source}: invalid index at byte {offset}: {what}")

    return fail


def _truncated(size: int, fail: _Fail) -> FormatError:
    return fail(size, f"file is truncated ({size} bytes, an index has at least {MIN_SIZE})")


def _check_header(data: bytes | bytearray | memoryview, fail: _Fail) -> tuple[int, ChunkSizes]:
    """The feature flags and chunk sizes of an index's first 64 bytes, checked."""
    size, typ, flags, cmin, cavg, cmax = _HEADER.unpack_from(data, 0)
    if size != HEADER_SIZE or typ != CA_FORMAT_INDEX:
        raise fail(0, "not a casync index (bad header size or magic)")
    if (bad := ff.problem(flags)) is not None:
        raise fail(16, bad)
    if not (1 <= cmin <= cavg <= cmax <= MAX_CHUNK_SIZE):
        raise fail(24, f"chunk sizes {cmin}:{cavg}:{cmax} out of range")
    try:
        sizes = ChunkSizes(cmin, cavg, cmax)
    except UsageError as e:
        raise fail(24, str(e)) from None
    if _TABLE_HEADER.unpack_from(data, HEADER_SIZE) != (_U64_MAX, CA_FORMAT_TABLE):
        raise fail(HEADER_SIZE, "bad table header")
    return flags, sizes


def _check_items(
    items: memoryview,
    at: int,
    prev: int,
    cmax: int,
    fail: _Fail,
    table: IndexTable | None = None,
) -> tuple[int | None, int]:
    """Table items (whole 40-byte ones, the first at file offset ``at``) up to the first
    whose end offset is 0, as casync reads them: the offset of that one (where the tail
    starts; None when ``items`` holds none) and the last end offset before it. Items
    go to ``table`` when given."""
    pos = at
    for end, cid in _ITEM.iter_unpack(items):
        if end == 0:
            return pos, prev
        if end <= prev:
            raise fail(pos, f"chunk end offsets not increasing ({end} after {prev})")
        if end - prev > cmax:
            raise fail(pos, f"chunk of {end - prev} bytes exceeds the maximum {cmax}")
        if table is not None:
            table.add(end - prev, cid)
        prev = end
        pos += ITEM_SIZE
    return None, prev


def _check_tail(tail: bytes | memoryview, tail_at: int, size: int, fail: _Fail) -> None:
    """The 40-byte tail found at file offset ``tail_at`` of a file of ``size`` bytes."""
    _, z2, index_offset, table_size, marker = _TAIL.unpack_from(tail, 0)
    if marker != CA_FORMAT_TABLE_TAIL_MARKER or z2:
        raise fail(tail_at, "bad table tail")
    if tail_at + TAIL_SIZE != size:
        raise fail(tail_at + TAIL_SIZE, f"{size - tail_at - TAIL_SIZE} bytes after the table tail")
    if index_offset != HEADER_SIZE or table_size + HEADER_SIZE != size:
        raise fail(tail_at, "table tail does not match the file size")


def blob_flags(digest: Digest) -> int:
    """Feature flags casync writes for a blob index with this digest."""
    return (ff.BLOB_DEFAULT & ~ff.SHA512_256) | digest.flag
