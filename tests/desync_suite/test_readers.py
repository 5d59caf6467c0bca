"""Ports of desync's ``readseeker_test.go``, ``sparse-file_test.go`` and
``chunk_test.go``: random access to a blob through its index (our
``ops.blobreader.BlobReader``, under ``cat`` and ``mount-index``; desync's
``IndexReadSeeker`` and sparse file), and a chunk read from a store's bytes.

desync's tests use an in-memory store; ours use a real local store holding exactly the
chunks each case needs.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.errors import DesyncError
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.ops.blobreader import BlobReader
from desync_decl.ops.cat import cat
from desync_decl.stores.base import ChunkInvalid
from desync_decl.stores.local import LocalStore

MAX = DEFAULT_CHUNK_SIZES.max


def store_with(tmp_path: Path, *pieces: bytes) -> LocalStore:
    store = LocalStore(tmp_path / "store", create=True)
    for piece in pieces:
        store.store_chunk(Chunk(Digest.SHA512_256.hash(piece), plain=piece))
    return store


def index_of(*chunks: tuple[int, ChunkID]) -> Index:
    return Index.from_chunks(blob_flags(Digest.SHA512_256), DEFAULT_CHUNK_SIZES, chunks)


def chunk_id(data: bytes) -> ChunkID:
    return Digest.SHA512_256.hash(data)


# --- readseeker_test.go ---------------------------------------------------------------------


def test_index_read_seeker_size_mismatch(tmp_path):
    """TestIndexReadSeekerSizeMismatchPanic: the index says 1000 bytes, the stored
    chunk has 4: a read inside the claimed range is an error naming the sizes."""
    data = b"data"
    reader = BlobReader(index_of((1000, chunk_id(data))), store_with(tmp_path, data))
    with pytest.raises(ChunkInvalid, match="4 bytes, the index says 1000"):
        reader.read(200, 16)


def test_index_read_seeker_size_mismatch_no_loop(tmp_path):
    """TestIndexReadSeekerSizeMismatchNoLoop: a short chunk that is not the last is
    an error at once (desync once spun on it); cat stops there too."""
    short, tail = b"data", b"trailing"
    store = store_with(tmp_path, short, tail)
    index = index_of((1000, chunk_id(short)), (len(tail), chunk_id(tail)))
    with pytest.raises(ChunkInvalid, match="4 bytes, the index says 1000"):
        BlobReader(index, store).read(0, 64)
    with pytest.raises(ChunkInvalid, match="4 bytes, the index says 1000"):
        cat(index, store, io.BytesIO())


def test_index_read_seeker_valid(tmp_path):
    """TestIndexReadSeekerValid: head + a null chunk (not in the store: served from
    memory) + tail read whole, and from the start of the last chunk."""
    head, tail = b"hello, world", b"goodbye, world"
    index = index_of(
        (len(head), chunk_id(head)),
        (MAX, null_chunk_id(index_of())),
        (len(tail), chunk_id(tail)),
    )
    reader = BlobReader(index, store_with(tmp_path, head, tail))
    whole = head + bytes(MAX) + tail
    assert reader.read(0, len(whole) + 100) == whole
    assert reader.read(len(head) + MAX, 1 << 20) == tail
    out = io.BytesIO()
    cat(index, reader.store, out)
    assert out.getvalue() == whole


def test_index_read_seeker_empty_index(tmp_path):
    """TestIndexReadSeekerEmptyIndex: an index of no chunks reads as an empty file,
    from its start (which is its end); cat writes nothing."""
    reader = BlobReader(index_of(), store_with(tmp_path))
    assert reader.length == 0
    assert reader.read(0, 16) == b""
    out = io.BytesIO()
    assert cat(index_of(), reader.store, out) == 0 and out.getvalue() == b""


# --- sparse-file_test.go -----------------------------------------------------------------------

# TestLoaderChunkRange: (start, length) -> desync's (first chunk, last chunk), three
# chunks of 10 bytes each.
RANGES = [
    (0, 0, 0, 0),
    (0, 1, 0, 0),
    (10, 1, 1, 1),
    (19, 1, 1, 1),
    (0, 20, 0, 1),
    (5, 10, 0, 1),
    (0, 30, 0, 2),
    (29, 0, 2, 2),
    (29, 1, 2, 2),
    (30, 1, 2, 2),
]


@pytest.mark.parametrize(("start", "length", "first", "last"), RANGES)
def test_loader_chunk_range(tmp_path, start, length, first, last):
    """TestLoaderChunkRange: the chunks a read touches. Where bytes are read, the same
    chunks as desync; a read of no bytes, or past the end, touches none (desync names a
    chunk it then does not need)."""
    ids = [bytes([k]) * 32 for k in range(3)]
    reader = BlobReader(index_of(*((10, ChunkID(i)) for i in ids)), store_with(tmp_path))
    span = reader.span(start, length)
    if length == 0 or start >= 30:
        assert span == range(0)
    else:
        assert span == range(first, last + 1)


@pytest.fixture
def blob1(cmd_data: Path) -> tuple[Index, LocalStore, bytes]:
    index = index_format.decode((cmd_data / "blob1.caibx").read_bytes())
    return index, LocalStore(cmd_data / "blob1.store"), (cmd_data / "blob1").read_bytes()


def test_sparse_file_read(blob1):
    """TestSparseFileRead: 1000 random ranges of blob1 (each up to a chunk long), then
    the whole blob, read through its index and store."""
    index, store, blob = blob1
    reader = BlobReader(index, store)
    rng = random.Random(1000)
    for _ in range(1000):
        length = rng.randrange(index.sizes.max)
        offset = rng.randrange(index.length - length - 1)
        assert reader.read(offset, length) == blob[offset : offset + length]
    whole = reader.read(0, index.length)
    assert hashlib.sha256(whole).digest() == hashlib.sha256(blob).digest()


def test_sparse_file_retry_after_failed_load(blob1, tmp_path):
    """TestSparseFileRetryAfterFailedLoad: the first chunk that needs the store fails
    once (its file is away), and the read says so; the next read of the same range
    loads it and returns its bytes, not zeros or the first error."""
    index, _, blob = blob1
    store = LocalStore(tmp_path / "store", create=True)
    source = LocalStore(blob1[1].path)
    null = null_chunk_id(index)
    target = next(c for c in index if c.id != null)
    for cid in index.unique_ids():
        store.store_chunk(source.get_chunk(cid))
    store.flush()
    path = next((tmp_path / "store").rglob(f"{target.id.hex()}.cacnk"))
    away = tmp_path / "away"
    path.rename(away)
    reader = BlobReader(index, store)
    with pytest.raises(DesyncError, match=target.id.hex()):
        reader.read(target.start, target.size)
    away.rename(path)
    assert reader.read(target.start, target.size) == blob[target.start : target.end]


# --- chunk_test.go -------------------------------------------------------------------------------

PLAIN = b"the quick brown fox jumps over the lazy dog"


@pytest.fixture
def stored_fox(tmp_path) -> tuple[LocalStore, ChunkID, Path]:
    """A store holding the chunk of PLAIN, and its chunk file."""
    store = store_with(tmp_path, PLAIN)
    store.flush()
    cid = chunk_id(PLAIN)
    return store, cid, next((tmp_path / "store").rglob(f"{cid.hex()}.cacnk"))


def test_new_chunk_from_storage_valid(stored_fox):
    """TestNewChunkFromStorage/valid."""
    store, cid, _ = stored_fox
    chunk = store.get_chunk(cid)
    assert chunk.id == cid and bytes(chunk.plain()) == PLAIN


@pytest.mark.parametrize("garbage", ["not a valid zstd stream", "truncated zstd"])
def test_new_chunk_from_storage_undecodable(stored_fox, garbage):
    """TestNewChunkFromStorage/undecodable storage data: ChunkInvalid (so a cache
    repair and verify -r handle it) saying why it does not decode, not a bogus hash
    mismatch."""
    store, cid, path = stored_fox
    stored = path.read_bytes()
    path.write_bytes(garbage.encode() if garbage.startswith("not") else stored[: len(stored) // 2])
    with pytest.raises(ChunkInvalid) as caught:
        store.get_chunk(cid)
    assert "hashes to" not in caught.value.why
    assert caught.value.why


def test_new_chunk_from_storage_hash_mismatch(stored_fox, tmp_path):
    """TestNewChunkFromStorage/hash mismatch: good data under another id is
    ChunkInvalid naming the id its data has."""
    store, cid, path = stored_fox
    wrong = ChunkID(b"\x01" + bytes(31))
    other = tmp_path / "store" / wrong.hex()[:4] / f"{wrong.hex()}.cacnk"
    other.parent.mkdir()
    other.write_bytes(path.read_bytes())
    with pytest.raises(ChunkInvalid) as caught:
        store.get_chunk(wrong)
    assert caught.value.why == f"its data hashes to {cid.hex()}"


def test_new_chunk_from_storage_skip_verify(stored_fox, tmp_path):
    """TestNewChunkFromStorage/skip verify: a store told not to verify hands out
    even undecodable bytes without a check."""
    _, cid, path = stored_fox
    path.write_bytes(b"garbage")
    trusting = LocalStore(tmp_path / "store", skip_verify=True)
    assert trusting.get_chunk(cid).id == cid
