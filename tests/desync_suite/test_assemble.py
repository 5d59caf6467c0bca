"""Ports of desync's ``assemble_test.go`` and ``selfseed_test.go``: assembling a file
from a store, seeds, the null seed and the self seed, through ``ops.extract``.

desync's tests call ``AssembleFile`` on a path; ours call ``ops.extract.extract``,
which plans and writes the same way (a temp file renamed at the end, or the target
itself with ``in_place``). Indexes are made by ``ops.make`` (desync: ``IndexFromFile``)
storing the chunks it cuts (desync: ``ChopFile``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from desync_decl.assemble.seeds import Seed
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.ops.extract import ExtractResult, InvalidSeeds, extract
from desync_decl.ops.make import make
from desync_decl.ops.verify import verify_index
from desync_decl.stores.local import LocalStore

MAX = DEFAULT_CHUNK_SIZES.max  # desync's ChunkSizeMaxDefault


def made(path: Path, data: bytes, store: LocalStore | None = None) -> Index:
    """``data`` written to ``path`` and chunked with desync's default sizes (its
    ``IndexFromFile``); with ``store``, its chunks stored there too (its ``ChopFile``)."""
    path.write_bytes(data)
    return make(path, store=store).index


def new_store(path: Path) -> LocalStore:
    return LocalStore(path, create=True)


# --- TestExtract ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repeated_input(lib_data: Path) -> bytes:
    """chunker.input doubled four times (duplicate chunks), then two null chunks."""
    data = (lib_data / "chunker.input").read_bytes()
    for _ in range(4):
        data += data
    return data + bytes(2 * MAX)


@pytest.mark.parametrize("case", ["new file", "complete file", "incomplete file"])
def test_extract(tmp_path, repeated_input, case):
    """TestExtract: to a new file, over a complete one from an empty store (nothing
    may be fetched), and over a damaged longer one, the result is the input."""
    store = new_store(tmp_path / "store")
    index = made(tmp_path / "in", repeated_input, store)
    blank = new_store(tmp_path / "blank")
    out = tmp_path / "out"
    if case == "complete file":
        out.write_bytes(repeated_input)
    elif case == "incomplete file":
        damaged = bytearray(repeated_input)
        damaged[0] ^= 0xFF
        damaged[-1] ^= 0xFF
        out.write_bytes(bytes(damaged) + b"\0")
    source = blank if case == "complete file" else store
    extract(index, out, source, in_place=case != "new file")
    assert out.read_bytes() == repeated_input


# --- TestSeed ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(lib_data: Path) -> dict[str, bytes]:
    rng = random.Random(15)
    return {
        "data1": (lib_data / "chunker.input").read_bytes(),
        "null": bytes(4 * MAX),
        "rand1": rng.randbytes(4 * MAX),
        "rand2": rng.randbytes(4 * MAX),
    }


SEED_CASES = {
    "extract without seed": (["rand1", "rand2"], []),
    "extract all null file": (["null"] * 5, []),
    "extract repetitive file": (["data1"] * 5, []),
    "extract with single file seed": (
        ["data1", "null", "null", "rand1", "null"],
        [["data1", "null", "rand2", "rand2", "data1"]],
    ),
    "extract with multiple file seeds": (
        ["null", "null", "rand1", "null", "data1"],
        [
            ["rand2", "null", "rand2", "rand2", "data1"],
            ["data1", "null", "rand2", "rand2", "data1"],
            ["rand2"],
        ],
    ),
    "extract with identical file seed": (
        ["data1", "null", "rand1", "null", "data1"],
        [["data1", "null", "rand1", "null", "data1"]],
    ),
}


@pytest.mark.parametrize("case", SEED_CASES)
def test_seed(tmp_path, parts, case):
    """TestSeed: targets and seeds built from the same pieces (random, null, the
    chunker input) assemble to the target, in place over the target file itself as
    desync's test does."""
    target, seeds = SEED_CASES[case]
    store = new_store(tmp_path / "store")
    dst = tmp_path / "dst"
    expected = b"".join(parts[p] for p in target)
    index = made(dst, expected, store)
    opened = []
    for k, pieces in enumerate(seeds):
        path = tmp_path / f"seed{k}"
        opened.append(Seed(path, made(path, b"".join(parts[p] for p in pieces)), path.name))
    extract(index, dst, store, seeds=opened, in_place=True)
    assert dst.read_bytes() == expected


# --- TestSelfSeed and TestSelfSeedInPlace ---------------------------------------------------

SIZE = 1024  # each of the ten random chunks
SELF_CASES = {  # chunk order -> bytes desync may take from the self seed (min, max)
    "single chunk": ([0], (0, 0)),
    "repeating single chunk": ([0, 0, 0, 0, 0], (3 * SIZE, 4 * SIZE)),
    "repeating chunk sequence": ([0, 1, 2, 0, 1, 2, 2], (4 * SIZE, 4 * SIZE)),
    "repeating chunk sequence mid file": ([1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3], (7 * SIZE, 7 * SIZE)),
    "repeating chunk sequence reversed": ([0, 1, 2, 2, 1, 0], (2 * SIZE, 3 * SIZE)),
    "non-repeating chunks": (list(range(10)), (0, 0)),
}


