"""A small ssh-agent client (draft-miller-ssh-agent): list the keys the agent holds,
ask it to sign. Bounded: one connection per request, a timeout on every wait, no
answer read beyond OpenSSH's own limit on agent messages.
"""

from __future__ import annotations

import socket as sockets

from desync_decl.errors import DesyncError
from desync_decl.signing import wire

TIMEOUT = 30.0  # seconds: an agent that confirms each use (ssh-add -c) waits for a human
MAX_MESSAGE = 256 * 1024  # OpenSSH's AGENT_MAX_LEN
MAX_IDENTITIES = 2048
# draft-miller-ssh-agent message numbers and flags
_FAILURE = 5
_REQUEST_IDENTITIES, _IDENTITIES_ANSWER = 11, 12
_SIGN_REQUEST, _SIGN_RESPONSE = 13, 14
_RSA_SHA2_512 = 4


def _request(socket_path: str, message: bytes) -> bytes:
    """The agent's answer to ``message`` (type byte and payload, without the length)."""
    try:
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as conn:
            conn.settimeout(TIMEOUT)
            conn.connect(socket_path)
            conn.sendall(wire.string(message))
            length = int.from_bytes(_receive(conn, 4, socket_path), "big")
            if not 0 < length <= MAX_MESSAGE:
                raise DesyncError(f"ssh-agent at {socket_path}: answer of {length} bytes")
            return _receive(conn, length, socket_path)
    except TimeoutError:
        raise DesyncError(f"ssh-agent at {socket_path}: no answer in {TIMEOUT:g} s") from None
    except OSError as e:
        raise DesyncError(
            f"ssh-agent at {socket_path} (SSH_AUTH_SOCK): {e.strerror or e}"
        ) from None


def _receive(conn: sockets.socket, size: int, socket_path: str) -> bytes:
    parts = []
    while size:
        part = conn.recv(min(size, 65536))
        if not part:
            raise DesyncError(f"ssh-agent at {socket_path}: closed the connection mid-answer")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def identities(socket_path: str) -> list[bytes]:
    """The key (and certificate) blobs the agent holds."""
    answer = _request(socket_path, bytes([_REQUEST_IDENTITIES]))
    if answer[0] != _IDENTITIES_ANSWER:
        raise DesyncError(f"ssh-agent at {socket_path} refused to list its keys")
    try:
        reader = wire.Reader(answer[1:], "ssh-agent identities")
        count = reader.u32("count")
        if count > MAX_IDENTITIES:
            raise wire.WireError(f"ssh-agent identities: {count} keys")
        blobs = []
        for _ in range(count):
            blobs.append(reader.string("key"))
            reader.string("comment")
        return blobs
    except wire.WireError as e:
        raise DesyncError(f"ssh-agent at {socket_path}: {e}") from None


def sign(socket_path: str, key_blob: bytes, data: bytes) -> bytes:
    """The agent's signature blob of ``data`` by the key ``key_blob`` (RSA keys sign
    with rsa-sha2-512)."""
    request = (
        bytes([_SIGN_REQUEST]) + wire.string(key_blob) + wire.string(data) + wire.u32(_RSA_SHA2_512)
    )
    answer = _request(socket_path, request)
    if answer[0] != _SIGN_RESPONSE:
        raise DesyncError(
            f"ssh-agent at {socket_path} refused to sign (a key that needs confirmation, "
            f"or a locked agent?)"
        )
    try:
        reader = wire.Reader(answer[1:], "ssh-agent signature")
        signature = reader.string("signature")
        reader.end()
    except wire.WireError as e:
        raise DesyncError(f"ssh-agent at {socket_path}: {e}") from None
    return signature
