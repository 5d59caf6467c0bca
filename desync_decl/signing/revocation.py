"""Revoked keys, as ``ssh-keygen -Y verify -r FILE`` reads them: either OpenSSH's
binary key revocation list (PROTOCOL.krl, what ``ssh-keygen -k`` writes) or a text
list of public keys.

A key is revoked when the list names it (its blob, or its SHA1/SHA256 fingerprint),
and a certificate also when the list names its key, its CA's key, or the
certificate itself by serial number or key id under its CA (or under any CA).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.signing import wire
from desync_decl.signing.keys import (
    FOREIGN_KEY_TYPES,
    PublicKey,
    UnsupportedKey,
    parse_public_text,
    read_small_file,
)

MAX_FILE_SIZE = 64 * 1024 * 1024
KRL_MAGIC = b"SSHKRL\n\0"
KRL_VERSION = 1
# PROTOCOL.krl section types
_CERTIFICATES, _EXPLICIT_KEY, _SHA1, _SIGNATURE, _SHA256 = 1, 2, 3, 4, 5
_SERIAL_LIST, _SERIAL_RANGE, _SERIAL_BITMAP, _KEY_ID = 0x20, 0x21, 0x22, 0x23
_ANY_CA = b""  # the CA blob of a certificates section that applies under every CA


@dataclass
class _CertRevocations:
    """Certificates of one CA revoked by serial or key id."""

    serials: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges
    bitmaps: list[tuple[int, int]] = field(default_factory=list)  # (offset, bitmap)
    key_ids: set[str] = field(default_factory=set)

    def names(self, key: PublicKey) -> str | None:
        cert = key.cert
        assert cert is not None
        if cert.key_id in self.key_ids:
            return f"certificate key id {cert.key_id!r}"
        if cert.serial == 0:  # OpenSSH: serial 0 (no serial) is never revoked by number
            return None
        if any(low <= cert.serial <= high for low, high in self.serials) or any(
            cert.serial >= offset and (bitmap >> (cert.serial - offset)) & 1
            for offset, bitmap in self.bitmaps
        ):
            return f"certificate serial {cert.serial}"
        return None


@dataclass
class Revocations:
    """What a revocation file revokes."""

    path: Path
    keys: set[bytes] = field(default_factory=set)  # plain key blobs
    sha1: set[bytes] = field(default_factory=set)
    sha256: set[bytes] = field(default_factory=set)
    certs: dict[bytes, _CertRevocations] = field(default_factory=dict)  # by CA blob

    def why_revoked(self, key: PublicKey) -> str | None:
        """How this file revokes ``key`` ("is listed in FILE", ...), or None."""
        why = self._key_revoked(key)
        if why is None and key.cert is not None:
            by_ca = self._key_revoked(key.cert.ca)
            if by_ca is not None:
                why = f"(certificate by CA {key.cert.ca.fingerprint}, which {by_ca})"
        return why

    def _key_revoked(self, key: PublicKey) -> str | None:
        listed = f"is listed in {self.path}"
        if (
            key.plain_blob in self.keys
            or hashlib.sha1(key.plain_blob).digest() in self.sha1
            or hashlib.sha256(key.plain_blob).digest() in self.sha256
        ):
            return listed
        if key.cert is None:
            return None
        for ca in (key.cert.ca.blob, _ANY_CA):
            revoked = self.certs.get(ca)
            named = revoked.names(key) if revoked is not None else None
            if named is not None:
                return f"({named} {listed})"
        return None


def load_revocations(path: Path) -> Revocations:
    """The revocations in ``path``, a KRL or a list of public keys."""
    data = read_small_file(path, MAX_FILE_SIZE, "a revocation list")
    revocations = Revocations(path)
    if data.startswith(KRL_MAGIC):
        try:
            _read_krl(data, revocations)
        except wire.WireError as e:
            raise DesyncError(f"{path}: not a valid KRL: {e}") from None
    else:
        _read_key_list(data, revocations)
    return revocations


def _read_key_list(data: bytes, revocations: Revocations) -> None:
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise DesyncError(f"{revocations.path}: neither a KRL nor text (byte {e.start})") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0].removesuffix("-cert-v01@openssh.com") in FOREIGN_KEY_TYPES:
            continue
        try:
            key = parse_public_text(line)
        except (wire.WireError, UnsupportedKey) as e:
            raise DesyncError(f"{revocations.path}:{number}: {e}") from None
        revocations.keys.add(key.plain_blob)  # a key's certificates are revoked with it


def _read_krl(data: bytes, revocations: Revocations) -> None:
    reader = wire.Reader(data[len(KRL_MAGIC) :], "KRL")
    version = reader.u32("format version")
    if version != KRL_VERSION:
        raise wire.WireError(f"KRL format version {version}")
    reader.u64("KRL version")
    reader.u64("generated date")
    reader.u64("flags")
    reader.string("reserved")
    reader.string("comment")
    while reader.remaining():
        section = reader.byte("section type")
        body = wire.Reader(reader.string("section"), f"KRL section {section}")
        if section == _CERTIFICATES:
            _read_cert_section(body, revocations)
        elif section == _SIGNATURE:
            return  # signatures close a KRL; nothing after them counts (krl.c)
        else:
            target = {
                _EXPLICIT_KEY: revocations.keys,
                _SHA1: revocations.sha1,
                _SHA256: revocations.sha256,
            }.get(section)
            if target is None:
                raise wire.WireError(f"unknown section type {section}")
            while body.remaining():  # explicit keys are plain key blobs, as compared
                target.add(body.string("revoked key"))


def _read_cert_section(body: wire.Reader, revocations: Revocations) -> None:
    ca_blob = body.string("CA key")
    body.string("reserved")
    revoked = revocations.certs.setdefault(ca_blob, _CertRevocations())
    while body.remaining():
        kind = body.byte("certificate section type")
        sub = wire.Reader(body.string("certificate section"), f"KRL subsection {kind:#x}")
        if kind not in (_SERIAL_LIST, _SERIAL_RANGE, _SERIAL_BITMAP, _KEY_ID):
            raise wire.WireError(f"unknown certificate section type {kind:#x}")
        while sub.remaining():
            if kind == _SERIAL_LIST:
                serial = sub.u64("serial")
                revoked.serials.append((serial, serial))
            elif kind == _SERIAL_RANGE:
                revoked.serials.append((sub.u64("serial min"), sub.u64("serial max")))
            elif kind == _SERIAL_BITMAP:
                revoked.bitmaps.append((sub.u64("serial offset"), sub.mpint("bitmap")))
            else:
                revoked.key_ids.add(sub.text("key id"))
