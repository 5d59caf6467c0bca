"""``info INDEX``: index statistics, human text by default, ``--json`` for scripts."""

from __future__ import annotations

import argparse

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.cli.seeding import add_seed_args, print_plan, seed_specs
from desync_decl.ops.info import info
from desync_decl.ops.seeding import open_seeds

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


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    common.add_store_args(p, required=False, many=True)
    common.add_concurrency_arg(p)
    common.add_cache_args(p)
    add_seed_args(p)
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
    index = common.read_index(args, args.index)
    stores = common.open_store_list(args, index.digest) if args.store else []
    if args.cache:
        stores.insert(0, common.opener(args, index.digest).chunk_store(args.cache))
    seeds = open_seeds(seed_specs(args, console), index, concurrency=args.concurrency)
    result = info(index, stores=stores, seeds=seeds, concurrency=args.concurrency)
    data = result.as_json()
    if args.json or args.format == "json":
        console.json(data)
        return 0
    for key, value in data.items():
        if key in _LABELS:
            console.print(f"{_LABELS[key]}: {value}")
    for name, present in result.per_store:
        console.print(f"  {name}: {present} present, {result.unique - present} missing")
    if result.plan is not None:
        console.print("Extraction plan:")
        print_plan(result.plan, console)
    return 0
