"""HTTP/1.1 for the servers, as an asyncio protocol: one request at a time per connection.

Why not ``http.server``: its thread per connection and e-mail header parser
served 6,600 GETs/s of 64 KiB chunks where nginx served 30,000 (wrk, 16
connections, 2 cores); on an event loop it is 20,000 to 27,000. A request
whose answer comes from local files (``Site.inline``) is answered right on
the loop: a page-cache read costs less than handing it to a thread (that
hand-off alone brought a prototype down to 7,500). Every other request
(uploads, remote upstreams) runs in the site's thread pool.

The parser is strict where leniency lets requests be smuggled: CRLF line
ends, no whitespace before a header's colon, no folded headers, one
Content-Length value, and no Transfer-Encoding at all (411: chunk and index
uploads are sent with a length). A body is read only when the service asks
for it, ``Expect: 100-continue`` is answered only then, and a connection
whose announced body was not read is closed after the answer.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, TextIO
from urllib.parse import urlsplit

from desync_decl.server.messages import Request, Response

IDLE_TIMEOUT = 120.0  # seconds a quiet connection is kept (desync's idle timeout)
MAX_HEAD = 64 * 1024  # request line and headers
MAX_HEADERS = 100
_JOIN_LIMIT = 256 * 1024  # bodies up to this size leave in one write with their headers
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")


class AccessLog:
    """desync's request log lines, with Go's log timestamp, safe from many threads."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()  # listeners run on threads of their own

    def write(self, client: str, method: str, target: str, status: int) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        line = f"{stamp} Client: {client}, Request: {method} {target}, Response: {status}\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()


@dataclass
class Site:
    """What every connection of one listener shares."""

    app: Callable[[Request], Response]
    executor: Executor
    log: AccessLog | None = None
    report: Callable[[str], None] = lambda message: None
    connections: set[Connection] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.inline: Callable[[Request], bool] = getattr(self.app, "runs_inline", lambda r: False)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.response = Response.text(status, message)


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]


