"""``chop INDEX FILE``: store a file's chunks, cut where an existing index says, in a
store that already exists."""

from __future__ import annotations

import argparse

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.ops.chop import chop
from desync_decl.stores.store_lock import writing


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    p.add_argument("file", help="the file the index was made from")
    common.add_store_args(p, required=True, many=False)
    common.add_concurrency_arg(p)
    common.add_ignore_args(p)
    common.add_lock_timeout_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    index = common.read_index(args, args.index)
    # desync's chop: the store must exist (a typo in its path is no new store)
    store = common.open_single_writable_store(args, index.digest, make_missing=False)
    ignore = common.ignored_ids(args)
    with writing(store, common.lock_patience(args, console)):  # the store's lock, waited for
        chop(
            index,
            args.file,
            store,
            ignore=ignore,
            concurrency=args.concurrency,
            progress=console.progress(),
        )
    return 0
