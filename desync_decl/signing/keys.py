"""SSH public keys and certificates (parsed from their wire blobs), the signatures
they verify, and the private keys in files that sign.

Only what OpenSSH signs indexes with is supported: Ed25519, ECDSA on nistp256/384/521
and RSA, plain or as OpenSSH user/host certificates. RSA signatures must be
rsa-sha2-256 or rsa-sha2-512: SHA-1 (``ssh-rsa``) is refused, as ``ssh-keygen -Y``
refuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from desync_decl.errors import DesyncError, file_error
from desync_decl.signing import wire

PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKeyObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CERT_SUFFIX = "-cert-v01@openssh.com"
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
# Key types OpenSSH knows that this package cannot verify: a line naming one in an
# allowed_signers file or revocation list is skipped, not an error (it never matches).
FOREIGN_KEY_TYPES = frozenset(
    {
        "ssh-dss",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-xmss@openssh.com",
    }
)
USER_CERT, HOST_CERT = 1, 2
MAX_KEY_FILE_SIZE = 1024 * 1024  # an RSA-16384 private key file is ~13 KiB
MAX_RSA_BITS = 16384  # OpenSSH's SSHBUF_MAX_BIGNUM: bounds the work of one verification


class UnsupportedKey(DesyncError):
    """A key type OpenSSH knows but this package does not sign or verify with."""


def _plain_type(key_type: str) -> str:
    return key_type.removesuffix(CERT_SUFFIX)


def is_key_type(word: str) -> bool:
    """Whether ``word`` names an SSH key type (supported or not): how an
    allowed_signers line tells its key from its options."""
    plain = _plain_type(word)
    return (
        plain in ("ssh-ed25519", "ssh-rsa")
        or plain.removeprefix("ecdsa-sha2-") in _CURVES
        or plain in FOREIGN_KEY_TYPES
    )


@dataclass(frozen=True)
class Certificate:
    """The fields of an OpenSSH certificate (PROTOCOL.certkeys) that trust decisions use."""

    serial: int
    cert_type: int  # USER_CERT or HOST_CERT
    key_id: str
    principals: tuple[str, ...]
    valid_after: int  # seconds since the epoch
    valid_before: int  # seconds since the epoch; 2**64-1 is forever
    ca: PublicKey  # the key that signed the certificate


@dataclass(frozen=True)
class PublicKey:
    """A public key or certificate, as its wire blob says."""

    key_type: str  # "ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", ...
    blob: bytes  # the wire blob (a certificate's whole blob)
    plain_blob: bytes  # the blob of the key itself (for a certificate: without it)
    key: PublicKeyObject
    cert: Certificate | None = None

    @property
    def openssh(self) -> str:
        """``"ssh-ed25519 AAAA…"``: the two fields of an authorized_keys line."""
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"

    @property
    def fingerprint(self) -> str:
        """``"ED25519 SHA256:…"``, as ``ssh-keygen -l`` and ``-Y verify`` name a key;
        a certificate is named by its key's hash ("ED25519-CERT SHA256:…")."""
        digest = hashlib.sha256(self.plain_blob).digest()
        name = base64.b64encode(digest).decode().rstrip("=")
        return f"{_short_type(self.key_type)} SHA256:{name}"

    def same_key(self, other: PublicKey) -> bool:
        """Both are the same key, certificate or not (OpenSSH's sshkey_equal_public)."""
        return self.plain_blob == other.plain_blob

    def verify(self, signature: bytes, data: bytes) -> str | None:
        """Why ``signature`` (an SSH signature blob: algorithm name, signature bytes)
        is not this key's signature of ``data``; None when it is."""
        try:
            reader = wire.Reader(signature, "signature")
            algorithm = reader.text("signature algorithm")
            raw = reader.string("signature")
            reader.end()
        except wire.WireError as e:
            return str(e)
        return _verify_raw(self.key, _plain_type(self.key_type), algorithm, raw, data)


def _short_type(key_type: str) -> str:
    plain = _plain_type(key_type)
    short = "ED25519" if plain == "ssh-ed25519" else "RSA" if plain == "ssh-rsa" else "ECDSA"
    return short + ("-CERT" if plain != key_type else "")


def _verify_raw(
    key: PublicKeyObject, key_type: str, algorithm: str, raw: bytes, data: bytes
) -> str | None:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            if algorithm != "ssh-ed25519":
                return f"a {algorithm!r} signature by an ssh-ed25519 key"
            key.verify(raw, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if algorithm != key_type:
                return f"a {algorithm!r} signature by an {key_type} key"
            reader = wire.Reader(raw, "ECDSA signature")
            r, s = reader.mpint("r"), reader.mpint("s")
            reader.end()
            curve_hash = _CURVES[key_type.removeprefix("ecdsa-sha2-")][1]
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(curve_hash))
        else:
            if algorithm == "ssh-rsa":
                return "an RSA signature with SHA-1 (ssh-rsa), which OpenSSH refuses"
            if algorithm not in _RSA_HASHES:
                return f"a {algorithm!r} signature by an ssh-rsa key"
            key.verify(raw, data, padding.PKCS1v15(), _RSA_HASHES[algorithm])
    except InvalidSignature:
        return "the signature does not verify"
    except wire.WireError as e:
        return str(e)
    return None


