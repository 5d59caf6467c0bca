"""One index-name check for every index store: a name is one file in the store's folder."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.server.indexes import index_name
from desync_decl.stores.base import StoreError
from desync_decl.stores.http import HttpObjects
from desync_decl.stores.index_store import LocalIndexStore
from desync_decl.stores.objects import ObjectIndexStore
from desync_decl.stores.options import StoreOptions

BAD_NAMES = ["", ".", "..", "a/b", "../x.caibx", "/x.caibx", "a\\b", "x\0.caibx", "\0"]


def _stores(tmp_path):
    # a port nothing listens on: a name that got past the check would fail differently
    remote = ObjectIndexStore(HttpObjects("http://127.0.0.1:9/idx/", StoreOptions(error_retry=1)))
    return [LocalIndexStore(tmp_path), remote]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_index_store_refuses_a_name_that_leaves_its_folder(tmp_path, name):
    index = Index.from_chunks(blob_flags(Digest.SHA512_256), ChunkSizes(64, 256, 1024), [])
    for store in _stores(tmp_path):
        with pytest.raises(StoreError, match="invalid index name"):
            store.get_index(name)
        with pytest.raises(StoreError, match="invalid index name"):
            store.store_index(name, index)
        store.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_index_server_refuses_the_same_names(name):
    assert index_name("/" + quote(name, safe="")) is None


def test_a_plain_name_is_stored_and_read_back(tmp_path):
    index = Index.from_chunks(blob_flags(Digest.SHA512_256), ChunkSizes(64, 256, 1024), [])
    store = LocalIndexStore(tmp_path)
    store.store_index("x.caibx", index)
    assert store.get_index("x.caibx").encode() == index.encode()
