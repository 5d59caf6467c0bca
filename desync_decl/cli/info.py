"""``info INDEX``: index statistics, human text by default, ``--json`` for scripts."""

from __future__ import annotations

import argparse

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.ops.info import info

_LABELS = {
    "size": "Blob size",
    "total": "Total chunks",
    "unique": "Unique chunks",
    "in-store": "Chunks in store",
    "chunk-size-min": "Chunk size min",
    "chunk-size-avg": "Chunk size avg",
    "chunk-size-max": "Chunk size max",
    "digest": "Digest",
    "index-digest": "Index digest",
    "feature-flags": "Feature flags",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show what an index holds (and what the stores have)")
    p.add_argument("index", help="index file (- for stdin)")
    common.add_store_args(p, required=False, many=True)
    common.add_concurrency_arg(p)
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument(
        "-f",
        "--format",
        choices=["plain", "json"],
        default="plain",
        help="output format (desync's flag; default plain)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    index = common.read_index(args.index)
    store = common.open_stores(args.store, index.digest) if args.store else None
    data = info(index, store=store, concurrency=args.concurrency).as_json()
    if args.json or args.format == "json":
        console.json(data)
    else:
        for key, value in data.items():
            console.print(f"{_LABELS[key]}: {value}")
    return 0
