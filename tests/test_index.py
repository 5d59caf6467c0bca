"""The .caibx reader and writer: byte-identical round trips and precise errors."""

from __future__ import annotations

import struct

import pytest

from desync_decl.errors import FormatError
from desync_decl.formats import index as fmt
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from tests.vector_cases import blob_cases

CASES = blob_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_vector_index_decodes_and_encodes_to_the_same_bytes(case):
    raw = (case.dir / "index.caibx").read_bytes()
    index = fmt.decode(raw, "x")
    assert index.encode() == raw
    rows = [line.split() for line in (case.dir / "chunks.txt").read_text().splitlines()]
    assert [(str(c.start), str(c.size), c.id.hex()) for c in index] == [tuple(r) for r in rows]
    assert index.sizes == case.sizes
    assert index.digest is case.digest


def test_vectors_are_present():
    assert len(CASES) >= 35, "tests/vectors/blob is incomplete"


def sample_index(n: int = 3) -> bytes:
    chunks = [(1000 + i, bytes([i]) * 32) for i in range(n)]
    return fmt.Index.from_chunks(0xB000000000000000, ChunkSizes(1, 1000, 4000), chunks).encode()


def test_encoding_layout_matches_casync():
    raw = sample_index(2)
    assert len(raw) == 104 + 40 * 2
    assert struct.unpack_from("<6Q", raw) == (
        48,
        fmt.CA_FORMAT_INDEX,
        0xB000000000000000,
        1,
        1000,
        4000,
    )
    assert struct.unpack_from("<Q", raw, 64)[0] == 1000  # end offsets, not starts
    assert struct.unpack_from("<Q", raw, 104)[0] == 2001
    assert struct.unpack_from("<5Q", raw, 144) == (
        0,
        0,
        48,
        16 + 80 + 40,
        fmt.CA_FORMAT_TABLE_TAIL_MARKER,
    )


def test_empty_index_is_104_bytes():
    index = fmt.Index.from_chunks(
        fmt.blob_flags(Digest.SHA512_256), ChunkSizes(16384, 65536, 262144), []
    )
    assert len(index.encode()) == 104
    assert fmt.decode(index.encode()).length == 0


def corrupt(raw: bytes, offset: int, value: int) -> bytes:
    return raw[:offset] + struct.pack("<Q", value) + raw[offset + 8 :]


@pytest.mark.parametrize(
    ("mutate", "where", "what"),
    [
        (lambda r: r[:50], "byte 50", "truncated"),
        (lambda r: r[:-7], "byte 217", "truncated"),
        (lambda r: r[:-40], "byte 184", "truncated"),
        (lambda r: r + b"\0" * 40, "byte 224", "40 bytes after the table tail"),
        (lambda r: r + b"x", "byte 224", "1 bytes after the table tail"),
        (lambda r: corrupt(r, 8, 0x1234), "byte 0", "not a casync index"),
        (lambda r: corrupt(r, 16, 0xB000000000000000 | 1 << 40), "byte 16", "unsupported"),
        (lambda r: corrupt(r, 16, 0xB000000000000003), "byte 16", "not normalized"),
        (lambda r: corrupt(r, 24, 5000), "byte 24", "out of range"),
        (lambda r: corrupt(r, 48, 77), "byte 48", "table header"),
        (lambda r: corrupt(r, 104, 900), "byte 104", "not increasing"),
        (lambda r: corrupt(r, 144, 9000), "byte 144", "exceeds the maximum"),
        (lambda r: corrupt(r, 104, 0), "byte 104", "bad table tail"),
        (lambda r: corrupt(r, 224 - 8, 1), "byte 184", "bad table tail"),
        (lambda r: corrupt(r, 184 + 24, 999), "byte 184", "does not match the file size"),
    ],
)
def test_corrupt_index_names_the_problem_and_byte_offset(mutate, where, what):
    raw = sample_index(3)
    with pytest.raises(FormatError, match=what) as e:
        fmt.decode(mutate(raw), "some.caibx")
    assert str(e.value).startswith("some.caibx: invalid index at ")
    assert where in str(e.value)


def test_sha256_flag_selects_sha256_ids():
    flags = fmt.blob_flags(Digest.SHA256)
    assert flags == 0x9000000000000000
    assert fmt.blob_flags(Digest.SHA512_256) == 0xB000000000000000
    assert Digest.from_flags(flags) is Digest.SHA256
