"""The signing package's vocabulary, in a module of its own so that every part of
the package (keys, signatures, trust) can import it, and the package's ``__init__``
loads it only when one of its classes is asked for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from desync_decl.errors import DesyncError
from desync_decl.signing import NAMESPACE


class SignatureRefused(DesyncError):
    """An index its trust does not accept; ``str()`` is one line saying which and why
    (no signature, unknown key, expired, wrong namespace, index changed after signing,
    revoked key, principal not allowed)."""


@dataclass(frozen=True)
class Signer:
    """Who signed an index, as an allowed_signers entry accepted it."""

    principal: str  # the principal the signature was accepted for
    key: str  # the signing key as ``ssh-keygen -l`` names it: "ED25519 SHA256:…"

    def __str__(self) -> str:
        return f"{self.principal} ({self.key})"


class SigningKey(Protocol):
    """A key that signs: a private key file, or a key held by ssh-agent."""

    @property
    def public_key(self) -> str:
        """The public key as one ``allowed_signers``/``authorized_keys`` field pair:
        ``"ssh-ed25519 AAAA…"``."""
        ...

    @property
    def fingerprint(self) -> str:
        """``"ED25519 SHA256:…"``, as ``ssh-keygen -l`` prints it."""
        ...

    def sign(self, data: bytes, namespace: str = NAMESPACE) -> bytes:
        """The armored SSHSIG (``-----BEGIN SSH SIGNATURE-----`` …) of ``data``."""
        ...

    def sign_digest(self, digest: bytes, namespace: str = NAMESPACE) -> bytes:
        """``sign`` of data whose SHA-512 (``sshsig.SIGN_HASH``, what ``ssh-keygen -Y
        sign`` hashes with) is ``digest``: data hashed as it was written."""
        ...


class Trust(Protocol):
    """Which signers a host accepts: an allowed_signers file, optionally narrowed to
    some principals, minus revoked keys."""

    def verify(self, data: bytes, signature: bytes | None, what: str) -> Signer:
        """The signer of ``data`` (an index file's bytes) if ``signature`` (its
        ``.sig``'s bytes, None when there is none) is a valid SSHSIG in the
        ``desync-decl`` namespace by a key the trust allows, for one of the wanted
        principals, valid now, not revoked; else ``SignatureRefused`` whose message
        starts with ``what`` (the index's location)."""
        ...

    def verify_hashed(
        self, hash_of: Callable[[str], bytes], signature: bytes | None, what: str
    ) -> Signer:
        """``verify`` of data whose hash by the algorithm named (``sshsig.HASHES``) is
        ``hash_of(name)``: an index checked as it was read, never held whole."""
        ...

    def check_key(self, public_key: str, what: str) -> Signer:
        """The signer a signature by ``public_key`` (``"ssh-ed25519 AAAA…"``) would be
        accepted as, else ``SignatureRefused``: for a plan, where an earlier task of
        the same manifest will sign the index with a key the manifest names."""
        ...
