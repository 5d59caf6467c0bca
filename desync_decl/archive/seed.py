"""Directory trees as seeds for ``untar -i``: chunks an index needs, taken from a
tree on disk instead of a store (desync #242).

The tree is encoded with the index's feature flags and chunked with its chunk
sizes, exactly as ``tar -i`` would; for every chunk whose id the index lists,
the seed remembers where its bytes are: the small pieces of archive framing
(headers, goodbye tables) in memory, the payload parts as (file, offset,
length) in the tree. Nothing is copied to disk: a seed of a 100 GB model costs
reads, never 100 GB of writes (it used to spool every chunk into a temporary
file). A chunk is read back from the files when asked for, each file opened
from the tree's root fd one component at a time with ``O_NOFOLLOW``, and
verified against its id: a file changed (or replaced by the untar itself)
since the seed was made is a missing chunk, and a router asks the real stores
for it, as for the chunks the tree never had.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from desync_decl.archive.disk_source import DiskNode, DiskOptions, disk_tree
from desync_decl.archive.streams import IterReader
from desync_decl.archive.tree_walk import O_DIR, open_tree
from desync_decl.chunker import iter_chunks
from desync_decl.formats.catar import encode
from desync_decl.formats.catar.encoder import Buffer
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.parallel import batched_map
from desync_decl.stores.base import ChunkMissing

if TYPE_CHECKING:
    from desync_decl.formats.catar.encoder import Piece, SourceNode

_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# A part of a chunk: framing bytes, or (path components, offset, length) in a file.
FilePart = tuple[tuple[bytes, ...], int, int]
Part = bytes | FilePart


class TreeSeed:
    """A read-only store of the chunks a tree shares with an index."""

    fork_safe = False  # its table lives in this process

    def __init__(self, name: str, root_fd: int, digest: Digest) -> None:
        self.name = name
        self._root = root_fd
        self._digest = digest
        self._table: dict[ChunkID, tuple[Part, ...]] = {}
        self._lock = threading.Lock()
        self.hits = 0  # chunks served
        self.bytes_served = 0

    def __str__(self) -> str:
        return f"seed {self.name}"

    def get_chunk(self, id: ChunkID) -> Chunk:
        parts = self._table.get(id)
        if parts is None:
            raise ChunkMissing(id, str(self))
        try:
            data = b"".join(p if isinstance(p, bytes) else self._read(*p) for p in parts)
        except OSError:
            raise ChunkMissing(id, str(self)) from None  # the file is gone or unreadable now
        if self._digest.hash(data) != id:
            raise ChunkMissing(id, str(self))  # a file changed since: the stores have it
        with self._lock:
            self.hits += 1
            self.bytes_served += len(data)
        return Chunk(id, plain=data)

    def has_chunk(self, id: ChunkID) -> bool:
        return id in self._table

    def close(self) -> None:
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def __len__(self) -> int:
        return len(self._table)

    def _read(self, path: tuple[bytes, ...], offset: int, length: int) -> bytes:
        """``length`` bytes of the file ``path`` below the root from ``offset``, never
        through a symlink (a short file raises: the chunk is not there any more)."""
        fd = os.dup(self._root)
        try:
            for part in path[:-1]:
                inner = os.open(part, O_DIR, dir_fd=fd)
                os.close(fd)
                fd = inner
            inner = os.open(path[-1], _O_FILE, dir_fd=fd)
            os.close(fd)
            fd = inner
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError("not a regular file")
            out = bytearray()
            while len(out) < length:
                block = os.pread(fd, length - len(out), offset + len(out))
                if not block:
                    raise OSError("file shrank")
                out += block
            return bytes(out)
        finally:
            os.close(fd)


class _FileBlock(bytes):
    """A block of a file's payload, tagged with where it was read."""

    path: tuple[bytes, ...]
    offset: int


class _Traced:
    """A source node whose payload blocks say which file and offset they are."""

    __slots__ = ("_node", "entry", "rdev", "size", "target")

    def __init__(self, node: DiskNode) -> None:
        self._node = node
        self.entry, self.size, self.target, self.rdev = (
            node.entry,
            node.size,
            node.target,
            node.rdev,
        )

    def payload(self) -> Iterator[bytes]:
        path = tuple(p for p in self._node.path.split(b"/") if p not in (b"", b"."))
        offset = 0
        for block in self._node.payload():
            tagged = _FileBlock(block)
            tagged.path, tagged.offset = path, offset
            offset += len(block)
            yield tagged

    def deferred_payload(self) -> None:
        return None

    def children(self) -> Iterator[tuple[bytes, _Traced]]:
        for name, child in self._node.children():
            assert isinstance(child, DiskNode)  # a seed's DiskOptions encode no child in C
            yield name, _Traced(child)


class _Positions:
    """The encoder's pieces as a stream, remembering where each piece came from until
    the chunks that cover it are cut (``parts``)."""

    def __init__(self) -> None:
        self.pieces: deque[tuple[int, Buffer]] = deque()  # (stream offset, piece)
        self.end = 0

    def recorded(self, pieces: Iterator[Piece]) -> Iterator[Buffer]:
        """The pieces, each remembered at its offset (none is deferred here)."""
        for piece in pieces:
            assert isinstance(piece, (bytes, bytearray, memoryview))
            self.pieces.append((self.end, piece))
            self.end += len(piece)
            yield piece

    def parts(self, start: int, length: int) -> tuple[Part, ...]:
        """Where the stream's bytes ``[start, start + length)`` are; pieces wholly
        before the end are forgotten (chunks come in order)."""
        end = start + length
        out: list[Part] = []
        for at, piece in self.pieces:
            if at >= end:
                break
            lo, hi = max(at, start) - at, min(at + len(piece), end) - at
            if hi <= lo:
                continue
            if isinstance(piece, _FileBlock):
                out.append((piece.path, piece.offset + lo, hi - lo))
            else:
                out.append(bytes(piece[lo:hi]))
        while self.pieces and self.pieces[0][0] + len(self.pieces[0][1]) <= end:
            self.pieces.popleft()
        return tuple(out)


def tree_seed(path: str | os.PathLike, index: Index, *, concurrency: int = 10) -> TreeSeed:
    """Where ``path``'s archive (with ``index``'s flags and sizes) holds the chunks
    ``index`` uses."""
    wanted = index.unique_ids()
    digest = index.digest
    root = open_tree(path, "seed from")
    if root is None:
        raise FileNotFoundError(os.fsdecode(path))
    seed = TreeSeed(os.fsdecode(path), root, digest)

    def hashed(item: tuple[memoryview, tuple[Part, ...]]) -> tuple[ChunkID, tuple[Part, ...]]:
        return digest.hash(item[0]), item[1]

    positions = _Positions()

    def located() -> Iterator[tuple[memoryview, tuple[Part, ...]]]:
        source: SourceNode = _Traced(disk_tree(path, DiskOptions(index.flags)))
        reader = IterReader(positions.recorded(encode(source)))
        for offset, data in iter_chunks(reader, index.sizes):  # type: ignore[arg-type]  # IterReader is a binary stream
            yield data, positions.parts(offset, len(data))

    try:
        for cid, parts in batched_map(
            hashed, located(), workers=concurrency, weight=lambda c: len(c[0])
        ):
            if cid in wanted and cid not in seed._table:
                seed._table[cid] = parts
    except BaseException:
        seed.close()
        raise
    return seed
