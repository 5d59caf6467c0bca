"""chunk-server and index-server against hostile clients (issue 12): every bound holds.

Memory: pipelining requests on a socket that never reads the answers, and a
large index upload, leave the server process small (its VmRSS / VmHWM from
/proc, the real process started by ``cli_server``). Time: connections that
trickle a request head (slowloris) or a body are closed by their deadlines
while other clients are served; uploads trickled by one client neither hold
up reads nor another client's upload, the ones past the bound are refused
503 with Retry-After. Then the smaller findings: an ``Authorization`` value
beyond Latin-1 is compared as UTF-8 bytes and can come from a file (not
``ps``); symbolic links planted in a store are never followed; a
Content-Length of other than ASCII digits is a 400, not an exception; a
SIGHUP with a store file the stores cannot be opened from keeps the old ones.

Deadlines are shortened through ``listen.Limits`` for the in-process servers;
nothing here asserts how fast anything is, only that it happens within a
generous time.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.server.indexes import IndexService
from desync_decl.stores.index_store import LocalIndexStore
from desync_decl.stores.local import LocalStore
from tests import servers_http
from tests.servers_http import chunk_service
from tests.store_contract import random_chunks
from tests.test_server_security import raw
from tests.test_servers import ask, chunk_path, files_under
from tests.waiting import server_state, uploading, wait_until

serve, cli_server = servers_http.serve, servers_http.cli_server
OTHER = "127.0.0.2"  # another client: Linux answers all of 127/8 on the loopback
SECRET = b"outside every store\n"
PATIENCE = 60.0  # seconds a test waits for what must happen (never how fast it happens)


def status_of(pid: int, field: str) -> int:
    """A size from /proc/PID/status (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def address(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    return u.hostname or "", u.port or 80


def connect_from(url: str, source: str = "127.0.0.1", timeout: float = PATIENCE) -> socket.socket:
    s = socket.create_connection(address(url), timeout=timeout, source_address=(source, 0))
    return s


def ask_from(source: str, url: str, method: str, path: str, body: bytes | None = None, **kw):
    """(status, body, headers) of one request from the address ``source``."""
    host, port = address(url)
    connection = http.client.HTTPConnection(
        host, port, timeout=PATIENCE, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body, headers=kw.get("headers") or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def closed_by_server(s: socket.socket, said: bytearray | None = None) -> bool:
    """Whether the server has closed ``s``, without waiting; what it said before goes
    to ``said``."""
    try:
        while True:
            ready, _, _ = select.select([s], [], [], 0)
            if not ready:
                return False
            part = s.recv(65536)
            if not part:
                return True
            if said is not None:
                said += part
    except OSError:
        return True


def index_bytes(chunks: int) -> bytes:
    items = [(1000, bytes([i % 256]) * 32) for i in range(chunks)]
    return Index.from_chunks(
        blob_flags(Digest.SHA512_256), ChunkSizes(64, 1000, 4096), items
    ).encode()


@pytest.fixture
def store(tmp_path) -> tuple[Path, list]:
    """A local store holding two chunks."""
    root = tmp_path / "store"
    local = LocalStore(root, create=True)
    chunks = random_chunks(2, seed=51)
    for chunk in chunks:
        local.store_chunk(chunk)
    return root, chunks


# --- item 3: memory and time a client can hold ------------------------------------------


@pytest.mark.parametrize("server", ["chunk-server", "chunk-server with auth", "index-server"])
def test_pipelining_without_reading_the_answers_leaves_the_server_small(
    tmp_path, store, cli_server, server
):
    """A probe grew a chunk-server from 27 MB to 438 MB this way: the server went on
    reading requests it could not answer. Now it stops reading: the sender stalls."""
    root, chunks = store
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "a.caibx").write_bytes(index_bytes(2000))
    argv = {
        "chunk-server": ["chunk-server", "-s", root],
        "chunk-server with auth": ["chunk-server", "-s", root],
        "index-server": ["index-server", "-s", tmp_path / "idx"],
    }[server]
    env = {"DESYNC_HTTP_AUTH": "Bearer t"} if "auth" in server else {}
    process = cli_server(*argv, env=env)
    path = "/a.caibx" if server == "index-server" else chunk_path(chunks[0])
    expected = 401 if "auth" in server else 200
    assert ask(process.url, "GET", path)[0] == expected
    before = status_of(process.process.pid, "VmRSS")
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 2000
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up at once
        s.connect(address(process.url))
        s.setblocking(False)
        sent, last_progress = 0, time.monotonic()
        while sent < 400 << 20 and time.monotonic() - last_progress < 3:
            try:
                sent += s.send(request)
                last_progress = time.monotonic()
            except BlockingIOError:
                select.select([], [s], [], 0.2)
        grown = status_of(process.process.pid, "VmRSS") - before  # while the socket is open
    assert grown < 100 << 20, f"the server grew by {grown >> 20} MiB after {sent >> 20} MiB sent"
    assert sent < 200 << 20, f"the server read {sent >> 20} MiB of requests it did not answer"
    assert ask(process.url, "GET", path)[0] == expected
    assert process.stop() == 0


def test_slowloris_connections_are_closed_by_the_head_deadline_while_others_are_served(
    serve, store
):
    from desync_decl.server.listen import Limits

    root, chunks = store
    limits = Limits(head_timeout=1.0, max_connections_per_client=1000)
    url = serve(chunk_service(root), limits=limits).url
    slow = [connect_from(url) for _ in range(200)]
    for i, s in enumerate(slow):  # half send a head's first bytes, half nothing at all
        if i % 2:
            s.sendall(b"GET /x HTTP/1.1\r\nX-Slow: ")
    open_ = set(range(len(slow)))
    deadline = time.monotonic() + PATIENCE
    served = 0
    try:
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                if closed_by_server(slow[i]):
                    open_.discard(i)
                    continue
                try:
                    slow[i].send(b"a")  # a byte at a time: each keeps the connection busy
                except OSError:
                    open_.discard(i)
            status, body, _ = ask_from(OTHER, url, "GET", chunk_path(chunks[0]))
            assert (status, body) == (200, chunks[0].stored())
            served += 1
            time.sleep(0.2)
        assert not open_, f"{len(open_)} trickling connections still open after {PATIENCE} s"
        assert served
    finally:
        for s in slow:
            s.close()


def test_a_slow_head_is_answered_408(serve, store):
    from desync_decl.server.listen import Limits

    root, _ = store
    url = serve(chunk_service(root), limits=Limits(head_timeout=0.5)).url
    answer = raw(url, b"GET /x HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer


def test_one_address_cannot_take_every_connection(serve, store):
    from desync_decl.server.listen import Limits

    root, chunks = store
    url = serve(chunk_service(root), limits=Limits(max_connections_per_client=4)).url
    held = [connect_from(url) for _ in range(4)]
    try:
        answer = raw(url, b"")  # a fifth connection
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in answer
        assert ask_from(OTHER, url, "GET", chunk_path(chunks[0]))[0] == 200
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + PATIENCE  # the slots come back with the connections
    while ask(url, "GET", chunk_path(chunks[0]))[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_ipv6_clients_are_counted_by_their_64_network():
    """One IPv6 host usually holds a whole /64: counted by address, it would have no bound."""
    from desync_decl.server.limits import client_key

    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::7")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("127.0.0.1") != client_key("127.0.0.2")


# --- item 9: uploads ---------------------------------------------------------------------


def trickle(sockets: list[socket.socket], stop: threading.Event) -> None:
    """A byte every half second on every socket the server still keeps open."""
    while not stop.wait(0.5):
        for s in sockets:
            with contextlib.suppress(OSError):
                s.send(b"x")


@pytest.mark.parametrize("server", ["chunk-server", "index-server"])
def test_trickled_uploads_hold_up_no_read_and_no_other_clients_upload(
    tmp_path, store, cli_server, server
):
    """64 upload bodies sent a byte at a time took every worker: index-server answered
    nothing, chunk-server took no upload. Now one client's uploads are bounded (the
    rest are refused 503 at once) and reads have threads of their own."""
    root, chunks = store
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "a.caibx").write_bytes(index_bytes(3))
    new = random_chunks(1, seed=52)[0]
    if server == "chunk-server":
        process = cli_server("chunk-server", "-w", "-s", root)
        read, read_body = chunk_path(chunks[0]), chunks[0].stored()
        slow_path, put, put_body = chunk_path(new), chunk_path(new), new.stored()
    else:
        process = cli_server("index-server", "-w", "-s", idx)
        read, read_body = "/a.caibx", (idx / "a.caibx").read_bytes()
        slow_path, put, put_body = "/slow.caibx", "/b.caibx", index_bytes(5)
    head = f"PUT {slow_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
    slow = [connect_from(process.url) for _ in range(64)]
    stop = threading.Event()
    thread = threading.Thread(target=trickle, args=(slow, stop), daemon=True)
    try:
        for s in slow:
            s.sendall(head)
        thread.start()
        assert ask_from(OTHER, process.url, "GET", read)[:2] == (200, read_body)
        assert ask_from(OTHER, process.url, "PUT", put, put_body)[0] == 200
        assert ask_from(OTHER, process.url, "GET", read)[:2] == (200, read_body)
        refused = []
        for s in slow:
            s.setblocking(False)
            try:
                refused.append(s.recv(4096))
            except BlockingIOError:
                continue
        refused = [a for a in refused if a.startswith(b"HTTP/1.1 503 ")]
        assert refused, "no upload was refused: one client holds them all"
        assert all(b"Retry-After: " in a for a in refused)
    finally:
        stop.set()
        for s in slow:
            s.close()
    if server == "chunk-server":
        assert LocalStore(root).get_chunk(new.id).stored() == new.stored()
    else:
        assert (idx / "b.caibx").read_bytes() == put_body
    assert process.stop() == 0


def test_a_body_sent_too_slowly_is_cut_off_with_408_and_nothing_kept(serve, store):
    from desync_decl.server.listen import Limits

    root, _ = store
    chunk = random_chunks(1, seed=53)[0]
    limits = Limits(body_timeout=1.0, body_min_rate=100)
    url = serve(chunk_service(root, writable=True), limits=limits).url
    before = files_under(root)
    with connect_from(url) as s:
        s.sendall(
            f"PUT {chunk_path(chunk)} HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".encode() + b"x"
        )
        deadline = time.monotonic() + PATIENCE
        answer = bytearray()
        while not closed_by_server(s, answer):
            assert time.monotonic() < deadline, "a trickled body kept its connection"
            with contextlib.suppress(OSError):
                s.send(b"x")  # 2 bytes a second: far below the minimum rate
            time.sleep(0.5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert files_under(root) == before  # no chunk, no temp file


def test_uploads_past_the_clients_bound_are_refused_503_while_its_reads_go_on(tmp_path, serve):
    from desync_decl.server.listen import Limits

    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "a.caibx").write_bytes(index_bytes(3))
    limits = Limits(max_uploads_per_client=2)
    listener = serve(IndexService(LocalIndexStore(idx), writable=True), limits=limits)
    url = listener.url
    head = b"PUT /slow.caibx HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
    slow = [connect_from(url) for _ in range(2)]
    try:
        for s in slow:
            s.sendall(head + b"x")
        wait_until(lambda: server_state(listener, uploading) == 2, "both are being received")
        answer = raw(url, head)  # a third upload
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: " in answer
        assert ask(url, "GET", "/a.caibx")[0] == 200  # the same client reads meanwhile
        assert ask_from(OTHER, url, "PUT", "/b.caibx", index_bytes(4))[0] == 200
    finally:
        for s in slow:
            s.close()


def generated_index(chunks: int) -> tuple[int, Iterator[bytes], hashlib._Hash]:
    """A valid index of ``chunks`` entries as pieces, its size and (filled as the pieces
    are made) its SHA-256: the test never holds it whole either."""
    header = Index.from_chunks(blob_flags(Digest.SHA512_256), ChunkSizes(64, 1000, 4096), [])
    empty = header.encode()
    size = len(empty) + 40 * chunks
    digest = hashlib.sha256()
    tail = struct.pack("<5Q", 0, 0, 48, size - 48, 0x4B4F050E5549ECD1)

    def pieces() -> Iterator[bytes]:
        first = empty[:64]
        digest.update(first)
        yield first
        block = 50_000
        for start in range(0, chunks, block):
            piece = b"".join(
                struct.pack("<Q32s", 1000 * (i + 1), i.to_bytes(32, "little"))
                for i in range(start, min(chunks, start + block))
            )
            digest.update(piece)
            yield piece
        digest.update(tail)
        yield tail

    return size, pieces(), digest


def test_a_large_index_upload_is_streamed_to_disk_not_held_in_memory(tmp_path, cli_server):
    """1.5 to 2 times the body's size per upload, before: here 160 MB in, a few MB held."""
    idx = tmp_path / "idx"
    idx.mkdir()
    process = cli_server("index-server", "-w", "-s", idx)
    assert ask(process.url, "GET", "/none.caibx")[0] == 404
    peak_before = status_of(process.process.pid, "VmHWM")
    size, pieces, digest = generated_index(4_000_000)
    host, port = address(process.url)
    connection = http.client.HTTPConnection(host, port, timeout=PATIENCE)
    connection.request("PUT", "/big.caibx", body=pieces, headers={"Content-Length": str(size)})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    connection.close()
    grown = status_of(process.process.pid, "VmHWM") - peak_before
    assert grown < size // 8, f"the server's peak grew by {grown >> 20} MiB for {size >> 20} MiB"
    assert sorted(os.listdir(idx)) == ["big.caibx"]  # no temp file left
    stored = idx / "big.caibx"
    assert hashlib.sha256(stored.read_bytes()).digest() == digest.digest()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o644
    assert process.stop() == 0


def test_an_invalid_index_upload_is_refused_at_its_first_bad_bytes(tmp_path, serve):
    """Not after 100 MB: the body is checked as it arrives."""
    idx = tmp_path / "idx"
    idx.mkdir()
    url = serve(IndexService(LocalIndexStore(idx), writable=True)).url
    head = b"PUT /bad.caibx HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n"
    answer = raw(url, head + b"\0" * 4096)
    assert answer.startswith(b"HTTP/1.1 415 ") and b"not a casync index" in answer
    assert b"Connection: close" in answer
    assert os.listdir(idx) == []  # the temp file went with the upload


# --- item 11: an Authorization value beyond Latin-1; item 16: not on the command line -----

TOKEN = "Bearer 秘密のトークン"


def test_an_authorization_value_beyond_latin_1_is_compared_as_utf_8_bytes(serve, store):
    root, chunks = store
    url = serve(chunk_service(root, authorization=TOKEN)).url
    request = f"GET {chunk_path(chunks[0])} HTTP/1.1\r\nConnection: close\r\nAuthorization: "

    def status(value: bytes) -> bytes:
        return raw(url, request.encode() + value + b"\r\n\r\n")[:13]

    assert status(TOKEN.encode()) == b"HTTP/1.1 200 "
    assert status(b"Bearer " + b"?" * (len(TOKEN) - 7)) == b"HTTP/1.1 401 "
    assert status(TOKEN.encode("utf-16-le")) == b"HTTP/1.1 401 "
    assert status(TOKEN.encode()[:-1]) == b"HTTP/1.1 401 "


def test_the_authorization_value_can_come_from_a_file_and_stays_out_of_ps(
    tmp_path, store, cli_server, cli
):
    root, chunks = store
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    process = cli_server("chunk-server", "-s", root, "--authorization-file", secret)
    command_line = Path(f"/proc/{process.process.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in command_line
    path = chunk_path(chunks[0])
    request = f"GET {path} HTTP/1.1\r\nConnection: close\r\nAuthorization: {TOKEN}\r\n\r\n"
    assert raw(process.url, request.encode()).startswith(b"HTTP/1.1 200 ")
    assert ask(process.url, "GET", path)[0] == 401
    assert process.stop() == 0
    r = cli("chunk-server", "-s", root, "--authorization-file", tmp_path / "none")
    assert r.code == 1 and "cannot read authorization file" in r.err and "Traceback" not in r.err


# --- item 12: symbolic links planted in the store ------------------------------------------


def test_a_symlinked_chunk_file_is_not_served_and_an_upload_replaces_the_link(serve, tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(SECRET)
    chunk = random_chunks(1, seed=54)[0]
    root = tmp_path / "store"
    h = chunk.id.hex()
    (root / h[:4]).mkdir(parents=True)
    link = root / h[:4] / f"{h}.cacnk"
    link.symlink_to(outside)
    url = serve(chunk_service(root, writable=True)).url  # skip_verify, as chunk-server reads
    status, body, _ = ask(url, "GET", chunk_path(chunk))
    assert status != 200 and SECRET not in body
    assert ask(url, "HEAD", chunk_path(chunk))[0] == 404
    assert ask(url, "PUT", chunk_path(chunk), chunk.stored())[0] == 200
    assert outside.read_bytes() == SECRET
    assert not link.is_symlink() and link.read_bytes() == chunk.stored()


def test_a_symlinked_prefix_directory_is_neither_read_nor_written_through(serve, tmp_path):
    a, b = random_chunks(2, seed=55)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = elsewhere / f"{a.id.hex()}.cacnk"
    planted.write_bytes(SECRET)
    root = tmp_path / "store"
    root.mkdir()
    (root / a.id.hex()[:4]).symlink_to(elsewhere)
    (root / b.id.hex()[:4]).symlink_to(elsewhere)
    url = serve(chunk_service(root, writable=True)).url
    status, body, _ = ask(url, "GET", chunk_path(a))
    assert status != 200 and SECRET not in body
    assert ask(url, "PUT", chunk_path(b), b.stored())[0] != 200
    assert sorted(os.listdir(elsewhere)) == [planted.name]


# --- item 13: what used to raise inside the protocol ---------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"PUT /x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",  # "²": isdigit() but not int()
        b"PUT /x HTTP/1.1\r\nContent-Length: 1\xb3\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nContent-Length: \xb9\xb9\r\n\r\n",
        b"GET http://[::1;x]/abcd HTTP/1.1\r\nConnection: close\r\n\r\n",  # urlsplit raises
        b"GET http://[/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ],
    ids=repr,
)
def test_malformed_requests_that_used_to_raise_are_answered_400(serve, tmp_path, request_bytes):
    reports: list[str] = []
    url = serve(chunk_service(tmp_path / "s", writable=True), report=reports.append).url
    answer = raw(url, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"Connection: close" in answer
    assert not reports  # no "Fatal error" from the event loop


def test_a_listen_port_of_unicode_digits_is_an_error(tmp_path, cli):
    (tmp_path / "s").mkdir()
    r = cli("chunk-server", "-s", tmp_path / "s", "-l", "127.0.0.1:\u00b2")
    assert r.code == 1 and "unknown port" in r.err


# --- item 14: SIGHUP with a store file the stores cannot be opened from --------------------


@pytest.mark.parametrize("location", ["http://[::1;x]/s", "http://[/x"])
def test_sighup_with_a_malformed_store_url_keeps_the_old_stores(
    tmp_path, store, cli_server, location
):
    root, chunks = store
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(root)]}))
    process = cli_server("chunk-server", "--store-file", store_file)
    store_file.write_text(json.dumps({"stores": [str(root), location]}))
    process.signal(signal.SIGHUP)
    line = process.wait_for("keeping the current stores")
    assert str(store_file) in line or location in line
    assert process.process.poll() is None
    assert ask(process.url, "GET", chunk_path(chunks[0]))[:2] == (200, chunks[0].stored())
    assert process.stop() == 0
    assert not any("Traceback" in line for line in process.stderr)
