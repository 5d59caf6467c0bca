"""A store that keeps what it fetches for the length of a run, so a chunk read several
times (to list an archive, then to extract it) crosses the network once."""

from __future__ import annotations

import os
import tempfile
import threading

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import ChunkMissing, Store


class Spool:
    """A store that keeps what it fetches from ``inner`` in an unnamed temporary file,
    so a chunk crosses the network once per run however often it is read."""

    fork_safe = False  # what it keeps, it keeps in this process

    def __init__(self, inner: Store | None, *, keep: set[ChunkID] | None = None) -> None:
        self.inner = inner
        self.keep = keep  # the chunks worth keeping (None: all)
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._table: dict[ChunkID, tuple[int, int]] = {}
        self._end = 0
        self._lock = threading.Lock()
        self.fetched = 0  # chunks fetched from ``inner``
        self.bytes_fetched = 0

    def __str__(self) -> str:
        return str(self.inner) if self.inner is not None else "spool"

    def reading_from(self, inner: Store) -> Spool:
        self.inner = inner
        return self

    def get_chunk(self, id: ChunkID) -> Chunk:
        with self._lock:
            where = self._table.get(id)
        if where is not None:
            return Chunk(id, plain=os.pread(self._file.fileno(), where[1], where[0]))
        if self.inner is None:
            raise ChunkMissing(id, str(self))
        data = bytes(self.inner.get_chunk(id).plain())
        with self._lock:
            if self.keep is not None and id not in self.keep:
                self.fetched += 1
                self.bytes_fetched += len(data)
            elif id not in self._table:
                self._table[id] = (self._end, len(data))
                os.pwrite(self._file.fileno(), data, self._end)
                self._end += len(data)
                self.fetched += 1
                self.bytes_fetched += len(data)
        return Chunk(id, plain=data)

    def has_chunk(self, id: ChunkID) -> bool:
        with self._lock:
            if id in self._table:
                return True
        return self.inner is not None and self.inner.has_chunk(id)

    def close(self) -> None:
        self._file.close()  # never the inner store: the run's resolver owns it