@pytest.fixture
def ten_chunks(tmp_path) -> tuple[LocalStore, list[Chunk]]:
    """Ten random 1 KiB chunks in a new store."""
    store = new_store(tmp_path / "store")
    rng = random.Random(1024)
    chunks = []
    for _ in range(10):
        data = rng.randbytes(SIZE)
        chunk = Chunk(Digest.SHA512_256.hash(data), plain=data)
        store.store_chunk(chunk)
        chunks.append(chunk)
    return store, chunks


def index_of(chunks: list[Chunk], order: list[int]) -> tuple[Index, bytes]:
    """An index of the chunks in ``order`` (1 KiB each) and the blob it describes."""
    index = Index.from_chunks(
        blob_flags(Digest.SHA512_256), DEFAULT_CHUNK_SIZES, [(SIZE, chunks[p].id) for p in order]
    )
    return index, b"".join(bytes(chunks[p].plain()) for p in order)


def from_seeds(result: ExtractResult) -> int:
    stats = result.stats()
    copied, cloned = stats["bytes-copied-from-seeds"], stats["bytes-cloned-from-seeds"]
    assert isinstance(copied, int) and isinstance(cloned, int)
    return copied + cloned


@pytest.mark.parametrize("case", SELF_CASES)
def test_self_seed(tmp_path, ten_chunks, case):
    """TestSelfSeed: a chunk repeated in the target is written again from where it
    already is, and those bytes count as copied or cloned from seeds (desync counts
    its self seed there), within desync's bounds (ours are exact: the plan decides)."""
    order, (least, most) = SELF_CASES[case]
    store, chunks = ten_chunks
    index, expected = index_of(chunks, order)
    result = extract(index, tmp_path / "dst", store, concurrency=1)
    assert (tmp_path / "dst").read_bytes() == expected
    assert least <= from_seeds(result) <= most


@pytest.mark.parametrize("case", SELF_CASES)
def test_self_seed_in_place(tmp_path, ten_chunks, case):
    """TestSelfSeedInPlace: over a target that already holds the data, every chunk is
    kept in place; the self seed rewrites nothing."""
    order, _ = SELF_CASES[case]
    store, chunks = ten_chunks
    index, expected = index_of(chunks, order)
    dst = tmp_path / "dst"
    dst.write_bytes(expected)
    result = extract(index, dst, store, concurrency=1, in_place=True)
    assert dst.read_bytes() == expected
    assert result.stats()["chunks-in-place"] == len(order)
    assert from_seeds(result) == 0


# --- TestExtractNullsOverExistingFile, TestExtractEmptyIndex --------------------------------


def test_extract_nulls_over_existing_file(tmp_path):
    """TestExtractNullsOverExistingFile: null runs written over a file of random
    bytes (in place) read back as zeros."""
    rng = random.Random(4)
    data = rng.randbytes(4 * MAX)
    expected = bytes(4 * MAX) + data + bytes(4 * MAX)
    store = new_store(tmp_path / "store")
    index = made(tmp_path / "in", expected, store)
    out = tmp_path / "out"
    out.write_bytes(rng.randbytes(len(expected)))
    extract(index, out, store, in_place=True)
    assert out.read_bytes() == expected


@pytest.mark.parametrize("in_place", [False, True], ids=["replaced", "in place"])
def test_extract_empty_index(tmp_path, in_place):
    """TestExtractEmptyIndex: an index of no chunks makes an empty file, truncating
    what was there."""
    out = tmp_path / "out"
    out.write_bytes(b"old content")
    empty = Index(blob_flags(Digest.SHA512_256), DEFAULT_CHUNK_SIZES)
    result = extract(empty, out, new_store(tmp_path / "store"), in_place=in_place)
    assert out.read_bytes() == b""
    stats = result.stats()
    assert (stats["seeds"], stats["blocksize"], stats["chunks-total"]) == (0, 0, 0)


# --- TestExtractWithNonStaticSeeds ----------------------------------------------------------


def test_extract_with_non_static_seeds(tmp_path, cmd_data):
    """TestExtractWithNonStaticSeeds: a seed whose data no longer matches its index
    (blob2_corrupted with blob2's index) is only found out while its bytes are
    written (desync fakes that with MockValidate; ours never checks a seed before
    writing to a temp file, it checks what landed); with regeneration the result
    still verifies against the index."""
    store = LocalStore(cmd_data / "blob2.store")
    index = index_format.decode((cmd_data / "blob2.caibx").read_bytes())
    seed_index = index_format.decode((cmd_data / "blob2_corrupted.caibx").read_bytes())
    seed = Seed(cmd_data / "blob2_corrupted", seed_index, "blob2_corrupted.caibx")
    out = tmp_path / "out"
    result = extract(index, out, store, seeds=[seed], invalid_seeds=InvalidSeeds.REGENERATE)
    assert result.attempts == 2 and len(result.seed_problems) == 1
    verify_index(index, out)
    assert os.path.getsize(out) == index.length
