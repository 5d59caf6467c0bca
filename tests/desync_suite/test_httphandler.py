"""Ports of desync's ``httphandler_test.go``: the chunk-server's HTTP handler (our
``ChunkService``, behind a real listener from ``serve``) over a compressed local
store, with our HTTP store as its client in every wire format.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.server.chunks import ChunkService
from desync_decl.stores import http
from desync_decl.stores.base import StoreError
from desync_decl.stores.converters import COMPRESSED, Cipher, StorageFormat
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.single_flight import single_flight
from desync_decl.stores.swap import StoreStack
from tests import servers_http, store_contract
from tests.desync_suite.desync_keys import TEST_KEY
from tests.desync_suite.raw_http import ask
from tests.store_contract import chunk_of

serve = servers_http.serve  # the fixture
opened = store_contract.opened  # the fixture: stores closed after the test

ONE_TRY = StoreOptions(error_retry=1)


def some_data() -> Chunk:
    return chunk_of(b"some data")


def server(serve, root: Path, wire: StorageFormat, writable: bool = True) -> str:
    """A chunk-server answering in ``wire`` format over a compressed local store."""
    upstream = LocalStore(root, skip_verify=True, create=True)
    return serve(
        ChunkService(StoreStack(single_flight(upstream)), wire=wire, writable=writable)
    ).url


def client(url: str, options: StoreOptions, opened: list) -> http.ObjectChunkStore:
    store = http.open_chunk_store(url, options, Opener())
    opened.append(store)
    return store


def test_a_read_only_server_refuses_what_a_writable_one_stores(serve, tmp_path, opened):
    """TestHTTPHandlerReadWrite."""
    rw = client(server(serve, tmp_path, COMPRESSED), ONE_TRY, opened)
    ro = client(server(serve, tmp_path, COMPRESSED, writable=False), ONE_TRY, opened)
    chunk = some_data()
    rw.store_chunk(chunk)
    assert rw.has_chunk(chunk.id)
    with pytest.raises(StoreError, match="not enabled"):
        ro.store_chunk(chunk)


def test_compressed_and_uncompressed_servers_over_one_store(serve, tmp_path, opened):
    """TestHTTPHandlerCompression."""
    co_url = server(serve, tmp_path, COMPRESSED)
    un_url = server(serve, tmp_path, StorageFormat(compressed=False))
    co = client(co_url, ONE_TRY, opened)
    un = client(un_url, StoreOptions(error_retry=1, uncompressed=True), opened)
    wrong = client(un_url, ONE_TRY, opened)  # asks an uncompressed server for .cacnk
    chunk = some_data()
    with pytest.raises(StoreError, match="400"):
        wrong.get_chunk(chunk.id)
    co.store_chunk(chunk)
    assert co.has_chunk(chunk.id)
    assert un.has_chunk(chunk.id)  # the same chunk, asked for uncompressed
    un.store_chunk(chunk)  # sent uncompressed
    assert bytes(un.get_chunk(chunk.id).plain()) == b"some data"


def test_an_encrypting_server_round_trips_through_an_encrypting_client(serve, tmp_path, opened):
    """TestHTTPHandlerEncryption: encryption without compression on the wire."""
    wire = StorageFormat(compressed=False, cipher=Cipher("xchacha20-poly1305", TEST_KEY))
    options = StoreOptions(
        error_retry=1, uncompressed=True, encryption=True, encryption_key=TEST_KEY
    )
    store = client(server(serve, tmp_path, wire), options, opened)
    chunk = some_data()
    store.store_chunk(chunk)
    assert bytes(store.get_chunk(chunk.id).plain()) == b"some data"


def test_a_chunk_path_with_an_extension_the_server_does_not_serve_names_the_settings(
    serve, tmp_path
):
    """TestHTTPHandlerExtensionMismatch: a server without compression or encryption
    has no extension; asking it for ``.cacnk`` is 400 naming the settings to check,
    and the same path without the extension is a valid chunk path (404: not there)."""
    url = server(serve, tmp_path, StorageFormat(compressed=False))
    h = some_data().id.hex()
    status, body = ask(url, "GET", f"/{h[:4]}/{h}.cacnk")
    assert status == 400 and b"compression and encryption settings" in body
    assert ask(url, "GET", f"/{h[:4]}/{h}")[0] == 404
