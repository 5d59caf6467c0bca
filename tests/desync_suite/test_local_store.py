"""Ports of desync's ``local_test.go``: the local chunk store in each storage format
(compressed or not, encrypted or not), what it does with broken chunk files, and
keys that do not match; the files on disk are read directly to check their form.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from desync_decl.formats import chunkfile
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.ops.verify import verify_store
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError
from desync_decl.stores.converters import Cipher
from desync_decl.stores.keys import WrongKey
from desync_decl.stores.local import LocalStore
from desync_decl.stores.options import StoreOptions
from tests.desync_suite.desync_keys import OTHER_KEY, TEST_KEY
from tests.store_contract import chunk_of

DATA = b"some data"


def store_at(root: Path, **options) -> LocalStore:
    opts = StoreOptions(**options)
    return LocalStore(root, format=opts.storage_format(), skip_verify=opts.skip_verify, create=True)


def some_data() -> Chunk:
    return chunk_of(DATA)


def file_of(store: LocalStore, id: ChunkID) -> Path:
    h = id.hex()
    return store.path / h[:4] / (h + store.format.extension)


def round_trip(store: LocalStore) -> bytes:
    """Store ``some data``, check it is there and reads back; the file's bytes."""
    chunk = some_data()
    store.store_chunk(chunk)
    assert store.has_chunk(chunk.id), "chunk not found in store"
    assert bytes(store.get_chunk(chunk.id).plain()) == DATA
    return file_of(store, chunk.id).read_bytes()


def test_a_compressed_store_holds_compressed_files(tmp_path):
    """TestLocalStoreCompressed."""
    stored = round_trip(store_at(tmp_path))
    assert stored != DATA, "chunk is not compressed"
    assert chunkfile.decompress(stored, 1 << 20) == DATA


def test_an_uncompressed_store_holds_the_data_as_is(tmp_path):
    """TestLocalStoreUncompressed."""
    assert round_trip(store_at(tmp_path, uncompressed=True)) == DATA


def test_invalid_and_empty_chunk_files_are_invalid_until_repaired_away(tmp_path):
    """TestLocalStoreErrorHandling: ``verify`` with repair removes both, after which
    they are missing and the good chunk is still served."""
    store = store_at(tmp_path)
    good = some_data()
    store.store_chunk(good)
    invalid = ChunkID(bytes.fromhex("10" + "0" * 62))
    blank = ChunkID(bytes.fromhex("20" + "0" * 62))
    for id, content in ((invalid, b"invalid data"), (blank, b"")):
        file_of(store, id).parent.mkdir(exist_ok=True)
        file_of(store, id).write_bytes(content)
    store.get_chunk(good.id)
    for id in (invalid, blank):
        with pytest.raises(ChunkInvalid):
            store.get_chunk(id)
    removed = verify_store(store, repair=True, concurrency=1)
    assert sorted(b.id for b in removed) == sorted([invalid, blank])
    store.get_chunk(good.id)
    for id in (invalid, blank):
        with pytest.raises(ChunkMissing):
            store.get_chunk(id)


def test_a_chunk_file_that_cannot_be_read_is_a_store_error(tmp_path):
    """TestLocalStoreGetChunkReadError: a directory where the chunk file should be is
    neither missing nor invalid (even with skip-verify): the store failed."""
    store = store_at(tmp_path, skip_verify=True)
    id = some_data().id
    file_of(store, id).mkdir(parents=True)
    with pytest.raises(StoreError) as failed:
        store.get_chunk(id)
    assert not isinstance(failed.value, ChunkMissing | ChunkInvalid)


def test_an_uncompressed_encrypted_store_holds_no_plain_data(tmp_path):
    """TestLocalStoreUncompressedEncrypted."""
    store = store_at(tmp_path, uncompressed=True, encryption=True, encryption_key=TEST_KEY)
    assert round_trip(store) != DATA, "chunk is not encrypted"


def test_a_compressed_encrypted_store_compresses_then_encrypts(tmp_path):
    """TestLocalStoreCompressedEncrypted: unwound by hand, decryption first."""
    stored = round_trip(store_at(tmp_path, encryption=True, encryption_key=TEST_KEY))
    decrypted = Cipher("xchacha20-poly1305", TEST_KEY).decrypt(stored)
    assert chunkfile.decompress(decrypted, 1 << 20) == DATA


def test_a_chunk_stored_with_one_key_is_missing_for_another(tmp_path):
    """TestLocalStoreKeyMismatch: the key's id is in the file name, so another key
    looks for another file. desync then says the chunk is missing; here (issue 19) the
    file under the other key's name is found and named: a wrong key is never a
    missing chunk."""
    first = store_at(tmp_path, encryption=True, encryption_key=TEST_KEY)
    second = store_at(tmp_path, encryption=True, encryption_key=OTHER_KEY)
    round_trip(first)
    with pytest.raises(WrongKey, match=r"is encrypted with key [0-9a-f]{8}, not the configured"):
        second.get_chunk(some_data().id)


def test_a_chunk_with_no_data_is_refused(tmp_path):
    """remotehttp_test.go's "store chunk not allowed with no chunk content" holds for
    desync's every store: nothing is written for a chunk without bytes."""
    store = store_at(tmp_path)
    with pytest.raises(StoreError, match="no data"):
        store.store_chunk(Chunk(ChunkID(bytes(32)), plain=b""))
    assert list(tmp_path.rglob("*")) == []
