"""A small fleet for the routing and visibility tests: an S3 origin that the test can
kill or freeze, a chunk-server mirror, a manifest with both in a failover group.

The origin is moto's S3 server in a process of its own (not the session's
in-process one): killed, its port refuses connections; stopped with SIGSTOP, the
kernel still accepts connections and nothing ever answers (a hung server). The
mirror is ``desync-decl chunk-server`` over a local store holding the same chunks.
The CLI runs as a process, as an operator runs it, with ``timeout`` bounding it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import servers_http
from tests.servers_http import free_port

cli_server = servers_http.cli_server
ROOT = Path(__file__).resolve().parent.parent
STORE_TIMEOUT = 2.0  # the origin's `timeout` option: one connect or read timeout
CONCURRENCY = 4
BLOB_SIZE = 6 << 20  # about 96 chunks of 64 KiB on average


class Origin:
    """moto's S3 API in its own process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)

    def client(self) -> Any:
        """An S3 client for setting up and inspecting the bucket behind the stores' back."""
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )

    def kill(self) -> None:
        """Gone: its port refuses connections."""
        self.process.kill()
        self.process.wait()

    def connections(self) -> int:
        """Connections to the origin's port that the kernel accepted for it and that are
        still open on its side: while it is frozen, every one a client made to it."""
        port = f"{self.port:04X}"
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        # local address 127.0.0.1:PORT, state ESTABLISHED (01) or CLOSE_WAIT (08)
        return sum(1 for r in rows if r[1] == f"0100007F:{port}" and r[3] in ("01", "08"))

    def freeze(self) -> None:
        """Hung: connections are accepted by the kernel, never answered."""
        self.process.send_signal(signal.SIGSTOP)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.kill()


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> dict:
        return json.loads(self.out)


@dataclass
class Fleet:
    tmp: Path
    origin: Origin
    mirror_url: str
    env: dict[str, str]
    blob: bytes
    mirror: Any = None  # the chunk-server process (``servers_http.CliServer``)

    @property
    def index(self) -> Path:
        return self.tmp / "app.caibx"

    def cli(self, *argv: object, limit: float = 300) -> Run:
        """The CLI as a process; one that runs past ``limit`` seconds is killed and
        reported as such (exit code -9)."""
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "desync_decl", *map(str, argv)],
                env=self.env,
                cwd=self.tmp,
                capture_output=True,
                text=True,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            return Run(-9, out, f"killed after {limit} s", time.monotonic() - started)
        return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def manifest(self, body: str, name: str = "fleet.yaml") -> Path:
        path = self.tmp / name
        path.write_text(textwrap.dedent(body))
        return path

    @property
    def origin_url(self) -> str:
        return f"s3+{self.origin.endpoint}/origin/store"


def nested_parentheses(text: str) -> bool:
    """Parentheses inside parentheses: what a message of one plain sentence never has."""
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth > 1:
            return True
    return False


def fleet_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {
        **env,
        "HOME": str(home),
        "XDG_STATE_HOME": str(tmp / "xdg-state"),
        "S3_ACCESS_KEY": "test",
        "S3_SECRET_KEY": "test",
        "PYTHONPATH": str(ROOT),
    }


def make_fleet(tmp: Path, origin: Origin | None, start_mirror) -> Fleet:  # type: ignore[no-untyped-def]
    """The blob's chunks in the mirror's store and (with an ``origin``) the origin's
    bucket; its index local."""
    blob = random.Random(13).randbytes(BLOB_SIZE)
    (tmp / "app.img").write_bytes(blob)
    env = fleet_env(tmp)
    fleet = Fleet(tmp, origin, "", env, blob)  # type: ignore[arg-type]
    stores: list[object] = [tmp / "mirror-store"]
    if origin is not None:
        origin.client().create_bucket(Bucket="origin")
        stores.append(fleet.origin_url)
    for store in stores:
        made = fleet.cli("make", "-s", store, fleet.index, tmp / "app.img")
        assert made.code == 0, made.err
    fleet.mirror = start_mirror("chunk-server", "-s", tmp / "mirror-store", env=env)
    fleet.mirror_url = fleet.mirror.url
    return fleet


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def fleet(tmp_path, origin, cli_server) -> Fleet:  # type: ignore[no-untyped-def]
    return make_fleet(tmp_path, origin, cli_server)


def group_manifest(
    fleet: Fleet,
    origin_url: str | None = None,
    *,
    cached: bool = False,
    target: str = "out/app.img",
) -> str:
    """Origin and mirror in a failover group ``upstream``, an extract task to ``target``
    reading through it; ``cached``: through a local cache ``near`` in front of it
    (``fast``, repairing invalid copies)."""
    near = "near: {url: near}" if cached else ""
    caches = "caches: {fast: {store: upstream, cache: near, repair: true}}" if cached else ""
    reads = "fast" if cached else "upstream"
    return f"""\
        version: 1
        defaults: {{concurrency: {CONCURRENCY}}}
        stores:
          origin:
            url: "{origin_url or fleet.origin_url}"
            options: {{timeout: {int(STORE_TIMEOUT)}s}}
          mirror:
            url: "{fleet.mirror_url}"
            options: {{timeout: {int(STORE_TIMEOUT)}s}}
          {near}
        groups:
          upstream: {{failover: [origin, mirror]}}
        {caches}
        tasks:
          - name: app
            extract: {{index: app.caibx, path: {target}, stores: [{reads}]}}
        """
