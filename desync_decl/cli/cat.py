"""``cat INDEX [OUTPUT]``: stream a blob (or a byte range of it)."""

from __future__ import annotations

import argparse
import os

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.fsutil import AtomicFile
from desync_decl.ops.cat import cat


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    p.add_argument("output", nargs="?", help="file to write (default stdout)")
    common.add_store_args(p, required=True, many=True)
    common.add_concurrency_arg(p)
    common.add_cache_args(p)
    p.add_argument("-o", "--offset", type=common.non_negative_int, default=0, help="start byte")
    p.add_argument(
        "-l",
        "--length",
        type=common.non_negative_int,
        default=0,
        help="bytes to write (0 = to the end)",
    )
    common.add_trust_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    index, _ = common.read_checked_index(args, args.index)
    store = common.open_stores(args, index.digest)
    options = {"offset": args.offset, "length": args.length, "concurrency": args.concurrency}
    if args.output is None:
        cat(index, store, console.binary(), **options)
        console.binary().flush()
        return 0
    try:
        if os.path.exists(args.output) and not os.path.isfile(args.output):
            with open(args.output, "wb") as out:  # a FIFO or device: stream into it
                cat(index, store, out, **options)
            return 0
        with AtomicFile(args.output) as atomic, os.fdopen(atomic.fd, "wb", closefd=False) as out:
            cat(index, store, out, **options)
            out.flush()
            atomic.commit()
    except OSError as e:
        raise DesyncError(f"cannot write {args.output}: {e.strerror}") from None
    return 0
