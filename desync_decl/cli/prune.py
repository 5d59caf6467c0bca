"""``prune -s STORE INDEX...``: delete chunks no given index references, except those
younger than ``--min-age``, holding the store's lock (``ops.prune``).

Before anything is deleted it says how many chunks, and how many bytes as the store
holds them, would go (``ops.prune.survey``): in the question it asks, and on its
own with ``--dry-run`` (which deletes nothing and takes no lock); a ``-y`` prune
says the same numbers when done (before, its words would come ahead of a refusal:
the store locked by a writer). A store that frees space only in its own garbage
collection (an OCI registry) says so, before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.cli.opened import opened
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.ops.prune import (
    DEFAULT_MIN_AGE,
    Survey,
    describe_age,
    keep_set,
    prune,
    reclaim_note,
    survey,
)
from desync_decl.stores.base import PruneStore
from desync_decl.units import counted, human_bytes


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("indexes", nargs="+", metavar="INDEX", help="indexes whose chunks are kept")
    common.add_store_args(p, required=True, many=False)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say how many chunks (and bytes) would be deleted, and delete nothing",
    )
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
    # one run: what the survey learns of each chunk serves its deletion (OCI: the
    # manifest a size came from names what is deleted)
    make = dataclasses.replace(common.opener(args, indexes[0].digest), remember=True)
    locations = common.store_locations(args.store)
    if len(locations) != 1:
        raise DesyncError("exactly one store (-s) is needed")
    store = opened(args, make.chunk_store(locations[0]))
    if not isinstance(store, PruneStore):
        raise DesyncError(f"store {store} does not support pruning")
    keep = keep_set(indexes)
    if not keep:
        raise DesyncError(f"refusing to prune {store}: the indexes reference no chunks")
    found = survey(store, keep, min_age=args.min_age, concurrency=make.options(locations[0]).n)
    what = doomed_words(found, store, args.min_age, len(keep))
    note = reclaim_note(store)
    if args.dry_run:
        console.print(f"would delete {what}")
        if note:
            console.print(f"note: {note}")
        return 0
    if not args.yes and not _confirm(console, what, note):
        return 0

    def reread() -> set[ChunkID]:
        """The indexes again, under the store's lock: one republished meanwhile counts."""
        return keep_set(common.read_index(args, name) for name in args.indexes if name != "-")

    patience = common.lock_patience(args, console)
    result = prune(
        store,
        keep,
        min_age=args.min_age,
        reread=reread,
        patience=patience,
        progress=console.progress(),
        expected=len(found.doomed),
    )
    freed = f" ({human_bytes(found.bytes)})" if result.removed == len(found.doomed) else ""
    console.print(f"kept {result.kept} chunks, removed {result.removed} files{freed} from {store}")
    if note and result.removed:
        console.print(f"note: {note}")
    return 0


def doomed_words(found: Survey, store: object, min_age: float, kept: int) -> str:
    """``12 chunks (3.4 MiB) from STORE, unreferenced and older than 1h; 40 referenced
    chunks and 2 younger ones stay``."""
    size = human_bytes(found.bytes)
    if not found.all_sized:
        size = f"{size} in the {found.sized} whose size the store tells" if found.sized else ""
    n = len(found.doomed)
    older = f" and older than {describe_age(min_age)}" if min_age > 0 else ""
    stay = counted(kept, "referenced chunk")
    if found.young:
        stay += f" and {counted(found.young, 'younger chunk')}"
    sized = f" ({size})" if size else ""
    return f"{counted(n, 'chunk')}{sized} from {store}, unreferenced{older}; {stay} stay"


def _confirm(console: Console, what: str, note: str | None) -> bool:
    """desync's prompt: y/Y go on, n/N stop; anything else asks again; EOF is an error."""
    while True:
        if note:
            console.out.write(f"note: {note}\n")
        console.out.write(f"{what}; they will be deleted. Continue? [y/N]: ")
        console.out.flush()
        answer = sys.stdin.readline()
        if not answer:
            raise DesyncError("no answer on stdin (use -y to prune without asking)")
        if answer.strip() in ("y", "Y"):
            return True
        if answer.strip() in ("n", "N", ""):
            return False
