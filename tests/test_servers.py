"""chunk-server and index-server: every answer they give, over real sockets.

Requests are sent raw (``http.client`` sends a path exactly as written, so
``/../`` and ``%2e%2e`` arrive as attackers would send them). Then the verbs
themselves as processes: a listener that cannot bind, SIGHUP reloading the
store file, SIGTERM, the access log, and the CLI round trips through them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.server.chunks import ChunkService
from desync_decl.server.indexes import IndexService
from desync_decl.server.listen import AccessLog
from desync_decl.stores import http as http_store
from desync_decl.stores.converters import COMPRESSED, StorageFormat
from desync_decl.stores.index_store import LocalIndexStore
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.single_flight import single_flight
from desync_decl.stores.swap import StoreStack
from tests import servers_http
from tests.servers_http import Step
from tests.store_contract import random_chunks

serve, scripted, cli_server, certs = (
    servers_http.serve,
    servers_http.scripted,
    servers_http.cli_server,
    servers_http.certs,
)
UNCOMPRESSED = StorageFormat(compressed=False)


def http_connection(url: str) -> http.client.HTTPConnection:
    u = urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=5)


def connect(url: str, timeout: float = 5) -> socket.socket:
    """A plain TCP connection to the server at ``url``, for bytes no HTTP client sends."""
    u = urlsplit(url)
    return socket.create_connection((u.hostname, u.port), timeout=timeout)


def ask(url: str, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, body, headers) of one request sent exactly as given."""
    connection = http_connection(url)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def chunk_path(chunk: Chunk, extension: str = ".cacnk") -> str:
    h = chunk.id.hex()
    return f"/{h[:4]}/{h}{extension}"


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class Chunks:
    """A chunk-server over a local store holding two chunks; ``reports`` what it logs."""

    def __init__(self, root: Path, serve, wire: StorageFormat = COMPRESSED, **kwargs) -> None:
        self.root = root
        self.store = LocalStore(root / "store", create=True)
        self.stored = random_chunks(2, seed=21)
        for c in self.stored:
            self.store.store_chunk(c)
        self.absent = random_chunks(1, seed=22)[0]
        self.reports: list[str] = []
        service = ChunkService(
            StoreStack(single_flight(self.store)), wire=wire, report=self.reports.append, **kwargs
        )
        self.url = serve(service).url

    def ask(self, method: str, path: str, body: bytes | None = None, headers=None):
        return ask(self.url, method, path, body, headers)


@pytest.fixture
def chunks(tmp_path, serve):
    return lambda **kwargs: Chunks(tmp_path, serve, **kwargs)


# --- chunk-server: reading -------------------------------------------------------------


def test_get_serves_the_stored_chunk_file_and_head_says_it_is_there(chunks):
    server = chunks()
    chunk = server.stored[0]
    status, body, headers = server.ask("GET", chunk_path(chunk))
    assert status == 200 and body == chunk.stored()
    assert headers["Content-Type"] == "application/octet-stream"
    assert server.ask("HEAD", chunk_path(chunk))[:2] == (200, b"")


def test_a_missing_chunk_is_404_for_get_and_head(chunks):
    server = chunks()
    status, body, _ = server.ask("GET", chunk_path(server.absent))
    assert status == 404 and server.absent.id.hex() in body.decode()
    assert server.ask("HEAD", chunk_path(server.absent))[0] == 404


def test_an_uncompressed_server_serves_plain_bytes_at_paths_without_extension(chunks):
    server = chunks(wire=UNCOMPRESSED)
    chunk = server.stored[0]
    assert server.ask("GET", chunk_path(chunk, ""))[:2] == (200, bytes(chunk.plain()))
    status, body, _ = server.ask("GET", chunk_path(chunk))
    assert status == 400 and b"invalid chunk extension" in body


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/0000",
        "/etc/passwd",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2Fetc%2Fpasswd",
        "//etc/passwd",
        "http://127.0.0.1/../../etc/passwd",
        "/0000/../../etc/passwd",
        "/ABCD/" + "AB" * 32 + ".cacnk",
        "/abcd/" + "ab" * 32 + ".cacnk/../x",
    ],
)
def test_anything_but_prefix_slash_id_extension_is_400_and_touches_no_file(chunks, path):
    server = chunks(writable=True)
    before = files_under(server.root)
    for method in ("GET", "HEAD", "PUT"):
        status, _, _ = server.ask(method, path, b"x" if method == "PUT" else None)
        assert status == 400, (method, path)
    assert files_under(server.root) == before
    assert not server.reports


