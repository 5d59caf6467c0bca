"""The random-access blob reader over a real local store: every range of a small
index, the bounded chunk cache, the null chunk from memory, one fetch per chunk
for concurrent readers, prefetching for sequential streams, and failed fetches
that fail only their own reads."""

from __future__ import annotations

import random
import threading
import time

import pytest

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.ops.blobreader import BlobReader, ChunkLRU
from desync_decl.stores.base import ChunkMissing
from desync_decl.stores.local import LocalStore
from tests.waiting import wait_until

SIZES = ChunkSizes(16, 32, 64)


class CountingStore:
    """A real store that counts fetches per chunk and can hold chunks back at a gate."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.calls: dict[bytes, int] = {}
        self.gates: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return str(self.inner)

    def get_chunk(self, id):
        with self._lock:
            self.calls[id] = self.calls.get(id, 0) + 1
        gate = self.gates.get(id)
        if gate is not None:
            assert gate.wait(10)
        return self.inner.get_chunk(id)

    def has_chunk(self, id):
        return self.inner.has_chunk(id)

    def close(self) -> None:
        pass

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def build(tmp_path, sizes: list[int], *, zeros_at=(), repeat=None, seed=1):
    """A blob cut at ``sizes`` (null chunks at ``zeros_at``, chunk ``repeat[1]`` a copy of
    ``repeat[0]``), its index and a store holding its chunks."""
    rng = random.Random(seed)
    parts = []
    for i, size in enumerate(sizes):
        if i in zeros_at:
            parts.append(bytes(SIZES.max))
        elif repeat and i == repeat[1]:
            parts.append(parts[repeat[0]])
        else:
            parts.append(rng.randbytes(size))
    store = LocalStore(tmp_path / "store", create=True)
    digest = Digest.SHA512_256
    for part in parts:
        store.store_chunk(Chunk(digest.hash(part), plain=part))
    index = Index.from_chunks(blob_flags(digest), SIZES, [(len(p), digest.hash(p)) for p in parts])
    return b"".join(parts), index, CountingStore(store)


def test_every_range_of_a_small_blob_reads_exactly_its_bytes(tmp_path):
    blob, index, store = build(tmp_path, [17, 1, 40, 64, 23, 64, 5, 33], zeros_at={3})
    reader = BlobReader(index, store)
    n = len(blob)
    for offset in range(n + 2):
        for size in range(n + 2 - offset):
            assert reader.read(offset, size) == blob[offset : offset + size], (offset, size)


def test_sequential_pieces_cover_a_range_in_order(tmp_path):
    blob, index, store = build(tmp_path, [30, 64, 1, 50, 64, 12], zeros_at={1})
    reader = BlobReader(index, store)
    for offset, end in [(0, len(blob)), (5, 6), (29, 96), (100, 10_000), (len(blob), len(blob))]:
        assert b"".join(reader.pieces(offset, end, workers=3)) == blob[offset:end]


def test_negative_offsets_and_sizes_are_refused(tmp_path):
    _, index, store = build(tmp_path, [10])
    with pytest.raises(ValueError):
        BlobReader(index, store).read(-1, 5)
    with pytest.raises(ValueError):
        BlobReader(index, store).read(0, -5)


def test_an_empty_index_reads_as_nothing(tmp_path):
    store = LocalStore(tmp_path / "store", create=True)
    reader = BlobReader(Index(blob_flags(Digest.SHA512_256), SIZES), store)
    assert reader.read(0, 100) == b"" and reader.length == 0


def test_the_null_chunk_comes_from_memory_not_from_the_store(tmp_path):
    blob, index, store = build(tmp_path, [20, 64, 64, 20], zeros_at={1, 2})
    null = null_chunk_id(index)
    store.inner.remove_chunk(null)
    reader = BlobReader(index, store)
    assert reader.read(0, len(blob)) == blob
    assert null not in store.calls


def test_a_repeated_chunk_is_fetched_once_while_cached(tmp_path):
    blob, index, store = build(tmp_path, [40, 30, 40, 20], repeat=(0, 2))
    reader = BlobReader(index, store)
    assert reader.read(0, len(blob)) == blob
    assert reader.read(0, len(blob)) == blob
    assert store.total == 3 and reader.fetched == 3


def test_the_cache_stays_within_its_bound_and_refetches_evicted_chunks(tmp_path):
    sizes = [60] * 20
    blob, index, store = build(tmp_path, sizes)
    reader = BlobReader(index, store, cache_size=200)
    rng = random.Random(7)
    for _ in range(300):
        offset = rng.randrange(len(blob))
        assert reader.read(offset, 50) == blob[offset : offset + 50]
        assert reader.cached() <= 200
    assert store.total > 20  # evicted chunks were fetched again


def test_lru_drops_the_least_recently_used_first():
    lru = ChunkLRU(10)
    lru.put(b"a", b"1234")
    lru.put(b"b", b"1234")
    assert lru.get(b"a") is not None  # a is now the most recent
    lru.put(b"c", b"1234")
    assert b"a" in lru and b"b" not in lru and b"c" in lru and lru.size == 8
    lru.put(b"d", b"x" * 11)  # larger than the whole cache: not kept
    assert b"d" not in lru and lru.size == 8


def test_a_missing_chunk_fails_only_the_reads_that_need_it_and_is_not_remembered(tmp_path):
    blob, index, store = build(tmp_path, [40, 40, 40])
    victim = index.chunk(1)
    chunk = store.inner.get_chunk(victim.id)
    store.inner.remove_chunk(victim.id)
    reader = BlobReader(index, store)
    with pytest.raises(ChunkMissing):
        reader.read(30, 20)  # chunks 0 and 1
    assert reader.read(0, 40) == blob[:40]
    assert reader.read(80, 40) == blob[80:]
    store.inner.store_chunk(chunk)
    assert reader.read(30, 20) == blob[30:50]


def test_concurrent_readers_share_one_fetch_per_chunk(tmp_path):
    blob, index, store = build(tmp_path, [64, 64, 64])
    target = index.chunk(1)
    store.gates[target.id] = gate = threading.Event()
    reader = BlobReader(index, store)
    results: list[bytes] = []

    def read() -> None:
        results.append(reader.read(70, 30))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: store.calls.get(target.id) == 1, "the one fetch has begun")
    waiting = reader._loads[target.id].future._condition  # Future.result() waits on it
    wait_until(lambda: len(waiting._waiters) == 7, "the other seven wait for that fetch")
    gate.set()
    for t in threads:
        t.join()
    assert results == [blob[70:100]] * 8
    assert store.calls[target.id] == 1


def test_many_threads_reading_random_ranges_get_the_right_bytes(tmp_path):
    rng = random.Random(3)
    sizes = [rng.randrange(1, 65) for _ in range(200)]
    blob, index, store = build(tmp_path, sizes, zeros_at={10, 11, 50})
    reader = BlobReader(index, store, cache_size=2000, workers=3)
    errors: list[str] = []

    def work(seed: int) -> None:
        r = random.Random(seed)
        stream = reader.stream()
        for _ in range(200):
            offset, size = r.randrange(len(blob) + 10), r.randrange(300)
            got = stream.read(offset, size) if seed % 2 else reader.read(offset, size)
            if got != blob[offset : offset + size]:
                errors.append(f"{offset}+{size}")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader.close()
    assert errors == []


def test_a_sequential_stream_prefetches_the_next_chunks(tmp_path):
    blob, index, store = build(tmp_path, [64] * 40)
    reader = BlobReader(index, store, cache_size=64 * 16, workers=2)
    stream = reader.stream()
    for offset in range(0, 64 * 6, 64):
        assert stream.read(offset, 64) == blob[offset : offset + 64]
    deadline = time.monotonic() + 5
    while store.total < 6 + 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.total >= 10  # chunks after the sixth were fetched without being read
    reader.close()
    assert max(store.calls.values()) == 1
    # the window never exceeds half the cache: 8 chunks past the last read
    assert store.total <= 6 + 8


def test_random_reads_do_not_prefetch(tmp_path):
    blob, index, store = build(tmp_path, [64] * 40)
    reader = BlobReader(index, store, workers=2)
    stream = reader.stream()
    for i in (5, 20, 2, 33, 11, 27):
        assert stream.read(i * 64, 10) == blob[i * 64 : i * 64 + 10]
    reader.close()
    assert store.total == 6


def test_a_reader_takes_over_a_queued_prefetch_instead_of_waiting_behind_others(tmp_path):
    blob, index, store = build(tmp_path, [64] * 10)
    store.gates[index.chunk(1).id] = gate = threading.Event()
    reader = BlobReader(index, store, workers=1)
    reader._prefetch(range(1, 6))  # the only worker blocks on chunk 1; 2..5 wait in the queue
    start = time.monotonic()
    assert reader.read(4 * 64, 64) == blob[256:320]
    assert time.monotonic() - start < 5
    gate.set()
    reader.close()
    assert store.calls[index.chunk(4).id] == 1


def test_a_failed_prefetch_is_retried_by_the_reader_that_needs_it(tmp_path):
    blob, index, store = build(tmp_path, [64] * 10)
    victim = index.chunk(3)
    chunk = store.inner.get_chunk(victim.id)
    store.inner.remove_chunk(victim.id)
    reader = BlobReader(index, store, workers=2)
    stream = reader.stream()
    for offset in (0, 64, 128):
        stream.read(offset, 64)  # sequential: chunk 3 is prefetched and fails quietly
    wait_until(lambda: store.calls.get(victim.id) == 1, "the prefetch of chunk 3 has begun")
    wait_until(lambda: victim.id not in reader._loads, "the prefetch of chunk 3 has failed")
    store.inner.store_chunk(chunk)
    assert stream.read(192, 64) == blob[192:256]
    reader.close()
