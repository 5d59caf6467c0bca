"""``sign-index INDEX --key KEY``: sign an index already published.

The signature covers the index file's bytes as they are (read, checked to be an
index, never re-encoded) and is written beside it as ``INDEX.sig``, a file's or in
the same index store, replacing one already there. It is what ``ssh-keygen -Y sign
-n desync-decl`` would write: ``ssh-keygen -Y verify`` checks it too.
"""

from __future__ import annotations

import argparse

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import UsageError
from desync_decl.stores.index_store import signature_name
from desync_decl.stores.url import mask_credentials, url_scheme


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file or index-store URL (.caibx, .caidx) to sign")
    p.add_argument(
        "--key",
        required=True,
        metavar="KEY",
        help="an Ed25519, ECDSA or RSA private key file (no passphrase), or a .pub whose"
        " key ssh-agent holds (SSH_AUTH_SOCK)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='{"index", "signature", "key", "public-key", "index-digest"} on stdout',
    )
    common.add_store_options(p)  # for an index store over HTTPS
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.index == "-":
        raise UsageError(
            "sign-index writes INDEX.sig beside the index: give its file or URL, not -"
        )
    from desync_decl.ops.signing import sign_index
    from desync_decl.signing import load_signing_key

    key = load_signing_key(args.key)
    signed = sign_index(common.opener(args), args.index, key)
    where = signature_location(args.index)
    if args.json:
        digest = signed.index.digest
        console.json(
            {
                "index": mask_credentials(args.index),
                "signature": where,
                "key": key.fingerprint,
                "public-key": key.public_key,
                "index-digest": f"{digest.value}:{digest.hash(signed.data).hex()}",
            }
        )
    else:
        console.print(f"{where}: signed with {key.fingerprint}")
    return 0


def signature_location(location: str) -> str:
    """Where the signature of the index at ``location`` is (credentials masked): the
    name with ``.sig`` added, before a URL's query."""
    if url_scheme(location) is None:
        return signature_name(location)
    url, sep, query = location.partition("?")
    return mask_credentials(signature_name(url) + sep + query)
