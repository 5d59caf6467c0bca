"""The HTTP(S) store client against real servers: our chunk-server and nginx.

The shared store contract runs twice: against our chunk-server (writable,
over a local store) and against nginx serving the store's files (static
GET/HEAD, WebDAV PUT; it cannot list or delete, so no prune). Then what is
particular to HTTP: how statuses map to missing / retried / refused, the
headers sent, timeouts, TLS verification (on by default: desync once had it
backwards, #343), mutual TLS, index stores by URL, and the CLI round trips.
"""

from __future__ import annotations

import subprocess

import pytest

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.server import tls
from desync_decl.server.indexes import IndexService
from desync_decl.stores import http
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError
from desync_decl.stores.converters import COMPRESSED, StorageFormat
from desync_decl.stores.index_store import LocalIndexStore
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests import servers_http, store_contract
from tests.servers_http import Certs, Step
from tests.store_contract import (
    ID_NEVER_STORED,
    KEY,
    ContractEnv,
    StoreContract,
    put_file,
    random_chunks,
)

serve, nginx, scripted, certs = (
    servers_http.serve,
    servers_http.nginx,
    servers_http.scripted,
    servers_http.certs,
)
opened = store_contract.opened  # the fixture
chunk_server = servers_http.chunk_service
FAST = StoreOptions(error_retry=3, error_retry_base_interval=0.01, timeout=5.0)


def open_store(url: str, options: StoreOptions, opened: list):
    store = http.open_chunk_store(url, options, Opener())
    opened.append(store)
    return store


class TestChunkServerStore(StoreContract):
    """One writable chunk-server per wire format, all over the same directory."""

    @pytest.fixture
    def env(self, tmp_path, serve, opened) -> ContractEnv:
        root = tmp_path / "store"
        listeners: dict[str, object] = {}

        def url_for(fmt: StorageFormat) -> str:
            if fmt.extension not in listeners:
                listeners[fmt.extension] = serve(chunk_server(root, fmt, writable=True))
            return listeners[fmt.extension].url  # type: ignore[attr-defined]

        def break_store() -> None:
            for listener in listeners.values():
                listener.close()  # type: ignore[attr-defined]

        location = url_for(COMPRESSED)
        return ContractEnv(
            location,
            lambda options: open_store(url_for(options.storage_format()), options, opened),
            put_file(root),
            break_store,
            can_prune=False,
            reads_both_forms=True,  # the local store behind it reads either file form
        )

    def test_a_plain_chunk_read_with_a_key_is_no_missing_chunk(self, env):
        """The server behind the store finds the chunk under no key and says so in its
        log (``stores.keys.WrongKey``); the client sees a failing store, not a missing
        chunk."""
        chunk = random_chunks(1, seed=16)[0]
        env.open(StoreOptions()).store_chunk(chunk)
        keyed = env.open(StoreOptions(encryption=True, encryption_key=KEY, error_retry=1))
        with pytest.raises(StoreError, match="500"):
            keyed.get_chunk(chunk.id)

    def test_encrypted_chunks_round_trip_and_need_the_key(self, env):
        """As the contract, except for data that does not decrypt: the server decrypts
        what it reads to re-encrypt it with a fresh nonce, so a chunk that cannot be
        decrypted is a failure of the store behind it (500), not bytes to pass on."""
        options = StoreOptions(encryption=True, encryption_key=KEY, error_retry=1)
        store = env.open(options)
        chunk = random_chunks(1, seed=6)[0]
        store.store_chunk(chunk)
        assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
        other_key = env.open(StoreOptions(encryption=True, encryption_key="22" * 32, error_retry=1))
        with pytest.raises(StoreError, match="500"):  # the server's store: a wrong key (issue 19)
            other_key.get_chunk(chunk.id)
        h = chunk.id.hex()
        name = f"{h[:4]}/{h}.cacnk.xchacha20-poly1305-"
        env.put_raw(name + options.storage_format().cipher.key_id, b"\0" * 64)
        with pytest.raises(StoreError, match="500"):
            store.get_chunk(chunk.id)


class TestNginxStore(StoreContract):
    """nginx serves the files as they are: every format, and corrupt data passes to the client."""

    @pytest.fixture
    def env(self, nginx, opened) -> ContractEnv:
        location = nginx.url + "store"  # no trailing slash: the client adds it
        (nginx.root / "store").mkdir()  # an empty store; a base nothing answers at is none
        return ContractEnv(
            location,
            lambda options: open_store(location, options, opened),
            put_file(nginx.root / "store"),
            nginx.stop,
            can_prune=False,
        )


# --- statuses, retries, headers, timeouts --------------------------------------------


def test_5xx_answers_are_retried_with_backoff_until_one_succeeds(scripted, opened):
    chunk = random_chunks(1)[0]
    server = scripted(Step(503), Step(502), Step(200, chunk.stored()))
    store = open_store(server.url, FAST, opened)
    assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
    assert [r[0] for r in server.requests] == ["GET"] * 3


