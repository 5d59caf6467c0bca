"""chunk-server and index-server against hostile clients, second round (issue 12).

A red team re-attacked the first round's bounds and found what they missed:
TLS connections still in their handshake were neither counted nor bounded;
an index answer was built whole in memory for every GET, so connections
that pipelined GETs of a large index without reading the answers each held
one; uploads trickled at 1.2 KB/s passed the minimum rate and 16 slots per
address let two addresses hold every upload slot; idle connections from a
handful of addresses locked every other client out at the connection bound;
and an access-log file received C1 control characters raw.

Each test runs a real server (a ``cli_server`` process where memory is
measured, else an in-process listener with shortened deadlines) over real
sockets; none asserts how fast anything is.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import time
from pathlib import Path

from desync_decl.server.indexes import IndexService
from desync_decl.server.listen import Limits
from desync_decl.stores.index_store import LocalIndexStore
from tests import servers_http, test_server_hostile
from tests.servers_http import chunk_service
from tests.store_contract import random_chunks
from tests.test_server_hostile import (
    OTHER,
    PATIENCE,
    address,
    ask_from,
    closed_by_server,
    connect_from,
    generated_index,
    index_bytes,
    status_of,
)
from tests.test_server_security import raw
from tests.test_servers import ask, chunk_path
from tests.waiting import (
    accept_backlog,
    admitted,
    partial_heads,
    server_state,
    uploading,
    wait_until,
)

serve, cli_server, certs = servers_http.serve, servers_http.cli_server, servers_http.certs
store = test_server_hostile.store  # a local store holding two chunks


# --- the access log ------------------------------------------------------------------------


def test_a_log_file_gets_c1_control_characters_escaped(tmp_path, store, cli_server):
    root, _ = store
    log = tmp_path / "access.log"
    process = cli_server("chunk-server", "-s", root, "--log", log)
    raw(process.url, b"GET /\x9b2J\x9d0;evil\x9c/x HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert process.stop() == 0
    text = log.read_text(encoding="utf-8")
    assert "Request: GET /" in text
    assert not any(0x80 <= ord(c) <= 0x9F or (ord(c) < 0x20 and c != "\n") for c in text), text
    assert "\\x9b2J\\x9d0;evil\\x9c/x" in text


# --- uploads: a minimum rate that costs bandwidth, per-client bounds small against the total


def test_an_upload_trickled_at_8_kib_per_second_is_cut_off_before_it_ends(serve, store):
    """1.2 KB/s passed the old 1 KiB/s minimum: 32 such uploads held every slot. Only
    the grace is shortened here; the minimum rate is the default."""
    root, _ = store
    chunk = random_chunks(1, seed=62)[0]
    url = serve(chunk_service(root, writable=True), limits=Limits(body_timeout=1.0)).url
    length = 1 << 20
    with connect_from(url) as s:
        s.sendall(f"PUT {chunk_path(chunk)} HTTP/1.1\r\nContent-Length: {length}\r\n\r\n".encode())
        answer, sent = bytearray(), 0
        while not closed_by_server(s, answer):
            assert sent < length, "the whole body was accepted at 8 KiB/s"
            with contextlib.suppress(OSError):
                sent += s.send(b"x" * 2048)
            time.sleep(0.25)  # pauses well within the grace: only the rate is too low
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_two_addresses_cannot_hold_every_upload_slot(tmp_path, serve):
    """With the default bounds, uploads held open from two addresses leave room for a
    third address's upload."""
    idx = tmp_path / "idx"
    idx.mkdir()
    listener = serve(IndexService(LocalIndexStore(idx), writable=True))
    url = listener.url
    head = b"PUT /slow.caibx HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
    slow = [connect_from(url, source) for source in ("127.0.0.3", "127.0.0.4") for _ in range(16)]
    try:
        for s in slow:
            s.sendall(head + b"x")
        wait_until(lambda: server_state(listener, uploading) == 32, "all 32 are being received")
        assert ask_from(OTHER, url, "PUT", "/b.caibx", index_bytes(4))[0] == 200
    finally:
        for s in slow:
            s.close()


# --- connections: idle ones give way at the total bound ------------------------------------


def test_idle_connections_from_several_addresses_do_not_lock_a_new_client_out(serve, store):
    """Each address within its share, together at the total bound: a new client evicts
    the connection idle longest instead of being refused 503."""
    root, chunks = store
    limits = Limits(max_connections=20, max_connections_per_client=5)
    listener = serve(chunk_service(root), limits=limits)
    url = listener.url
    sources = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
    idle = [connect_from(url, source) for source in sources for _ in range(5)]
    idle[0].sendall(b"GET /x HTTP/1.1\r\n")  # a head not complete is no request in progress
    try:
        wait_until(lambda: server_state(listener, admitted) == 20, "all 20 are admitted")
        wait_until(lambda: server_state(listener, partial_heads) == 1, "the part of a head came")
        for _ in range(3):
            status, body, _ = ask_from(OTHER, url, "GET", chunk_path(chunks[0]))
            assert (status, body) == (200, chunks[0].stored())
        evicted = [s for s in idle if closed_by_server(s)]
        assert idle[0] in evicted  # the one waiting longest went first
    finally:
        for s in idle:
            s.close()


