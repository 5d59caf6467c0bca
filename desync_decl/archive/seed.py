"""Directory trees as seeds for ``untar -i``: chunks an index needs, taken from a
tree on disk instead of a store (desync #242).

The tree is encoded with the index's feature flags and chunked with its chunk
sizes, exactly as ``tar -i`` would; every chunk whose id the index lists is
kept in an unnamed temporary file. Unchanged files give the same bytes, so
their chunks (and, past the first differences, their neighbours') come from
disk. The seed is then a store: it answers ``ChunkMissing`` for the rest, so a
router asks the real stores for those.
"""

from __future__ import annotations

import os
import tempfile
import threading

from desync_decl.archive.disk_source import DiskOptions, disk_tree
from desync_decl.archive.streams import IterReader
from desync_decl.chunker import iter_chunks
from desync_decl.formats.catar import encode
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.parallel import batched_map
from desync_decl.stores.base import ChunkMissing


class TreeSeed:
    """A read-only store of the chunks a tree shares with an index."""

    fork_safe = False  # its table lives in this process

    def __init__(self, name: str) -> None:
        self.name = name
        self._spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._table: dict[ChunkID, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.hits = 0  # chunks served
        self.bytes_served = 0

    def __str__(self) -> str:
        return f"seed {self.name}"

    def get_chunk(self, id: ChunkID) -> Chunk:
        where = self._table.get(id)
        if where is None:
            raise ChunkMissing(id, str(self))
        data = os.pread(self._spool.fileno(), where[1], where[0])
        with self._lock:
            self.hits += 1
            self.bytes_served += len(data)
        return Chunk(id, plain=data)

    def has_chunk(self, id: ChunkID) -> bool:
        return id in self._table

    def close(self) -> None:
        self._spool.close()

    def __len__(self) -> int:
        return len(self._table)

    def _add(self, id: ChunkID, data: memoryview) -> None:
        if id not in self._table:
            offset = self._spool.seek(0, os.SEEK_END)
            self._spool.write(data)
            self._table[id] = (offset, len(data))


def tree_seed(path: str | os.PathLike, index: Index, *, concurrency: int = 10) -> TreeSeed:
    """The chunks of ``path``'s archive (with ``index``'s flags and sizes) that ``index`` uses."""
    wanted = index.unique_ids()
    digest = index.digest
    seed = TreeSeed(os.fsdecode(path))

    def hashed(item: tuple[int, memoryview]) -> tuple[ChunkID, memoryview]:
        return digest.hash(item[1]), item[1]

    try:
        stream = encode(disk_tree(path, DiskOptions(index.flags)))
        chunks = iter_chunks(IterReader(stream), index.sizes)  # type: ignore[arg-type]  # encode defers no payload here: Buffers; iter_chunks takes any binary stream
        for cid, data in batched_map(
            hashed, chunks, workers=concurrency, weight=lambda c: len(c[1])
        ):
            if cid in wanted:
                seed._add(cid, data)
        seed._spool.flush()
    except BaseException:
        seed.close()
        raise
    return seed
