"""Real HTTP(S) servers for the HTTP store and server tests, all on 127.0.0.1.

* ``serve``: our own chunk-server / index-server services, in-process behind
  real listeners (``start_listener``) on free ports; stopped at teardown.
  ``chunk_service(root)`` is a chunk-server over a local store directory.
  ``cli_server`` runs the ``chunk-server``/``index-server`` verb as a
  subprocess (signals, exit status) and reads its URL from its stderr.
* ``nginx``: Debian's nginx serving a store directory: static GET/HEAD, and
  WebDAV ``PUT`` (no DELETE, no listing) so a client can write through it.
* ``ScriptedServer``: answers from a script of statuses/delays and records
  what it was sent, for the client's status mapping, retries and timeouts.
* ``certs``: a test CA, a server certificate for 127.0.0.1, a client
  certificate from the same CA and one from a CA nobody trusts, made with
  ``tls_certs`` (PEM files).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from desync_decl.server import listen
from desync_decl.server.chunks import ChunkService
from desync_decl.server.messages import Request, Response
from desync_decl.stores.converters import COMPRESSED, StorageFormat
from desync_decl.stores.local import LocalStore
from desync_decl.stores.single_flight import single_flight
from desync_decl.stores.swap import StoreStack
from tests import tls_certs

# --- certificates -------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # CA certificate (PEM): --ca-cert for clients, --client-ca for servers
    server_cert: Path  # for 127.0.0.1 and localhost, signed by ca
    server_key: Path
    client_cert: Path  # signed by ca
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path


def _make_certs(root: Path) -> Certs:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    def write(stem: str, cert: x509.Certificate, key: tls_certs.Key) -> tuple[Path, Path]:
        return tls_certs.write_pem(cert, key, root / f"{stem}.pem", root / f"{stem}.key")

    new_key = tls_certs.new_key
    ca_key, other_ca_key = new_key(), new_key()
    ca = tls_certs.issue("desync-decl test CA", ca_key, ca=True)
    ca_path, _ = write("ca", ca, ca_key)
    other_ca = tls_certs.name("somebody else's CA")
    server_key, client_key, stranger_key = new_key(), new_key(), new_key()
    sans = [tls_certs.LOCALHOST_IP, x509.DNSName("localhost")]
    server = tls_certs.issue(
        "127.0.0.1",
        server_key,
        ca.subject,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=sans,
    )
    client = tls_certs.issue(
        "client", client_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    stranger = tls_certs.issue(
        "stranger", stranger_key, other_ca, other_ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Certs(
        ca_path,
        *write("server", server, server_key),
        *write("client", client, client_key),
        *write("stranger", stranger, stranger_key),
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    return _make_certs(tmp_path_factory.mktemp("certs"))


# --- our servers, in-process --------------------------------------------------------


def chunk_service(root: Path, fmt: StorageFormat = COMPRESSED, **kwargs: Any) -> ChunkService:
    """Our chunk-server over a local store at ``root`` (its files in the same format)."""
    upstream = LocalStore(root, format=fmt, skip_verify=True, create=True)
    return ChunkService(StoreStack(single_flight(upstream)), wire=fmt, **kwargs)


def start_listener(app: Callable[[Request], Response], **kwargs: Any) -> listen.Listener:
    """``app`` served on a free port of 127.0.0.1 (``.url``; stop it with ``.close()``)."""
    (listener,) = listen.listen(["127.0.0.1:0"], app, **kwargs)
    return listener


@pytest.fixture
def serve() -> Iterator[Callable[..., listen.Listener]]:
    """``serve(app, tls=None, log=None)`` -> a listener on a free port (``.url``, ``.close()``)."""
    running: list[listen.Listener] = []

    def start(app: Callable[[Request], Response], **kwargs: object) -> listen.Listener:
        listener = start_listener(app, **kwargs)
        running.append(listener)
        return listener

    yield start
    for listener in running:
        listener.close()


@dataclass
class CliServer:
    """A ``chunk-server``/``index-server`` process; ``url`` is its first listener."""

    process: subprocess.Popen
    url: str
    stderr: list[str] = field(default_factory=list)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait_for(self, pattern: str, timeout: float = 10) -> str:
        """The next stderr line matching ``pattern`` (the server says what it did)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()  # type: ignore[union-attr]
            if not line:
                break
            self.stderr.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no stderr line matching {pattern!r}: {self.stderr}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        finally:
            self.process.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
