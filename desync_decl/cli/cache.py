"""``cache INDEX... -s SOURCE -c TARGET [--indexes-to LOCATION]``: fill a store with the
chunks of some indexes, and with ``--indexes-to`` copy the indexes (exact bytes and
``.sig``) beside them: a mirror in one command."""

from __future__ import annotations

import argparse

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.ops.cache import fill_cache, mirror_indexes, mirror_names
from desync_decl.stores.index_store import SignedIndex
from desync_decl.stores.store_lock import writing


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("indexes", nargs="+", metavar="INDEX", help="indexes whose chunks to copy")
    common.add_store_args(p, required=True, many=True)
    common.add_concurrency_arg(p)
    p.add_argument("-c", "--cache", required=True, metavar="STORE", help="the store to fill")
    p.add_argument(
        "--indexes-to",
        metavar="LOCATION",
        help="once the chunks are in, copy each index (its exact bytes, and its .sig when it"
        " has one) under its own name to this directory or index-store URL",
    )
    common.add_ignore_args(p)
    common.add_lock_timeout_arg(p)
    p.add_argument("--json", action="store_true", help="counts as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    signed: list[SignedIndex] = []
    names: list[str] = []
    if args.indexes_to is not None:
        if "-" in args.indexes:
            raise DesyncError("--indexes-to: an index read from stdin has no name to copy it as")
        names = mirror_names(args.indexes)  # refused before anything is copied
        signed = [common.opener(args).read_signed_index(name) for name in args.indexes]
        indexes = [s.index for s in signed]
    else:
        indexes = [common.read_index(args, name) for name in args.indexes]
    digest = indexes[0].digest
    if any(i.digest is not digest for i in indexes):
        raise DesyncError("the indexes use different chunk digests")
    ids = set().union(*(i.unique_ids() for i in indexes)) - common.ignored_ids(args)
    source = common.open_stores(args, digest, with_cache=False)
    # closed when the verb ends: that releases the store lock the copy takes
    target = common.open_writable_store(args, digest, args.cache)
    mirrored = None
    with writing(target, common.lock_patience(args, console)):  # the store's lock, waited for
        result = fill_cache(
            ids, source, target, concurrency=args.concurrency, progress=console.progress()
        )
        if args.indexes_to is not None:  # the chunks are in (flushed): now the indexes,
            # under the lock still, so no prune of the target runs before they are there
            mirrored = mirror_indexes(
                common.opener(args, digest), list(zip(names, signed, strict=True)), args.indexes_to
            )
    if args.json:
        counts = {
            "chunks-total": result.chunks_total,
            "chunks-copied": result.chunks_copied,
            "chunks-present": result.chunks_present,
        }
        if mirrored is not None:
            counts["indexes-copied"] = mirrored.indexes
            counts["signatures-copied"] = mirrored.signatures
        console.json(counts)
    elif console.interactive():
        console.note(f"copied {result.chunks_copied} of {result.chunks_total} chunks to {target}")
        if mirrored is not None:
            console.note(
                f"copied {mirrored.indexes} indexes ({mirrored.signatures} signed)"
                f" to {mirrored.where}"
            )
    return 0
