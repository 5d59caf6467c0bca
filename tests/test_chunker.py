"""The C chunker makes casync's cuts: casync's hash check values, the vectors, and
random data cross-checked against the slow reference chunker in tests/reference_chunker.py."""

from __future__ import annotations

import hashlib
import io
import mmap
import random
from collections import deque
from itertools import accumulate

import pytest
from desync_decl._chunker_cffi import ffi, lib
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_decl.chunker import _DROP_STEP, Chunker, _iter_mapped, discriminator, iter_chunks
from desync_decl.errors import UsageError
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.units import MiB
from tests import reference_chunker as ref
from tests.conftest import ROOT
from tests.vectors import VECTORS
from tests.vectors.gen_input import INPUTS
from tests.waiting import wait_until

# SHA-256 of casync's buzhash_table (src/cachunker.c) packed as 256 little-endian u32.
TABLE_SHA256 = "5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660"


@pytest.fixture(scope="module")
def table() -> list[int]:
    t = ref.load_table(ROOT / "ext" / "buzhash_table.h")
    packed = b"".join(v.to_bytes(4, "little") for v in t)
    assert hashlib.sha256(packed).hexdigest() == TABLE_SHA256
    return t


def c_sizes(data: bytes, sizes: ChunkSizes, block: int = 1 << 20) -> list[int]:
    return [len(d) for _, d in iter_chunks(io.BytesIO(data), sizes, block_size=block)]


def test_window_hash_matches_spec_check_values(table):
    zeros, counting = bytes(48), bytes(range(48))
    assert lib.ca_chunker_window_hash(ffi.from_buffer("uint8_t[]", zeros)) == 0x9E489E48
    assert lib.ca_chunker_window_hash(ffi.from_buffer("uint8_t[]", counting)) == 0x6B67DEC6
    assert ref.window_hash(zeros, table) == 0x9E489E48
    assert ref.window_hash(counting, table) == 0x6B67DEC6


