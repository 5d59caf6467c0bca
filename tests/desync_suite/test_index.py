"""Ports of desync's ``index_test.go`` and ``make_test.go``: reading and writing
``index.caibx``, making ``chunker.index`` from ``chunker.input`` into a store, and
chunking with any number of workers.

One difference, kept on purpose (README, compatibility): our ``make`` writes casync's
feature flags (``0xb0…``: SHA-512/256 plus casync's "exclude nodump/submounts" bits),
desync writes ``0xa0…``; every other byte of the index is desync's.
"""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import pytest

from desync_decl.chunker import iter_chunks
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES
from desync_decl.formats.digest import Digest
from desync_decl.ops.make import make
from desync_decl.stores.local import LocalStore
from tests.desync_suite.chunker_input import LARGE_FILE

MAX = DEFAULT_CHUNK_SIZES.max
FLAGS = slice(16, 24)  # the feature flags field of an index's header


def test_index_load(lib_data):
    """TestIndexLoad: index.caibx's first three chunks."""
    index = index_format.decode((lib_data / "index.caibx").read_bytes())
    expected = [
        ("437884da2d1e61cf50b43b263ff15f25a870b0eae84bc22e4b5c307a0428764d", 0, 242168),
        ("985462e6b3293bbe61e43882686b481751ecf4b285bae4dffc2dfa8829f971ac", 242168, 75740),
        ("fadff4b303624f2be3d0e04c2f105306118a9f608ef1e4f83c1babbd23a2315f", 317908, 20012),
    ]
    got = [(c.id.hex(), c.start, c.size) for c in list(index)[:3]]
    assert got == expected


def test_index_write(lib_data):
    """TestIndexWrite: decoded then encoded, index.caibx is the same bytes."""
    raw = (lib_data / "index.caibx").read_bytes()
    assert index_format.decode(raw).encode() == raw


def test_index_chunking(lib_data, tmp_path):
    """TestIndexChunking: make of chunker.input into a new store gives chunker.index
    (but for the feature flags, see the module's docstring) and stores every chunk."""
    store = LocalStore(tmp_path / "store", create=True)
    made = make(lib_data / "chunker.input", store=store, concurrency=10).index.encode()
    expected = (lib_data / "chunker.index").read_bytes()
    assert (
        made[: FLAGS.start] + made[FLAGS.stop :] == expected[: FLAGS.start] + expected[FLAGS.stop :]
    )
    assert struct.unpack("<Q", expected[FLAGS])[0] == 0xA000000000000000  # desync's
    assert struct.unpack("<Q", made[FLAGS])[0] == 0xB000000000000000  # casync's
    for _, _, id_hex in LARGE_FILE:
        assert store.has_chunk(bytes.fromhex(id_hex)), id_hex


def test_chunk_stream_integrity(tmp_path):
    """TestChunkStreamIntegrity: 8 MiB of patterned data (several of the chunker's
    read blocks) made into a store: every stored chunk reads back as its id (the
    store verifies each read), so no buffer was reused under a worker."""
    data = b"".join(
        struct.pack("<Q", (i * 0x9E3779B97F4A7C15) & (2**64 - 1)) for i in range(1 << 20)
    )
    (tmp_path / "input").write_bytes(data)
    store = LocalStore(tmp_path / "store", create=True)
    index = make(tmp_path / "input", store=store, concurrency=10).index
    assert index.length == len(data)
    for c in index:
        assert bytes(store.get_chunk(c.id).plain()) == data[c.start : c.end]


# --- make_test.go -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pieces() -> dict[str, bytes]:
    rng = random.Random(4)
    return {
        "null": bytes(4 * MAX),
        "rand1": rng.randbytes(4 * MAX),
        "rand2": rng.randbytes(4 * MAX),
    }


PARALLEL_CASES = {
    "random input": ["rand1", "rand2", "rand1", "rand2", "rand1"],
    "leading null": ["null", "null", "null", "null", "rand1", "rand2"],
    "trailing null": ["rand1", "rand2", "null", "null", "null", "null"],
    "middle null": ["rand1", "null", "null", "null", "null", "rand2"],
    "spread out null": ["rand1", "null", "null", "null", "rand1", "null", "null", "null", "rand2"],
}


def write_input(tmp_path: Path, pieces: dict[str, bytes], names: list[str]) -> Path:
    path = tmp_path / "input"
    path.write_bytes(b"".join(pieces[n] for n in names))
    return path


@pytest.mark.parametrize("case", PARALLEL_CASES)
def test_parallel_chunking(tmp_path, pieces, case):
    """TestParallelChunking: make with 1 to 10 workers gives the chunks a single
    stream gives."""
    path = write_input(tmp_path, pieces, PARALLEL_CASES[case])
    data = path.read_bytes()
    expected = [
        (start, len(piece), Digest.SHA512_256.hash(piece))
        for start, piece in iter_chunks(io.BytesIO(data))
    ]
    for n in range(1, 11):
        got = [(c.start, c.size, c.id) for c in make(path, concurrency=n).index]
        assert got == expected, f"{n} workers"


@pytest.mark.parametrize("case", ["trailing null", "middle null", "spread out null"])
def test_index_from_file_stats(tmp_path, pieces, case):
    """TestIndexFromFileStats: with 2 to 8 workers the counts make reports are the
    index's. (desync's chunks produced but discarded by its split-file workers have
    no counterpart: one chunking pass feeds our workers, nothing is discarded.)"""
    path = write_input(tmp_path, pieces, PARALLEL_CASES[case])
    for n in range(2, 9):
        result = make(path, concurrency=n)
        assert result.chunks_total == len(result.index) > 0, f"{n} workers"
