"""``extract INDEX OUTPUT``: rebuild a blob from chunk stores."""

from __future__ import annotations

import argparse
import os

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.ops.extract import extract


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="rebuild a file from its index and chunk stores")
    p.add_argument("index", help="index file (- for stdin)")
    p.add_argument("output", help="file to write (replaced atomically)")
    common.add_store_args(p, required=True, many=True)
    common.add_concurrency_arg(p)
    p.add_argument("--print-stats", action="store_true", help="statistics as JSON on stdout")
    p.add_argument("--json", dest="print_stats", action="store_true", help="same as --print-stats")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.index != "-" and os.path.abspath(args.index) == os.path.abspath(args.output):
        raise DesyncError(f"{args.output}: the output would overwrite the index")
    index = common.read_index(args.index)
    store = common.open_stores(args.store, index.digest)
    result = extract(
        index,
        args.output,
        store,
        concurrency=args.concurrency,
        progress=console.progress(),
    )
    if args.print_stats:
        console.json(
            {
                "chunks-total": result.chunks_total,
                "chunks-from-store": result.chunks_from_store,
                "bytes-from-store": result.bytes_from_store,
                "bytes-total": result.bytes_total,
            }
        )
    return 0
