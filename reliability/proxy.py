"""A fault-injecting TCP proxy on 127.0.0.1, placed between a client and a real server.

``FaultProxy(upstream_port, script, http=True)`` listens on a free port and
forwards every connection to ``127.0.0.1:upstream_port``. For each request (HTTP
mode, every request of a keep-alive connection counts) or each connection (raw
mode, for SFTP), ``script(n, what)`` picks a ``Fault``; ``what`` is
``"GET /path"`` or ``"connection"``. HTTP mode buffers each request and
response whole, so a fault can strike at a chosen place in the body.

Faults (``Fault.kind``), at ``Fault.at`` (HTTP: a fraction of the body; raw: a
byte offset in the stream):

- ``drop``: the response head and part of its body, then the connection closes
  (raw: after ``at`` bytes from the server).
- ``stall``: the same, then nothing for ``stall`` seconds (longer than the
  client's timeout) before the connection closes.
- ``status``: the proxy answers ``status`` (500, 503, ...) itself; the server
  never sees the request (HTTP only).
- ``truncate``: the body cut at ``at`` with a Content-Length that agrees: a
  complete-looking, short answer (HTTP; raw: as ``drop``).
- ``flip``: one byte of the response body (raw: of the server's stream) XOR 0xff.
- ``drop-upload``: part of the request body (raw: ``at`` bytes of the client's
  stream) reaches the server, then both sides close.
- ``flip-upload``: one byte of the request body (raw: of the client's stream) flipped.
- ``refuse``: the connection is closed as soon as it is accepted (a dead server).

A fault that has nothing to act on (``flip`` of an empty body) passes the
exchange through unchanged and is not counted in ``injected``.
"""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from reliability.http_wire import Message, read_message

KINDS = ("drop", "stall", "status", "truncate", "flip", "drop-upload", "flip-upload", "refuse")
HTTP_ONLY = ("status",)


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float = 0.5  # HTTP: fraction of the body; raw: byte offset in the stream
    status: int = 503  # for "status"
    stall: float = 3.0  # seconds, for "stall"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (known: {', '.join(KINDS)})")


Script = Callable[[int, str], Fault | None]


def never(n: int, what: str) -> Fault | None:
    return None


def always(fault: Fault) -> Script:
    return lambda n, what: fault


def first(count: int, fault: Fault) -> Script:
    """The first ``count`` requests (or connections) get ``fault``, the rest pass."""
    return lambda n, what: fault if n < count else None


def at_random(
    fault: Fault | Callable[[random.Random], Fault],
    rate: float,
    seed: int,
    *,
    limit: int | None = None,
    methods: Collection[str] | None = None,
) -> Script:
    """Each request (whose method is in ``methods``, if given) gets a fault with
    probability ``rate``, at most ``limit`` times; seeded, so a run can be replayed
    (up to the order in which concurrent requests arrive). ``fault`` may be a
    function of the RNG (a random place in the body, a random status)."""
    rng = random.Random(seed)
    lock = threading.Lock()
    given = [0]

    def script(n: int, what: str) -> Fault | None:
        if methods is not None and what.split(" ", 1)[0] not in methods:
            return None
        with lock:
            if (limit is not None and given[0] >= limit) or rng.random() >= rate:
                return None
            given[0] += 1
            return fault(rng) if callable(fault) else fault

    return script