def test_5xx_answers_after_the_last_attempt_are_a_transient_store_error(scripted, opened):
    server = scripted(Step(500, b"disk on fire"))
    store = open_store(server.url, FAST, opened)
    with pytest.raises(StoreError, match="500 Internal Server Error: disk on fire") as e:
        store.get_chunk(ID_NEVER_STORED)
    assert e.value.transient and len(server.requests) == 3


def test_a_refusal_fails_at_once_with_its_status_and_body(scripted, opened):
    server = scripted(Step(403, b"<h1>go\naway</h1>"))
    store = open_store(server.url, FAST, opened)
    with pytest.raises(StoreError, match="403 Forbidden: <h1>go away</h1>") as e:
        store.get_chunk(ID_NEVER_STORED)
    assert not e.value.transient and len(server.requests) == 1
    with pytest.raises(StoreError, match="403"):
        store.has_chunk(ID_NEVER_STORED)


def test_404_is_missing_for_get_and_has(scripted, opened):
    """...when something answers at the base (here 403, as nginx without a listing):
    the first 404 of a read asks it once (``test_store_not_found.py``)."""
    server = scripted(Step(404), Step(403), Step(404))
    store = open_store(server.url, FAST, opened)
    with pytest.raises(ChunkMissing):
        store.get_chunk(ID_NEVER_STORED)
    assert store.has_chunk(ID_NEVER_STORED) is False
    assert [r[0] for r in server.requests] == ["GET", "HEAD", "HEAD"]


def test_chunk_urls_are_the_base_plus_prefix_id_and_extension(scripted, opened):
    server = scripted(Step(404))
    open_store(server.url + "a/store", FAST, opened).has_chunk(ID_NEVER_STORED)
    open_store(server.url + "b/", FAST.with_overrides(uncompressed=True), opened).has_chunk(
        ID_NEVER_STORED
    )
    h = ID_NEVER_STORED.hex()
    assert [r[:2] for r in server.requests] == [
        ("HEAD", f"/a/store/{h[:4]}/{h}.cacnk"),
        ("HEAD", f"/b/{h[:4]}/{h}"),
    ]


def test_the_configured_authorization_and_cookie_are_sent_and_nothing_is_gzipped(scripted, opened):
    server = scripted(Step(404))
    options = FAST.with_overrides(http_auth="Bearer s3cret", http_cookie="session=42")
    open_store(server.url, options, opened).has_chunk(ID_NEVER_STORED)
    headers = server.requests[0][2]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Cookie"] == "session=42"
    assert headers["Accept-Encoding"] == "identity"


def test_a_slow_server_hits_the_timeout(scripted, opened):
    server = scripted(Step(200, b"late", delay=1.0))
    store = open_store(server.url, StoreOptions(timeout=0.2, error_retry=1), opened)
    with pytest.raises(StoreError, match="timed out") as e:
        store.get_chunk(ID_NEVER_STORED)
    assert e.value.transient


def test_a_refused_connection_is_a_transient_store_error_never_missing(opened):
    url = f"http://127.0.0.1:{servers_http.free_port()}/"
    store = open_store(url, StoreOptions(error_retry=1), opened)
    with pytest.raises(StoreError, match="connection refused") as e:
        store.has_chunk(ID_NEVER_STORED)
    assert e.value.transient


def test_an_http_store_cannot_be_listed_or_pruned(scripted, opened):
    store = open_store(scripted(Step(404)).url, FAST, opened)
    assert not hasattr(store, "iter_chunk_ids") and not hasattr(store, "prune")


def test_a_url_without_a_host_is_refused():
    with pytest.raises(StoreError, match="with a host"):
        http.open_chunk_store("http:///store", StoreOptions(), Opener())


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture
def https_store(tmp_path, serve, certs: Certs):
    """A chunk-server on HTTPS (certificate from the test CA) holding one chunk."""
    chunk = random_chunks(1, seed=11)[0]
    LocalStore(tmp_path / "s", create=True).store_chunk(chunk)

    def start(client_ca=None):  # type: ignore[no-untyped-def]
        context = tls.server_context(str(certs.server_cert), str(certs.server_key), client_ca)
        return serve(chunk_server(tmp_path / "s"), tls=context).url, chunk

    return start


def test_a_server_certificate_from_an_unknown_ca_is_refused_by_default(https_store, opened):
    url, chunk = https_store()
    store = open_store(url, FAST, opened)
    with pytest.raises(StoreError, match="certificate verify failed") as e:
        store.get_chunk(chunk.id)
    assert not e.value.transient


def test_trust_insecure_accepts_any_server_certificate(https_store, opened):
    url, chunk = https_store()
    store = open_store(url, FAST.with_overrides(trust_insecure=True), opened)
    assert store.has_chunk(chunk.id)


def test_ca_cert_makes_the_servers_ca_trusted(https_store, certs: Certs, opened):
    url, chunk = https_store()
    store = open_store(url, FAST.with_overrides(ca_cert=str(certs.ca)), opened)
    assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())


