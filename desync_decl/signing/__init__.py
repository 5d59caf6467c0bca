"""Signed indexes: an index is published with an SSH signature beside it
(``<index>.sig``, OpenSSH's SSHSIG format as ``ssh-keygen -Y sign`` writes it, in
the namespace ``desync-decl``), and a host that trusts an ``allowed_signers`` file
refuses an index no allowed signer signed, before it fetches a chunk.

This package knows keys, signatures, ``allowed_signers`` and revocation lists; it
knows nothing of stores or indexes (layer 1): callers hand it the index file's bytes
and the signature's bytes, and get a ``Signer`` or a ``SignatureRefused``.

Importing the package costs nothing: the two entry points load the key and trust
modules (and ``cryptography``) when called, so a verb that signs nothing and trusts
nothing starts without them (``tests/test_cli_startup.py``); the vocabulary
(``common``: its classes) is loaded at its first use, so an index store, which
needs only the names and sizes below, does not load it either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

NAMESPACE = "desync-decl"
SIGNATURE_SUFFIX = ".sig"  # the signature of index X is the file X.sig beside it
MAX_SIGNATURE_SIZE = 64 * 1024  # an armored SSHSIG is under 2 KiB even for RSA-8192

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from desync_decl.signing.common import SignatureRefused, Signer, SigningKey, Trust

_COMMON = frozenset({"SignatureRefused", "Signer", "SigningKey", "Trust"})

__all__ = [
    "MAX_SIGNATURE_SIZE",
    "NAMESPACE",
    "SIGNATURE_SUFFIX",
    "SignatureRefused",
    "Signer",
    "SigningKey",
    "Trust",
    "load_signing_key",
    "load_trust",
]


def __getattr__(name: str) -> object:
    """``common``'s classes, loaded at the first ask."""
    if name in _COMMON:
        from desync_decl.signing import common

        return getattr(common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_signing_key(path: str | Path) -> SigningKey:
    """``signers.load_signing_key``: a private key file, or a ``.pub`` ssh-agent holds."""
    from desync_decl.signing.signers import load_signing_key as load

    return load(path)


def load_trust(
    allowed_signers: str | Path,
    signers: Sequence[str] = (),
    revoked_keys: str | Path | None = None,
) -> Trust:
    """``trust.load_trust``: an allowed_signers file (and revoked keys), read now, once."""
    from desync_decl.signing.trust import load_trust as load

    return load(allowed_signers, signers, revoked_keys)
