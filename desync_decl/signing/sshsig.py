"""OpenSSH's SSHSIG signature format (PROTOCOL.sshsig), as ``ssh-keygen -Y sign``
writes it and ``-Y verify`` reads it.

A signature is a blob (magic ``SSHSIG``, version 1, the signer's public key or
certificate, namespace, reserved, hash algorithm, signature) wrapped in the
``-----BEGIN SSH SIGNATURE-----`` armor. What the key signs is not the data but
``SSHSIG`` ‖ namespace ‖ reserved ‖ hash algorithm ‖ H(data): the namespace keeps a
signature made for one purpose (git commits, say) from being valid for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.signing import MAX_SIGNATURE_SIZE, wire
from desync_decl.signing.keys import PublicKey, UnsupportedKey, parse_public_blob

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = b"-----BEGIN SSH SIGNATURE-----"
END = b"-----END SSH SIGNATURE-----"
HASHES = ("sha256", "sha512")  # what ssh-keygen -Y verify accepts
SIGN_HASH = "sha512"  # what ssh-keygen -Y sign uses
_LINE = 70  # ssh-keygen wraps the base64 at 70 columns


@dataclass(frozen=True)
class Signature:
    """A decoded SSHSIG."""

    public: PublicKey  # the signer's key or certificate
    namespace: str
    hash_algorithm: str  # "sha256" or "sha512"
    signature: bytes  # the SSH signature blob (algorithm name, signature)

    def verify(self, data: bytes) -> str | None:
        """Why this is not a valid signature of ``data`` by its key; None when it is."""
        return self.verify_digest(hashlib.new(self.hash_algorithm, data).digest())

    def verify_digest(self, digest: bytes) -> str | None:
        """``verify`` of data whose ``hash_algorithm`` hash is ``digest``: data hashed as
        it was read (a large index, never held whole)."""
        return self.public.verify(
            self.signature, signed_digest(digest, self.namespace, self.hash_algorithm)
        )


def signed_data(data: bytes, namespace: str, hash_algorithm: str) -> bytes:
    """What the key signs: the magic, the namespace and the hash of ``data``."""
    return signed_digest(hashlib.new(hash_algorithm, data).digest(), namespace, hash_algorithm)


def signed_digest(digest: bytes, namespace: str, hash_algorithm: str) -> bytes:
    """``signed_data`` of data whose ``hash_algorithm`` hash is ``digest``."""
    return (
        MAGIC
        + wire.string(namespace)
        + wire.string(b"")
        + wire.string(hash_algorithm)
        + wire.string(digest)
    )


def encode(signature: Signature) -> bytes:
    """The armored SSHSIG, byte for byte as ``ssh-keygen -Y sign`` writes it."""
    blob = (
        MAGIC
        + wire.u32(VERSION)
        + wire.string(signature.public.blob)
        + wire.string(signature.namespace)
        + wire.string(b"")
        + wire.string(signature.hash_algorithm)
        + wire.string(signature.signature)
    )
    text = base64.b64encode(blob)
    lines = [text[i : i + _LINE] for i in range(0, len(text), _LINE)]
    return b"\n".join([BEGIN, *lines, END]) + b"\n"


def decode_armored(data: bytes) -> Signature:
    """The one SSHSIG in ``data`` (armor, base64, blob), or ``DesyncError`` saying why
    it is not one. The index-server checks an uploaded ``.sig`` with this."""
    if len(data) > MAX_SIGNATURE_SIZE:
        raise DesyncError(f"larger than {MAX_SIGNATURE_SIZE} bytes")
    lines = [line.strip() for line in data.strip().splitlines()]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise DesyncError("no -----BEGIN SSH SIGNATURE----- armor")
    try:
        blob = base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise DesyncError("the armored signature is not valid base64") from None
    return decode_blob(blob)


def decode_blob(blob: bytes) -> Signature:
    """The SSHSIG ``blob`` (the armor's content)."""
    if not blob.startswith(MAGIC):
        raise DesyncError("not an SSHSIG blob (no SSHSIG magic)")
    reader = wire.Reader(blob[len(MAGIC) :], "SSHSIG")
    version = reader.u32("version")
    if version != VERSION:
        raise DesyncError(f"SSHSIG version {version} (only {VERSION} is known)")
    public_blob = reader.string("public key")
    namespace = reader.text("namespace")
    reader.string("reserved")
    hash_algorithm = reader.text("hash algorithm")
    signature = reader.string("signature")
    reader.end()
    if hash_algorithm not in HASHES:
        raise DesyncError(
            f"hash algorithm {hash_algorithm!r} (OpenSSH verifies {' and '.join(HASHES)})"
        )
    try:
        public = parse_public_blob(public_blob)
    except UnsupportedKey as e:
        raise DesyncError(f"signed by an {e}") from None
    return Signature(public, namespace, hash_algorithm, signature)


def sign(
    public: PublicKey,
    raw_sign: Callable[[bytes], bytes],
    data: bytes,
    namespace: str,
) -> bytes:
    """The armored SSHSIG of ``data`` by ``public``'s key, whose private half signs
    through ``raw_sign`` (a file key or ssh-agent). The signature is checked before it
    is returned: a key that signs wrongly (an agent holding another key) is an error
    here, not a refusal on every host."""
    return sign_digest(public, raw_sign, hashlib.new(SIGN_HASH, data).digest(), namespace)


def sign_digest(
    public: PublicKey,
    raw_sign: Callable[[bytes], bytes],
    digest: bytes,
    namespace: str,
) -> bytes:
    """``sign`` of data whose ``SIGN_HASH`` hash is ``digest``: what signs an index
    written as it was made, hashed on the way, without holding its bytes."""
    message = signed_digest(digest, namespace, SIGN_HASH)
    signature = raw_sign(message)
    why = public.verify(signature, message)
    if why is not None:
        raise DesyncError(f"signing with {public.fingerprint} failed: {why}")
    return encode(Signature(public, namespace, SIGN_HASH, signature))