@pytest.mark.parametrize(
    ("avg", "expected"),
    [(65536, 49535), (4096, 3075), (3000, 2252), (16384, 12318), (1 << 20, 886711), (8192, 6153)],
)
def test_discriminator_follows_casync_formula(avg, expected):
    assert lib.ca_chunker_discriminator(avg) == expected
    assert discriminator(ChunkSizes(avg // 4, avg, avg * 4)) == expected


def test_discriminator_is_clamped_into_min_max():
    assert discriminator(ChunkSizes(64, 64, 256)) == 64  # formula gives 48
    assert discriminator(ChunkSizes(48, 64, 256)) == 48


def spec_input() -> bytes:
    """SHA-256 of counters, truncated to 1 MiB: its cuts below are casync's."""
    out = bytearray()
    i = 0
    while len(out) < 1 << 20:
        out += hashlib.sha256(i.to_bytes(8, "little")).digest()
        i += 1
    data = bytes(out[: 1 << 20])
    assert hashlib.sha256(data).hexdigest() == (
        "8936491f7e7dd3ca297960ec425e8375f1b9db51278d5fff5481205c0992a132"
    )
    return data


def test_spec_vector_default_sizes():
    data = spec_input()
    chunks = list(iter_chunks(io.BytesIO(data), ChunkSizes(16384, 65536, 262144)))
    assert len(chunks) == 16
    first = [(s, len(d), hashlib.new("sha512_256", d).hexdigest()[:16]) for s, d in chunks[:3]]
    assert first == [
        (0, 80921, "0fac270dc01e8432"),
        (80921, 57299, "9f0c3d2c709f1b9d"),
        (138220, 49192, "ccb2b7fdf100a825"),
    ]
    assert [len(d) for _, d in chunks[3:6]] == [49960, 59423, 52114]
    assert (chunks[-1][0], len(chunks[-1][1])) == (945783, 102793)


def test_spec_vector_small_sizes_tests_boundary_at_min():
    sizes = c_sizes(spec_input(), ChunkSizes(64, 256, 1024))
    assert len(sizes) == 4133
    assert sizes.count(64) == 25
    assert sizes[:12] == [84, 296, 143, 211, 178, 92, 203, 293, 703, 193, 166, 732]
    assert sum(sizes[:100]) == 27856 and sizes[100] == 64


def test_all_zero_data_is_cut_at_max_only():
    assert c_sizes(bytes(1_000_000), ChunkSizes(16384, 65536, 262144)) == [262144] * 3 + [213568]


def test_empty_input_has_no_chunks():
    assert c_sizes(b"", ChunkSizes(16384, 65536, 262144)) == []


@pytest.mark.parametrize("sizes", [ChunkSizes(4096, 4096, 4096), ChunkSizes(16, 16, 16)])
def test_fixed_size_mode_cuts_every_avg_bytes(sizes):
    data = random.Random(1).randbytes(10 * sizes.max + 7)
    assert c_sizes(data, sizes) == [sizes.max] * 10 + [7]


def test_vector_cases_match_reference_chunker(table):
    """The reference agrees with casync on the vectors, so it is a fair judge below."""
    for case, name, sizes in [
        ("rand_16384_cs16_64_256", "rand_16384", (16, 64, 256)),
        ("rand_256k_cs1000_3000_20000", "rand_256k", (1000, 3000, 20000)),
        ("rand_262145", "rand_262145", (16384, 65536, 262144)),
    ]:
        data = INPUTS[name]()
        expected = [
            int(line.split()[1]) for line in (VECTORS / "blob" / case / "chunks.txt").open()
        ]
        assert ref.chunk_sizes(data, *sizes, table) == expected
        assert c_sizes(data, ChunkSizes(*sizes)) == expected


@st.composite
def chunk_params(draw):
    cmin = draw(st.integers(1, 600))
    cavg = draw(st.integers(cmin, 1500))
    cmax = draw(st.integers(max(cavg, 48), 4000))
    return ChunkSizes(cmin, cavg, cmax)


@settings(max_examples=150, deadline=None)
@given(params=chunk_params(), seed=st.integers(0, 2**32), size=st.integers(0, 30000))
def test_c_chunker_matches_reference_on_random_data(table, params, seed, size):
    data = random.Random(seed).randbytes(size)
    assert c_sizes(data, params) == ref.chunk_sizes(data, params.min, params.avg, params.max, table)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), pieces=st.lists(st.integers(1, 5000), min_size=1, max_size=40))
def test_streaming_scan_gives_the_same_cuts_whatever_the_feed(seed, pieces):
    """Feeding the scanner in arbitrary pieces (resuming mid-chunk) changes nothing."""
    sizes = ChunkSizes(64, 256, 1024)
    data = random.Random(seed).randbytes(sum(pieces))
    chunker = Chunker(sizes)
    cuts, start, fed = [], 0, 0
    for n in pieces:
        fed += n
        for end in chunker.scan(memoryview(data)[start:fed]):
            cuts.append(start + end)
        start = cuts[-1] if cuts else 0
    whole = list(accumulate(c_sizes(data, sizes)))
    assert cuts == [c for c in whole if c <= start]


def test_many_cuts_in_one_scan_exceed_the_cut_buffer():
    """More cuts than the C call returns at once are all reported."""
    data = random.Random(5).randbytes(2_000_000)
    sizes = ChunkSizes(48, 64, 96)
    cuts = Chunker(sizes).scan(data)
    assert len(cuts) > 4096
    assert all(48 <= b - a <= 96 for a, b in zip([0, *cuts], cuts, strict=False))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16:64:256", ChunkSizes(16384, 65536, 262144)),
        ("1K:4K:16K", ChunkSizes(1024, 4096, 16384)),
        ("1000B:3000B:20000B", ChunkSizes(1000, 3000, 20000)),
        ("4096B", ChunkSizes(1024, 4096, 16384)),
        ("64", ChunkSizes(16384, 65536, 262144)),
        ("1M:2M:4M", ChunkSizes(1 << 20, 2 << 20, 4 << 20)),
    ],
)
def test_chunk_size_parsing(text, expected):
    assert ChunkSizes.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("16:8:256", "min <= avg <= max"),
        ("1:2", "MIN:AVG:MAX"),
        ("abc", "not a size"),
        ("0:0:0", "min <= avg <= max"),
        ("16B:32B:40B", "at least 48"),
        ("1:1:200000", "128 MiB"),
        ("4x:8:16", "not a size"),
    ],
)
def test_invalid_chunk_sizes_are_refused_with_the_reason(text, why):
    with pytest.raises(UsageError, match=why) as e:
        ChunkSizes.parse(text)
    assert text in str(e.value)


