"""The casync index format shared by .caibx (blob) and .caidx (archive) files.

Layout (all u64 little-endian): a 48-byte INDEX header (size, type, feature
flags, min, avg, max), a TABLE header whose size is all ones, one 40-byte item
per chunk (chunk *end* offset + 32-byte id), and a 40-byte tail. The reader
checks everything casync checks and names the byte offset of the first problem.

An index keeps its table compactly (an ``array`` of end offsets and one
``bytes`` of ids, 40 bytes per chunk), so large images stay cheap to hold.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from desync_decl.chunker import MAX_CHUNK_SIZE, ChunkSizes
from desync_decl.errors import FormatError, UsageError
from desync_decl.formats import flags as ff
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
    """An index: header fields plus the chunk table (end offsets and ids)."""

    flags: int
    sizes: ChunkSizes
    ends: array = field(default_factory=lambda: array("Q"))
    ids: bytes = b""

    @classmethod
    def from_chunks(
        cls, flags: int, sizes: ChunkSizes, chunks: Iterable[tuple[int, bytes]]
    ) -> Index:
        """Build from ``(size, id)`` pairs in file order."""
        ends, ids, pos = array("Q"), bytearray(), 0
        for size, cid in chunks:
            pos += size
            ends.append(pos)
            ids += cid
        return cls(flags, sizes, ends, bytes(ids))

    @property
    def digest(self) -> Digest:
        return Digest.from_flags(self.flags)

    @property
    def length(self) -> int:
        """Size of the blob (or catar stream) the index describes."""
        return self.ends[-1] if self.ends else 0

    def __len__(self) -> int:
        return len(self.ends)

    def id(self, i: int) -> ChunkID:
        return ChunkID(self.ids[i * ID_SIZE : (i + 1) * ID_SIZE])

    def chunk(self, i: int) -> IndexChunk:
        start = self.ends[i - 1] if i else 0
        return IndexChunk(start, self.ends[i] - start, self.id(i))

    def __iter__(self) -> Iterator[IndexChunk]:
        start = 0
        ids = self.ids
        for i, end in enumerate(self.ends):
            yield IndexChunk(start, end - start, ChunkID(ids[i * ID_SIZE : (i + 1) * ID_SIZE]))
            start = end

    def unique_ids(self) -> set[ChunkID]:
        ids = self.ids
        return {ChunkID(ids[i : i + ID_SIZE]) for i in range(0, len(ids), ID_SIZE)}

    def file_digest(self) -> str:
        """``<digest>:<hex>`` of the encoded index: its content address, e.g. for pinning."""
        return f"{self.digest.value}:{self.digest.hash(self.encode()).hex()}"

    def encode(self) -> bytes:
        """The index file's bytes, exactly as casync writes them."""
        n = len(self)
        out = bytearray(HEADER_SIZE + TABLE_HEADER_SIZE + n * ITEM_SIZE + TAIL_SIZE)
        _HEADER.pack_into(
            out,
            0,
            HEADER_SIZE,
            CA_FORMAT_INDEX,
            self.flags,
            self.sizes.min,
            self.sizes.avg,
            self.sizes.max,
        )
        _TABLE_HEADER.pack_into(out, HEADER_SIZE, _U64_MAX, CA_FORMAT_TABLE)
        pos = HEADER_SIZE + TABLE_HEADER_SIZE
        ids = self.ids
        for i, end in enumerate(self.ends):
            struct.pack_into("<Q", out, pos, end)
            out[pos + 8 : pos + ITEM_SIZE] = ids[i * ID_SIZE : (i + 1) * ID_SIZE]
            pos += ITEM_SIZE
        table_size = TABLE_HEADER_SIZE + n * ITEM_SIZE + TAIL_SIZE
        _TAIL.pack_into(out, pos, 0, 0, HEADER_SIZE, table_size, CA_FORMAT_TABLE_TAIL_MARKER)
        return bytes(out)


def decode(data: bytes, source: str = "index") -> Index:
    """Parse index bytes, validating what casync validates; errors name ``source`` and offset."""

    def fail(offset: int, what: str) -> FormatError:
        return FormatError(f"{source}: invalid index at byte {offset}: {what}")

    if len(data) < HEADER_SIZE + TABLE_HEADER_SIZE + TAIL_SIZE:
        raise fail(len(data), f"file is truncated ({len(data)} bytes, an index has at least 104)")
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
    ends, ids = _decode_table(data, cmax, fail)
    tail_at = HEADER_SIZE + TABLE_HEADER_SIZE + len(ends) * ITEM_SIZE
    _, z2, index_offset, table_size, marker = _TAIL.unpack_from(data, tail_at)
    if marker != CA_FORMAT_TABLE_TAIL_MARKER or z2:
        raise fail(tail_at, "bad table tail")
    if tail_at + TAIL_SIZE != len(data):
        raise fail(
            tail_at + TAIL_SIZE, f"{len(data) - tail_at - TAIL_SIZE} bytes after the table tail"
        )
    if index_offset != HEADER_SIZE or table_size + HEADER_SIZE != len(data):
        raise fail(tail_at, "table tail does not match the file size")
    return Index(flags, sizes, ends, ids)


def _decode_table(
    data: bytes, cmax: int, fail: Callable[[int, str], FormatError]
) -> tuple[array, bytes]:
    """Items up to the tail (the first item whose end offset is 0), as casync reads them."""
    first = HEADER_SIZE + TABLE_HEADER_SIZE
    slots = (len(data) - first) // ITEM_SIZE
    ends = array("Q")
    ids = bytearray()
    prev = 0
    pos = first
    for end, cid in _ITEM.iter_unpack(memoryview(data)[first : first + slots * ITEM_SIZE]):
        if end == 0:
            return ends, bytes(ids)
        if end <= prev:
            raise fail(pos, f"chunk end offsets not increasing ({end} after {prev})")
        if end - prev > cmax:
            raise fail(pos, f"chunk of {end - prev} bytes exceeds the maximum {cmax}")
        ends.append(end)
        ids += cid
        prev = end
        pos += ITEM_SIZE
    raise fail(len(data), "file is truncated (no table tail)")


def blob_flags(digest: Digest) -> int:
    """Feature flags casync writes for a blob index with this digest."""
    return (ff.BLOB_DEFAULT & ~ff.SHA512_256) | digest.flag
