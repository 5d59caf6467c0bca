"""Ports of desync's ``s3_test.go`` against the real S3 API server the suite runs (moto):
desync's ``blob1.store`` chunk is put in a bucket, and our S3 store reads it.

desync's test server broke the first object read on purpose: half the body then a
TCP reset, or a complete answer whose body (and Content-Length) is half the object.
moto cannot be made to do either, so the faults come from ``FaultyProxy``, a proxy
between the store and moto that passes everything through except the first object
read, which it breaks that way; it also counts the requests.

desync's S3 ``ErrorRetry: 1`` is one retry (two reads); ours counts attempts in
every store (README, compatibility), so those cases use ``error_retry=2``.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest, parse_id
from desync_decl.stores import s3
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests.servers_http import serving

pytest_plugins = ["tests.servers_cloud"]

CHUNK = "dda036db05bc2b99b6b9303d28496000c34b246457ae4bbf00fe625b5cabd7cd"
ID = parse_id(CHUNK)
FAST = 0.001  # seconds: the retries' base interval


class FaultyProxy(http.server.ThreadingHTTPServer):
    """Passes requests to ``upstream`` (moto) and its answers back, except that the
    first ``faults`` whole-object GETs of a chunk are broken as ``mode`` says:
    ``reset`` sends the headers and half the body, then resets the connection;
    ``truncate`` sends a well-formed answer of half the body with a Content-Length
    that matches it. ``requests`` counts every request that reached it."""

    daemon_threads = True

    def __init__(self, upstream: str, mode: str = "", faults: int = 0) -> None:
        self.upstream, self.mode, self.faults = upstream, mode, faults
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Relay)
        self.hostport = f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the reset connection is the point


class _Relay(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyProxy

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=10)
        try:
            upstream.request(self.command, self.path, body, dict(self.headers))
            answer = upstream.getresponse()
            data = answer.read()
            headers = [(k, v) for k, v in answer.getheaders() if k.lower() != "content-length"]
        finally:
            upstream.close()
        with self.server.lock:
            self.server.requests += 1
            whole_chunk = (
                self.command == "GET" and answer.status == 200 and "Range" not in self.headers
            )
            fault = self.server.mode if whole_chunk and self.server.faults > 0 else ""
            self.server.faults -= bool(fault)
        half = data[: len(data) // 2]
        self.send_response(answer.status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(half if fault == "truncate" else data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "reset":
            self.wfile.write(half)
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # SO_LINGER 0: the close sends a TCP reset
            self.close_connection = True
            return
        self.wfile.write(half if fault == "truncate" else data)

    do_GET = do_HEAD = do_PUT = _relay

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stored(moto_server, s3_bucket, cmd_data: Path) -> str:
    """desync's chunk ``dda036db…`` of blob1.store in a fresh bucket, under ``blob1.store/``."""
    key = f"blob1.store/{CHUNK[:4]}/{CHUNK}.cacnk"
    data = (cmd_data / key).read_bytes()
    moto_server.admin.put_object(Bucket=s3_bucket, Key=key, Body=data)
    return s3_bucket


def get_through(proxy: FaultyProxy, bucket: str, options: StoreOptions) -> Chunk:
    """Chunk ``dda036db…`` read by our S3 store through ``proxy`` (served meanwhile)."""
    with serving(proxy):
        location = f"s3+http://{proxy.hostport}/{bucket}/blob1.store/"
        store = s3.open_chunk_store(location, options, Opener(config=Config()))
        try:
            return store.get_chunk(ID)
        finally:
            store.close()


def attempts(n: int) -> StoreOptions:
    return StoreOptions(error_retry=n, error_retry_base_interval=FAST)


def test_a_chunk_is_read_from_a_well_behaved_server(moto_server, stored):
    """TestS3StoreGetChunk/no_error."""
    chunk = get_through(FaultyProxy(moto_server.hostport), stored, attempts(1))
    assert chunk.id == ID
    assert Digest.SHA512_256.hash(chunk.plain()) == ID


def test_a_connection_reset_mid_body_fails_without_retries(moto_server, stored):
    """TestS3StoreGetChunk/fail: a network failure (transient), never missing or invalid."""
    proxy = FaultyProxy(moto_server.hostport, "reset", faults=1)
    with pytest.raises(StoreError) as failed:
        get_through(proxy, stored, attempts(1))
    assert failed.value.transient
    assert proxy.requests == 1


def test_a_connection_reset_mid_body_is_retried(moto_server, stored):
    """TestS3StoreGetChunk/recover."""
    proxy = FaultyProxy(moto_server.hostport, "reset", faults=1)
    assert get_through(proxy, stored, attempts(2)).id == ID
    assert proxy.requests == 2


def test_a_short_body_without_retries_is_invalid_naming_the_decode_failure(moto_server, stored):
    """TestS3StoreGetChunk/corrupt_body_fail: ChunkInvalid that says why the data does
    not decode, not a hash mismatch against an id of zeros (desync #334)."""
    proxy = FaultyProxy(moto_server.hostport, "truncate", faults=1)
    with pytest.raises(ChunkInvalid) as invalid:
        get_through(proxy, stored, attempts(1))
    assert invalid.value.id == ID
    assert "hashes to" not in invalid.value.why and "0" * 64 not in invalid.value.why
    assert invalid.value.why  # the decoder's reason
    assert proxy.requests == 1


def test_a_short_body_is_read_again(moto_server, stored):
    """TestS3StoreGetChunk/corrupt_body_recover: an invalid read is made again under
    error-retry, and the second, whole answer is the chunk."""
    proxy = FaultyProxy(moto_server.hostport, "truncate", faults=1)
    assert get_through(proxy, stored, attempts(2)).id == ID
    assert proxy.requests == 2


def test_a_missing_chunk_is_missing_after_one_request(moto_server, s3_bucket):
    """TestS3StoreGetMissingChunk: a missing chunk is normal behind a router or a
    cache, so it is never retried."""
    proxy = FaultyProxy(moto_server.hostport)
    with pytest.raises(ChunkMissing):
        get_through(proxy, s3_bucket, attempts(3))
    assert proxy.requests == 1


def test_a_chunk_invalid_on_every_read_is_invalid_after_the_last_attempt(moto_server, stored):
    """How far the re-reading goes: ``error_retry`` reads in all, then ChunkInvalid
    (what a cache repairs, a router does not hide)."""
    proxy = FaultyProxy(moto_server.hostport, "truncate", faults=10)
    with pytest.raises(ChunkInvalid):
        get_through(proxy, stored, attempts(3))
    assert proxy.requests == 3