class Connection(asyncio.Protocol):
    def __init__(self, site: Site) -> None:
        self.site = site
        self.buffer = bytearray()
        self.busy = False  # a request is being answered in the thread pool
        self.closing = False
        self.write_paused = False
        self.expect_continue = False
        self.body_wanted = 0
        self.body_ready: asyncio.Future[None] | None = None
        self.pending: asyncio.Future[Any] | None = None
        self.last_active = 0.0

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        self.client = client_name(transport.get_extra_info("peername"))
        self.site.connections.add(self)
        self.last_active = self.loop.time()
        self.timer = self.loop.call_later(IDLE_TIMEOUT, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.site.connections.discard(self)
        self.timer.cancel()
        if self.body_ready is not None and not self.body_ready.done():
            self.body_ready.set_exception(ConnectionError("the client went away during the body"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_active = self.loop.time()
        if self.body_ready is not None:
            if len(self.buffer) >= self.body_wanted and not self.body_ready.done():
                self.body_ready.set_result(None)
            return
        self._next()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._next()

    def abort(self) -> None:
        self.closing = True
        if self.pending is not None:
            self.pending.cancel()
        self.transport.abort()

    # --- requests ---------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the requests waiting in the buffer, one after the other."""
        while not (self.busy or self.closing or self.write_paused):
            while self.buffer[:2] == b"\r\n":  # an empty line before a request is allowed
                del self.buffer[:2]
            end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0 or end > MAX_HEAD:
                if len(self.buffer) > MAX_HEAD:
                    self._answer("-", "-", Response.text(431, "request header too large"), False)
                return
            raw = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            try:
                head = _parse(raw)
            except _Refusal as e:
                self._answer("-", "-", e.response, False)
                return
            self._start(head)

    def _start(self, head: _Head) -> None:
        connection = head.headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            head.version == "HTTP/1.1" or "keep-alive" in connection
        )
        self.expect_continue = head.headers.get("expect", "").lower() == "100-continue"
        try:
            length = _length(head.headers)
        except _Refusal as e:
            self._answer(head.method, head.target, e.response, False)
            return
        target = head.target
        path = urlsplit(target).path if "://" in target else target.split("?", 1)[0]
        state = {"read": False}

        def read_body() -> bytes:  # runs on a pool thread; the loop does the reading
            state["read"] = True
            future = asyncio.run_coroutine_threadsafe(self._read_body(length or 0), self.loop)
            while True:
                try:
                    return future.result(timeout=1.0)
                except TimeoutError:
                    if self.loop.is_closed():  # the listener was closed meanwhile
                        raise ConnectionError("the server is shutting down") from None

        request = Request(head.method, path, head.headers.get("authorization"), length, read_body)
        if not length and self.site.inline(request):
            self._answer(head.method, target, self._call(request), keep_alive)
            return
        self.busy = True
        self.transport.pause_reading()
        self.pending = self.loop.run_in_executor(self.site.executor, self._call, request)
        self.pending.add_done_callback(
            lambda done: self._finished(
                done, head, keep_alive and not (length and not state["read"])
            )
        )

    def _call(self, request: Request) -> Response:
        try:
            return self.site.app(request)
        except ConnectionError:
            raise  # the body did not arrive: there is nobody to answer
        except Exception as e:  # a bug must not take the connection down silently
            self.site.report(f"{request.method} {request.path}: {type(e).__name__}: {e}")
            return Response.text(500, "internal server error")

    def _finished(self, done: asyncio.Future[Response], head: _Head, keep_alive: bool) -> None:
        self.pending = None
        if done.cancelled() or self.closing:
            return
        if done.exception() is not None:
            self.transport.close()
            return
        self.busy = False
        self._answer(head.method, head.target, done.result(), keep_alive)
        if not self.closing:
            self.transport.resume_reading()
            self._next()

    async def _read_body(self, length: int) -> bytes:
        if self.closing:
            raise ConnectionError("the client went away before the body")
        if self.expect_continue:
            self.expect_continue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(self.buffer) < length:
            self.body_wanted = length
            self.body_ready = self.loop.create_future()
            self.transport.resume_reading()
            try:
                await self.body_ready
            finally:
                self.body_ready = None
                if not self.closing:
                    self.transport.pause_reading()
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        return data

    def _answer(self, method: str, target: str, response: Response, keep_alive: bool) -> None:
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            "Server: desync-decl",
            f"Date: {_date()}",
            f"Content-Type: {response.content_type}",
        ]
        if method != "HEAD" or response.body:
            lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        body = b"" if method == "HEAD" else response.body
        if self.site.log is not None:  # before the answer leaves: a client never sees it first
            self.site.log.write(self.client, method, target, status)
        if len(body) <= _JOIN_LIMIT:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        if not keep_alive:
            self.closing = True
            self.transport.close()  # after what is buffered has been sent

    def _check_idle(self) -> None:
        idle = self.loop.time() - self.last_active
        if idle < IDLE_TIMEOUT or (self.busy and self.body_ready is None):  # not a stalled body
            self.timer = self.loop.call_later(max(1.0, IDLE_TIMEOUT - idle), self._check_idle)
        else:
            self.closing = True
            self.transport.close()


def _parse(raw: bytes) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise _Refusal(431, "too many headers")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or _BAD_TARGET.search(parts[1]):
        raise _Refusal(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Refusal(505 if version.startswith("HTTP/") else 400, "only HTTP/1.0 and 1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):  # also refuses folded and "Name : value" lines
            raise _Refusal(400, "malformed header")
        name, value = name.lower(), value.strip(" \t")
        if name in headers:
            if name == "content-length" and headers[name] != value:
                raise _Refusal(400, "conflicting Content-Length")
            if name != "content-length":
                headers[name] += ", " + value
        else:
            headers[name] = value
    return _Head(method, target, version, headers)


def _length(headers: dict[str, str]) -> int | None:
    if "transfer-encoding" in headers:
        raise _Refusal(411, "send the body with a Content-Length")
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise _Refusal(400, "invalid Content-Length")
    return int(value)


def client_name(address: Any) -> str:
    if not address:
        return "-"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_dates: dict[int, str] = {}


def _date() -> str:
    """The Date header, formatted once a second."""
    now = int(time.time())
    text = _dates.get(now)
    if text is None:
        _dates.clear()
        text = _dates[now] = formatdate(now, usegmt=True)
    return text
