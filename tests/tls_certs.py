"""Test certificates made with ``cryptography``: EC P-256 keys, certificates that are
self-signed or issued by a test CA, written as PEM files.

Used by the HTTP servers (a CA, server and client certificates), the cloud and
registry servers (a self-signed certificate for 127.0.0.1) and the registry's
token service (a self-signed signing certificate). Every certificate is valid
from a day ago to two days from now, so a clock that is a little off never
matters.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey
LOCALHOST_IP = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    cn: str,
    key: Key,
    issuer: x509.Name | None = None,
    issuer_key: Key | None = None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A certificate named ``cn`` for ``key``, signed by ``issuer_key`` as ``issuer``
    (self-signed without them); a ``ca`` may sign others, ``usage`` is an extended
    key usage and ``sans`` the subject alternative names."""
    if issuer is None or issuer_key is None:
        issuer, issuer_key = name(cn), key
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pem(
    cert: x509.Certificate, key: Key, cert_path: Path, key_path: Path
) -> tuple[Path, Path]:
    """The certificate and its key (PKCS#8, unencrypted) as PEM files: (cert, key)."""
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def self_signed_for_localhost(cn: str, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN; no system CA trusts it) and its
    key, as PEM files: (cert, key). A client trusts it by taking it as its CA."""
    key = new_key()
    cert = issue(cn, key, ca=True, sans=[LOCALHOST_IP])
    return write_pem(cert, key, cert_path, key_path)
