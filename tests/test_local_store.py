"""The LocalStore contract, on real directories: layout, forms, errors, prune, verify, threads."""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zstandard

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.ops.prune import prune
from desync_decl.ops.verify import verify_store
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError
from desync_decl.stores.converters import StorageFormat
from desync_decl.stores.local import LocalStore

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HOUR = 3600


def data_for(seed: int, size: int = 20_000) -> bytes:
    return random.Random(seed).randbytes(size)


def chunk_of(data: bytes, digest: Digest = Digest.SHA512_256) -> Chunk:
    return Chunk(digest.hash(data), plain=data)


def chunk_file(store: Path, id: ChunkID, *, compressed: bool = True) -> Path:
    h = id.hex()
    return store / h[:4] / (h + ".cacnk" if compressed else h)


def write_uncompressed_file(store: Path, chunk: Chunk) -> Path:
    """Put a chunk into the store as casync's uncompressed form (no suffix), by hand."""
    path = chunk_file(store, chunk.id, compressed=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(chunk.plain())
    return path


def files_under(root: Path) -> set[Path]:
    return {Path(d, f) for d, _, names in os.walk(root) for f in names}


def temp_files_under(root: Path) -> list[Path]:
    return [p for p in files_under(root) if p.name.startswith(".tmp-cacnk")]


def unzstd(data: bytes) -> bytes:
    obj = zstandard.ZstdDecompressor().decompressobj()
    out = obj.decompress(data)
    assert obj.eof, "the chunk file is not a complete zstd frame"
    return out


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def store(store_dir: Path) -> LocalStore:
    return LocalStore(store_dir)


# --- round trip and layout ---------------------------------------------------------------


def test_stored_chunk_reads_back_with_the_same_plain_bytes(store):
    data = data_for(1)
    store.store_chunk(chunk_of(data))

    got = store.get_chunk(Digest.SHA512_256.hash(data))

    assert bytes(got.plain()) == data
    assert got.id == Digest.SHA512_256.hash(data)


def test_chunk_file_is_a_zstd_frame_under_its_prefix_directory(store, store_dir):
    data = data_for(2)
    chunk = chunk_of(data)
    store.store_chunk(chunk)

    path = store_dir / chunk.id.hex()[:4] / f"{chunk.id.hex()}.cacnk"
    stored = path.read_bytes()

    assert stored.startswith(ZSTD_MAGIC)
    assert unzstd(stored) == data
    assert files_under(store_dir) == {path}


def test_has_chunk_is_true_after_store_and_false_for_a_never_stored_id(store):
    stored, never = chunk_of(data_for(3)), chunk_of(data_for(4))
    store.store_chunk(stored)

    assert store.has_chunk(stored.id) is True
    assert store.has_chunk(never.id) is False


def test_str_of_the_store_is_its_path(store, store_dir):
    assert str(store) == str(store_dir)


# --- missing and invalid chunks ----------------------------------------------------------


def test_missing_chunk_raises_chunk_missing_naming_the_id_and_the_store(store, store_dir):
    never = chunk_of(data_for(5))

    with pytest.raises(ChunkMissing) as info:
        store.get_chunk(never.id)

    assert info.value.id == never.id
    assert never.id.hex() in str(info.value)
    assert str(store_dir) in str(info.value)
    assert store.has_chunk(never.id) is False


def _overwrite_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _replace_with_other_valid_chunk(path: Path) -> None:
    path.write_bytes(zstandard.ZstdCompressor().compress(b"someone else's data" * 100))


def _replace_with_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a compressed chunk at all")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


CORRUPTIONS = {
    "overwritten bytes": _overwrite_middle,
    "truncated": _truncate,
    "wrong data under the right name": _replace_with_other_valid_chunk,
    "not compressed data": _replace_with_garbage,
    "empty file": _empty,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupted_chunk_file_raises_chunk_invalid_not_chunk_missing(store, store_dir, corrupt):
    chunk = chunk_of(data_for(6))
    store.store_chunk(chunk)
    corrupt(chunk_file(store_dir, chunk.id))

    with pytest.raises(ChunkInvalid) as info:
        store.get_chunk(chunk.id)

    assert not isinstance(info.value, ChunkMissing)
    assert info.value.id == chunk.id
    assert chunk.id.hex() in str(info.value)
    assert str(store_dir) in str(info.value)


def test_uncompressed_chunk_is_invalid_when_its_bytes_do_not_hash_to_its_name(store, store_dir):
    chunk = chunk_of(data_for(7))
    path = write_uncompressed_file(store_dir, chunk)
    path.write_bytes(data_for(8))

    with pytest.raises(ChunkInvalid):
        store.get_chunk(chunk.id)


# --- compressed and uncompressed forms ---------------------------------------------------


def test_compressed_store_reads_an_uncompressed_chunk_file(store, store_dir):
    data = data_for(9)
    chunk = chunk_of(data)
    write_uncompressed_file(store_dir, chunk)

    assert store.has_chunk(chunk.id) is True
    assert bytes(store.get_chunk(chunk.id).plain()) == data


def test_uncompressed_store_writes_plain_bytes_without_a_suffix(store_dir):
    store = LocalStore(store_dir, format=StorageFormat(compressed=False))
    data = data_for(10)
    chunk = chunk_of(data)

    store.store_chunk(chunk)

    path = chunk_file(store_dir, chunk.id, compressed=False)
    assert path.read_bytes() == data
    assert files_under(store_dir) == {path}
    assert bytes(store.get_chunk(chunk.id).plain()) == data


def test_uncompressed_store_still_reads_compressed_chunks_beside_its_own(store_dir):
    compressed_data, plain_data = data_for(11), data_for(12)
    LocalStore(store_dir).store_chunk(chunk_of(compressed_data))
    store = LocalStore(store_dir, format=StorageFormat(compressed=False))
    store.store_chunk(chunk_of(plain_data))

    for data in (compressed_data, plain_data):
        id = Digest.SHA512_256.hash(data)
        assert store.has_chunk(id) is True
        assert bytes(store.get_chunk(id).plain()) == data
    assert chunk_file(store_dir, Digest.SHA512_256.hash(compressed_data)).exists()
    assert chunk_file(store_dir, Digest.SHA512_256.hash(plain_data), compressed=False).exists()


@pytest.mark.parametrize("uncompressed", [False, True], ids=["compressed", "uncompressed"])
def test_chunk_in_both_forms_side_by_side_reads_back_right(store_dir, uncompressed):
    data = data_for(13)
    chunk = chunk_of(data)
    LocalStore(store_dir).store_chunk(chunk)
    write_uncompressed_file(store_dir, chunk)
    store = LocalStore(store_dir, format=StorageFormat(compressed=not uncompressed))

    assert bytes(store.get_chunk(chunk.id).plain()) == data
    assert store.has_chunk(chunk.id) is True


def test_iter_chunk_ids_lists_every_id_once_even_when_both_forms_exist(store, store_dir):
    compressed_only = [chunk_of(data_for(s, 3000)) for s in range(20, 26)]
    uncompressed_only = [chunk_of(data_for(s, 3000)) for s in range(30, 36)]
    both = [chunk_of(data_for(s, 3000)) for s in range(40, 46)]
    for chunk in compressed_only + both:
        store.store_chunk(chunk)
    for chunk in uncompressed_only + both:
        write_uncompressed_file(store_dir, chunk)
    expected = {c.id for c in compressed_only + uncompressed_only + both}

    listed = list(store.iter_chunk_ids())

    assert len(listed) == len(expected)
    assert set(listed) == expected


def test_iter_chunk_ids_ignores_files_that_are_not_chunks(store, store_dir):
    chunk = chunk_of(data_for(50))
    store.store_chunk(chunk)
    prefix = chunk_file(store_dir, chunk.id).parent
    (prefix / ".tmp-cacnkleftover").write_bytes(b"partial")
    (prefix / "README").write_text("not a chunk")
    (store_dir / "notes.txt").write_text("not a chunk either")

    assert list(store.iter_chunk_ids()) == [chunk.id]


# --- remove and prune --------------------------------------------------------------------


def test_remove_chunk_deletes_both_forms_and_leaves_other_chunks(store, store_dir):
    gone, kept = chunk_of(data_for(60)), chunk_of(data_for(61))
    store.store_chunk(gone)
    store.store_chunk(kept)
    write_uncompressed_file(store_dir, gone)

    store.remove_chunk(gone.id)

    assert store.has_chunk(gone.id) is False
    assert not chunk_file(store_dir, gone.id).exists()
    assert not chunk_file(store_dir, gone.id, compressed=False).exists()
    with pytest.raises(ChunkMissing):
        store.get_chunk(gone.id)
    assert bytes(store.get_chunk(kept.id).plain()) == kept.plain()


def test_prune_keeps_exactly_the_keep_set_and_deletes_the_rest_in_both_forms(store, store_dir):
    chunks = [chunk_of(data_for(s, 5000)) for s in range(70, 78)]
    for chunk in chunks:
        store.store_chunk(chunk)
    for chunk in chunks[::2]:
        write_uncompressed_file(store_dir, chunk)
    keep = {chunks[0].id, chunks[3].id, chunks[6].id}
    doomed_files = {
        p
        for c in chunks
        if c.id not in keep
        for p in (chunk_file(store_dir, c.id), chunk_file(store_dir, c.id, compressed=False))
        if p.exists()
    }
    before = files_under(store_dir)

    removed = store.prune(keep)

    assert set(store.iter_chunk_ids()) == keep
    assert files_under(store_dir) == before - doomed_files
    assert removed == len(doomed_files)
    for chunk in chunks:
        assert store.has_chunk(chunk.id) is (chunk.id in keep)
    for id in keep:
        assert store.get_chunk(id).id == id


def test_prune_op_refuses_an_empty_keep_set_and_deletes_nothing(store, store_dir):
    for s in range(80, 84):
        store.store_chunk(chunk_of(data_for(s, 4000)))
    before = files_under(store_dir)

    with pytest.raises(DesyncError) as info:
        prune(store, set())

    assert str(store_dir) in str(info.value)
    assert files_under(store_dir) == before


def test_prune_op_reports_kept_ids_and_removed_files(store):
    chunks = [chunk_of(data_for(s, 4000)) for s in range(85, 90)]
    for chunk in chunks:
        store.store_chunk(chunk)

    result = prune(store, {chunks[0].id, chunks[1].id})

    assert (result.kept, result.removed) == (2, 3)
    assert set(store.iter_chunk_ids()) == {chunks[0].id, chunks[1].id}


def test_prune_removes_a_temp_leftover_older_than_an_hour_but_not_a_fresh_one(store, store_dir):
    chunk = chunk_of(data_for(90))
    store.store_chunk(chunk)
    prefix = chunk_file(store_dir, chunk.id).parent
    stale, fresh = prefix / ".tmp-cacnkstale0001", prefix / ".tmp-cacnkfresh0001"
    stale.write_bytes(b"left by a crashed writer")
    fresh.write_bytes(b"a write in progress")
    two_hours_ago = time.time() - 2 * HOUR
    os.utime(stale, (two_hours_ago, two_hours_ago))

    store.prune({chunk.id})

    assert not stale.exists()
    assert fresh.exists()
    assert store.has_chunk(chunk.id) is True


# --- verify ------------------------------------------------------------------------------


def test_verify_store_finds_exactly_the_corrupted_chunks(store, store_dir):
    chunks = [chunk_of(data_for(s, 6000)) for s in range(100, 106)]
    for chunk in chunks:
        store.store_chunk(chunk)
    bad = {chunks[1].id, chunks[4].id}
    _replace_with_other_valid_chunk(chunk_file(store_dir, chunks[1].id))
    _truncate(chunk_file(store_dir, chunks[4].id))
    before = files_under(store_dir)

    found = verify_store(store)

    assert {b.id for b in found} == bad
    assert all(b.removed is False and b.why for b in found)
    assert files_under(store_dir) == before


def test_verify_store_with_repair_removes_only_the_corrupted_chunks(store, store_dir):
    chunks = [chunk_of(data_for(s, 6000)) for s in range(110, 116)]
    for chunk in chunks:
        store.store_chunk(chunk)
    bad = {chunks[0].id, chunks[5].id}
    for id in bad:
        _overwrite_middle(chunk_file(store_dir, id))

    found = verify_store(store, repair=True)

    assert {b.id for b in found} == bad
    assert all(b.removed for b in found)
    assert set(store.iter_chunk_ids()) == {c.id for c in chunks} - bad
    for chunk in chunks:
        if chunk.id not in bad:
            assert bytes(store.get_chunk(chunk.id).plain()) == chunk.plain()
    assert verify_store(store) == []


def test_verify_store_of_a_healthy_store_finds_nothing(store):
    for s in range(120, 124):
        store.store_chunk(chunk_of(data_for(s, 3000)))

    assert verify_store(store) == []


# --- opening -----------------------------------------------------------------------------


@pytest.mark.parametrize("create", [False, True])
def test_store_path_that_is_a_regular_file_raises_store_error(tmp_path, create):
    path = tmp_path / "not-a-store"
    path.write_bytes(b"just a file")

    with pytest.raises(StoreError) as info:
        LocalStore(path, create=create)

    assert str(path) in str(info.value)
    assert path.read_bytes() == b"just a file"


def test_missing_store_path_raises_store_error(tmp_path):
    path = tmp_path / "nowhere"

    with pytest.raises(StoreError) as info:
        LocalStore(path)

    assert str(path) in str(info.value)
    assert not path.exists()


def test_missing_store_path_is_created_with_create_true(tmp_path):
    path = tmp_path / "new" / "store"

    store = LocalStore(path, create=True)
    chunk = chunk_of(data_for(130))
    store.store_chunk(chunk)

    assert path.is_dir()
    assert bytes(store.get_chunk(chunk.id).plain()) == chunk.plain()


# --- atomic writes and threads -----------------------------------------------------------


def test_no_temp_file_is_left_after_stores(store, store_dir):
    for s in range(140, 150):
        store.store_chunk(chunk_of(data_for(s, 4000)))
    store.store_chunk(chunk_of(data_for(140, 4000)))  # storing again replaces in place

    assert temp_files_under(store_dir) == []
    assert len(files_under(store_dir)) == 10


def test_eight_threads_storing_and_getting_the_same_and_different_chunks_all_succeed(
    store, store_dir
):
    threads = 8
    shared = [chunk_of(data_for(s, 8000)) for s in range(200, 216)]
    own = [[chunk_of(data_for(1000 + t * 100 + s, 8000)) for s in range(8)] for t in range(threads)]
    start = threading.Barrier(threads)

    def work(t: int) -> int:
        start.wait()
        mine = shared[t % 4 :] + shared[: t % 4] + own[t]  # different orders, same chunks
        for chunk in mine:
            store.store_chunk(Chunk(chunk.id, plain=chunk.plain()))
            assert bytes(store.get_chunk(chunk.id).plain()) == chunk.plain()
        for chunk in shared:
            assert store.has_chunk(chunk.id)
        return len(mine)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        done = list(pool.map(work, range(threads)))

    assert done == [len(shared) + 8] * threads
    every = shared + [c for chunks in own for c in chunks]
    for chunk in every:
        assert bytes(store.get_chunk(chunk.id).plain()) == chunk.plain()
    assert set(store.iter_chunk_ids()) == {c.id for c in every}
    assert temp_files_under(store_dir) == []


# --- digests -----------------------------------------------------------------------------


def test_sha256_store_verifies_chunks_with_sha256(store_dir):
    store = LocalStore(store_dir, digest=Digest.SHA256)
    data = data_for(300)
    good = chunk_of(data, Digest.SHA256)
    store.store_chunk(good)

    assert bytes(store.get_chunk(good.id).plain()) == data
    assert good.id == Digest.SHA256.hash(data) != Digest.SHA512_256.hash(data)


def test_sha256_store_rejects_a_chunk_named_by_its_sha512_256_id(store_dir):
    other = data_for(301)
    wrong = chunk_of(other, Digest.SHA512_256)
    LocalStore(store_dir).store_chunk(wrong)

    with pytest.raises(ChunkInvalid):
        LocalStore(store_dir, digest=Digest.SHA256).get_chunk(wrong.id)
    assert bytes(LocalStore(store_dir).get_chunk(wrong.id).plain()) == other


@pytest.mark.parametrize("anonymous", [True, False])
def test_store_chunk_replaces_a_corrupt_chunk_file(store_dir, anonymous):
    """Both ways of writing (unnamed file linked in, named temp file renamed) replace
    an existing bad file, as a repairing cache needs, and leave no temp file."""
    store = LocalStore(store_dir, create=True)
    store._anonymous_files = anonymous  # the fallback for filesystems without O_TMPFILE
    chunk = chunk_of(data_for(160, 5000))
    store.store_chunk(chunk)
    path = store_dir / chunk.id.hex()[:4] / f"{chunk.id.hex()}.cacnk"
    path.write_bytes(b"garbage")
    with pytest.raises(ChunkInvalid):
        store.get_chunk(chunk.id)
    store.store_chunk(chunk)
    assert bytes(store.get_chunk(chunk.id).plain()) == chunk.plain()
    assert not [p for p in store_dir.rglob("*") if p.name.startswith(".tmp")]


def test_a_store_not_made_yet_lists_nothing_and_stays_unmade(tmp_path):
    """A cache before its first chunk: plan verifies or prunes it as empty (it used to
    fail "cannot list ...: No such file or directory") and creates nothing."""
    store = LocalStore(tmp_path / "cache", create=True)
    assert list(store.iter_chunk_ids()) == []
    assert not (tmp_path / "cache").exists()
