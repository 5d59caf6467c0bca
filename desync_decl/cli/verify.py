"""``verify -s STORE`` (store integrity) and ``verify-index INDEX FILE``."""

from __future__ import annotations

import argparse

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.ops.verify import verify_index, verify_store
from desync_decl.stores.base import PruneStore


def store_arguments(p: argparse.ArgumentParser) -> None:
    common.add_store_args(p, required=True, many=False)
    common.add_concurrency_arg(p)
    p.add_argument("-r", "--repair", action="store_true", help="delete invalid chunks")
    p.set_defaults(func=run_verify)


def index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    p.add_argument("file", help="file or block device to check")
    common.add_concurrency_arg(p)
    common.add_trust_args(p)
    p.set_defaults(func=run_verify_index)


def run_verify(args: argparse.Namespace, console: Console) -> int:
    store = common.open_single_store(args, common.digest_arg(args))
    if not isinstance(store, PruneStore):
        raise DesyncError(f"store {store} cannot be listed for verification")
    bad = verify_store(store, repair=args.repair, concurrency=args.concurrency)
    for b in bad:
        console.note(f"chunk {b.id.hex()} is invalid: {b.why}{': removed' if b.removed else ''}")
    if bad:
        raise DesyncError(
            f"{len(bad)} invalid chunks in {store}" + (" (removed)" if args.repair else "")
        )
    return 0


def run_verify_index(args: argparse.Namespace, console: Console) -> int:
    index, _ = common.read_checked_index(args, args.index)
    verify_index(index, args.file, concurrency=args.concurrency, progress=console.progress())
    return 0
