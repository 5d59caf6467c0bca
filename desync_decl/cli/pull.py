"""``pull - - - STORE``: serve a chunk store over stdin/stdout with casync's protocol,
what ``ssh host casync pull - - - /path`` runs on the far side of an ``ssh://`` store.

The verb opens the store (unverified: the client verifies) and hands stdin/stdout
to ``server.casync_pull.serve``, which holds the protocol session.
"""

from __future__ import annotations

import argparse
import sys

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.server.casync_pull import serve
from desync_decl.stores import casync_protocol as proto
from desync_decl.stores.base import Store
from desync_decl.stores.location import Opener


def arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "What `ssh host casync pull - - - STORE` runs: answer chunk requests "
        "for STORE on stdin/stdout. Point a client's CASYNC_REMOTE_PATH at desync-decl."
    )
    for name in ("base", "archive", "index"):
        p.add_argument(name, help="must be - (only chunk stores are served)")
    p.add_argument("store", help="chunk store to serve")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    out = console.binary()
    try:
        store = _open(args)
    except DesyncError as e:
        out.write(proto.abort(str(e)))
        out.flush()
        raise
    try:
        serve(store, sys.stdin.buffer.read, out.write, out.flush)
    finally:
        store.close()
    return 0


def _open(args: argparse.Namespace) -> Store:
    if (args.base, args.archive, args.index) != ("-", "-", "-") or args.store == "-":
        raise DesyncError("pull serves only a chunk store: pull - - - STORE")
    base = common.opener(args)
    opener = Opener(base.digest, base.config, {"skip_verify": True})  # the client verifies
    return opener.chunk_store(args.store)
