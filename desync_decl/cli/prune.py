"""``prune -s STORE INDEX...``: delete chunks no given index references, except those
younger than ``--min-age``, holding the store's lock (``ops.prune``)."""

from __future__ import annotations

import argparse
import sys

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.ops.prune import DEFAULT_MIN_AGE, describe_age, keep_set, prune
from desync_decl.stores.base import PruneStore


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("indexes", nargs="+", metavar="INDEX", help="indexes whose chunks are kept")
    common.add_store_args(p, required=True, many=False)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    common.add_lock_timeout_arg(p)
    p.add_argument(
        "--min-age",
        type=common.parse_duration,
        default=DEFAULT_MIN_AGE,
        metavar="DURATION",
        help="keep chunks the store modified less than this long ago, referenced or not:"
        " another machine may be publishing an index that uses them (default 1h;"
        " 0 deletes them too, as desync does)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    indexes = [common.read_index(args, name) for name in args.indexes]
    store = common.open_single_store(args, indexes[0].digest)
    if not isinstance(store, PruneStore):
        raise DesyncError(f"store {store} does not support pruning")
    keep = keep_set(indexes)
    if not args.yes and not _confirm(console, store, len(keep), args.min_age):
        return 0

    def reread() -> set[ChunkID]:
        """The indexes again, under the store's lock: one republished meanwhile counts."""
        return keep_set(common.read_index(args, name) for name in args.indexes if name != "-")

    patience = common.lock_patience(args, console)
    result = prune(store, keep, min_age=args.min_age, reread=reread, patience=patience)
    console.print(f"kept {result.kept} chunks, removed {result.removed} files from {store}")
    return 0


def _confirm(console: Console, store: object, kept: int, min_age: float) -> bool:
    """desync's prompt: y/Y go on, n/N stop; anything else asks again; EOF is an error."""
    older = f" older than {describe_age(min_age)}" if min_age > 0 else ""
    while True:
        console.out.write(
            f"{kept} chunks are referenced; every other chunk in {store}{older} will be"
            " deleted. Continue? [y/N]: "
        )
        console.out.flush()
        answer = sys.stdin.readline()
        if not answer:
            raise DesyncError("no answer on stdin (use -y to prune without asking)")
        if answer.strip() in ("y", "Y"):
            return True
        if answer.strip() in ("n", "N", ""):
            return False