def cli_server() -> Iterator[Callable[..., CliServer]]:
    """``cli_server("chunk-server", "-s", store, ..., env={...})``: the verb as a process."""
    started: list[CliServer] = []

    def start(*argv: object, env: dict[str, str] | None = None) -> CliServer:
        process = subprocess.Popen(
            [sys.executable, "-m", "desync_decl", *map(str, argv), "-l", "127.0.0.1:0"],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = CliServer(process, "")
        started.append(server)
        line = server.wait_for(r"listening on ")
        server.url = line.split("listening on ", 1)[1].strip()
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


# --- nginx ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx serving ``root`` on 127.0.0.1: files by GET/HEAD, WebDAV PUT for writes."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root, self.work = root, work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        (self.work / "tmp").mkdir(parents=True, exist_ok=True)
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers may write the root
        w = self.work
        (w / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {w}/nginx.pid;\nerror_log {w}/error.log warn;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"  access_log off;\n  client_body_temp_path {w}/tmp/body;\n"
            f"  proxy_temp_path {w}/tmp/proxy;\n  fastcgi_temp_path {w}/tmp/fastcgi;\n"
            f"  uwsgi_temp_path {w}/tmp/uwsgi;\n  scgi_temp_path {w}/tmp/scgi;\n"
            "  default_type application/octet-stream;\n  sendfile on;\n"
            f"  server {{\n    listen 127.0.0.1:{self.port};\n    root {self.root};\n"
            "    client_max_body_size 64m;\n"
            "    location / { dav_methods PUT; create_full_put_path on;"
            " dav_access user:rw group:r all:r; }\n  }\n}\n"
        )
        self.process = subprocess.Popen(
            [binary, "-p", str(w), "-c", str(w / "nginx.conf"), "-e", str(w / "error.log"),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start: {(w / 'error.log').read_text()}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop it (the master takes its worker along): clients then get refused connections."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def nginx(tmp_path) -> Iterator[Nginx]:
    """A fresh nginx per test over ``tmp_path/www`` (it starts in a few milliseconds)."""
    root = tmp_path / "www"
    root.mkdir()
    try:
        server = Nginx(root, tmp_path / "nginx").start()
    except RuntimeError as e:
        pytest.skip(reason=str(e))
    yield server
    server.stop()


# --- a scripted HTTP server ----------------------------------------------------------


@dataclass
class Step:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0  # seconds before answering


class ScriptedServer:
    """Answers each request with the next step of its script (the last one repeats)
    and records every request's method, path and headers."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        script = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with script._lock:
                    script.requests.append((self.command, self.path, dict(self.headers)))
                    step = script.steps.pop(0) if len(script.steps) > 1 else script.steps[0]
                time.sleep(step.delay)
                self.send_response(step.status)
                self.send_header("Content-Length", str(len(step.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(step.body)

            do_GET = do_HEAD = do_PUT = _answer

            def log_message(self, *args: object) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that timed out and hung up is what some tests want

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(*steps: Step) -> ScriptedServer:
        servers.append(ScriptedServer(list(steps)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


S = TypeVar("S", bound=socketserver.BaseServer)


@contextlib.contextmanager
def serving(server: S) -> Iterator[S]:
    """``server`` answering on a daemon thread for the ``with`` block, then shut down
    and closed (for the small hostile servers that tests write themselves)."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
