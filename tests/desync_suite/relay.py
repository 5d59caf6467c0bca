"""An HTTP relay between a store and a real server (moto, docker-registry), for what
desync's tests had their fake servers do and a real server cannot be made to do.

It passes every request to the server and the answer back, records each request
(method, path, headers), and may change answers on the way:

- ``breaks`` / ``faults``: the first ``faults`` whole-object reads (GET answered 200,
  no ``Range``) are broken: ``reset`` sends the headers and half the body, then
  resets the connection; ``truncate`` sends a well-formed answer of half the body
  with a Content-Length that matches it (desync's ``s3ErrRST``/``s3ErrCorruptBody``).
- ``rewrite``: a function given each answer, returning the one to send (tag lists
  in pages, for a registry that ignores the page size it is asked for).
"""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # without Content-Length: the relay sets it
    body: bytes


Rewrite = Callable[[str, str, Answer], Answer]  # (method, path, answer) -> answer


class Relay(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        upstream: str,
        *,
        breaks: str = "",
        faults: int = 0,
        rewrite: Rewrite | None = None,
    ) -> None:
        self.upstream, self.breaks, self.faults, self.rewrite = upstream, breaks, faults, rewrite
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Relaying)
        self.hostport = f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a connection the relay reset on purpose, or a client that hung up

    def paths(self, method: str) -> list[str]:
        with self.lock:
            return [path for m, path, _ in self.requests if m == method]


class _Relaying(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Relay

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body, headers)
            response = upstream.getresponse()
            answer = Answer(
                response.status,
                [(k, v) for k, v in response.getheaders() if k.lower() != "content-length"],
                response.read(),
            )
        finally:
            upstream.close()
        relay = self.server
        if relay.rewrite is not None:
            answer = relay.rewrite(self.command, self.path, answer)
        whole_read = self.command == "GET" and answer.status == 200 and "Range" not in self.headers
        with relay.lock:
            relay.requests.append((self.command, self.path, dict(self.headers)))
            fault = relay.breaks if whole_read and relay.faults > 0 else ""
            relay.faults -= bool(fault)
        half = answer.body[: len(answer.body) // 2]
        self.send_response(answer.status)
        for key, value in answer.headers:
            self.send_header(key, value)
        sent = half if fault == "truncate" else answer.body
        self.send_header("Content-Length", str(len(sent)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "reset":
            self.wfile.write(half)
            self.wfile.flush()
            linger = struct.pack("ii", 1, 0)  # SO_LINGER 0: closing sends a TCP reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()
            self.close_connection = True
            return
        self.wfile.write(sent)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay

    def log_message(self, *args: object) -> None:
        pass