def test_a_client_past_its_own_share_is_still_refused_and_evicts_nobody(serve, store):
    root, _ = store
    limits = Limits(max_connections=8, max_connections_per_client=2)
    url = serve(chunk_service(root), limits=limits).url
    mine = [connect_from(url) for _ in range(2)]
    others = [connect_from(url, OTHER) for _ in range(2)]
    try:
        answer = raw(url, b"")
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in answer
        assert not any(closed_by_server(s) for s in mine + others)
    finally:
        for s in mine + others:
            s.close()


# --- TLS: connections count from their accept, handshakes have a deadline -----------------


def tls_get(url: str, path: str, ca: Path, source: str = OTHER) -> tuple[int, bytes]:
    host, port = address(url)
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(
        host, port, timeout=PATIENCE, context=context, source_address=(source, 0)
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_connections_that_never_start_tls_leave_a_tls_server_small(store, cli_server, certs):
    """3,000 such connections took a chunk-server from 28 MB to 943 MB: asyncio's TLS
    buffers came at accept, the slots counted a connection after its handshake."""
    root, chunks = store
    process = cli_server(
        "chunk-server", "-s", root, "--cert", certs.server_cert, "--key", certs.server_key
    )
    path = chunk_path(chunks[0])
    assert tls_get(process.url, path, certs.ca) == (200, chunks[0].stored())
    before = status_of(process.process.pid, "VmRSS")
    silent = []
    try:
        for _ in range(800):  # from one address, as the red team did
            with contextlib.suppress(OSError):
                silent.append(connect_from(process.url))
        port = address(process.url)[1]
        wait_until(lambda: accept_backlog(port) == 0, "the server has accepted them all")
        grown = status_of(process.process.pid, "VmRSS") - before
        assert tls_get(process.url, path, certs.ca) == (200, chunks[0].stored())
    finally:
        for s in silent:
            s.close()
    assert grown < 64 << 20, (
        f"{len(silent)} silent connections grew the server by {grown >> 20} MiB"
    )
    assert process.stop() == 0


def test_a_tls_client_past_its_share_is_closed_before_any_handshake(serve, store, certs):
    from desync_decl.server import tls

    root, chunks = store
    context = tls.server_context(str(certs.server_cert), str(certs.server_key))
    limits = Limits(max_connections_per_client=4)
    url = serve(chunk_service(root), tls=context, limits=limits).url
    handshaking = [connect_from(url) for _ in range(4)]
    try:
        with connect_from(url) as fifth:
            deadline = time.monotonic() + PATIENCE
            while not closed_by_server(fifth):
                assert time.monotonic() < deadline, "a fifth connection was let handshake"
                time.sleep(0.05)
        assert not any(closed_by_server(s) for s in handshaking)  # they hold the share
        assert tls_get(url, chunk_path(chunks[0]), certs.ca) == (200, chunks[0].stored())
    finally:
        for s in handshaking:
            s.close()


def test_a_handshake_not_finished_in_time_is_closed_and_gives_its_slot_back(serve, store, certs):
    from desync_decl.server import tls

    root, chunks = store
    context = tls.server_context(str(certs.server_cert), str(certs.server_key))
    limits = Limits(max_connections_per_client=1, handshake_timeout=1.0)
    url = serve(chunk_service(root), tls=context, limits=limits).url
    with connect_from(url) as partial:
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello begins
        deadline = time.monotonic() + PATIENCE
        while not closed_by_server(partial):
            assert time.monotonic() < deadline, "a handshake begun was kept open"
            time.sleep(0.1)
    deadline = time.monotonic() + PATIENCE  # its slot is free again for the same address
    while True:
        try:
            assert tls_get(url, chunk_path(chunks[0]), certs.ca, "127.0.0.1")[0] == 200
            break
        except (OSError, http.client.HTTPException):
            assert time.monotonic() < deadline
            time.sleep(0.1)


# --- answers: an index is sent as the client takes it, never built whole per connection ----


def test_pipelined_gets_of_a_large_index_on_many_connections_leave_the_server_small(
    tmp_path, cli_server
):
    """60 connections pipelining GETs of an 11 MB index without reading took an
    index-server from 35 MB to 679 MB: each held the whole answer."""
    idx = tmp_path / "idx"
    idx.mkdir()
    size, pieces, _ = generated_index(275_000)
    with (idx / "huge.caibx").open("wb") as f:
        for piece in pieces:
            f.write(piece)
    process = cli_server("index-server", "-s", idx)
    status, body, _ = ask(process.url, "GET", "/huge.caibx")
    assert status == 200 and len(body) == size
    del body
    before = status_of(process.process.pid, "VmRSS")
    request = b"GET /huge.caibx HTTP/1.1\r\nHost: x\r\n\r\n" * 20
    held = []
    try:
        for _ in range(60):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up at once
            s.connect(address(process.url))
            s.sendall(request)
            held.append(s)
        time.sleep(3.0)  # the server does what it would with them
        grown = status_of(process.process.pid, "VmRSS") - before
    finally:
        for s in held:
            s.close()
    assert grown < 100 << 20, f"60 connections grew the server by {grown >> 20} MiB"
    assert ask(process.url, "GET", "/huge.caibx")[0] == 200
    assert process.stop() == 0
