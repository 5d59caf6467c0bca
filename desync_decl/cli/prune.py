"""``prune -s STORE INDEX...``: delete chunks no given index references."""

from __future__ import annotations

import argparse
import sys

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.ops.prune import keep_set, prune
from desync_decl.stores.base import PruneStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="delete chunks that none of the indexes reference")
    p.add_argument("indexes", nargs="+", metavar="INDEX", help="indexes whose chunks are kept")
    common.add_store_args(p, required=True, many=False)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    indexes = [common.read_index(args, name) for name in args.indexes]
    store = common.open_single_store(args, indexes[0].digest)
    if not isinstance(store, PruneStore):
        raise DesyncError(f"store {store} does not support pruning")
    keep = keep_set(indexes)
    if not args.yes and not _confirm(console, store, len(keep)):
        return 0
    result = prune(store, keep)
    console.print(f"kept {result.kept} chunks, removed {result.removed} files from {store}")
    return 0


def _confirm(console: Console, store: object, kept: int) -> bool:
    """desync's prompt: y/Y go on, n/N stop; anything else asks again; EOF is an error."""
    while True:
        console.out.write(
            f"{kept} chunks are referenced; every other chunk in {store} will be deleted."
            " Continue? [y/N]: "
        )
        console.out.flush()
        answer = sys.stdin.readline()
        if not answer:
            raise DesyncError("no answer on stdin (use -y to prune without asking)")
        if answer.strip() in ("y", "Y"):
            return True
        if answer.strip() in ("n", "N", ""):
            return False
