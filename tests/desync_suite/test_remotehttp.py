"""Ports of desync's ``remotehttp_test.go``: our HTTP store's URLs, status mapping,
retries and uploads, against a real server (``serve``: our listener) whose service
answers each chunk path as the Go test's handler did and counts the requests.

desync's ``ErrorRetry: 5`` is five attempts in its HTTP store, and so is our
``error_retry=5`` (in every store: README, compatibility).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from desync_decl.formats import chunkfile
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.server.messages import Request, Response
from desync_decl.stores import http
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError
from desync_decl.stores.converters import Cipher
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests import servers_http, store_contract
from tests.desync_suite.desync_keys import TEST_KEY

serve = servers_http.serve  # the fixture
opened = store_contract.opened  # the fixture: stores closed after the test

RETRY_5 = StoreOptions(error_retry=5, error_retry_base_interval=1e-6)
RETRY_5_PLAIN = StoreOptions(error_retry=5, error_retry_base_interval=1e-6, uncompressed=True)


def chunk_id(*leading: int) -> ChunkID:
    """desync's ``ChunkID{0, 0, 0, 1}``: the given bytes, then zeros."""
    return ChunkID(bytes(leading) + bytes(32 - len(leading)))


def id_of(text: str) -> ChunkID:
    return Digest.SHA512_256.hash(text.encode())


def path_of(id: ChunkID, extension: str = "") -> str:
    h = id.hex()
    return f"/{h[:4]}/{h}{extension}"


# A rule answers a request (status, body) given how many requests the test has sent.
Rule = Callable[[int], tuple[int, bytes]]


def always(status: int, body: bytes = b"") -> Rule:
    return lambda _: (status, body)


def from_attempt(n: int, then: tuple[int, bytes]) -> Rule:
    """502 "Bad Gateway" before the ``n``th request, ``then`` from it on."""
    return lambda attempt: then if attempt >= n else (502, b"Bad Gateway")


@dataclass
class Handler:
    """The Go test's handler: a rule per path, 400 for any other; counts requests and
    keeps the last upload's body."""

    rules: dict[str, Rule]
    attempts: int = 0
    written: bytes | None = None
    paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> Response:
        sent = b""
        if request.method == "PUT":
            while piece := request.body.read(65536):
                sent += piece
        with self._lock:
            self.attempts += 1
            self.paths.append(request.path)
            rule = self.rules.get(request.path, always(400))
            status, body = rule(self.attempts)
            if request.method == "PUT" and status in (200, 201):
                self.written = sent
        return Response(status, b"" if request.method == "HEAD" else body)

    def reset(self) -> None:
        self.attempts, self.written = 0, None


def store_at(url: str, options: StoreOptions, opened: list) -> http.ObjectChunkStore:
    store = http.open_chunk_store(url, options, Opener())
    opened.append(store)
    return store


# --- TestHTTPStoreURL -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store_path", "server_path"),
    [
        ("", ""),
        ("/", ""),
        ("/path", "/path"),
        ("/path/", "/path"),
        ("/path1/path2", "/path1/path2"),
    ],
    ids=["no path", "slash only", "no trailing slash", "with trailing slash", "long path"],
)
def test_chunk_urls_are_the_store_path_plus_prefix_and_id(serve, opened, store_path, server_path):
    """TestHTTPStoreURL."""
    handler = Handler({})
    base = serve(handler).url.rstrip("/")
    store = store_at(base + store_path, StoreOptions(error_retry=1), opened)
    id = chunk_id(1, 2, 3, 4)
    with pytest.raises(StoreError):
        store.get_chunk(id)  # the handler answers 400: only the path matters here
    assert handler.paths == [server_path + path_of(id, ".cacnk")]


# --- TestHasChunk -----------------------------------------------------------------------

