"""Signed indexes: an index is published with an SSH signature beside it
(``<index>.sig``, OpenSSH's SSHSIG format as ``ssh-keygen -Y sign`` writes it, in
the namespace ``desync-decl``), and a host that trusts an ``allowed_signers`` file
refuses an index no allowed signer signed, before it fetches a chunk.

This package knows keys, signatures, ``allowed_signers`` and revocation lists; it
knows nothing of stores or indexes (layer 1): callers hand it the index file's bytes
and the signature's bytes, and get a ``Signer`` or a ``SignatureRefused``.
"""

from __future__ import annotations

from desync_decl.signing.common import (
    MAX_SIGNATURE_SIZE,
    NAMESPACE,
    SIGNATURE_SUFFIX,
    SignatureRefused,
    Signer,
    SigningKey,
    Trust,
)
from desync_decl.signing.signers import load_signing_key
from desync_decl.signing.trust import load_trust

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
