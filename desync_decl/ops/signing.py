"""Signed indexes where verbs and tasks publish and read them: which bytes a
signature covers (the index file's, exactly as written or read, never re-encoded) and
when the check happens (before anything else uses the index: no store is opened, no
chunk fetched for an index the trust refuses). Two streamed paths follow the same
rules without holding the index: ``ops.make.make_file`` signs the bytes it writes as
it hashes them, and ``stores.index_file.open_index`` checks a large index's signature
on the digests taken as it is read.
"""

from __future__ import annotations

from desync_decl.formats.index import Index
from desync_decl.signing import Signer, SigningKey, Trust
from desync_decl.stores.index_store import SignedIndex
from desync_decl.stores.location import Opener


def write_signed_index(
    opener: Opener, location: str, index: Index, key: SigningKey, *, make_dirs: bool = False
) -> None:
    """Write ``index`` at ``location`` and its signature beside it (``<location>.sig``).

    The signature is made first, of the bytes about to be written: a key that cannot
    sign (an agent that refuses, a key it does not hold) publishes nothing. The index
    goes before its signature, so a reader never sees a new signature beside the old
    index; in between, a reader with trust sees the old signature beside the new
    index and refuses it as changed after signing, which is the safe side."""
    signature = key.sign(index.encode())
    opener.write_index(location, index, make_dirs=make_dirs)
    opener.write_signature(location, signature)


def sign_index(opener: Opener, location: str, key: SigningKey) -> SignedIndex:
    """Sign the index already at ``location``: its bytes as stored (it must decode as
    an index), the signature written beside it. The index as read is returned."""
    signed = opener.read_signed_index(location)
    opener.write_signature(location, key.sign(signed.data))
    return signed


def read_trusted_index(opener: Opener, location: str, trust: Trust) -> tuple[SignedIndex, Signer]:
    """The index at ``location`` and who signed it, if ``trust`` accepts its signature;
    else ``SignatureRefused`` (one line naming the index and why)."""
    signed = opener.read_signed_index(location)
    return signed, trust.verify(signed.data, signed.signature, signed.where)
