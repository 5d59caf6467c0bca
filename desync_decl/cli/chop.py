"""``chop INDEX FILE``: store a file's chunks, cut where an existing index says."""

from __future__ import annotations

import argparse
from pathlib import Path

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID, parse_id
from desync_decl.ops.chop import chop


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chop", help="store the chunks of a file that an index describes")
    p.add_argument("index", help="index file (- for stdin)")
    p.add_argument("file", help="the file the index was made from")
    common.add_store_args(p, required=True, many=False)
    common.add_concurrency_arg(p)
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="INDEX",
        help="skip chunks of this index (repeatable)",
    )
    p.add_argument(
        "--ignore-chunks",
        action="append",
        default=[],
        metavar="FILE",
        help="skip chunk ids listed in this file, one per line",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    index = common.read_index(args, args.index)
    store = common.open_single_store(args, index.digest, create=True)
    ignore = ignored_ids(args, args.ignore, args.ignore_chunks)
    chop(
        index,
        args.file,
        store,
        ignore=ignore,
        concurrency=args.concurrency,  # type: ignore[arg-type]
        progress=console.progress(),
    )
    return 0


def ignored_ids(args: argparse.Namespace, indexes: list[str], id_files: list[str]) -> set[ChunkID]:
    ids: set[ChunkID] = set()
    for name in common.store_locations(indexes):
        ids |= common.read_index(args, name).unique_ids()
    for name in common.store_locations(id_files):
        try:
            lines = Path(name).read_text().splitlines()
        except OSError as e:
            raise DesyncError(f"cannot read {name}: {e.strerror}") from None
        ids |= {parse_id(line, f"{name}:{n}") for n, line in enumerate(lines, 1) if line.strip()}
    return ids
