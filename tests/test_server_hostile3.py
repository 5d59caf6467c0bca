"""chunk-server against clients that never read their answers (issue 12, third round).

A red team bound 127.0.0.2-9, opened 64 connections from each (512, the
total bound), set a 4 KiB receive buffer, pipelined 100 GETs of a 96 KB
chunk on each and never read: those connections were neither evictable (a
connection whose answers were stalled did not count as waiting for its
client) nor closed before the 120 s idle timeout, so every other client was
refused 503 for as long as they reconnected. Now an answer the client does
not take makes its connection evictable like an idle one, and must drain
some bytes within a write deadline far shorter than the idle timeout.

Real listeners on 127.0.0.1 with test-sized bounds (``listen.Limits``), over
real sockets; nothing asserts how fast anything is.
"""

from __future__ import annotations

import random
import select
import socket
import time
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.server.listen import Limits
from desync_decl.stores.local import LocalStore
from tests import servers_http
from tests.servers_http import chunk_service
from tests.store_contract import chunk_of
from tests.test_server_hostile import OTHER, PATIENCE, address, ask_from
from tests.test_servers import chunk_path
from tests.waiting import backed_up, server_state, wait_until

serve = servers_http.serve
ATTACKERS = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]


@pytest.fixture
def big_chunk(tmp_path) -> tuple[Path, Chunk]:
    """A local store holding one chunk of 96 KB that does not compress."""
    root = tmp_path / "store"
    chunk = chunk_of(random.Random(12).randbytes(96_000))
    LocalStore(root, create=True).store_chunk(chunk)
    return root, chunk


def non_reader(url: str, source: str, path: str, requests: int = 100) -> socket.socket:
    """A connection from ``source`` that pipelines ``requests`` GETs of ``path`` and will
    never read an answer (a 4 KiB receive buffer: the answers back up at once)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((source, 0))
    s.settimeout(PATIENCE)
    s.connect(address(url))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * requests)
    return s


def cut_off(s: socket.socket) -> bool:
    """Whether the server has cut ``s``, found without reading from it (that would take
    answers): a byte sent to a connection the server closed is answered with a reset."""
    try:
        s.send(b"X", socket.MSG_DONTWAIT)  # at most the start of one more request head
    except BlockingIOError:
        return False
    except OSError:
        return True
    poller = select.poll()
    poller.register(s, select.POLLERR | select.POLLHUP)
    return bool(poller.poll(100))


def test_connections_that_never_read_do_not_lock_a_new_client_out(serve, big_chunk):
    """Each address within its share, together at the total bound, each connection's
    answers stalled: a new client evicts one of them instead of being refused 503."""
    root, chunk = big_chunk
    limits = Limits(max_connections=16, max_connections_per_client=4)
    listener = serve(chunk_service(root), limits=limits)
    url, path = listener.url, chunk_path(chunk)
    stalled = [non_reader(url, source, path) for source in ATTACKERS for _ in range(4)]
    try:
        wait_until(lambda: server_state(listener, backed_up) == 16, "all 16 hold answers not taken")
        for _ in range(3):
            status, body, _ = ask_from(OTHER, url, "GET", path)
            assert (status, body) == (200, chunk.stored())
        assert any(cut_off(s) for s in stalled)
    finally:
        for s in stalled:
            s.close()


def test_a_connection_that_never_reads_is_cut_by_the_write_deadline(serve, big_chunk):
    """Below every connection bound, a client that takes none of its answers loses its
    connection by the write deadline, long before the idle timeout (the default 120 s),
    although it keeps sending bytes: only reading counts as progress."""
    root, chunk = big_chunk
    url = serve(chunk_service(root), limits=Limits(write_timeout=1.0)).url
    s = non_reader(url, "127.0.0.1", chunk_path(chunk))
    deadline = time.monotonic() + PATIENCE
    try:
        while not cut_off(s) and time.monotonic() < deadline:  # sends a byte each time
            time.sleep(0.2)
        assert time.monotonic() < deadline, f"still open after {PATIENCE} s"
    finally:
        s.close()


def test_a_client_that_reads_slowly_gets_its_whole_answers(serve, big_chunk):
    """The write deadline asks for progress, not speed: a client that takes a few KiB
    at a time, more slowly than the deadline would take to run out once, is served."""
    root, chunk = big_chunk
    url = serve(chunk_service(root), limits=Limits(write_timeout=1.0)).url
    path = chunk_path(chunk)
    s = non_reader(url, "127.0.0.1", path, requests=1)
    s.sendall(f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    received = bytearray()
    with s:
        started = time.monotonic()
        while part := s.recv(4096):
            received += part
            time.sleep(0.05)
    assert time.monotonic() - started > 1.0  # the test's premise: slower than one deadline
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert received.endswith(chunk.stored())
