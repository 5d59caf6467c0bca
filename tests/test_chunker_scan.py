"""The unrolled C scan (ext/chunker.c) cuts exactly where casync's rule says.

The scan tests four window lengths per round with a multiply-and-compare instead
of ``h % d``: these tests pin that test against ``h % d == d - 1`` on the values
where a reciprocal goes wrong if it is going to (around every multiple of d, at
the ends of the 32-bit range, for powers of two and for large d), and the whole
scan against the slow reference chunker on many buffers and chunk sizes, with
cuts landing in each of the four lanes of a round.
"""

from __future__ import annotations

import random

import pytest
from desync_decl._chunker_cffi import lib
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_decl.chunker import Chunker, discriminator
from desync_decl.formats.chunk_sizes import ChunkSizes
from tests import reference_chunker as ref
from tests.conftest import ROOT

U32 = 1 << 32
MAX_D = 128 << 20  # casync's largest chunk: no discriminator is larger


@pytest.fixture(scope="module")
def table() -> list[int]:
    return ref.load_table(ROOT / "ext" / "buzhash_table.h")


def edge_hashes(d: int, rng: random.Random) -> list[int]:
    """Hashes next to multiples of d (the first ones, the last ones below 2^32 and
    random ones), the ends of the 32-bit range, and random values."""
    values = {0, 1, 2, U32 - 1, U32 - 2, U32 - 3}
    last = (U32 - 1) // d
    multiples = {1, 2, 3, last, last - 1, last + 1}
    multiples.update(rng.randrange(1, last + 2) for _ in range(50))
    for k in multiples:
        values.update(k * d + delta for delta in (-2, -1, 0, 1))
    values.update(rng.randrange(U32) for _ in range(200))
    return sorted(v for v in values if 0 <= v < U32)


def discriminators() -> list[int]:
    rng = random.Random(7)
    ds = {1, 2, 3, 47, 48, 49535, 65536, 3075, MAX_D, MAX_D - 1, 886711}
    ds.update(1 << k for k in range(28))
    ds.update((1 << k) - 1 for k in range(2, 28))
    ds.update((1 << k) + 1 for k in range(2, 27))
    ds.update(rng.randrange(1, MAX_D) for _ in range(150))
    return sorted(ds)


def test_cut_test_without_division_is_exact():
    """For every discriminator, the reciprocal test agrees with ``h % d == d - 1``."""
    rng = random.Random(1)
    wrong = []
    for d in discriminators():
        sizes = ChunkSizes(d, d, d)  # fixed sizes: the discriminator is d itself
        assert discriminator(sizes) == d
        state = Chunker(sizes)._state
        for h in edge_hashes(d, rng):
            if bool(lib.ca_chunker_is_cut(state, h)) != (h % d == d - 1):
                wrong.append((d, h))
    assert wrong == []


def test_every_discriminator_from_casyncs_formula_is_tested_exactly():
    """Discriminators as the formula makes them from averages (clamped into min..max)."""
    rng = random.Random(2)
    for avg in [64, 100, 1000, 4096, 65536, 1 << 20, 8 << 20, 64 << 20, MAX_D]:
        sizes = ChunkSizes(1, avg, MAX_D)
        d = discriminator(sizes)
        state = Chunker(sizes)._state
        for h in edge_hashes(d, rng):
            assert bool(lib.ca_chunker_is_cut(state, h)) == (h % d == d - 1), (avg, d, h)


@st.composite
def buffers(draw) -> bytes:
    """Random bytes with runs of zeros and repeats (the window then sees equal bytes)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["rand", "rand", "zeros", "repeat"]))
        n = draw(st.integers(1, 12_000))
        if kind == "zeros":
            parts.append(bytes(n))
        elif kind == "repeat":
            parts.append(bytes([rng.randrange(256)]) * n)
        else:
            parts.append(rng.randbytes(n))
    return b"".join(parts)


@st.composite
def small_sizes(draw) -> ChunkSizes:
    """Chunk sizes with frequent cuts (small discriminators), so every lane cuts."""
    cmin = draw(st.integers(1, 300))
    cavg = draw(st.integers(cmin, 600))
    cmax = draw(st.integers(max(cavg, 48), 3000))
    return ChunkSizes(cmin, cavg, cmax)


def scan_sizes(data: bytes, sizes: ChunkSizes) -> list[int]:
    """Chunk sizes from one scan of the whole buffer (the last chunk is what is left)."""
    cuts = Chunker(sizes).scan(data)
    ends = [*cuts, len(data)] if not cuts or cuts[-1] < len(data) else cuts
    return [b - a for a, b in zip([0, *ends], ends, strict=False)]


@settings(max_examples=300, deadline=None)
@given(data=buffers(), sizes=small_sizes())
def test_scan_matches_reference_on_many_buffers_and_sizes(table, data, sizes):
    assert scan_sizes(data, sizes) == ref.chunk_sizes(data, sizes.min, sizes.avg, sizes.max, table)


def test_cuts_land_in_every_lane_of_the_unrolled_round(table):
    """Chunk lengths past the first test, modulo 4, take every value: each of the
    four tests per round has made cuts, and they agree with the reference."""
    rng = random.Random(3)
    data = rng.randbytes(200_000)
    for sizes in [ChunkSizes(48, 64, 256), ChunkSizes(50, 80, 300), ChunkSizes(1, 100, 1000)]:
        got = scan_sizes(data, sizes)
        assert got == ref.chunk_sizes(data, sizes.min, sizes.avg, sizes.max, table)
        first = max(sizes.min, 48)
        lanes = {(s - first) % 4 for s in got[:-1] if first < s < sizes.max}
        assert lanes == {0, 1, 2, 3}
