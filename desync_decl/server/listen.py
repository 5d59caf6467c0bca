"""Listeners: a service (``Request`` -> ``Response``) served over HTTP(S) on some addresses.

Every address is bound before any is served, and one that cannot be bound
is an error (desync printed it and exited 0). Each listener runs an
event loop on a thread of its own (``http1.Connection`` speaks HTTP) with two
thread pools for the requests that may block, one for reads and one for
uploads (``limits``: so that uploads never hold up reads); so the caller's
thread stays free: the CLI waits there for signals, a test goes on with its
requests.
TLS handshakes run on the loop, never blocking other connections. A TLS
listener accepts plain TCP and starts TLS on each connection itself
(``http1.Connection``) once the connection holds a slot: asyncio's own TLS
server allocates some 300 KB per connection at accept and the slots counted
a connection only after its handshake, so 3,000 connections that never sent
a ClientHello took a server from 28 MB to 943 MB.
``close()`` stops accepting, cuts open connections and stops the loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.server.http1 import AccessLog, Connection, Site
from desync_decl.server.limits import Limits
from desync_decl.server.messages import Request, Response

__all__ = ["AccessLog", "Limits", "Listener", "listen", "parse_address"]

App = Callable[[Request], Response]
READERS = 64  # GETs and HEADs answered at once in threads (remote upstreams, index files)
_QUIET = (ConnectionResetError, BrokenPipeError, TimeoutError, ssl.SSLError)


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` as Go writes it: ``:8080`` (every interface), ``[::1]:80``, ``:http``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise DesyncError(f"listen address '{text}': expected HOST:PORT (e.g. 127.0.0.1:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        numeric = port.isascii() and port.isdigit()  # int() would also take "²" (and fail)
        number = int(port) if numeric else socket.getservbyname(port, "tcp")
    except OSError:
        raise DesyncError(f"listen address '{text}': unknown port '{port}'") from None
    if not 0 <= number <= 65535:
        raise DesyncError(f"listen address '{text}': port {number} is out of range")
    return host, number


@dataclass
class Listener:
    url: str  # e.g. https://127.0.0.1:43121/
    _loop: asyncio.AbstractEventLoop
    _server: asyncio.Server
    _site: Site
    _thread: threading.Thread

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._site.reads.shutdown(wait=False, cancel_futures=True)
        self._site.uploads.shutdown(wait=False, cancel_futures=True)

    async def _stop(self) -> None:
        self._server.close()
        for connection in list(self._site.connections):
            connection.abort()
        for _ in range(5):  # let the aborted connections see connection_lost and wake
            await asyncio.sleep(0)  # a pool thread waiting for a body


def listen(
    addresses: Sequence[str],
    app: App,
    *,
    tls: ssl.SSLContext | None = None,
    log: AccessLog | None = None,
    report: Callable[[str], None] = lambda message: None,
    limits: Limits | None = None,
) -> list[Listener]:
    """Bind every address, then serve each; all or none. ``limits`` bound each listener."""
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            sockets.append(_bind(address))
    except DesyncError:
        for s in sockets:
            s.close()
        raise
    return [_serve(sock, app, tls, log, report, limits or Limits()) for sock in sockets]


def _serve(
    sock: socket.socket,
    app: App,
    tls: ssl.SSLContext | None,
    log: AccessLog | None,
    report: Callable[[str], None],
    limits: Limits,
) -> Listener:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: _report(context, report))
    thread = threading.Thread(target=loop.run_forever, name="listener", daemon=True)
    thread.start()
    reads = ThreadPoolExecutor(READERS, thread_name_prefix="read")
    uploads = ThreadPoolExecutor(limits.max_uploads, thread_name_prefix="upload")
    site = Site(app, reads, uploads, log, report, limits, tls)
    start = loop.create_server(lambda: Connection(site), sock=sock, backlog=128)
    server = asyncio.run_coroutine_threadsafe(start, loop).result()
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    scheme = "https" if tls is not None else "http"
    return Listener(f"{scheme}://{where}:{port}/", loop, server, site, thread)


def _report(context: dict, report: Callable[[str], None]) -> None:
    """Unexpected errors on a loop, in one line; a client hanging up is not one."""
    error = context.get("exception")
    if isinstance(error, _QUIET):
        return
    message = context.get("message", "error")
    report(f"{message}: {type(error).__name__}: {error}" if error else message)


def _bind(address: str) -> socket.socket:
    host, port = parse_address(address)
    try:
        if not host:  # every interface, IPv6 and IPv4 where the system can
            dual = socket.has_dualstack_ipv6()
            family = socket.AF_INET6 if dual else socket.AF_INET
            return socket.create_server(("", port), family=family, backlog=128, dualstack_ipv6=dual)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        why = (e.strerror or str(e)).lower()
        raise DesyncError(f"cannot listen on {address}: {why}") from None