@pytest.mark.parametrize("position", [0, 1, 5000, 4096])
def test_mapped_file_and_stream_give_the_same_chunks(tmp_path, monkeypatch, position):
    """A regular file is memory-mapped, a stream is read; the chunks are identical,
    also when pages behind the scan are dropped from the mapping mid-way."""
    import desync_decl.chunker as chunker_module

    monkeypatch.setattr(chunker_module, "_DROP_LAG", 64 * 1024)
    data = random.Random(11).randbytes(3_000_000) + bytes(700_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    sizes = ChunkSizes(1024, 4096, 16384)
    with path.open("rb") as f:
        f.seek(position)
        assert chunker_module._map(f) is not None
        mapped = [(o, bytes(d)) for o, d in iter_chunks(f, sizes, block_size=100_000)]
    streamed = [(o, bytes(d)) for o, d in iter_chunks(io.BytesIO(data[position:]), sizes)]
    assert mapped == streamed
    assert b"".join(d for _, d in mapped) == data[position:]


def test_chunk_views_outlive_the_mapping_generator(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(random.Random(12).randbytes(500_000))
    with path.open("rb") as f:
        chunks = list(iter_chunks(f, ChunkSizes(1024, 4096, 16384)))
    assert b"".join(chunks[i][1] for i in range(len(chunks))) == path.read_bytes()


def test_scan_releases_the_gil():
    """Another Python thread keeps running while one long scan is inside C."""
    import threading
    import time

    data = bytes(random.Random(13).randbytes(1 << 20)) * 96  # ~100 MiB: tens of ms in C
    chunker = Chunker(ChunkSizes(16384, 65536, 262144))
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())

    ticker = threading.Thread(target=tick)
    ticker.start()
    wait_until(lambda: ticks, "the ticking thread runs")
    began = time.perf_counter()
    cuts = chunker.scan(data)
    ended = time.perf_counter()
    stop.set()
    ticker.join()
    assert len(cuts) > 100
    inside = [t for t in ticks if began < t < ended]
    assert ended - began > 0.02
    assert len(inside) > 100, "no Python thread ran during the scan: the GIL was held"


class _WatchedMap(mmap.mmap):
    """A read-only mapping that records the ranges dropped from it."""

    dropped: list[tuple[int, int]]

    def madvise(self, option: int, start: int = 0, length: int = -1) -> None:
        self.dropped.append((start, start + length))
        super().madvise(option, start, length)


def test_the_mapped_input_is_dropped_right_behind_what_the_consumer_finished(tmp_path):
    """With ``finished``, pages go once the consumer is done with them, never before:
    every drop ends at or before what it had finished, and the pages kept behind it
    are at most a step (make's memory is then what is in flight, not a fixed lag)."""
    path = tmp_path / "input"
    path.write_bytes(random.Random(7).randbytes(24 * MiB))
    done = [0]
    with open(path, "rb") as f:
        mapped = _WatchedMap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mapped.dropped = []
        in_flight: deque[int] = deque()  # ends of pieces handed out, not yet finished
        for piece in _iter_mapped(mapped, 0, DEFAULT_CHUNK_SIZES, 1 * MiB, (), lambda: done[0]):
            offset, view = piece
            assert all(stop <= done[0] for _, stop in mapped.dropped)
            in_flight.append(offset + len(view))
            if len(in_flight) > 40:  # about 2.5 MiB behind the scan, as workers would be
                done[0] = in_flight.popleft()
    assert mapped.dropped, "nothing was dropped"
    assert [a for a, _ in mapped.dropped] == [0] + [b for _, b in mapped.dropped[:-1]]
    assert mapped.dropped[-1][1] >= done[0] - _DROP_STEP - 1 * MiB
