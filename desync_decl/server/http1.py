"""HTTP/1.1 for the servers, as an asyncio protocol: one request at a time per connection.

Why not ``http.server``: its thread per connection and e-mail header parser
served 6,600 GETs/s of 64 KiB chunks where nginx served 30,000 (wrk, 16
connections, 2 cores); on an event loop it is 20,000 to 27,000. A request
whose answer comes from local files (``Site.inline``) is answered right on
the loop: a page-cache read costs less than handing it to a thread (that
hand-off alone brought a prototype down to 7,500). Every other GET or HEAD
(remote upstreams, index files) runs in the site's readers' pool, and every
other method (uploads) in a pool of its own, so that no number of uploads
can hold up a read.

The parser is strict where leniency lets requests be smuggled: CRLF line
ends, no whitespace before a header's colon, no folded headers, one
Content-Length value of ASCII digits, and no Transfer-Encoding at all (411:
chunk and index uploads are sent with a length). A body is read only when
the service asks for it, ``Expect: 100-continue`` is answered only then, and
a connection whose announced body was not read whole is closed after the
answer.

Nothing a client sends is held without bound (the bounds and why they are
where they are: ``limits``). A connection reads ahead of the request being
answered at most ``Limits.max_buffer`` bytes, then stops reading
(``pause_reading``) until its answers drain: pipelining requests without
reading the answers holds a few hundred KiB, not the 438 MB a probe reached
when the buffer grew while answers were paused. The buffer always holds a
whole request head of the 64 KiB limit, so an oversized head is refused
whenever it comes. Every request head has a deadline (slowloris), a body a
minimum rate, an answer a deadline to drain some bytes by (a client that
never reads), and connections and uploads are counted per client; at the
total bound a new connection evicts the one waiting longest for its client.
A body reaches the service in pieces as it reads them (``Body.read`` on a pool
thread), so an upload is streamed, never held whole.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, TextIO, cast

from desync_decl.errors import FormatError
from desync_decl.escaping import escape_line
from desync_decl.server.limits import MAX_HEAD, RETRY_AFTER, Limits, Slots, client_key
from desync_decl.server.messages import NO_BODY, Request, Response, Stream

MAX_HEADERS = 100
READS = ("GET", "HEAD")  # everything else is an upload: its own pool and slots
_JOIN_LIMIT = 256 * 1024  # bodies up to this size leave in one write with their headers
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() takes "²", which int() refuses
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")  # absolute form: scheme and host


class AccessLog:
    """desync's request log lines, with Go's log timestamp, safe from many threads.

    Every field a client chose (the target, the method) is escaped
    (``escape_line``) whatever the destination: a log file is read in a
    terminal too, and a raw C1 character (``\x9b`` is CSI) acts there."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()  # listeners run on threads of their own

    def write(self, client: str, method: str, target: str, status: int) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        fields = f"Client: {client}, Request: {method} {target}, Response: {status}"
        line = f"{stamp} {escape_line(fields)}\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()


@dataclass
class Site:
    """What every connection of one listener shares."""

    app: Callable[[Request], Response]
    reads: Executor  # GET and HEAD that are not answered on the loop
    uploads: Executor  # every other method, at most ``limits.max_uploads`` at once
    log: AccessLog | None = None
    report: Callable[[str], None] = lambda message: None
    limits: Limits = field(default_factory=Limits)
    tls: ssl.SSLContext | None = None  # each connection starts TLS once it holds a slot
    connections: set[Connection] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.inline: Callable[[Request], bool] = getattr(self.app, "runs_inline", lambda r: False)
        limits = self.limits
        self.clients = Slots(limits.max_connections, limits.max_connections_per_client)
        self.upload_slots = Slots(limits.max_uploads, limits.max_uploads_per_client)

    def admit(self, newcomer: Connection) -> bool:
        """Take a connection slot for ``newcomer``; at the total bound, by evicting the
        connection that has waited longest for its client (``limits``)."""
        if self.clients.take(newcomer.host):
            return True
        if not self.clients.client_has_room(newcomer.host):
            return False  # the client's own share is full: it is refused, nobody evicted
        waiting = [c for c in self.connections if c is not newcomer and c.waiting_for_client()]
        if not waiting:
            return False
        min(waiting, key=lambda c: c.waiting_since()).evict()
        return self.clients.take(newcomer.host)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.response = Response.text(status, message)


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]


