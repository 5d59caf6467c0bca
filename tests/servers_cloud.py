"""Real cloud object servers for the S3 and GCS store tests (a pytest plugin).

Both run in this process on 127.0.0.1 with a port the kernel picks, once per
session, and are stopped at the end:

- ``moto_server``: moto's S3 API (``ThreadedMotoServer``). It accepts any
  signed request until ``S3Server.require_auth()`` makes it check signatures
  against IAM users, as AWS does (``/moto-api/reset-auth``).
- ``gcs_server``: gcp-storage-emulator's GCS JSON API, in memory. Clients reach
  it through ``STORAGE_EMULATOR_HOST`` (set by ``gcs_bucket``).

Tests get a fresh bucket each (``s3_bucket``, ``gcs_bucket``) and an
environment without the machine's cloud credentials or desync config.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import itertools
import json
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import tls_certs
from tests.servers_http import serving

_buckets = itertools.count()
_CREDENTIAL_VARS = (
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "S3_SESSION_TOKEN",
    "S3_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
)


def bucket_name(kind: str) -> str:
    return f"{kind}-test-{next(_buckets)}"


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    checks_auth: bool = False
    _users: itertools.count = field(default_factory=itertools.count)

    @property
    def hostport(self) -> str:
        return self.endpoint.removeprefix("http://")

    @functools.cached_property
    def admin(self) -> Any:
        """An S3 client for setting up and inspecting buckets behind a store's back."""
        return self.client()

    def client(self, service: str = "s3", key: str = "test", secret: str = "test") -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def require_auth(self) -> tuple[str, str]:
        """Create an IAM user allowed everything on S3, then make the server check
        every request's signature; returns the user's (access key, secret key)."""
        iam = self.client("iam")
        user = f"user{next(self._users)}"
        iam.create_user(UserName=user)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._post("/moto-api/reset-auth", b"0")
        self.checks_auth = True
        return key["AccessKeyId"], key["SecretAccessKey"]

    def allow_anyone(self) -> None:
        if self.checks_auth:
            self._post("/moto-api/reset-auth", b"inf")
            self.checks_auth = False

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(
            self.endpoint + path, data=body, headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()


@contextlib.contextmanager
def running_moto() -> Iterator[S3Server]:
    """moto's S3 API in this process on a free port of 127.0.0.1, stopped on exit
    (ImportError without moto[server])."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    with running_moto() as server:
        yield server


@pytest.fixture
def cloud_env(monkeypatch, tmp_path) -> None:
    """No cloud credentials or desync config from the machine leak into a test."""
    for name in _CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # never probe the GCE metadata server


@pytest.fixture
def s3_bucket(moto_server, cloud_env, monkeypatch) -> Iterator[str]:
    """A fresh bucket; the environment holds credentials moto accepts."""
    name = bucket_name("s3")
    moto_server.admin.create_bucket(Bucket=name)
    monkeypatch.setenv("S3_ACCESS_KEY", "test")
    monkeypatch.setenv("S3_SECRET_KEY", "test")
    try:
        yield name
    finally:
        moto_server.allow_anyone()  # a test that turned signature checks on leaves them off


@dataclass
class GCSServer:
    endpoint: str  # http://127.0.0.1:PORT
    server: Any

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    emulator = pytest.importorskip(
        "gcp_storage_emulator.server", reason="gcp-storage-emulator is not installed"
    )
    server = emulator.create_server("127.0.0.1", 0, in_memory=True)
    # It serves one request at a time on an http.server.HTTPServer whose listen
    # backlog is 5: eight clients connecting at once would wait out SYN retries
    # (1 s each). A longer backlog only queues them.
    with pytest.MonkeyPatch.context() as m:
        m.setattr(http.server.HTTPServer, "request_queue_size", 64)
        server.start()
    host, port = server._api._httpd.server_address[:2]  # the port the kernel picked
    try:
        yield GCSServer(f"http://{host}:{port}", server)
    finally:
        server.stop()


@pytest.fixture
def gcs_bucket(gcs_server, cloud_env, monkeypatch) -> str:
    """A fresh bucket; STORAGE_EMULATOR_HOST points clients at the emulator."""
    name = bucket_name("gcs")
    gcs_server.client().create_bucket(name)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    return name


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """Answers every request with 503 and counts them (a store that is down)."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"service unavailable"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving_503(scheme: str, tls: ssl.SSLContext | None = None) -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.requests = 0  # type: ignore[attr-defined]
    server.endpoint = f"{scheme}://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    with serving(server):
        yield server


@pytest.fixture
def unavailable_server() -> Iterator[Any]:
    """An HTTP server on 127.0.0.1 that answers 503 to everything; ``.requests``
    counts what reached it, ``.endpoint`` is its base URL."""
    with _serving_503("http") as server:
        yield server


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (no system CA trusts it): (cert, key) files."""
    folder = tmp_path_factory.mktemp("tls")
    return tls_certs.self_signed_for_localhost(
        "desync-decl test", folder / "cert.pem", folder / "key.pem"
    )


@pytest.fixture
def unavailable_tls_server(tls_certificate) -> Iterator[Any]:
    """``unavailable_server`` behind HTTPS with ``tls_certificate``; ``.ca_cert`` is
    the file a client must trust to get through."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_certificate)
    with _serving_503("https", context) as server:
        server.ca_cert = str(tls_certificate[0])
        yield server


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
