"""Real OpenSSH keys, allowed_signers files and an ssh-agent for the signing tests.

Keys are made by ``ssh-keygen`` in the test's temp dir (Ed25519 and ECDSA in a few
milliseconds; RSA-2048 in about 0.1 s). ``OpenSsh`` runs ``ssh-keygen -Y
sign/verify/find-principals`` the way an operator would, so a test can hold our
signatures against OpenSSH's and OpenSSH's against ours. ``SshAgent`` is a private
``ssh-agent -D -a SOCKET`` (started per test, ended by its pid): tests that sign
through an agent set ``SSH_AUTH_SOCK`` to it.

Other test modules take the fixtures as ``ssh = ssh_keys.ssh`` (``ssh_agent`` alike).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_until

NAMESPACE = "desync-decl"
KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@dataclass(frozen=True)
class Key:
    """A key pair ssh-keygen made: ``path`` the private key, ``pub`` the public one."""

    path: Path

    @property
    def pub(self) -> Path:
        return self.path.with_name(self.path.name + ".pub")

    @property
    def cert(self) -> Path:
        """Where ``OpenSsh.certify`` writes a certificate of this key."""
        return self.path.with_name(self.path.name + "-cert.pub")

    @property
    def public(self) -> str:
        """``"ssh-ed25519 AAAA…"``, without the comment."""
        return " ".join(self.pub.read_text().split()[:2])


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


class OpenSsh:
    """ssh-keygen, run on files in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def run(self, *argv: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Outcome:
        done = subprocess.run(
            ["ssh-keygen", *argv],
            input=stdin,
            capture_output=True,
            env={**os.environ, **(env or {})},
            timeout=60,
            check=False,
        )
        return Outcome(done.returncode, done.stdout.decode(), done.stderr.decode())

    def key(self, name: str, key_type: str = "ed25519", passphrase: str = "") -> Key:
        """A new key ``root/name``: ``ed25519``, ``ecdsa`` (nistp256), ``ecdsa384``,
        ``ecdsa521``, ``rsa`` (2048 bits)."""
        key = Key(self.root / name)
        options = {
            "ed25519": ["-t", "ed25519"],
            "ecdsa": ["-t", "ecdsa", "-b", "256"],
            "ecdsa384": ["-t", "ecdsa", "-b", "384"],
            "ecdsa521": ["-t", "ecdsa", "-b", "521"],
            "rsa": ["-t", "rsa", "-b", "2048"],
        }[key_type]
        made = self.run("-q", *options, "-N", passphrase, "-C", name, "-f", str(key.path))
        assert made.code == 0, made.err
        return key

    def certify(self, ca: Key, key: Key, *options: str, key_id: str = "id") -> Path:
        """``ssh-keygen -s CA -I KEY_ID OPTIONS KEY.pub``: a certificate ``KEY-cert.pub``
        (options such as ``-n alice``, ``-V +1d``, ``-z 7``)."""
        made = self.run("-q", "-s", str(ca.path), "-I", key_id, *options, str(key.pub))
        assert made.code == 0, made.err
        return key.cert

    def sign(self, key: Path, data: Path, *, namespace: str = NAMESPACE, agent: str = "") -> Path:
        """``ssh-keygen -Y sign -n NAMESPACE -f KEY DATA``: writes and returns ``DATA.sig``
        (through the agent at ``agent`` when given: ``KEY`` may then be a ``.pub``)."""
        env = {"SSH_AUTH_SOCK": agent} if agent else {}
        signature = data.with_name(data.name + ".sig")
        signature.unlink(missing_ok=True)
        made = self.run("-Y", "sign", "-n", namespace, "-f", str(key), str(data), env=env)
        assert made.code == 0, made.err
        return signature

    def verify(
        self,
        allowed: Path,
        principal: str,
        data: bytes,
        signature: Path,
        *,
        revoked: Path | None = None,
        namespace: str = NAMESPACE,
    ) -> Outcome:
        """``ssh-keygen -Y verify -f ALLOWED -I PRINCIPAL -n NAMESPACE -s SIG < data``."""
        argv = ["-Y", "verify", "-f", str(allowed), "-I", principal, "-n", namespace]
        argv += ["-s", str(signature)]
        if revoked is not None:
            argv += ["-r", str(revoked)]
        return self.run(*argv, stdin=data)

    def find_principals(self, allowed: Path, signature: Path) -> Outcome:
        return self.run("-Y", "find-principals", "-f", str(allowed), "-s", str(signature))

    def krl(self, name: str, spec: str, ca: Key | None = None) -> Path:
        """``ssh-keygen -k -f NAME [-s CA] SPEC``: a KRL from a key file or a spec file
        (``serial: 7``, ``id: x``, ``sha256: SHA256:…``, ``hash: …``)."""
        path = self.root / name
        spec_file = self.root / (name + ".spec")
        spec_file.write_text(spec)
        argv = ["-k", "-f", str(path)]
        if ca is not None:
            argv += ["-s", str(ca.pub)]
        made = self.run(*argv, str(spec_file))
        assert made.code == 0, made.err
        return path


def allowed_signers(path: Path, *lines: str) -> Path:
    """Write an allowed_signers file of ``lines``."""
    path.write_text("".join(line + "\n" for line in lines))
    return path


class SshAgent:
    """A private ssh-agent: ``ssh-agent -D -a SOCKET`` (foreground, so its pid is ours)."""

    def __init__(self) -> None:
        # A short directory of its own: a unix socket path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="agent"))
        self.socket = str(self.dir / "sock")
        self.process = subprocess.Popen(
            ["ssh-agent", "-D", "-a", self.socket],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: os.path.exists(self.socket), "ssh-agent listens")

    def add(self, key: Path, *, passphrase: str = "") -> None:
        """``ssh-add KEY`` (and a ``KEY-cert.pub`` beside it, as ssh-add does); the
        passphrase of an encrypted key comes from an ``SSH_ASKPASS`` program."""
        env = {**os.environ, "SSH_AUTH_SOCK": self.socket}
        if passphrase:
            askpass = self.dir / "askpass"
            askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        done = subprocess.run(
            ["ssh-add", "-q", str(key)],
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OpenSsh:
    """ssh-keygen on files in ``tmp_path/ssh``; no ``SSH_AUTH_SOCK`` (the tester's own
    agent must not sign or answer for a test), unless ``ssh_agent`` sets its own."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip(reason="ssh-keygen is not installed (apt-get install openssh-client)")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return OpenSsh(tmp_path / "ssh")


@pytest.fixture
def ssh_agent(ssh: OpenSsh, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshAgent]:
    """A private ssh-agent, with ``SSH_AUTH_SOCK`` set to it for the test (after
    ``ssh`` cleared the tester's)."""
    if shutil.which("ssh-agent") is None:
        pytest.skip(reason="ssh-agent is not installed (apt-get install openssh-client)")
    agent = SshAgent()
    monkeypatch.setenv("SSH_AUTH_SOCK", agent.socket)
    try:
        yield agent
    finally:
        agent.stop()
