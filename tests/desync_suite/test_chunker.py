"""Ports of desync's ``chunker_test.go``: our chunker (``desync_decl.chunker``, the C
scanner under it, and the ``chunk`` verb) on desync's inputs, with desync's default
sizes (16:64:256 KiB).

desync's ``Chunker.Next`` returns a chunk per call and an empty one at the end;
ours yields ``(offset, data)`` until the input ends, so "an empty chunk at the end"
is "no more chunks". desync's ``Advance`` (skip bytes, then chunk afresh) is our
``chunk --start``.
"""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from desync_decl._chunker_cffi import ffi, lib

from desync_decl.chunker import Chunker, discriminator, iter_chunks
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from tests.desync_suite.chunker_input import LARGE_FILE

MIN, AVG, MAX = DEFAULT_CHUNK_SIZES.min, DEFAULT_CHUNK_SIZES.avg, DEFAULT_CHUNK_SIZES.max


def chunks_of(data: bytes) -> list[tuple[int, int, str]]:
    """(start, size, SHA-512/256 id) of every chunk of ``data``, read as a stream."""
    return [
        (start, len(piece), hashlib.new("sha512_256", piece).hexdigest())
        for start, piece in iter_chunks(io.BytesIO(data))
    ]


def test_chunker_large_file(lib_data):
    """TestChunkerLargeFile: chunker.input cut where desync cuts it, read as a stream
    and as a mapped file; nothing after the last chunk."""
    data = (lib_data / "chunker.input").read_bytes()
    assert chunks_of(data) == LARGE_FILE
    with open(lib_data / "chunker.input", "rb") as f:
        mapped = [(s, len(p), hashlib.new("sha512_256", p).hexdigest()) for s, p in iter_chunks(f)]
    assert mapped == LARGE_FILE


def test_chunker_empty_file():
    """TestChunkerEmptyFile: no data, no chunk."""
    assert chunks_of(b"") == []


def test_chunker_small_file():
    """TestChunkerSmallFile: 16 bytes are one chunk at 0."""
    assert [(s, n) for s, n, _ in chunks_of(bytes(range(16)))] == [(0, 16)]


def test_chunker_no_boundary():
    """TestChunkerNoBoundary: zeros have no boundary: every chunk is max long and
    starts at a multiple of max."""
    found = chunks_of(bytes(1024 * 1024))
    assert [(s, n) for s, n, _ in found] == [(k * MAX, MAX) for k in range(4)]


@pytest.mark.parametrize("size", [MIN, AVG, MAX], ids=["min", "avg", "max"])
def test_chunker_bounds(size):
    """TestChunkerBounds: exactly min, avg or max bytes (of zeros) are one chunk."""
    assert [(s, n) for s, n, _ in chunks_of(bytes(size))] == [(0, size)]


def test_chunker_advance(cli, tmp_path):
    """TestChunkerAdvance: null chunk + 128 'a' + null chunk + 12 max of 'b'.
    Chunking from 0 starts with the null chunk; from just after the 'a's (desync's
    Advance past them) again the null chunk; from after the 'b's nothing is left."""
    null = bytes(MAX)
    data = null + b"a" * 128 + null + b"b" * (12 * MAX)
    (tmp_path / "input").write_bytes(data)
    null_id = hashlib.new("sha512_256", null).hexdigest()

    def first_chunk(start: int) -> str | None:
        r = cli("chunk", "-S", start, tmp_path / "input")
        assert r.code == 0, r.err
        lines = r.out.splitlines()
        return lines[0] if lines else None

    assert first_chunk(0) == f"0\t{MAX}\t{null_id}"
    assert first_chunk(MAX + 128) == f"{MAX + 128}\t{MAX}\t{null_id}"
    assert first_chunk(len(data)) is None


# --- TestChunkerBoundaryTest ---------------------------------------------------------------
#
# desync tests its division-free boundary test (hash % d == d - 1 without a division)
# against the plain rule for the hash values where a wrap-around could misfire. Ours is
# Lemire's fastmod in the C scanner, out of reach from Python; so we make 48-byte
# windows whose hash is each such value and ask the scanner whether it cuts there.
# The buzhash of a window is the XOR of one term per position, so a window with a
# chosen hash is a linear system over GF(2): two candidate bytes for each of 32
# positions, and which of the two to take is solved for.


def window_hash(window: bytes) -> int:
    return lib.ca_chunker_window_hash(ffi.from_buffer("uint8_t[]", window))


class WindowMaker:
    """48-byte windows with any chosen 32-bit hash."""

    def __init__(self) -> None:
        rng = random.Random(48)
        while True:
            self.base = bytearray(rng.randbytes(48))
            self.alternative = rng.randbytes(48)
            # what taking the alternative byte at position i XORs into the hash
            zero = window_hash(bytes(self.base))
            self.flips = []
            for i in range(48):
                w = bytearray(self.base)
                w[i] = self.alternative[i]
                self.flips.append(window_hash(bytes(w)) ^ zero)
            self.zero = zero
            self.basis = self._basis()
            if self.basis is not None:
                return

    def _basis(self) -> dict[int, tuple[int, int]] | None:
        """Gaussian elimination: pivot bit -> (vector, mask of positions that make it)."""
        basis: dict[int, tuple[int, int]] = {}
        for i, flip in enumerate(self.flips):
            vector, mask = flip, 1 << i
            for bit in sorted(basis, reverse=True):
                if vector >> bit & 1:
                    vector ^= basis[bit][0]
                    mask ^= basis[bit][1]
            if vector:
                basis[vector.bit_length() - 1] = (vector, mask)
        return basis if len(basis) == 32 else None

    def make(self, target: int) -> bytes:
        need, mask = target ^ self.zero, 0
        for bit in sorted(self.basis, reverse=True):
            if need >> bit & 1:
                need ^= self.basis[bit][0]
                mask ^= self.basis[bit][1]
        window = bytearray(self.base)
        for i in range(48):
            if mask >> i & 1:
                window[i] = self.alternative[i]
        assert window_hash(bytes(window)) == target
        return bytes(window)


def cuts_at_min(sizes: ChunkSizes, window: bytes) -> bool:
    """Whether a chunk whose first min bytes end with ``window`` is cut right there:
    the first boundary test is of the window ending at min."""
    data = bytes(sizes.min - len(window)) + window + bytes(sizes.max)
    return Chunker(sizes).scan(data)[:1] == [sizes.min]


@pytest.mark.parametrize("avg", [16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024])
def test_chunker_boundary_test(avg):
    """TestChunkerBoundaryTest: at the hash values where h + 1 or h - (d - 1) wraps
    around 2^32, and at the multiples of d near both ends, the scanner cuts exactly
    when h % d == d - 1."""
    sizes = ChunkSizes(avg // 4, avg, avg * 4)
    d = discriminator(sizes)
    top = 2**32 - 1
    last = top - (top - (d - 1)) % d  # the highest hash that is a boundary
    values = {0, 1, 2, d - 3, d - 2, d - 1, d, d + 1, 2 * d - 1, 3 * d - 1, 3 * d}
    values |= {top, top - 1, top - 2, last - 1, last, last + 1, last - d, top - 3 * d}
    maker = WindowMaker()
    wrong = [h for h in sorted(values) if cuts_at_min(sizes, maker.make(h)) != (h % d == d - 1)]
    assert wrong == []
    assert cuts_at_min(sizes, maker.make(d - 1)) and cuts_at_min(sizes, maker.make(last))
