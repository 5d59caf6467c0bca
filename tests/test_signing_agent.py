"""Signing through ssh-agent (issue 17, acceptance 1 and 3): a ``.pub`` whose private
half a real ``ssh-agent`` holds signs, and OpenSSH verifies it; ``ssh-keygen -Y sign``
through the agent is verified by ours; a key the agent lacks, or no agent, is a
one-line error."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from desync_decl.errors import DesyncError
from desync_decl.signing import agent, load_signing_key, load_trust, sshsig
from tests import ssh_keys
from tests.ssh_keys import KEY_TYPES, OpenSsh, SshAgent, allowed_signers

ssh, ssh_agent = ssh_keys.ssh, ssh_keys.ssh_agent  # the fixtures

DATA = b"index bytes " * 1000


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_agent_signature_verifies_with_ssh_keygen(
    ssh: OpenSsh, ssh_agent: SshAgent, key_type: str
) -> None:
    key = ssh.key("signer", key_type, passphrase="only the agent knows")
    ssh_agent.add(key.path, passphrase="only the agent knows")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")

    signing_key = load_signing_key(key.pub)
    signature = signing_key.sign(DATA)
    (ssh.root / "sig").write_bytes(signature)

    verified = ssh.verify(allowed, "alice", DATA, ssh.root / "sig")
    assert verified.code == 0, verified.err
    decoded = sshsig.decode_armored(signature)
    expected = {"rsa": "rsa-sha2-512", "ecdsa": "ecdsa-sha2-nistp256"}.get(key_type, "ssh-ed25519")
    assert decoded.signature[4 : 4 + len(expected)] == expected.encode()


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_ssh_keygen_agent_signature_verifies_with_ours(
    ssh: OpenSsh, ssh_agent: SshAgent, key_type: str
) -> None:
    key = ssh.key("signer", key_type)
    ssh_agent.add(key.path)
    key.path.unlink()  # only the agent can sign now
    data = ssh.root / "index.caibx"
    data.write_bytes(DATA)
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")

    signature = ssh.sign(key.pub, data, agent=ssh_agent.socket)

    signer = load_trust(allowed, ["alice"]).verify(DATA, signature.read_bytes(), "idx")
    assert signer.principal == "alice"


def test_public_key_the_agent_lacks_is_one_line(ssh: OpenSsh, ssh_agent: SshAgent) -> None:
    held, other = ssh.key("held"), ssh.key("other")
    ssh_agent.add(held.path)

    with pytest.raises(DesyncError) as error:
        load_signing_key(other.pub)

    fingerprint = load_signing_key(other.path).fingerprint
    assert str(error.value) == (
        f"{other.pub}: a public key ({fingerprint}), and ssh-agent does not hold it: "
        f"add its private key to ssh-agent (ssh-add), or pass the private key file"
    )


def test_public_key_without_agent_is_one_line(ssh: OpenSsh, monkeypatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = ssh.key("signer")

    with pytest.raises(DesyncError) as error:
        load_signing_key(key.pub)

    assert "SSH_AUTH_SOCK is not set" in str(error.value)
    assert str(error.value).startswith(f"{key.pub}: a public key")


def test_dead_agent_socket_is_one_line(ssh: OpenSsh, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "no-agent-here"))
    key = ssh.key("signer")

    with pytest.raises(DesyncError) as error:
        load_signing_key(key.pub)

    assert str(error.value).startswith(f"ssh-agent at {tmp_path / 'no-agent-here'}")
    assert "\n" not in str(error.value)


class _HostileAgent:
    """A unix socket that answers every request with ``answer`` (or never, for
    None): the faults of a broken or hostile agent, which a real ssh-agent does not
    produce (so this one is made by hand)."""

    def __init__(self, path: str, answer: bytes | None) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen()
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.server.accept()
            with conn:
                conn.recv(4096)
                if self.answer is None:
                    conn.recv(1)  # silent until the client hangs up
                else:
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((2**31).to_bytes(4, "big") + b"\x0c", "answer of 2147483648 bytes"),
        ((100).to_bytes(4, "big") + b"\x0c", "closed the connection mid-answer"),
        (b"\x00\x00\x00\x05\x0c\xff\xff\xff\xff", "ssh-agent identities: 4294967295 keys"),
        (b"\x00\x00\x00\x01\x05", "refused to list its keys"),
        (None, "no answer in 0.2 s"),
    ],
)
def test_broken_agent_answers_are_one_line(
    ssh: OpenSsh, monkeypatch, answer: bytes | None, error: str
) -> None:
    key = ssh.key("signer")
    path = str(ssh.root / "agent.sock")
    monkeypatch.setenv("SSH_AUTH_SOCK", path)
    monkeypatch.setattr(agent, "TIMEOUT", 0.2)
    hostile = _HostileAgent(path, answer)
    try:
        with pytest.raises(DesyncError) as refused:
            load_signing_key(key.pub)
    finally:
        hostile.close()
    assert str(refused.value).startswith(f"ssh-agent at {path}")
    assert error in str(refused.value) and "\n" not in str(refused.value)
