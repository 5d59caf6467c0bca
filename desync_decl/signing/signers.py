"""The keys that sign: a private key file, or a key ssh-agent holds (named by its
``.pub``, or by a certificate).

A private key is never asked for a passphrase: an encrypted key belongs in
ssh-agent, where the operator unlocks it once, and the tool signs through the agent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from desync_decl.errors import DesyncError
from desync_decl.signing import NAMESPACE, agent, sshsig, wire
from desync_decl.signing.common import SigningKey
from desync_decl.signing.keys import (
    MAX_KEY_FILE_SIZE,
    PrivateKeyObject,
    PublicKey,
    UnsupportedKey,
    parse_public_text,
    public_key_of,
    raw_sign,
    read_small_file,
)

_CERT_PUB = "-cert.pub"


@dataclass(frozen=True)
class _Key:
    """What both kinds of key share: the public half signatures carry (the key, or
    its certificate); each kind says how it signs the SSHSIG message."""

    public: PublicKey

    @property
    def public_key(self) -> str:
        return self.public.openssh

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    def sign(self, data: bytes, namespace: str = NAMESPACE) -> bytes:
        return sshsig.sign(self.public, self._raw_sign, data, namespace)

    def sign_digest(self, digest: bytes, namespace: str = NAMESPACE) -> bytes:
        return sshsig.sign_digest(self.public, self._raw_sign, digest, namespace)

    def _raw_sign(self, message: bytes) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True)
class FileKey(_Key):
    """A private key read from a file: signs without ssh-agent."""

    private: PrivateKeyObject

    def _raw_sign(self, message: bytes) -> bytes:
        return raw_sign(self.private, message)


@dataclass(frozen=True)
class AgentKey(_Key):
    """A key ssh-agent holds: signs through the agent at ``socket``."""

    socket: str
    identity: bytes  # the blob the agent knows the key by (the key or the certificate)

    def _raw_sign(self, message: bytes) -> bytes:
        return agent.sign(self.socket, self.identity, message)


def load_signing_key(path: str | Path) -> SigningKey:
    """The key in ``path``: an OpenSSH or PEM private key (Ed25519, ECDSA, RSA, signed
    with rsa-sha2-512), or a public key or certificate (``.pub``) whose private half
    ssh-agent holds (``SSH_AUTH_SOCK``). A private key file is used directly, whether
    or not the agent also holds it. Errors (no such file, encrypted key, unsupported
    type, agent without the key) are one-line ``DesyncError``s naming the file."""
    path = Path(path)
    data = read_small_file(path, MAX_KEY_FILE_SIZE, "a key")
    if b"PRIVATE KEY-----" in data:
        private = _load_private(data, path)
        return FileKey(
            public=public_key_of(private), private=private
        )  # never a certificate beside it,
        # as ssh-keygen -Y sign -f KEY: pass KEY-cert.pub to sign with the certificate
    try:
        public = parse_public_text(data.decode(errors="replace"))
    except (wire.WireError, UnsupportedKey) as e:
        raise DesyncError(f"{path}: neither a private key nor a public key ({e})") from None
    socket = os.environ.get("SSH_AUTH_SOCK")
    if socket:
        held = agent.identities(socket)
        for identity in (public.blob, public.plain_blob):
            if identity in held:
                return AgentKey(public=public, socket=socket, identity=identity)
    if public.cert is not None and path.name.endswith(_CERT_PUB):
        beside = path.with_name(path.name.removesuffix(_CERT_PUB))
        if beside.exists():  # like ssh-keygen -Y sign -f KEY-cert.pub: the key beside it
            key = load_signing_key(beside)
            if isinstance(key, FileKey) and key.public.same_key(public):
                return FileKey(public=public, private=key.private)
    where = "ssh-agent does not hold it" if socket else "SSH_AUTH_SOCK is not set"
    raise DesyncError(
        f"{path}: a public key ({public.fingerprint}), and {where}: "
        f"add its private key to ssh-agent (ssh-add), or pass the private key file"
    )


def _load_private(data: bytes, path: Path) -> PrivateKeyObject:
    loader = (
        serialization.load_ssh_private_key
        if b"BEGIN OPENSSH PRIVATE KEY" in data
        else serialization.load_pem_private_key
    )
    try:
        private = loader(data, password=None)
    except TypeError:  # cryptography: "Password was not given but private key is encrypted"
        raise DesyncError(
            f"{path}: the private key is encrypted (no passphrase is asked for): add it to "
            f"ssh-agent (ssh-add {path}) and pass {path}.pub"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise DesyncError(f"{path}: not a usable private key ({e})") from None
    if not isinstance(
        private, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise DesyncError(
            f"{path}: a {type(private).__name__} key: only Ed25519, ECDSA and RSA keys sign"
        )
    try:
        public_key_of(private)
    except (UnsupportedKey, ValueError) as e:
        raise DesyncError(f"{path}: {e}") from None
    return private