def test_a_chunk_in_the_wrong_directory_is_400(chunks):
    server = chunks()
    h = server.stored[0].id.hex()
    status, body, _ = server.ask("GET", f"/0000/{h}.cacnk")
    assert status == 400 and b"directory" in body


@pytest.mark.parametrize("method", ["DELETE", "POST", "PATCH", "OPTIONS", "PROPFIND"])
def test_other_methods_are_405_with_the_allowed_ones_named(chunks, method):
    server = chunks(writable=True)
    status, _, headers = server.ask(method, chunk_path(server.stored[0]))
    assert status == 405 and headers["Allow"] == "GET, HEAD, PUT"
    assert server.store.has_chunk(server.stored[0].id)


def test_a_failing_store_is_500_with_details_only_in_the_servers_report(chunks):
    server = chunks()
    store_dir = server.root / "store"
    for p in sorted(store_dir.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    store_dir.rmdir()
    store_dir.write_bytes(b"")  # the store directory is now a file: every read fails
    status, body, _ = server.ask("GET", chunk_path(server.stored[0]))
    assert (status, body) == (500, b"internal server error\n")
    assert server.ask("HEAD", chunk_path(server.absent))[0] == 500
    assert len(server.reports) == 2 and "Not a directory" in server.reports[0]


# --- chunk-server: auth ------------------------------------------------------------------


def test_with_an_expected_authorization_every_request_needs_it(chunks):
    server = chunks(authorization="Bearer right")
    path = chunk_path(server.stored[0])
    assert server.ask("GET", path)[0] == 401
    assert server.ask("GET", path, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert server.ask("DELETE", path)[0] == 401  # before anything else is said
    assert server.ask("GET", path, headers={"Authorization": "Bearer right"})[0] == 200


# --- chunk-server: uploads ---------------------------------------------------------------


def test_uploads_need_a_writable_server(chunks):
    server = chunks()
    chunk = server.absent
    status, body, _ = server.ask("PUT", chunk_path(chunk), chunk.stored())
    assert status == 400 and b"not enabled" in body
    assert not server.store.has_chunk(chunk.id)


def test_a_valid_upload_is_stored_and_served(chunks):
    server = chunks(writable=True)
    chunk = server.absent
    assert server.ask("PUT", chunk_path(chunk), chunk.stored())[0] == 200
    assert bytes(server.store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
    assert server.ask("GET", chunk_path(chunk))[:2] == (200, chunk.stored())


def test_an_uncompressed_upload_is_stored_in_the_stores_own_format(chunks):
    server = chunks(writable=True, wire=UNCOMPRESSED)
    chunk = server.absent
    assert server.ask("PUT", chunk_path(chunk, ""), bytes(chunk.plain()))[0] == 200
    h = chunk.id.hex()
    assert (server.root / "store" / h[:4] / f"{h}.cacnk").is_file()


@pytest.mark.parametrize("body", ["other chunk", "not zstd", "empty"])
def test_an_upload_that_is_not_the_named_chunk_is_400_and_nothing_is_stored(chunks, body):
    server = chunks(writable=True)
    chunk = server.absent
    data = {
        "other chunk": server.stored[0].stored(),
        "not zstd": b"definitely not a zstd frame",
        "empty": b"",
    }[body]
    before = files_under(server.root)
    status, answer, _ = server.ask("PUT", chunk_path(chunk), data)
    assert status == 400 and b"invalid chunk" in answer
    assert files_under(server.root) == before


def test_an_oversized_upload_is_refused_before_its_body_is_read(chunks):
    server = chunks(writable=True, max_chunk_size=64 * 1024)
    chunk = Chunk(Digest.SHA512_256.hash(b"\1" * 200_000), plain=b"\1" * 200_000)
    with connect(server.url) as s:
        s.sendall(
            f"PUT {chunk_path(chunk, '.cacnk')} HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 ")  # no "100 Continue" first
        assert b"Connection: close" in answer
    compressed = chunk.stored()
    assert len(compressed) < 64 * 1024  # small on the wire, too big once decompressed
    status, body, _ = server.ask("PUT", chunk_path(chunk), compressed)
    assert status == 400 and b"more than 65536 bytes" in body
    assert not server.store.has_chunk(chunk.id)


def test_an_upload_with_expect_100_continue_gets_it_then_its_answer(chunks):
    server = chunks(writable=True)
    chunk = server.absent
    data = chunk.stored()
    with connect(server.url) as s:
        s.sendall(
            f"PUT {chunk_path(chunk)} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(data)
        assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert server.store.has_chunk(chunk.id)


def test_an_upload_without_a_content_length_is_411(chunks):
    """A chunked PUT is refused on its head alone, so the client sends only the head
    and reads until the server closes. (Sending the body after the head raced the
    server's close: bytes arriving at a closed socket make the kernel reset the
    connection, which can throw the 411 away before the client reads it.)"""
    server = chunks(writable=True)
    head = f"PUT {chunk_path(server.absent)} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = exchange(server.url, head.encode())
    assert answer.startswith(b"HTTP/1.1 411 "), answer[:80]
    assert b"Connection: close" in answer and answer.count(b"HTTP/1.1 ") == 1
    assert not server.store.has_chunk(server.absent.id)


def test_one_connection_carries_many_requests(chunks):
    server = chunks()
    connection = http_connection(server.url)
    for chunk in [*server.stored, server.absent, *server.stored]:
        connection.request("GET", chunk_path(chunk))
        response = connection.getresponse()
        response.read()
        assert response.status in (200, 404)
    connection.close()


def test_concurrent_gets_for_one_chunk_share_one_upstream_fetch(scripted, serve):
    chunk = random_chunks(1, seed=23)[0]
    upstream = scripted(Step(200, chunk.stored(), delay=0.3))
    store = http_store.open_chunk_store(upstream.url, StoreOptions(skip_verify=True), Opener())
    url = serve(ChunkService(StoreStack(single_flight(store)))).url
    answers: list = []
    threads = [
        threading.Thread(target=lambda: answers.append(ask(url, "GET", chunk_path(chunk))[:2]))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [(200, chunk.stored())] * 8
    assert len(upstream.requests) == 1
    store.close()


def test_the_access_log_has_a_line_per_request(tmp_path, serve):
    log = tmp_path / "access.log"
    with log.open("a") as stream:
        service = ChunkService(StoreStack(LocalStore(tmp_path / "s", create=True)))
        url = serve(service, log=AccessLog(stream)).url
        ask(url, "GET", "/nope")
        ask(url, "HEAD", chunk_path(random_chunks(1)[0]))
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("Request: GET /nope, Response: 400")
    assert "Client: 127.0.0.1:" in lines[1] and lines[1].endswith("Response: 404")


# --- the HTTP layer ----------------------------------------------------------------------


def exchange(url: str, raw: bytes, expect_close: bool = True) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or goes quiet)."""
    with connect(url, timeout=2) as s:
        s.sendall(raw)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except TimeoutError:
            assert not expect_close, answer
    return answer


def test_pipelined_requests_are_answered_in_order(chunks):
    server = chunks()
    a, b = server.stored
    raw = (
        f"GET {chunk_path(a)} HTTP/1.1\r\nHost: x\r\n\r\n"
        f"HEAD {chunk_path(server.absent)} HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET {chunk_path(b)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = exchange(server.url, raw)
    assert answer.count(b"HTTP/1.1 ") == 3
    first, rest = answer.split(a.stored(), 1)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 404 ") and rest.endswith(b.stored())


def test_an_http_1_0_request_is_answered_and_the_connection_closed(chunks):
    server = chunks()
    answer = exchange(server.url, f"GET {chunk_path(server.stored[0])} HTTP/1.0\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in answer


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /x\r\n\r\n", 400),
        (b"GET /x HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\n\r\n", 505),
        (b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"PUT /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"PUT /x HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400),
        (b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 411),
        (b"GET /x HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", 431),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else str(v),
)
def test_malformed_requests_are_refused_and_the_connection_closed(chunks, raw, status):
    server = chunks(writable=True)
    answer = exchange(server.url, raw)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
    assert b"Connection: close" in answer and answer.count(b"HTTP/1.1 ") == 1


def test_a_client_that_stops_mid_body_does_not_keep_the_upload(chunks):
    server = chunks(writable=True)
    chunk = server.absent
    data = chunk.stored()
    with connect(server.url) as s:
        s.sendall(
            f"PUT {chunk_path(chunk)} HTTP/1.1\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[:100]
        )
    assert server.ask("HEAD", chunk_path(chunk))[0] == 404  # the server is still answering
    assert not server.store.has_chunk(chunk.id)


# --- index-server ------------------------------------------------------------------------


@pytest.fixture
def indexes(tmp_path, serve, cli):
    """An index-server over tmp_path/idx holding ``a.caibx``; returns (url, dir, bytes)."""
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(300_000))
    (tmp_path / "idx").mkdir()
    assert cli("make", tmp_path / "idx" / "a.caibx", blob).code == 0

    def start(**kwargs):  # type: ignore[no-untyped-def]
        service = IndexService(LocalIndexStore(tmp_path / "idx"), **kwargs)
        return serve(service).url

    return start, tmp_path / "idx", (tmp_path / "idx" / "a.caibx").read_bytes()


def test_index_server_serves_an_index_and_404s_a_missing_one(indexes):
    start, _, data = indexes
    url = start()
    assert ask(url, "GET", "/a.caibx")[:2] == (200, data)
    assert ask(url, "HEAD", "/a.caibx")[:2] == (200, b"")
    assert ask(url, "GET", "/b.caibx")[0] == 404
    assert ask(url, "HEAD", "/b.caibx")[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        *("/", "/..", "/%2e%2e", "/.", "/dir/a.caibx", "/../a.caibx", "/a%2Fb", "/a%5Cb"),
        *("/a%00b", "/..sig", "/%2e%2e.sig", "/dir/a.caibx.sig"),  # a .sig names an index
    ],
)
def test_index_names_must_be_one_plain_path_element(indexes, path):
    start, directory, _ = indexes
    url = start(writable=True)
    before = files_under(directory.parent)
    for method in ("GET", "PUT"):
        status, body, _ = ask(url, method, path, b"x" if method == "PUT" else None)
        assert (status, body) == (400, b"invalid index name\n"), (method, path)
    assert files_under(directory.parent) == before


def test_index_uploads_need_a_writable_server(indexes):
    start, directory, data = indexes
    status, body, _ = ask(start(), "PUT", "/b.caibx", data)
    assert status == 400 and b"not enabled" in body
    assert not (directory / "b.caibx").exists()


def test_an_index_upload_is_parsed_and_written_whole(indexes):
    start, directory, data = indexes
    url = start(writable=True)
    assert ask(url, "PUT", "/b.caibx", data)[0] == 200
    assert sorted(os.listdir(directory)) == ["a.caibx", "b.caibx"]  # no temp file left
    assert (directory / "b.caibx").read_bytes() == data
    status, body, _ = ask(url, "PUT", "/c.caibx", b"no index at all")
    assert status == 415 and body.startswith(b"invalid index: ")
    assert not (directory / "c.caibx").exists()


def test_index_server_auth_and_methods(indexes):
    start, _, data = indexes
    url = start(authorization="token")
    assert ask(url, "GET", "/a.caibx")[0] == 401
    assert ask(url, "GET", "/a.caibx", headers={"Authorization": "token"})[:2] == (200, data)
    assert ask(url, "DELETE", "/a.caibx", headers={"Authorization": "token"})[0] == 405


def test_index_server_failures_are_500_and_oversized_uploads_413(indexes):
    start, directory, data = indexes
    url = start(writable=True, max_size=100)
    (directory / "broken.caibx").write_bytes(b"not an index")
    # a file that is no index is the request's mistake, not a failure: 400, as desync
    assert ask(url, "GET", "/broken.caibx")[:2] == (400, b"broken.caibx is not a valid index\n")
    status, body, _ = ask(url, "PUT", "/b.caibx", data)
    assert status == 413 and b"at most 100 bytes" in body
    url = start(writable=True)
    for p in directory.iterdir():
        p.unlink()
    directory.rmdir()  # the index store's directory is gone: writes fail
    assert ask(url, "PUT", "/b.caibx", data)[0] == 500


# --- the verbs ---------------------------------------------------------------------------


def test_a_listener_that_cannot_bind_is_an_error_with_exit_status_1(tmp_path, cli):
    (tmp_path / "s").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for verb in ("chunk-server", "index-server"):
            r = cli(verb, "-s", tmp_path / "s", "-l", f"127.0.0.1:{port}")
            assert r.code == 1
            assert f"cannot listen on 127.0.0.1:{port}: address already in use" in r.err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-w", "-s", "A", "-s", "B"], "exactly one store"),
        (["-w", "-s", "A", "-c", "B"], "exactly one store"),
        (["-s", "A", "--store-file", "F"], "cannot be combined"),
        (["-s", "A", "--cert", "C"], "--cert and --key"),
        (["-s", "A", "--cert", "C", "--key", "K", "--mutual-tls"], "--client-ca"),
        (["-s", "A", "--client-ca", "C"], "only used with --mutual-tls"),
        (["-s", "A", "-l", "nowhere"], "expected HOST:PORT"),
        (["-s", "A", "--encryption-key", "00"], "must be 64 hex"),
    ],
)
def test_chunk_server_refuses_flags_that_do_not_fit(tmp_path, cli, flags, message):
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
    r = cli("chunk-server", *flags, cwd=tmp_path)
    assert r.code == 1 and message in r.err, r.err


def test_chunk_server_and_index_server_processes_serve_make_and_extract(tmp_path, cli, cli_server):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1_000_000) * 2)
    (tmp_path / "store").mkdir()
    (tmp_path / "idx").mkdir()
    writable = cli_server("chunk-server", "-w", "-s", tmp_path / "store")
    index_server = cli_server("index-server", "-w", "-s", tmp_path / "idx")
    index_url = index_server.url + "blob.caibx"
    r = cli("make", "-s", writable.url, index_url, blob)
    assert r.code == 0, r.err
    reader = cli_server("chunk-server", "-s", tmp_path / "store")
    r = cli("extract", "-s", reader.url, index_url, tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    for server in (writable, index_server, reader):
        assert server.stop() == 0  # SIGTERM ends a server normally


def test_tls_mutual_tls_auth_and_the_access_log_from_the_command_line(
    tmp_path, cli, cli_server, certs
):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(500_000))
    assert cli("make", "-s", tmp_path / "store", tmp_path / "b.caibx", blob).code == 0
    server = cli_server(
        "chunk-server", "-s", tmp_path / "store", "--log", tmp_path / "access.log",
        "--cert", certs.server_cert, "--key", certs.server_key,
        "--mutual-tls", "--client-ca", certs.ca,
        env={"DESYNC_HTTP_AUTH": "Bearer from-env"},
    )  # fmt: skip
    assert server.url.startswith("https://127.0.0.1:")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {server.url: {"http-auth": "Bearer from-env"}}}))
    tls_flags = ["--ca-cert", certs.ca, "--client-cert", certs.client_cert]
    tls_flags += ["--client-key", certs.client_key, "-e", "1"]
    out = tmp_path / "out"
    r = cli("extract", "-s", server.url, *tls_flags, tmp_path / "b.caibx", out)
    assert r.code == 1 and "401" in r.err  # the server wants the value from its environment
    r = cli("--config", config, "extract", "-s", server.url, *tls_flags[:2], "-e", "1",
            tmp_path / "b.caibx", out)  # fmt: skip
    assert r.code == 1 and not out.exists()  # no client certificate: no handshake
    r = cli("--config", config, "extract", "-s", server.url, *tls_flags, tmp_path / "b.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == blob.read_bytes()
    assert server.stop() == 0
    log = (tmp_path / "access.log").read_text().splitlines()
    assert any(line.endswith(", Response: 401") for line in log)
    assert any(line.endswith(", Response: 200") for line in log)


def test_sighup_rereads_the_store_file_and_a_bad_file_keeps_the_old_stores(tmp_path, cli_server):
    first, second = LocalStore(tmp_path / "a", create=True), LocalStore(tmp_path / "b", create=True)
    chunk = random_chunks(1, seed=24)[0]
    second.store_chunk(chunk)
    first.flush()
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(tmp_path / "a")]}))
    server = cli_server("chunk-server", "--store-file", store_file)
    assert ask(server.url, "GET", chunk_path(chunk))[0] == 404

    store_file.write_text(json.dumps({"stores": [str(tmp_path / "a"), str(tmp_path / "b")]}))
    server.signal(signal.SIGHUP)
    server.wait_for("reloaded")
    assert ask(server.url, "GET", chunk_path(chunk))[:2] == (200, chunk.stored())

    store_file.write_text('{"stores": ')
    server.signal(signal.SIGHUP)
    assert "invalid JSON" in server.wait_for("keeping the current stores")
    assert ask(server.url, "GET", chunk_path(chunk))[0] == 200
    assert server.stop() == 0