HAS_RULES = {
    path_of(chunk_id(0, 0, 0, 1), ".cacnk"): always(200),
    path_of(chunk_id(0, 0, 0, 2), ".cacnk"): always(404),
    path_of(chunk_id(0, 0, 0, 3), ".cacnk"): always(400),
    path_of(chunk_id(0, 0, 0, 4), ".cacnk"): always(403),
    path_of(chunk_id(0, 0, 0, 5), ".cacnk"): always(502, b"Bad Gateway"),
    path_of(chunk_id(0, 0, 0, 6), ".cacnk"): from_attempt(2, (200, b"")),
    path_of(chunk_id(0, 0, 0, 7), ".cacnk"): from_attempt(3, (404, b"")),
}


@pytest.mark.parametrize(
    ("n", "has", "fails", "attempts"),
    [(1, True, False, 1), (2, False, False, 1), (3, False, True, 1), (4, False, True, 1),
     (5, False, True, 5), (6, True, False, 2), (7, False, False, 3)],
    ids=["chunk exists", "chunk does not exist", "bad request", "forbidden", "permanent 503",
         "temporary 503, then chunk exists", "temporary 503, then chunk does not exist"],
)  # fmt: skip
def test_has_chunk_maps_statuses_and_retries_only_server_errors(
    serve, opened, n, has, fails, attempts
):
    """TestHasChunk."""
    handler = Handler(HAS_RULES)
    store = store_at(serve(handler).url, RETRY_5, opened)
    if fails:
        with pytest.raises(StoreError):
            store.has_chunk(chunk_id(0, 0, 0, n))
    else:
        assert store.has_chunk(chunk_id(0, 0, 0, n)) is has
    assert handler.attempts == attempts


# --- TestGetChunk -----------------------------------------------------------------------

CONTENT_1, CONTENT_6 = b"Chunk Content String 1", b"Chunk Content String 6"
GET_RULES = {
    path_of(id_of("Chunk Content String 1")): always(200, CONTENT_1),
    path_of(chunk_id(0, 0, 0, 1)): always(200, b"Chunk Content With hash mismatch"),
    path_of(chunk_id(0, 0, 0, 2)): always(404),
    path_of(chunk_id(0, 0, 0, 3)): always(400, b"BadRequest"),
    path_of(chunk_id(0, 0, 0, 4)): always(403, b"Forbidden"),
    path_of(chunk_id(0, 0, 0, 5)): always(502, b"Bad Gateway"),
    path_of(id_of("Chunk Content String 6")): from_attempt(2, (200, CONTENT_6)),
    path_of(chunk_id(0, 0, 0, 7)): from_attempt(3, (404, b"")),
}


@pytest.mark.parametrize(
    ("id", "content", "error", "attempts"),
    [
        (id_of("Chunk Content String 1"), CONTENT_1, None, 1),
        (chunk_id(0, 0, 0, 1), None, ChunkInvalid, 1),
        (chunk_id(0, 0, 0, 2), None, ChunkMissing, 1),
        (chunk_id(0, 0, 0, 3), None, StoreError, 1),
        (chunk_id(0, 0, 0, 4), None, StoreError, 1),
        (chunk_id(0, 0, 0, 5), None, StoreError, 5),
        (id_of("Chunk Content String 6"), CONTENT_6, None, 2),
        (chunk_id(0, 0, 0, 7), None, ChunkMissing, 3),
    ],
    ids=["chunk exists", "chunk exists, but invalid hash", "chunk does not exist", "bad request",
         "forbidden", "permanent 503", "temporary 503, then chunk exists",
         "temporary 503, then chunk does not exist"],
)  # fmt: skip
def test_get_chunk_maps_statuses_verifies_and_retries_only_server_errors(
    serve, opened, id, content, error, attempts
):
    """TestGetChunk (uncompressed store: paths without an extension). Beyond desync: a
    store's first 404 also asks its base once (HEAD), so a wrong URL is "no store
    there", not a missing chunk (issue 19); the Go handler answers it 400: a store."""
    handler = Handler(GET_RULES)
    store = store_at(serve(handler).url, RETRY_5_PLAIN, opened)
    if error is None:
        assert bytes(store.get_chunk(id).plain()) == content
    else:
        with pytest.raises(error):
            store.get_chunk(id)
    base_checks = 1 if error is ChunkMissing else 0
    assert handler.paths.count("/") == base_checks
    assert handler.attempts == attempts + base_checks


