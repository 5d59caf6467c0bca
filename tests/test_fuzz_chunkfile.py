"""Hostile chunk files: bombs stay bounded, mutations of real chunk files fail cleanly.

A chunk file is decompressed with the size the index gives as its limit. A small
stream that expands far past the limit (a zstd frame that does not declare its
size, a gzip or xz stream) must be refused while it is being decompressed,
with memory in the order of the limit, never of what it would expand to.
"""

from __future__ import annotations

import gzip
import lzma
import random
import tracemalloc

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.formats import chunkfile
from desync_decl.formats.chunkfile import DecodeError
from reliability.fuzz import mutate, seeds, targets

LIMIT = 64 * 1024
BOMB = 64 * 1024 * 1024  # what the hostile streams below expand to: 1000 times the limit


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    zeros = bytes(BOMB)
    no_size = zstandard.ZstdCompressor(level=19, write_content_size=False)
    small = chunkfile.compress(b"fine")
    return {
        "zstd without a content size": no_size.compress(zeros),
        "zstd declaring its size": zstandard.ZstdCompressor(level=19).compress(zeros),
        "zstd after a small frame": small + no_size.compress(zeros),
        "gzip": gzip.compress(zeros, 9),
        "gzip after a small member": gzip.compress(b"fine") + gzip.compress(zeros, 9),
        "xz": lzma.compress(zeros),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "zstd without a content size",
        "zstd declaring its size",
        "zstd after a small frame",
        "gzip",
        "gzip after a small member",
        "xz",
    ],
)
def test_a_bomb_is_refused_without_expanding_it(bombs, kind):
    data = bombs[kind]
    assert len(data) < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=f"more than {LIMIT}"):
            chunkfile.decompress(data, LIMIT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # xz keeps its dictionary (8 MiB at casync's preset); the output stays near the limit
    assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated for a {LIMIT}-byte limit"


@pytest.mark.parametrize("compress", [chunkfile.compress, gzip.compress, lzma.compress])
def test_a_truncated_stream_is_a_decode_error(compress):
    data = compress(random.Random(1).randbytes(50_000))
    for cut in (len(data) - 1, len(data) // 2, 12):
        with pytest.raises(DecodeError, match=r"truncated|zstd"):
            chunkfile.decompress(data[:cut], LIMIT)


def test_frames_and_members_at_the_limit_are_read_whole():
    data = random.Random(2).randbytes(LIMIT // 2)
    assert chunkfile.decompress(chunkfile.compress(data) * 2, LIMIT) == data * 2
    assert chunkfile.decompress(gzip.compress(data) * 2 + bytes(8), LIMIT) == data * 2
    checked = zstandard.ZstdCompressor(write_checksum=True).compress(data)
    assert chunkfile.decompress(checked, LIMIT) == data
    with pytest.raises(DecodeError, match="zstd"):  # the checksum is checked
        chunkfile.decompress(checked[:-1] + bytes([checked[-1] ^ 1]), LIMIT)
    with pytest.raises(DecodeError, match="after the end"):
        chunkfile.decompress(chunkfile.compress(data) + b"junk", LIMIT)


def test_frames_are_bounded_by_the_limit_left_after_the_ones_before():
    """Each frame is decoded into the room the earlier frames left, not the whole limit."""
    data = random.Random(3).randbytes(LIMIT - 10)
    no_size = zstandard.ZstdCompressor(write_content_size=False)
    first = chunkfile.compress(data)
    assert (
        chunkfile.decompress(first + no_size.compress(b"0123456789"), LIMIT) == data + b"0123456789"
    )
    with pytest.raises(DecodeError, match=f"more than {LIMIT}"):
        chunkfile.decompress(first + no_size.compress(b"0123456789!"), LIMIT)
    full = chunkfile.compress(data + b"0123456789")  # no room left after it
    assert chunkfile.decompress(full + no_size.compress(b""), LIMIT) == data + b"0123456789"
    with pytest.raises(DecodeError, match=f"more than {LIMIT}"):
        chunkfile.decompress(full + no_size.compress(b"!"), LIMIT)


def test_an_xz_header_asking_for_a_huge_dictionary_is_refused():
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 96 << 20}]  # the format allows 1.5 GiB
    data = lzma.compress(b"x" * 1000, format=lzma.FORMAT_XZ, filters=filters)
    with pytest.raises(DecodeError, match=r"[Mm]emory"):
        chunkfile.decompress(data, LIMIT)


# --- mutations of real chunk files ----------------------------------------------------

SEEDS = seeds.chunk_seeds()
ops = mutate.strategy(4)
FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FAST
@given(st.sampled_from(SEEDS), ops, st.sampled_from([0, 1, 100, LIMIT]))
def test_mutated_chunk_files_decode_or_fail_with_decode_error(seed, mutation, limit):
    targets.chunk(mutate.apply(seed, mutation), limit)


@settings(FAST, max_examples=100)
@given(st.sampled_from(SEEDS), ops)
def test_mutated_encrypted_chunks_decode_or_fail_with_decode_error(seed, mutation):
    targets.encrypted_chunk(mutate.apply(seed, mutation), LIMIT)
