"""``cache INDEX... -s SOURCE -c TARGET``: fill a store with the chunks of some indexes."""

from __future__ import annotations

import argparse

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.ops.cache import fill_cache
from desync_decl.stores.store_lock import writing


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("indexes", nargs="+", metavar="INDEX", help="indexes whose chunks to copy")
    common.add_store_args(p, required=True, many=True)
    common.add_concurrency_arg(p)
    p.add_argument("-c", "--cache", required=True, metavar="STORE", help="the store to fill")
    common.add_ignore_args(p)
    common.add_lock_timeout_arg(p)
    p.add_argument("--json", action="store_true", help="counts as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    indexes = [common.read_index(args, name) for name in args.indexes]
    digest = indexes[0].digest
    if any(i.digest is not digest for i in indexes):
        raise DesyncError("the indexes use different chunk digests")
    ids = set().union(*(i.unique_ids() for i in indexes)) - common.ignored_ids(args)
    source = common.open_stores(args, digest, with_cache=False)
    # closed when the verb ends: that releases the store lock the copy takes
    target = common.open_writable_store(args, digest, args.cache)
    with writing(target, common.lock_patience(args, console)):  # the store's lock, waited for
        result = fill_cache(
            ids, source, target, concurrency=args.concurrency, progress=console.progress()
        )
    if args.json:
        console.json(
            {
                "chunks-total": result.chunks_total,
                "chunks-copied": result.chunks_copied,
                "chunks-present": result.chunks_present,
            }
        )
    elif console.interactive():
        console.note(f"copied {result.chunks_copied} of {result.chunks_total} chunks to {target}")
    return 0