class _BodyState:
    """The body of the request being answered, as far as its service has read it."""

    __slots__ = ("expect_continue", "left", "received", "wait_started", "waited", "waiter")

    def __init__(self, length: int, expect_continue: bool) -> None:
        self.left = length  # bytes not handed to the service yet
        self.received = 0
        self.expect_continue = expect_continue
        self.waiter: tuple[int, Future[bytes]] | None = None  # a read waiting for bytes
        self.wait_started = 0.0
        self.waited = 0.0  # seconds spent waiting for the client, before this wait


class _Body:
    """A request's body as its service reads it on a pool thread: each read asks the loop."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def read(self, size: int) -> bytes:
        loop = self.connection.loop
        result: Future[bytes] = Future()
        try:
            loop.call_soon_threadsafe(self.connection.read_body, size, result)
        except RuntimeError:  # the loop is closed
            raise ConnectionError("the server is shutting down") from None
        while True:
            try:
                return result.result(timeout=1.0)
            except TimeoutError:
                if loop.is_closed():  # the listener was closed meanwhile
                    raise ConnectionError("the server is shutting down") from None


class Connection(asyncio.Protocol):
    def __init__(self, site: Site) -> None:
        self.site = site
        self.limits = site.limits
        self.buffer = bytearray()
        self.reading = True  # the transport reads (not paused for want of room)
        self.busy = False  # a request is being answered in a pool thread
        self.closing = False
        self.write_paused = False
        self.peer_done = False  # the client will send nothing more (EOF)
        self.admitted = False  # holds one of the site's connection slots
        self.head: _Head | None = None  # the request being answered in a pool thread
        self.body: _BodyState | None = None  # its body
        self.pending: asyncio.Future[Any] | None = None
        self.head_started: float | None = None  # when the head now awaited began to arrive
        self.last_active = 0.0
        self.idle_since = 0.0  # when it last had no request in progress (eviction order)
        self.unsent = 0  # bytes in the transport's write buffer when last looked at
        self.drained_at = 0.0  # when the client last took some of its answers
        self.timer: asyncio.TimerHandle | None = None
        self.handshake: asyncio.Task[None] | None = None  # TLS being started (kept referenced)
        self.handshaking = False  # until ``transport`` is the TLS one
        self.streaming: Stream | None = None  # a body being sent as the client takes it
        self.keep_alive_after_stream = False

    # --- asyncio callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream server's transports read and write (asyncio.Transport)
        self.transport = cast(asyncio.Transport, transport)
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.client = client_name(peer)
        self.host = client_key(str(peer[0])) if peer else "-"  # what its slots count against
        self.tls = self.site.tls is not None
        self.last_active = self.head_started = self.idle_since = self.loop.time()
        self.drained_at = self.last_active
        self.admitted = self.site.admit(self)
        self.site.connections.add(self)
        if self.tls:
            self.transport.pause_reading()  # the handshake reads its bytes, not this protocol
            if self.admitted:
                self.handshaking = True
                self.handshake = self.loop.create_task(self._start_tls(self.transport))
            else:
                self.transport.abort()  # no TLS to say 503 in yet, and none is started for it
            return
        if not self.admitted:
            self._answer("-", "-", _busy("too many connections"), False)
        self._arm()

    async def _start_tls(self, plain: asyncio.Transport) -> None:
        """TLS on a connection that holds its slot already, within the handshake's deadline;
        a failed or evicted handshake gives the slot back."""
        assert self.site.tls is not None
        try:
            secure = await self.loop.start_tls(
                plain,
                self,
                self.site.tls,
                server_side=True,
                ssl_handshake_timeout=self.limits.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, asyncio.CancelledError):
            plain.abort()
            self._release()
            return
        if secure is None or self.closing:
            plain.abort()
            self._release()
            return
        self.transport, self.handshaking = secure, False
        self.last_active = self.head_started = self.loop.time()  # the first head is due
        self._arm()
        self._next()  # what came with the handshake's last bytes

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self._end_stream()
        if self.timer is not None:
            self.timer.cancel()
        self._wake_body(ConnectionError("the client went away during the body"))

    def _release(self) -> None:
        """Give back the connection's slot: when it is lost, or at once when evicted."""
        self.closing = True
        self.site.connections.discard(self)
        if self.admitted:
            self.admitted = False
            self.site.clients.give_back(self.host)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.handshaking:  # bytes right after the handshake, before start_tls returned
            return
        self.last_active = self.loop.time()
        self._flow()
        if self.busy:
            self._wake_body(None)
            return
        if self.head_started is None:
            self.head_started = self.last_active  # even a lone CRLF starts the clock
        self._next()

    def eof_received(self) -> bool:
        self.peer_done = True
        if self.handshaking:
            return False
        self._wake_body(ConnectionError("the client ended the connection during the body"))
        if not self.busy:
            self._next()  # answer what came complete, then close
        return not self.tls  # keep the transport open for the answers (TLS cannot)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._arm()  # the client must now take some of it within the write deadline

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last_active = self.loop.time()
        if self.streaming is not None:
            self._pump()
        if not self.busy:
            self._next()

    def abort(self) -> None:
        self.closing = True
        if self.pending is not None:
            self.pending.cancel()
        self._end_stream()
        self.transport.abort()

    def waiting_for_client(self) -> bool:
        """Whether the connection holds a slot and only waits for its client, nothing in
        the service's hands (may be evicted): an idle keep-alive connection, a head not
        complete, a TLS handshake, or answers the client does not take. A client that
        never reads must not keep its slot where an idle one would lose it."""
        return self.admitted and not self.busy

    def waiting_since(self) -> float:
        """Since when it has waited for its client: for answers not taken, since the
        client last took some of them; else since its last answer."""
        return self._drained() if self._owes_client() else self.idle_since

    def _owes_client(self) -> bool:
        """Whether an answer waits for the client to take it: bytes wait in the
        transport's buffer (the kernel's socket buffer is full), a streamed body is
        under way, or the connection closes once its last bytes have left."""
        owed = self.closing or self.streaming is not None
        return owed or self.transport.get_write_buffer_size() > 0

    def evict(self) -> None:
        self._release()  # now: the newcomer takes its slot
        self.abort()

    # --- requests ---------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the requests waiting in the buffer, one after the other."""
        while not (self.busy or self.closing or self.write_paused or self.streaming):
            while self.buffer[:2] == b"\r\n":  # an empty line before a request is allowed
                del self.buffer[:2]
            end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0 or end > MAX_HEAD:
                self._await_head()
                return
            raw = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            self.head_started = None
            self._flow()
            try:
                head = _parse(raw)
            except _Refusal as e:
                self._answer("-", "-", e.response, False)
                return
            self._start(head)

    def _await_head(self) -> None:
        """No whole head in the buffer: refuse one that is too large, close after the
        client's last request, or let the head's deadline run."""
        if len(self.buffer) > MAX_HEAD:
            self._answer("-", "-", Response.text(431, "request header too large"), False)
        elif self.peer_done:
            self._close()
        elif self.buffer or self.head_started is not None:
            if self.head_started is None:  # pipelined bytes, waiting until now
                self.head_started = self.loop.time()
            self._arm()
        self._flow()

    def _start(self, head: _Head) -> None:
        connection = head.headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            head.version == "HTTP/1.1" or "keep-alive" in connection
        )
        try:
            length = _length(head.headers)
        except _Refusal as e:
            self._answer(head.method, head.target, e.response, False)
            return
        authorization = head.headers.get("authorization")
        body = _Body(self) if length else NO_BODY
        request = Request(head.method, _path(head.target), authorization, length, body)
        upload = head.method not in READS
        if not upload and not length and self.site.inline(request):
            self._answer(head.method, head.target, self._call(request), keep_alive)
            return
        if upload and not self.site.upload_slots.take(self.host):
            self._answer(head.method, head.target, _busy("too many uploads at once"), False)
            return
        self.busy = True
        self.head = head
        expect_continue = head.headers.get("expect", "").lower() == "100-continue"
        self.body = _BodyState(length or 0, expect_continue)
        pool = self.site.uploads if upload else self.site.reads
        self.pending = self.loop.run_in_executor(pool, self._call, request, upload)
        self.pending.add_done_callback(lambda done: self._finished(done, head, keep_alive))

    def _call(self, request: Request, upload: bool = False) -> Response:
        try:
            return self.site.app(request)
        except ConnectionError:
            raise  # the body did not arrive: there is nobody to answer
        except Exception as e:  # a bug must not take the connection down silently
            self.site.report(f"{request.method} {request.path}: {type(e).__name__}: {e}")
            return Response.text(500, "internal server error")
        finally:
            if upload:  # here, once the thread is free again, not when the loop hears of it
                self.site.upload_slots.give_back(self.host)

    def _finished(self, done: asyncio.Future[Response], head: _Head, keep_alive: bool) -> None:
        body, self.body, self.pending, self.head = self.body, None, None, None
        self.busy = False  # also when closing: the deadline of a close then applies
        if done.cancelled() or self.closing:
            return
        if done.exception() is not None:
            self._close()
            return
        whole = body is None or body.left == 0  # else the rest of the body is still unread
        self._answer(head.method, head.target, done.result(), keep_alive and whole)
        self._next()

    def read_body(self, size: int, result: Future[bytes]) -> None:
        """Give ``result`` up to ``size`` bytes of the current request's body (for
        ``_Body.read``): at once when some are buffered, else as soon as some arrive."""
        body = self.body
        if body is None or self.closing:
            result.set_exception(ConnectionError("the client went away before the body"))
        elif not body.left:
            result.set_result(b"")
        else:
            if body.expect_continue:
                body.expect_continue = False
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
            if self.buffer:
                result.set_result(self._take_body(body, size))
            elif self.peer_done:
                result.set_exception(ConnectionError("the client ended the connection early"))
            else:
                body.waiter = (size, result)
                body.wait_started = self.loop.time()
                self._arm()

    def _take_body(self, body: _BodyState, size: int) -> bytes:
        n = min(size, body.left, len(self.buffer))
        with memoryview(self.buffer) as view:
            data = bytes(view[:n])
        del self.buffer[:n]
        body.left -= n
        body.received += n
        self._flow()
        return data

    def _wake_body(self, error: Exception | None) -> None:
        """Answer a read waiting for body bytes: with those that came, or with ``error``."""
        body = self.body
        if body is None or body.waiter is None:
            return
        (size, result), body.waiter = body.waiter, None
        body.waited += self.loop.time() - body.wait_started
        if error is None:
            result.set_result(self._take_body(body, size))
        else:
            result.set_exception(error)

    def _answer(self, method: str, target: str, response: Response, keep_alive: bool) -> None:
        self.idle_since = self.loop.time()  # no request in progress from here
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            "Server: desync-decl",
            f"Date: {_date()}",
            f"Content-Type: {response.content_type}",
        ]
        body = response.body
        length = body.length if isinstance(body, Stream) else len(body)
        if method != "HEAD" or length:
            lines.append(f"Content-Length: {length}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.site.log is not None:  # before the answer leaves: a client never sees it first
            self.site.log.write(self.client, method, target, status)
        if isinstance(body, Stream):
            self._send(head)
            if method == "HEAD":
                body.close()
            else:
                self.streaming, self.keep_alive_after_stream = body, keep_alive
                self._pump()
                return
        elif method == "HEAD":
            self._send(head)
        elif len(body) <= _JOIN_LIMIT:
            self._send(head + body)
        else:
            self._send(head)
            self._send(body)
        if not keep_alive:
            self._close()  # after what is buffered has been sent

    def _pump(self) -> None:
        """Write the streamed body's next pieces while the transport takes them (it calls
        ``resume_writing`` when it has drained), then go on as after any answer."""
        stream = self.streaming
        while stream is not None and not (self.write_paused or self.closing):
            try:
                piece = stream.next_piece()
            except (OSError, FormatError) as e:
                self.site.report(f"{self.client}: answer cut off: {e}")
                self.abort()  # never an answer ended short as if it were whole
                return
            if not piece:
                self._end_stream()  # resume_writing goes on with the next request
                if not self.keep_alive_after_stream:
                    self._close()
                return
            self._send(piece)

    def _send(self, data: bytes | memoryview) -> None:
        """Write ``data`` to the client, keeping count of what it has yet to take."""
        self._drained()
        self.transport.write(data)
        self.unsent = self.transport.get_write_buffer_size()

    def _drained(self) -> float:
        """When the client last took some of its answers: the transport's write buffer
        shrank since it was last looked at, or holds nothing it owes the client."""
        unsent = self.transport.get_write_buffer_size()
        if unsent < self.unsent or not unsent:
            self.drained_at = self.loop.time()
        self.unsent = unsent
        return self.drained_at

    def _end_stream(self) -> None:
        if self.streaming is not None:
            stream, self.streaming = self.streaming, None
            stream.close()

    def _close(self) -> None:
        self.closing = True
        self.transport.close()
        self._arm()  # a client that reads nothing cannot keep it open

    # --- flow control and deadlines ---------------------------------------------------

    def _flow(self) -> None:
        """Read from the client only while the buffer has room; otherwise the kernel's
        socket buffers fill and TCP holds the client back."""
        reading = not self.closing and len(self.buffer) < self.limits.max_buffer
        if reading != self.reading:
            self.reading = reading
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _deadline(self) -> float:
        """When the client must have done its next part, given what the connection awaits."""
        limits, body = self.limits, self.body
        if body is not None and body.waiter is not None:  # waiting for body bytes
            earned = limits.body_timeout + body.received / limits.body_min_rate - body.waited
            return body.wait_started + min(limits.body_timeout, earned)
        if self.busy:  # the service is working: nothing is up to the client
            return self.loop.time() + limits.idle_timeout
        if self._owes_client():  # only reading counts: bytes sent do not keep it open
            return self._drained() + limits.write_timeout
        if self.head_started is None:
            return self.last_active + limits.idle_timeout
        return self.head_started + limits.head_timeout

    def _arm(self) -> None:
        """Make the timer fire by the current deadline (it looks again when it fires)."""
        deadline = self._deadline()
        if self.timer is None or self.timer.when() > deadline:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.loop.time() < self._deadline():
            self._arm()
            return
        if self._owes_client():
            self.abort()  # the client takes no answers: what is held for it goes
        elif self.body is not None and self.body.waiter is not None:
            head = self.head or _Head("-", "-", "", {})
            self._answer(head.method, head.target, Response.text(408, "body too slow"), False)
            self._wake_body(ConnectionError("the client sent the body too slowly"))
        elif self.buffer:
            self._answer("-", "-", Response.text(408, "request header too slow"), False)
        else:
            self._close()  # no request came


def _busy(why: str) -> Response:
    return Response.text(503, why, headers=(("Retry-After", str(RETRY_AFTER)),))


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
    if not _LENGTH.fullmatch(value):
        raise _Refusal(400, "invalid Content-Length")
    return int(value)


def _path(target: str) -> str:
    """The path of a request target, ``/p?q`` or ``http://host/p?q`` (by hand: urlsplit
    raises on a malformed bracketed host such as ``http://[::1;x]/``)."""
    if "://" in target and (authority := _AUTHORITY.match(target)) is not None:
        target = target[authority.end() :]
    return target.split("?", 1)[0]


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
