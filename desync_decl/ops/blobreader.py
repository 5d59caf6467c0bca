"""Random access to a blob through its index: any byte range, fetched chunk by chunk.

- The chunk holding an offset is found by binary search over the index's end offsets.
- Decompressed chunks are kept in a small LRU bounded in bytes and keyed by id, so a
  re-read or a chunk repeated in the blob costs no fetch. The null chunk (``max`` zero
  bytes) comes from memory and never touches the store.
- Readers on several threads share one fetch per chunk. A reader never waits behind
  queued prefetches: it takes a fetch that has not started yet and does it itself.
- A ``Stream`` (one per open file) notices sequential reading and prefetches the chunks
  after it on a small pool, its window doubling up to half the cache (desync reads
  strictly one chunk at a time, which crawls on a high-latency store).
- Every chunk comes through ``plain_of``: verified by the store, length checked. A
  failed fetch is raised to the reader that needed it and never cached, so the next
  read tries again; a failed prefetch is dropped quietly (the reader will retry it).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index, IndexChunk
from desync_decl.parallel import ordered_map
from desync_decl.stores.base import ChunkInvalid, Store, plain_of

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 8 << 20

Data = bytes | memoryview


class ChunkLRU:
    """Decompressed chunks by id, least recently used dropped first; not thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._items: OrderedDict[ChunkID, Data] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, id: ChunkID) -> bool:
        return id in self._items

    def get(self, id: ChunkID) -> Data | None:
        data = self._items.get(id)
        if data is not None:
            self._items.move_to_end(id)
        return data

    def put(self, id: ChunkID, data: Data) -> None:
        if len(data) > self.capacity or id in self._items:
            return
        self._items[id] = data
        self.size += len(data)
        while self.size > self.capacity:
            _, old = self._items.popitem(last=False)
            self.size -= len(old)


class _Load:
    """One fetch of a chunk that readers may wait for; ``taken`` once a thread runs it."""

    __slots__ = ("future", "taken")

    def __init__(self) -> None:
        self.future: Future[Data] = Future()
        self.taken = False


class Stream:
    """Where one sequential reader is (e.g. one open file handle), for its prefetching."""

    def __init__(self, reader: BlobReader) -> None:
        self._reader = reader
        self._lock = threading.Lock()
        self.last = -10  # index of the last chunk the previous read touched
        self.window = 0  # bytes to keep prefetched past it
        self.ahead = 0  # chunks before this one were already asked for

    def read(self, offset: int, size: int) -> bytes:
        return self._reader.read(offset, size, self)

    def advance(self, first: int, last: int, avg: int, limit: int) -> tuple[int, int]:
        """Record a read of chunks ``first..last``; returns (first chunk, bytes) to prefetch."""
        with self._lock:
            if self.last - 1 <= first <= self.last + 2:  # the kernel may reorder a little
                self.window = min(limit, max(2 * self.window, 2 * avg))
            else:
                self.window, self.ahead = 0, 0
            self.last = last
            return max(last + 1, self.ahead), self.window

    def asked(self, stop: int) -> None:
        """Chunks before ``stop`` are now being prefetched."""
        with self._lock:
            self.ahead = max(self.ahead, stop)


