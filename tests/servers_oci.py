"""A real OCI registry for the tests: Debian's ``docker-registry`` (distribution 2.8).

``start_registry`` writes a config.yml (filesystem storage in a temp dir, manifest
deletion enabled, 127.0.0.1 on a free port), starts the binary and waits until
``/v2/`` answers. It can require HTTP basic auth (an htpasswd file with a bcrypt
hash: ``bcrypt`` comes with paramiko, a declared dependency) or bearer tokens
from ``TokenServer``, a small token service signing JWTs the registry trusts.
``TcpRelay`` sits between a store and the registry so a test can cut the line.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests import tls_certs

BINARY = "docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_repo() -> str:
    """A new, empty repository name (registries refuse upper case)."""
    return f"test/{uuid.uuid4().hex}"


@dataclass
class Registry:
    url: str  # http://127.0.0.1:PORT
    root: Path
    process: subprocess.Popen

    def location(self, repo: str) -> str:
        return "oci+" + self.url + "/" + repo

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(
    root: Path,
    *,
    htpasswd: dict[str, str] | None = None,
    token: TokenServer | None = None,
    tls: tuple[Path, Path] | None = None,
) -> Registry:
    """Start docker-registry with its data under ``root``; ``htpasswd`` maps users to
    passwords for basic auth, ``token`` makes it demand bearer tokens from that service,
    ``tls`` (certificate, key) makes it speak HTTPS."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if htpasswd is not None:
        import bcrypt

        lines = [
            f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}"
            for u, p in htpasswd.items()
        ]
        (root / "htpasswd").write_text("\n".join(lines) + "\n")
        auth = f"auth:\n  htpasswd: {{realm: test-realm, path: {root / 'htpasswd'}}}\n"
    elif token is not None:
        auth = (
            "auth:\n  token:\n"
            f"    realm: {token.url}/token\n    service: {token.service}\n"
            f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert_path}\n"
        )
    tls_config = f", tls: {{certificate: {tls[0]}, key: {tls[1]}}}" if tls else ""
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn, accesslog: {disabled: true}}\n"
        "storage:\n"
        f"  filesystem: {{rootdirectory: {root / 'data'}}}\n"
        "  delete: {enabled: true}\n"
        "  maintenance: {uploadpurging: {enabled: false}}\n"
        f"{auth}"
        f"http: {{addr: '127.0.0.1:{port}', secret: test-secret{tls_config}}}\n"
    )
    log = open(root / "registry.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [binary, "serve", str(root / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    scheme = "https" if tls else "http"
    registry = Registry(f"{scheme}://127.0.0.1:{port}", root, process)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(root / 'registry.log').read_text()}")
        try:
            answer = requests.get(registry.url + "/v2/", timeout=1, verify=tls[0] if tls else True)
            if answer.status_code in (200, 401):
                return registry
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            registry.stop()
            raise RuntimeError("docker-registry did not answer /v2/ within 20 s")
        time.sleep(0.05)