class FaultProxy:
    def __init__(self, upstream_port: int, script: Script = never, *, http: bool = True) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.script, self.http = script, http
        self.injected: collections.Counter[str] = collections.Counter()
        self.seen = 0  # requests (HTTP) or connections (raw) that reached the proxy
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self._listener.getsockname()[1])
        self._spawn(self._accept_loop)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            _close(s)
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="fault-proxy")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(s)
        if self._closing.is_set():
            _close(s)
        return s

    def _forget(self, *sockets: socket.socket | None) -> None:
        for s in sockets:
            if s is not None:
                _close(s)
                with self._lock:
                    self._sockets.discard(s)

    def _decide(self, what: str) -> Fault | None:
        with self._lock:
            n, self.seen = self.seen, self.seen + 1
        fault = self.script(n, what)
        if fault is not None and not self.http and fault.kind in HTTP_ONLY:
            raise ValueError(f"fault {fault.kind!r} needs the HTTP mode")
        return fault

    def _count(self, fault: Fault) -> None:
        with self._lock:
            self.injected[fault.kind] += 1

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            self._spawn(self._serve_http if self.http else self._serve_raw, client)

    def _connect_upstream(self) -> socket.socket:
        upstream = socket.create_connection(self.upstream, timeout=30)
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._track(upstream)

    def _stall(self, fault: Fault) -> None:
        self._count(fault)
        self._closing.wait(fault.stall)

    # --- raw TCP ----------------------------------------------------------------------

    def _serve_raw(self, client: socket.socket) -> None:
        fault = self._decide("connection")
        upstream = None
        try:
            if fault is not None and fault.kind == "refuse":
                self._count(fault)
                return
            upstream = self._connect_upstream()
            upload = fault if fault is not None and fault.kind.endswith("-upload") else None
            download = fault if fault is not None and upload is None else None
            self._spawn(self._pump, client, upstream, upload)
            self._pump(upstream, client, download)
        except OSError:
            pass
        finally:
            self._forget(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket, fault: Fault | None) -> None:
        """Copy ``src`` to ``dst`` until EOF; a fault strikes at byte ``fault.at``."""
        offset, at = 0, int(fault.at) if fault is not None else -1
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if fault is not None and offset <= at < offset + len(data):
                    cut = at - offset
                    if fault.kind in ("flip", "flip-upload"):
                        data = data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1 :]
                        self._count(fault)
                        fault = None
                    else:  # drop, truncate, stall, drop-upload: the rest never arrives
                        dst.sendall(data[:cut])
                        if fault.kind == "stall":
                            self._stall(fault)
                        else:
                            self._count(fault)
                        break
                offset += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)

    # --- HTTP -------------------------------------------------------------------------

    def _serve_http(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        upstream: socket.socket | None = None
        up_reader = None
        try:
            while not self._closing.is_set():
                request = read_message(reader, request=True)
                if request is None:
                    return
                if request.expects_continue():
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    request.read_rest(reader)
                fault = self._decide(f"{request.method} {request.target}")
                if fault is not None and fault.kind == "refuse":
                    self._count(fault)
                    return
                if fault is not None and fault.kind == "status":
                    self._count(fault)
                    client.sendall(_status_answer(fault.status))
                    continue
                if upstream is None:
                    upstream = self._connect_upstream()
                    up_reader = upstream.makefile("rb")
                if not self._send_request(upstream, request, fault):
                    return
                response = read_message(up_reader, method=request.method)
                if response is None:
                    return
                if not self._send_response(client, response, fault):
                    return
                if response.closes():
                    _close(upstream)
                    upstream = up_reader = None
                if request.closes():
                    return
        except (OSError, ValueError):
            pass
        finally:
            reader.close()
            if up_reader is not None:
                up_reader.close()
            self._forget(client, upstream)

    def _send_request(self, upstream: socket.socket, request: Message, fault: Fault | None) -> bool:
        """Forward ``request``; False when a fault cut it (the caller then hangs up)."""
        body = request.body
        if fault is not None and fault.kind == "flip-upload" and body:
            body = _flip(body, fault.at)
            self._count(fault)
        if fault is not None and fault.kind == "drop-upload" and body:
            upstream.sendall(request.head() + body[: int(len(body) * fault.at)])
            self._count(fault)
            return False
        upstream.sendall(request.head() + body)
        return True

    def _send_response(self, client: socket.socket, response: Message, fault: Fault | None) -> bool:
        body = response.body
        kind = fault.kind if fault is not None else None
        if fault is None or kind in ("drop-upload", "flip-upload"):
            client.sendall(response.head() + body)
            return True
        assert fault is not None
        cut = int(len(body) * fault.at)
        if kind == "flip" and body:
            client.sendall(response.head() + _flip(body, fault.at))
            self._count(fault)
            return True
        if kind == "truncate" and body:
            client.sendall(response.head(length=cut) + body[:cut])
            self._count(fault)
            return True
        if kind == "drop":
            if body:  # mid-body; a response without a body goes before its head
                client.sendall(response.head() + body[:cut])
            self._count(fault)
            return False
        if kind == "stall":
            if body:
                client.sendall(response.head() + body[:cut])
            self._stall(fault)
            return False
        client.sendall(response.head() + body)  # nothing to act on
        return True


def _status_answer(status: int) -> bytes:
    body = f"injected {status}\n".encode()
    reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _flip(body: bytes, at: float) -> bytes:
    i = min(len(body) - 1, int(len(body) * at))
    return body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