def test_mutual_tls_needs_a_client_certificate_from_the_servers_ca(
    https_store, certs: Certs, opened
):
    url, chunk = https_store(client_ca=str(certs.ca))
    trusted = FAST.with_overrides(ca_cert=str(certs.ca), error_retry=1)
    with pytest.raises(StoreError):
        open_store(url, trusted, opened).has_chunk(chunk.id)
    stranger = trusted.with_overrides(
        client_cert=str(certs.stranger_cert), client_key=str(certs.stranger_key)
    )
    with pytest.raises(StoreError):
        open_store(url, stranger, opened).has_chunk(chunk.id)
    client = trusted.with_overrides(
        client_cert=str(certs.client_cert), client_key=str(certs.client_key)
    )
    assert bytes(open_store(url, client, opened).get_chunk(chunk.id).plain()) == bytes(
        chunk.plain()
    )


# --- auth, corrupt data ----------------------------------------------------------------


def test_a_server_expecting_authorization_refuses_a_client_without_it(tmp_path, serve, opened):
    url = serve(chunk_server(tmp_path / "s", writable=True, authorization="Bearer ok")).url
    chunk = random_chunks(1)[0]
    with pytest.raises(StoreError, match="401") as e:
        open_store(url, FAST, opened).store_chunk(chunk)
    assert not e.value.transient
    store = open_store(url, FAST.with_overrides(http_auth="Bearer ok"), opened)
    store.store_chunk(chunk)
    assert store.has_chunk(chunk.id)


def test_corrupt_data_from_a_static_server_is_invalid_not_missing(nginx, opened):
    good, other = random_chunks(2, seed=12)
    h = good.id.hex()
    put_file(nginx.root)(f"{h[:4]}/{h}.cacnk", other.stored())
    with pytest.raises(ChunkInvalid):
        open_store(nginx.url, FAST, opened).get_chunk(good.id)


# --- index stores ------------------------------------------------------------------------


def test_indexes_are_written_and_read_by_url_through_an_index_server(tmp_path, serve, cli):
    (tmp_path / "idx").mkdir()
    url = serve(IndexService(LocalIndexStore(tmp_path / "idx"), writable=True)).url
    chunks = random_chunks(3, seed=13)
    index = Index.from_chunks(
        blob_flags(Digest.SHA512_256),
        ChunkSizes(16384, 65536, 262144),
        [(len(c.plain()), c.id) for c in chunks],
    )
    Opener().write_index(url + "app.caibx", index)
    assert (tmp_path / "idx" / "app.caibx").read_bytes() == index.encode()
    assert Opener().read_index(url + "app.caibx").encode() == index.encode()
    with pytest.raises(DesyncError, match="not found"):
        Opener().read_index(url + "other.caibx")


# --- CLI round trips -------------------------------------------------------------------


@pytest.fixture
def blob(tmp_path):
    data = random_chunks(1, seed=14)[0].plain()
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(data) * 40)  # ~ a few MiB with repeats: several chunks, some shared
    return path


def test_extract_through_our_chunk_server_gives_identical_bytes(tmp_path, serve, cli, blob):
    assert cli("make", "-s", tmp_path / "store", tmp_path / "b.caibx", blob).code == 0
    url = serve(chunk_server(tmp_path / "store")).url
    r = cli("extract", "-s", url, tmp_path / "b.caibx", tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_make_uploads_through_a_writable_chunk_server_and_indexes_go_by_url(
    tmp_path, serve, cli, blob
):
    (tmp_path / "idx").mkdir()
    chunks_url = serve(chunk_server(tmp_path / "store", writable=True)).url
    index_url = serve(IndexService(LocalIndexStore(tmp_path / "idx"), writable=True)).url
    r = cli("make", "-s", chunks_url, index_url + "b.caibx", blob)
    assert r.code == 0, r.err
    assert (tmp_path / "idx" / "b.caibx").is_file()
    r = cli("extract", "-s", chunks_url, index_url + "b.caibx", tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    r = cli("prune", "-y", "-s", chunks_url, index_url + "b.caibx")
    assert r.code == 1 and "does not support pruning" in r.err


def test_extract_from_nginx_serving_the_store_directory(tmp_path, nginx, cli, blob):
    store = nginx.root / "store"
    assert cli("make", "-s", store, tmp_path / "b.caibx", blob).code == 0
    r = cli("extract", "-s", nginx.url + "store", tmp_path / "b.caibx", tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


@pytest.mark.parametrize("server", ["chunk-server", "nginx"])
def test_casync_extracts_over_http_from_our_chunk_server_and_nginx(
    server, tmp_path, serve, nginx, cli, casync, blob
):
    store = nginx.root / "store"
    assert cli("make", "-s", store, tmp_path / "b.caibx", blob).code == 0
    url = serve(chunk_server(store)).url if server == "chunk-server" else nginx.url + "store"
    subprocess.run(
        [casync, "extract", f"--store={url}", str(tmp_path / "b.caibx"), str(tmp_path / "out")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
