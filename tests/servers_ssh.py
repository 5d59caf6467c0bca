"""A private OpenSSH server for the SFTP and SSH (casync protocol) store tests.

``SshServer.start(root)`` generates a host key and a client key, writes an
``sshd_config`` (127.0.0.1 on a free port, key login only for the current user,
``StrictModes no`` because the files live under /tmp, ``UsePAM no``, the
internal SFTP server) and runs ``/usr/sbin/sshd -D -e`` until it says it is
listening (about 0.2 s). Next to it, it writes what a client needs:

* ``home/``: a home directory for ``HOME=`` with ``.ssh/config`` (this host:
  user, port, identity file, ``UserKnownHostsFile``) and ``.ssh/known_hosts``
  holding the server's host key, the way a user trusts a host. Our SFTP store
  (paramiko) reads them through ``~``; the ``ssh`` binary ignores ``HOME``, so
* ``ssh-wrapper``: an executable for ``CASYNC_SSH_PATH`` running ``ssh -F
  <that config>`` with the test's arguments (casync has no port syntax and
  runs ``$CASYNC_SSH_PATH`` without a shell, so options must live there).
* ``remote-desync-decl``: an executable for ``CASYNC_REMOTE_PATH`` running our
  ``python -m desync_decl`` on the "remote" side (sshd gives commands a bare
  environment, so the interpreter is named by absolute path).

``kill()`` ends the server and every session process it forked (found through
/proc by parent pid, so only our own processes); ``ensure_running()`` starts
it again on the same port with the same keys, so clients still trust it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.user = getpass.getuser()
        self.port = free_port()
        self.home = root / "home"
        self.client_key = root / "client_ed25519"
        self.ssh_config = self.home / ".ssh" / "config"
        self.known_hosts = self.home / ".ssh" / "known_hosts"
        self.ssh_wrapper = root / "ssh-wrapper"
        self.remote_desync = root / "remote-desync-decl"
        self.process: subprocess.Popen | None = None

    @classmethod
    def start(cls, root: Path) -> SshServer:
        if not os.access(SSHD, os.X_OK):
            raise RuntimeError(f"{SSHD} is missing (apt-get install openssh-server)")
        server = cls(root)
        server._write_files()
        server.ensure_running()
        return server

    def url(self, scheme: str, path: str | os.PathLike, *, port: bool = True) -> str:
        """``scheme://user@127.0.0.1[:port]/abs/path`` for a directory on this machine."""
        where = f"127.0.0.1:{self.port}" if port else "127.0.0.1"
        return f"{scheme}://{self.user}@{where}{os.path.abspath(path)}"

    def env(self) -> dict[str, str]:
        """Environment for a client of this server (``HOME`` with its .ssh, the ssh wrapper)."""
        return {"HOME": str(self.home), "CASYNC_SSH_PATH": str(self.ssh_wrapper)}

    # --- lifecycle ------------------------------------------------------------------

    def ensure_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        with contextlib.suppress(OSError):  # Debian's sshd refuses to start without it
            os.makedirs("/run/sshd", exist_ok=True)
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not self._accepts():
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("sshd did not listen within 10 s")
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop the server and cut every connection it serves (as a crash would)."""
        if self.process is None:
            return
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def _accepts(self) -> bool:
        """sshd answers with its banner (a bare port probe would also do, but logs noise)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    # --- files ----------------------------------------------------------------------

    def _write_files(self) -> None:
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o700)
        for key in (r / "host_ed25519", self.client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)],
                check=True,
            )
        (r / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        (r / "authorized_keys").chmod(0o600)
        (r / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\n"
            f"HostKey {r / 'host_ed25519'}\nPidFile {r / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {r / 'authorized_keys'}\n"
            f"AllowUsers {self.user}\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n"
            "MaxSessions 64\nMaxStartups 64\n"
            "Subsystem sftp internal-sftp\nLogLevel INFO\n"
        )
        host_key = Path(f"{r / 'host_ed25519'}.pub").read_text().split()
        self.host_key_line = f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n"
        self.make_home(self.home)
        _executable(self.ssh_wrapper, f'exec ssh -F {self.ssh_config} "$@"\n')
        _executable(self.remote_desync, f'exec {sys.executable} -m desync_decl "$@"\n')

    def make_home(
        self,
        home: Path,
        *,
        known_hosts: str | None = None,
        strict: str = "yes",
        identity: Path | None = None,
        port: bool = True,
    ) -> Path:
        """A home directory whose ``.ssh`` reaches this server: config, known_hosts
        (this server's key unless ``known_hosts`` says otherwise), the client key."""
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        ssh_dir.chmod(0o700)
        (ssh_dir / "known_hosts").write_text(
            self.host_key_line if known_hosts is None else known_hosts
        )
        (ssh_dir / "config").write_text(
            "Host 127.0.0.1\n"
            f"  User {self.user}\n"
            + (f"  Port {self.port}\n" if port else "")
            + f"  IdentityFile {identity or self.client_key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}\n"
            f"  StrictHostKeyChecking {strict}\n  BatchMode yes\n  LogLevel ERROR\n"
        )
        return home


def _executable(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd forks one per connection, and they setsid)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory) -> Iterator[SshServer]:
    """One sshd for the session; a test that killed it gets it back via ``sshd``."""
    try:
        server = SshServer.start(tmp_path_factory.mktemp("sshd"))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        pytest.skip(reason=f"no sshd for the SSH/SFTP store tests: {e}")
    yield server
    server.kill()


@pytest.fixture
def sshd(ssh_server: SshServer, monkeypatch) -> SshServer:
    """The running server, with ``HOME`` and ``CASYNC_SSH_PATH`` set for its clients."""
    ssh_server.ensure_running()
    for name, value in ssh_server.env().items():
        monkeypatch.setenv(name, value)
    return ssh_server
