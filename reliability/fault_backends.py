"""The servers fault runs go through, and a fresh store on each for every run.

A ``Backend`` is a running server: our chunk-server (one per store folder, in
this process), moto's S3 (a fresh prefix in one bucket per store), or sshd's
SFTP (a fresh folder per store). ``backend.site()`` gives a ``Site``: the store
reachable directly (to fill and check it) or through a proxy
(``site.via(proxy)``), removed again by ``site.close()``.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from desync_decl.stores.base import WriteStore
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from reliability.proxy import FaultProxy


@dataclass
class Site:
    """A fresh store on a backend's server."""

    direct: str  # its location, not through a proxy
    port: int  # the server's port, where a proxy forwards to
    http: bool  # HTTP-aware proxy (else raw TCP)
    via: Callable[[FaultProxy], str]  # its location through a proxy
    local: Path | None = None  # where the server keeps it, when on this machine
    prunable: bool = True
    close: Callable[[], None] = lambda: None

    def store(self) -> WriteStore:
        """The store itself, for setting up and checking (its files when they are here)."""
        if self.local is not None:
            return LocalStore(self.local, create=True, skip_verify=True)
        return Opener().chunk_store(self.direct, create=True)  # type: ignore[return-value]

    def checked(self) -> str:
        """The location ``verify`` checks."""
        return str(self.local) if self.local is not None else self.direct


class Backend(Protocol):
    name: str  # "http", "s3", "sftp"
    timeout: float  # client timeout (seconds) configured for it
    env: dict[str, str]  # environment its clients need

    def site(self) -> Site: ...

    def trust(self, proxy: FaultProxy) -> None:
        """Let clients reach the server through ``proxy`` (e.g. a known_hosts entry)."""
        ...


class ChunkServerBackend:
    """Our chunk-server, writable, over a fresh local store directory per site."""

    name, timeout = "http", 0.5

    def __init__(self, root: Path, start: Callable[[Path], Any]) -> None:
        self.root, self._start, self.env = root, start, {}
        self._n = itertools.count()

    def site(self) -> Site:
        folder = self.root / f"site{next(self._n)}"
        listener = self._start(folder)
        port = int(listener.url.rstrip("/").rsplit(":", 1)[1])
        return Site(
            listener.url,
            port,
            True,
            lambda proxy: f"http://{proxy.hostport}/",
            local=folder,
            prunable=False,
            close=lambda: (listener.close(), shutil.rmtree(folder, ignore_errors=True)),
        )

    def trust(self, proxy: FaultProxy) -> None:
        pass


class S3Backend:
    """moto's S3 API; a fresh prefix in one bucket per site."""

    name, timeout = "s3", 1.0

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint, self.bucket = endpoint, bucket
        self.env = {"S3_ACCESS_KEY": "test", "S3_SECRET_KEY": "test"}
        self._n = itertools.count()

    def site(self) -> Site:
        where = f"{self.bucket}/site{next(self._n)}"
        site = Site(
            f"s3+{self.endpoint}/{where}",
            int(self.endpoint.rsplit(":", 1)[1]),
            True,
            lambda proxy: f"s3+http://{proxy.hostport}/{where}",
        )
        site.close = lambda: _emptied(site)  # moto keeps every object in memory
        return site

    def trust(self, proxy: FaultProxy) -> None:
        pass


class SftpBackend:
    """sshd's SFTP server (``tests.servers_ssh.SshServer``); a fresh directory per site."""

    name, timeout = "sftp", 1.0

    def __init__(self, server: Any, root: Path) -> None:  # a tests.servers_ssh.SshServer
        self.server, self.root = server, root
        self.home = server.make_home(root / "client-home", known_hosts="", port=False)
        self.env = {"HOME": str(self.home)}
        self._key = server.host_key_line.split(" ", 1)[1]  # "type base64\n"
        self._n = itertools.count()

    def site(self) -> Site:
        folder = self.root / f"site{next(self._n)}"
        folder.mkdir(parents=True)
        user = self.server.user
        return Site(
            self.server.url("sftp", folder),
            self.server.port,
            False,
            lambda proxy: f"sftp://{user}@{proxy.hostport}{folder}",
            local=folder,
            close=lambda: shutil.rmtree(folder, ignore_errors=True),
        )

    def trust(self, proxy: FaultProxy) -> None:
        with open(self.home / ".ssh" / "known_hosts", "a") as f:
            f.write(f"[127.0.0.1]:{proxy.port} {self._key}")


def _emptied(site: Site) -> None:
    store = site.store()
    try:
        for id in list(store.iter_chunk_ids()):  # type: ignore[attr-defined]
            store.remove_chunk(id)  # type: ignore[attr-defined]
    finally:
        store.close()