def _read_key_fields(reader: wire.Reader, plain: str) -> tuple[bytes, PublicKeyObject]:
    """The key fields of a ``plain``-typed key at the reader (after the type name, and
    after a certificate's nonce), as the blob of the plain key and the key object."""
    try:
        if plain == "ssh-ed25519":
            point = reader.string("ed25519 key")
            ed = ed25519.Ed25519PublicKey.from_public_bytes(point)
            return wire.string(plain) + wire.string(point), ed
        if plain == "ssh-rsa":
            e, n = reader.mpint("RSA exponent"), reader.mpint("RSA modulus")
            if not 1024 <= n.bit_length() <= MAX_RSA_BITS:
                raise UnsupportedKey(
                    f"RSA key of {n.bit_length()} bits (OpenSSH takes 1024 to {MAX_RSA_BITS})"
                )
            rs = rsa.RSAPublicNumbers(e, n).public_key()
            return wire.string(plain) + wire.mpint(e) + wire.mpint(n), rs
        curve_name = plain.removeprefix("ecdsa-sha2-")
        if plain.startswith("ecdsa-sha2-") and curve_name in _CURVES:
            curve = reader.text("ECDSA curve")
            if curve != curve_name:
                raise wire.WireError(f"public key: {plain} key on curve {curve!r}")
            q = reader.string("ECDSA point")
            ek = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve_name][0], q)
            return wire.string(plain) + wire.string(curve) + wire.string(q), ek
    except (ValueError, UnsupportedAlgorithm) as e:
        raise wire.WireError(f"public key: invalid {plain} key ({e})") from None
    raise UnsupportedKey(f"unsupported key type {plain!r}")


def parse_public_blob(blob: bytes, *, certificate: bool = True) -> PublicKey:
    """The key or certificate ``blob`` encodes; a certificate's CA signature is checked
    here (a certificate whose signature fails is no certificate). ``certificate``
    False refuses a certificate (a CA key must be a plain key). Raises ``WireError``
    or ``UnsupportedKey``."""
    reader = wire.Reader(blob, "public key")
    key_type = reader.text("key type")
    plain = _plain_type(key_type)
    if plain != key_type and not certificate:
        raise wire.WireError("certificate: signed by a certificate, not a CA key")
    if plain == key_type:
        plain_blob, key = _read_key_fields(reader, plain)
        reader.end()
        return PublicKey(key_type, blob, plain_blob, key)
    reader.string("certificate nonce")
    plain_blob, key = _read_key_fields(reader, plain)
    serial = reader.u64("certificate serial")
    cert_type = reader.u32("certificate type")
    key_id = reader.text("certificate key id")
    principals_reader = wire.Reader(reader.string("certificate principals"), "principals")
    principals = []
    while principals_reader.remaining():
        principals.append(principals_reader.text("principal"))
    valid_after = reader.u64("certificate valid-after")
    valid_before = reader.u64("certificate valid-before")
    reader.string("critical options")
    reader.string("extensions")
    reader.string("reserved")
    ca_blob = reader.string("signature key")
    signed = reader.consumed()
    ca_signature = reader.string("CA signature")
    reader.end()
    ca = parse_public_blob(ca_blob, certificate=False)
    why = ca.verify(ca_signature, signed)
    if why is not None:
        raise wire.WireError(f"certificate: the CA's signature is not valid ({why})")
    cert = Certificate(serial, cert_type, key_id, tuple(principals), valid_after, valid_before, ca)
    return PublicKey(key_type, blob, plain_blob, key, cert)


def parse_public_text(text: str) -> PublicKey:
    """``"ssh-ed25519 AAAA… [comment]"``: the key of a ``.pub``/authorized_keys line."""
    fields = text.split()
    if len(fields) < 2:
        raise wire.WireError("not a public key (want: TYPE BASE64 [COMMENT])")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        raise wire.WireError("public key: invalid base64") from None
    key = parse_public_blob(blob)
    if key.key_type != fields[0]:
        raise wire.WireError(f"public key: a {key.key_type} key labelled {fields[0]!r}")
    return key


def public_key_of(private: PrivateKeyObject) -> PublicKey:
    raw = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return parse_public_text(raw.decode())


def raw_sign(private: PrivateKeyObject, message: bytes) -> bytes:
    """The SSH signature blob of ``message`` by ``private`` (RSA: rsa-sha2-512)."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return wire.string("ssh-ed25519") + wire.string(private.sign(message))
    if isinstance(private, ec.EllipticCurvePrivateKey):
        key_type = public_key_of(private).key_type
        curve_hash = _CURVES[key_type.removeprefix("ecdsa-sha2-")][1]
        r, s = decode_dss_signature(private.sign(message, ec.ECDSA(curve_hash)))
        return wire.string(key_type) + wire.string(wire.mpint(r) + wire.mpint(s))
    signature = private.sign(message, padding.PKCS1v15(), hashes.SHA512())
    return wire.string("rsa-sha2-512") + wire.string(signature)


def read_small_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path`` (a key, a signature, an allowed_signers file), refusing
    a file larger than ``limit``: nothing here is big, and a mistaken path (a
    device, a huge file) must not be read whole."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise file_error(path, e) from None
    if len(data) > limit:
        raise DesyncError(f"{path}: larger than {limit} bytes: not {what}")
    return data
