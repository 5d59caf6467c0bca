"""Deciding whether a signature is acceptable, as ``ssh-keygen -Y verify`` decides:
the SSHSIG is well formed, in the ``desync-decl`` namespace, verifies over the
index's bytes, its key is not revoked, and an allowed_signers line gives that key
(or, with ``cert-authority``, the CA of its user certificate) one of the wanted
principals, for this namespace, at this time.

Where OpenSSH prints only "No principal matched", the refusal here says what came
closest: the line that matched the key and why it did not allow the signature.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.signing import NAMESPACE, allowed_signers, sshsig, wire
from desync_decl.signing.allowed_signers import AllowedSigner, format_time
from desync_decl.signing.common import SignatureRefused, Signer
from desync_decl.signing.keys import USER_CERT, PublicKey, UnsupportedKey, parse_public_text
from desync_decl.signing.revocation import Revocations, load_revocations

_FOREVER = 2**64 - 1


@dataclass(frozen=True)
class _Verdict:
    """What one allowed_signers line says of a key: the principal it accepts the
    key for, or why not; ``rank`` orders reasons by how close the line came."""

    principal: str | None
    reason: str
    rank: int


def _cert_problem(cert_key: PublicKey, now: float) -> str | None:
    """Why a certificate cannot sign now (OpenSSH's sshkey_cert_check_authority, less
    the principal), None when it can."""
    cert = cert_key.cert
    assert cert is not None
    if cert.cert_type != USER_CERT:
        return "certificate is not a user certificate"
    if now < cert.valid_after:
        return f"certificate is not valid until {format_time(cert.valid_after)}"
    if now >= cert.valid_before:
        return f"certificate expired {format_time(cert.valid_before)}"
    if not cert.principals:
        return "certificate lacks a principal list"
    return None


def _judge(line: AllowedSigner, key: PublicKey, wanted: Sequence[str], now: float) -> _Verdict:
    """What ``line`` says of a signature by ``key`` for one of ``wanted`` (any
    principal when empty), in the namespace NAMESPACE, at ``now``."""
    if line.cert_authority:
        if key.cert is None or not key.cert.ca.same_key(line.key):
            return _Verdict(None, "", 0)
    elif key.cert is not None or not key.same_key(line.key):
        return _Verdict(None, "", 0)
    where = f"({line.where})"
    if wanted:
        principals = [p for p in wanted if line.allows_principal(p)]
        if not principals:
            return _Verdict(
                None,
                f"principal not allowed: {line.where} gives this key "
                f"{line.principals!r}, not {_names(wanted)}",
                1,
            )
    if not line.allows_namespace(NAMESPACE):
        return _Verdict(
            None,
            f"key not allowed for namespace {NAMESPACE!r} "
            f"(namespaces={line.namespaces!r}, {line.where})",
            2,
        )
    if line.cert_authority:
        assert key.cert is not None
        problem = _cert_problem(key, now)
        if problem is not None:
            return _Verdict(None, f"{problem} {where}", 3)
        if wanted:
            listed = [p for p in principals if p in key.cert.principals]
            if not listed:
                return _Verdict(
                    None,
                    f"certificate is not for {_names(wanted)}: it names "
                    f"{_names(key.cert.principals)} {where}",
                    3,
                )
            principal = listed[0]
        else:
            listed = [p for p in key.cert.principals if line.allows_principal(p)]
            if not listed:
                return _Verdict(
                    None,
                    f"principal not allowed: the certificate names "
                    f"{_names(key.cert.principals)}, {line.where} allows "
                    f"{line.principals!r}",
                    3,
                )
            principal = ",".join(listed)
    else:
        principal = principals[0] if wanted else line.principals
    invalid = line.invalid_at(now)
    if invalid is not None:
        return _Verdict(None, invalid, 4)
    return _Verdict(principal, "", 5)


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


@dataclass(frozen=True)
class FileTrust:
    """An allowed_signers file's signers, narrowed to ``signers``, minus ``revoked``."""

    path: Path
    lines: tuple[AllowedSigner, ...]
    signers: tuple[str, ...]
    revoked: Revocations | None

    def verify(self, data: bytes, signature: bytes | None, what: str) -> Signer:
        return self.verify_hashed(lambda name: hashlib.new(name, data).digest(), signature, what)

    def verify_hashed(
        self, hash_of: Callable[[str], bytes], signature: bytes | None, what: str
    ) -> Signer:
        if signature is None:
            raise SignatureRefused(f"{what}: no signature (the index is not signed)")
        try:
            decoded = sshsig.decode_armored(signature)
        except DesyncError as e:
            raise SignatureRefused(f"{what}: not an SSH signature: {e}") from None
        if decoded.namespace != NAMESPACE:
            raise SignatureRefused(
                f"{what}: wrong namespace: signed for {decoded.namespace!r}, not {NAMESPACE!r}"
            )
        why = decoded.verify_digest(hash_of(decoded.hash_algorithm))
        if why is not None:
            raise SignatureRefused(
                f"{what}: signature does not verify ({why}): the index changed after "
                f"signing, or the signature is damaged"
            )
        return self._accept(decoded.public, what)

    def check_key(self, public_key: str, what: str) -> Signer:
        try:
            key = parse_public_text(public_key)
        except (wire.WireError, UnsupportedKey) as e:
            raise SignatureRefused(f"{what}: {e}") from None
        return self._accept(key, what)

    def _accept(self, key: PublicKey, what: str) -> Signer:
        if self.revoked is not None:
            revoked = self.revoked.why_revoked(key)
            if revoked is not None:
                raise SignatureRefused(f"{what}: revoked key: {key.fingerprint} {revoked}")
        now = time.time()
        best = _Verdict(None, "", 0)
        for line in self.lines:
            verdict = _judge(line, key, self.signers, now)
            if verdict.principal is not None:
                return Signer(verdict.principal, key.fingerprint)
            if verdict.rank > best.rank:
                best = verdict
        if best.rank == 0:
            raise SignatureRefused(
                f"{what}: key not in allowed_signers: {self.path} does not list the "
                f"signing key {_describe(key)}"
            )
        raise SignatureRefused(f"{what}: {best.reason}")


def _describe(key: PublicKey) -> str:
    if key.cert is None:
        return key.fingerprint
    return f"{key.fingerprint} (certificate {key.cert.key_id!r} by CA {key.cert.ca.fingerprint})"


def load_trust(
    allowed: str | Path, signers: Sequence[str] = (), revoked_keys: str | Path | None = None
) -> FileTrust:
    """Read ``allowed`` (OpenSSH's allowed_signers format) and ``revoked_keys`` (a KRL
    or a list of public keys) now, once. ``signers`` narrows the principals a
    signature may be accepted for (empty: any principal the file gives the key). A
    malformed file is a ``DesyncError`` "FILE:LINE: what is wrong"."""
    path = Path(allowed)
    revoked = None if revoked_keys is None else load_revocations(Path(revoked_keys))
    return FileTrust(path, tuple(allowed_signers.load(path)), tuple(signers), revoked)