def self_signed_cert(root: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, as PEM files under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    return tls_certs.self_signed_for_localhost(
        "127.0.0.1", root / "registry.crt", root / "registry.key"
    )


class TcpRelay:
    """Forwards 127.0.0.1:<port> to a target port until ``stop()`` cuts every connection;
    the first ``drop_first`` connections are closed at once (a flaky network).
    ``requests`` lists every HTTP request relayed (what the registry really received),
    each recorded before its bytes are passed on."""

    def __init__(self, target_port: int, *, drop_first: int = 0) -> None:
        self.target, self.drop_first = target_port, drop_first
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.requests: list[tuple[str, str]] = []  # (method, path) of each request relayed
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.drop_first > 0:
                self.drop_first -= 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.stopped:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            requests = RequestParser(self.requests, self.lock)
            for a, b, seen in ((client, upstream, requests), (upstream, client, None)):
                threading.Thread(target=self._pipe, args=(a, b, seen), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, seen: RequestParser | None) -> None:
        try:
            while data := src.recv(65536):
                if seen is not None:  # counted before it is sent: before any answer
                    seen.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            sockets, self.sockets = self.sockets, []
        self.listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class RequestParser:
    """The HTTP/1.1 requests of one client connection, parsed as its bytes pass: each
    request line is appended to ``log`` as (method, path) and its body (by its
    ``Content-Length``; the store's requests are never chunked) skipped."""

    def __init__(self, log: list[tuple[str, str]], lock: threading.Lock) -> None:
        self.log, self.lock = log, lock
        self.buffer = b""
        self.body_left = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.body_left:
                taken = min(self.body_left, len(self.buffer))
                self.buffer, self.body_left = self.buffer[taken:], self.body_left - taken
                if self.body_left:
                    return
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
            first, *lines = head.split("\r\n")
            method, path, _ = first.split(" ", 2)
            pairs = (x.partition(":") for x in lines)
            headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
            assert "chunked" not in headers.get("transfer-encoding", ""), "chunked request"
            self.body_left = int(headers.get("content-length", "0"))
            with self.lock:
                self.log.append((method, urllib.parse.urlsplit(path).path))


class TokenServer:
    """A token service for the registry's bearer flow (distribution's token spec).

    GET /token?service=&scope= with basic auth for ``user`` answers a JWT signed by a
    self-signed EC key whose certificate the registry trusts (``rootcertbundle``),
    granting exactly the requested actions. Without valid credentials: 401.
    """

    service = "test-registry"
    issuer = "test-issuer"

    def __init__(self, root: Path, user: str, password: str) -> None:
        from cryptography.hazmat.primitives import serialization

        root.mkdir(parents=True, exist_ok=True)
        self.key = tls_certs.new_key()
        cert = tls_certs.issue("test token signer", self.key, ca=True)
        self.cert_path = root / "token-signer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.requests: list[str] = []  # the query strings asked for, in order
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                server.requests.append(url.query)
                if url.path != "/token" or self.headers.get("Authorization") != server.expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": server.sign(user, query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def sign(self, subject: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def push_artifact(
    url: str,
    repo: str,
    tag: str,
    data: bytes,
    *,
    artifact_type: str = "application/vnd.desync.chunk.v1",
    auth: tuple[str, str] | None = None,
) -> None:
    """Push ``data`` as a one-layer artifact tagged ``tag``, with plain requests (not the
    store's code): how a test plants raw bytes, or a foreign artifact, under a tag."""
    v2 = f"{url}/v2/{repo}"
    empty = b"{}"
    layers = []
    for blob in (empty, data):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        start = requests.post(f"{v2}/blobs/uploads/", auth=auth, timeout=10)
        assert start.status_code == 202, start.text
        put = requests.put(
            urllib.parse.urljoin(v2 + "/", start.headers["Location"]),
            params={"digest": digest},
            data=blob,
            auth=auth,
            timeout=10,
        )
        assert put.status_code == 201, put.text
        layers.append(
            {"mediaType": "application/octet-stream", "digest": digest, "size": len(blob)}
        )
    config = dict(layers[0], mediaType="application/vnd.oci.empty.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": config,
        "layers": layers[1:],
    }
    put = requests.put(
        f"{v2}/manifests/{tag}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        auth=auth,
        timeout=10,
    )
    assert put.status_code == 201, put.text


def list_tags(url: str, repo: str) -> list[str]:
    """Every tag of ``repo`` in one request (the registry's default page is unlimited)."""
    response = requests.get(f"{url}/v2/{repo}/tags/list", timeout=10)
    if response.status_code == 404:
        return []
    return sorted(response.json().get("tags") or [])


def start_registry_or_skip(tmp_path_factory, name: str, **kwargs) -> Registry:
    """A registry of its own in a fresh temp dir (a skip, which CI turns into a
    failure, where docker-registry is not installed)."""
    if shutil.which("docker-registry") is None:
        pytest.skip(reason="docker-registry is not installed (apt-get install docker-registry)")
    return start_registry(tmp_path_factory.mktemp(name), **kwargs)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[Registry]:
    """One plain registry for the session: tests keep apart by repository (``fresh_repo``)."""
    r = start_registry_or_skip(tmp_path_factory, "oci")
    yield r
    r.stop()


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory) -> Iterator[tuple[Registry, Path]]:
    """A registry serving HTTPS with a self-signed certificate, and that certificate."""
    cert, key = self_signed_cert(tmp_path_factory.mktemp("oci-tls-cert"))
    r = start_registry_or_skip(tmp_path_factory, "oci-tls", tls=(cert, key))
    yield r, cert
    r.stop()


@pytest.fixture
def no_ambient_credentials(monkeypatch, tmp_path) -> None:
    """Only the credentials a test gives: none from the environment or ~/.docker
    (modules of OCI tests use it for every test: ``pytest.mark.usefixtures``)."""
    monkeypatch.delenv("DESYNC_OCI_USERNAME", raising=False)
    monkeypatch.delenv("DESYNC_OCI_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def pull_artifact(url: str, repo: str, tag: str) -> tuple[dict, bytes] | None:
    """The manifest tagged ``tag`` and its first layer's bytes, fetched with plain
    requests (as oras would); None when there is no such tag."""
    v2 = f"{url}/v2/{repo}"
    answer = requests.get(
        f"{v2}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    if answer.status_code == 404:
        return None
    manifest = answer.json()
    layer = manifest["layers"][0]
    data = requests.get(f"{v2}/blobs/{layer['digest']}", timeout=10).content
    return manifest, data