# --- TestPutChunk -----------------------------------------------------------------------

ID_1 = id_of("Chunk Content String 1")
ID_1_CREATED = ChunkID(bytes([0x3C]) + ID_1[1:])  # desync's 3cc8...: answered 201 Created
PUT_RULES = {
    path_of(ID_1): always(200),
    path_of(ID_1_CREATED): always(201),
    path_of(chunk_id(0, 0, 0, 3)): always(400, b"BadRequest"),
    path_of(chunk_id(0, 0, 0, 4)): always(403, b"Forbidden"),
    path_of(chunk_id(0, 0, 0, 5)): always(502, b"Bad Gateway"),
    path_of(id_of("Chunk Content String 6")): from_attempt(2, (200, b"")),
}


@pytest.mark.parametrize(
    ("id", "content", "fails", "attempts"),
    [
        (ID_1, b"Chunk Content String 1", False, 1),
        (ID_1_CREATED, b"Chunk Content String 1", False, 1),
        (chunk_id(0, 0, 0, 2), b"", True, 0),
        (chunk_id(0, 0, 0, 3), b"3", True, 1),
        (chunk_id(0, 0, 0, 4), b"4", True, 1),
        (chunk_id(0, 0, 0, 5), b"5", True, 5),
        (id_of("Chunk Content String 6"), b"Chunk Content String 6", False, 2),
    ],
    ids=["store chunk successful", "store chunk successful - created",
         "store chunk not allowed with no chunk content", "bad request", "forbidden",
         "permanent 503", "temporary 503, then store chunk successful"],
)  # fmt: skip
def test_store_chunk_takes_200_and_201_and_retries_only_server_errors(
    serve, opened, id, content, fails, attempts
):
    """TestPutChunk (uncompressed store): the chunk's bytes arrive as they are."""
    handler = Handler(PUT_RULES)
    store = store_at(serve(handler).url, RETRY_5_PLAIN, opened)
    chunk = Chunk(id, plain=content)  # the id is taken as given (desync: skipVerify)
    if fails:
        with pytest.raises(StoreError):
            store.store_chunk(chunk)
        assert handler.written is None
    else:
        store.store_chunk(chunk)
        assert handler.written == content
    assert handler.attempts == attempts


# --- TestRetryExhaustedError ------------------------------------------------------------


def test_exhausted_retries_report_the_servers_status_and_body(serve, opened):
    """TestRetryExhaustedError."""
    handler = Handler({path_of(chunk_id(0, 0, 0, 1)): always(503, b"service down for maintenance")})
    options = StoreOptions(error_retry=2, error_retry_base_interval=1e-6, uncompressed=True)
    store = store_at(serve(handler).url, options, opened)
    with pytest.raises(StoreError, match="503"):
        store.get_chunk(chunk_id(0, 0, 0, 1))
    with pytest.raises(StoreError, match="503"):
        store.has_chunk(chunk_id(0, 0, 0, 1))
    with pytest.raises(StoreError, match="service down for maintenance"):
        store.store_chunk(Chunk(chunk_id(0, 0, 0, 1), plain=b"data"))
    assert handler.attempts == 6  # two attempts each


# --- TestRemoteHTTPPutEncrypted ---------------------------------------------------------


def test_an_upload_is_compressed_then_encrypted(serve, opened):
    """TestRemoteHTTPPutEncrypted: unwinding the body by hand, decryption first."""
    chunk = Chunk(id_of("some data"), plain=b"some data")
    cipher = Cipher("xchacha20-poly1305", TEST_KEY)
    handler = Handler({path_of(chunk.id, ".cacnk" + cipher.extension): always(200)})
    options = StoreOptions(encryption=True, encryption_key=TEST_KEY)
    store_at(serve(handler).url, options, opened).store_chunk(chunk)
    assert handler.written is not None
    assert chunkfile.decompress(cipher.decrypt(handler.written), 1 << 20) == b"some data"