class BlobReader:
    """Reads of any byte range of the blob ``index`` describes, from ``store``."""

    def __init__(
        self,
        index: Index,
        store: Store,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        workers: int = 4,
    ) -> None:
        self.index, self.store = index, store
        self._ends = index.ends
        self._null_id = null_chunk_id(index) if len(index) else None
        self._zeros = bytes(index.sizes.max) if len(index) else b""
        self._cache = ChunkLRU(cache_size)
        self._loads: dict[ChunkID, _Load] = {}
        self._lock = threading.Lock()
        self._workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self.fetched = 0  # chunks fetched from the store

    @property
    def length(self) -> int:
        return self.index.length

    def stream(self) -> Stream:
        return Stream(self)

    def read(self, offset: int, size: int, stream: Stream | None = None) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at the end of the blob)."""
        chunks = self.span(offset, size)
        if not chunks:
            return b""
        end = min(offset + size, self.length)
        self.fetch_ahead(chunks, stream)
        parts = []
        for i in chunks:
            c = self.index.chunk(i)
            data = memoryview(self.chunk(i))
            parts.append(data[max(offset, c.start) - c.start : min(end, c.end) - c.start])
        return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)

    def span(self, offset: int, size: int) -> range:
        """The chunks holding ``size`` bytes at ``offset`` (none past the end)."""
        if offset < 0 or size < 0:
            raise ValueError("offset and size must not be negative")
        end = min(offset + size, self.length)
        if offset >= end:
            return range(0)
        first = bisect.bisect_right(self._ends, offset)
        return range(first, bisect.bisect_right(self._ends, end - 1, lo=first) + 1)

    def fetch_ahead(self, chunks: range, stream: Stream | None) -> None:
        """Start fetching the chunks of a read after its first, and when ``stream``
        reads sequentially, the chunks after it."""
        self._prefetch(chunks[1:])
        if stream is not None:
            self._read_ahead(stream, chunks[0], chunks[-1])

    def chunk(self, i: int) -> Data:
        """The verified bytes of chunk ``i``."""
        return self._chunk(self.index.chunk(i))

    def pieces(self, offset: int, end: int, *, workers: int) -> Iterator[memoryview]:
        """The bytes of ``offset..end`` in order, a piece per chunk, ``workers`` chunks
        fetched ahead (for one sequential pass, e.g. ``cat``)."""
        end = min(end, self.length)

        def fetch(i: int) -> tuple[IndexChunk, Data]:
            return self.index.chunk(i), self.chunk(i)

        chunks = self.span(offset, max(0, end - offset))
        for c, data in ordered_map(fetch, chunks, workers=workers):
            yield memoryview(data)[max(offset, c.start) - c.start : min(end, c.end) - c.start]

    def close(self) -> None:
        """Stop prefetching (fetches already running finish); reads still work."""
        with self._lock:
            self._closed, pool, self._pool = True, self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def cached(self) -> int:
        """Bytes of decompressed chunks held."""
        with self._lock:
            return self._cache.size

    def is_null(self, c: IndexChunk) -> bool:
        """Whether ``c`` is the null chunk (``max`` zero bytes, never fetched)."""
        return c.id == self._null_id and c.size == len(self._zeros)

    def _chunk(self, c: IndexChunk) -> Data:
        if self.is_null(c):
            return self._zeros
        with self._lock:
            data = self._cache.get(c.id)
            if data is None:
                load = self._loads.get(c.id) or self._loads.setdefault(c.id, _Load())
                mine, load.taken = not load.taken, True
        if data is None:
            data = self._fetch(c, load) if mine else load.future.result()
        if len(data) != c.size:  # the same id listed with another size: a corrupt index
            raise ChunkInvalid(c.id, str(self.store), f"{len(data)} bytes, the index says {c.size}")
        return data

    def _fetch(self, c: IndexChunk, load: _Load) -> Data:
        try:
            data = plain_of(self.store, c.id, c.size, self.index.sizes.max)
        except BaseException as e:  # whatever it is, waiting readers must hear of it
            with self._lock:
                self._loads.pop(c.id, None)
            load.future.set_exception(e)
            raise
        with self._lock:
            self._cache.put(c.id, data)
            self._loads.pop(c.id, None)
            self.fetched += 1
        load.future.set_result(data)
        return data

    def _read_ahead(self, stream: Stream, first: int, last: int) -> None:
        start, window = stream.advance(first, last, self.index.sizes.avg, self._cache.capacity // 2)
        if window == 0:
            return
        # the chunks holding the ``window`` bytes after this read, less those already asked for
        base = self._ends[last]
        stop = bisect.bisect_left(self._ends, base + window, lo=last + 1) + 1
        stop = min(stop, len(self._ends))
        stream.asked(stop)
        self._prefetch(range(start, stop))

    def _prefetch(self, indexes: Iterable[int]) -> None:
        """Fetch these chunks in the background unless cached, in flight or null."""
        for i in indexes:
            c = self.index.chunk(i)
            if c.id == self._null_id:
                continue
            with self._lock:
                if self._closed or c.id in self._cache or c.id in self._loads:
                    continue
                load = self._loads[c.id] = _Load()
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._workers, "desync-prefetch")
                self._pool.submit(self._background, c, load)

    def _background(self, c: IndexChunk, load: _Load) -> None:
        with self._lock:
            if load.taken:  # a reader got there first and is fetching it
                return
            load.taken = True
        try:
            self._fetch(c, load)
        except DesyncError as e:
            log.debug("prefetch of chunk %d failed: %s", c.start, e)
