"""``make INDEX FILE``: chunk a file into an index, storing chunks with ``-s``.

Prints the index's digest (``sha512-256:<hex>`` of the index file: the value a
manifest pins), or with ``--blob-digest`` the whole file's digest as casync does.
With ``--sign-key`` the index's signature is written beside it (``INDEX.sig``).
"""

from __future__ import annotations

import argparse
import json

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.ops.make import MakeResult, make
from desync_decl.stores.store_lock import writing


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file to write (- for stdout)")
    p.add_argument("file", help="file or block device to chunk")
    common.add_store_args(p, required=False, many=False)
    common.add_chunk_size_arg(p)
    common.add_concurrency_arg(p)
    common.add_lock_timeout_arg(p)
    p.add_argument("--print-stats", action="store_true", help="chunk statistics as JSON on stderr")
    p.add_argument(
        "--blob-digest",
        action="store_true",
        help="print the digest of the whole file, as `casync make` does (an extra hash pass)",
    )
    p.add_argument("--json", action="store_true", help="result as JSON on stdout")
    common.add_sign_key_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    digest = common.digest_arg(args)
    sizes = common.chunk_sizes(args)
    key = common.signing_key(args, args.index)
    store = common.open_single_writable_store(args, digest) if args.store else None
    # the index is published under the store's lock (store_lock)
    with writing(store, common.lock_patience(args, console)):
        result = make(
            args.file,
            sizes=sizes,
            digest=digest,
            store=store,
            concurrency=args.concurrency,
            blob_digest=args.blob_digest,
            progress=console.progress(),
        )
        common.write_index(args, args.index, result.index, console, key)
    # stats only when asked: counting the unique ids costs ~1.6 MiB per GiB of input
    stats = _stats(result) if args.print_stats or args.json else {}
    if args.print_stats:
        console.err.write(json.dumps(stats, indent=2) + "\n")
    if args.index == "-":
        return 0
    blob = result.blob_digest.hex() if result.blob_digest is not None else None
    if args.json:
        extra = {"blob-digest": blob} if blob else {}
        console.json(
            {"index": args.index, "index-digest": result.index.file_digest(), **extra, **stats}
        )
    else:
        console.print(blob if blob else result.index.file_digest())
    return 0


def _stats(result: MakeResult) -> dict[str, int]:
    return {
        "chunks": result.chunks_total,
        "unique": len(result.index.unique_ids()),
        "stored": result.chunks_stored,
        "bytes-stored": result.bytes_stored,
        "size": result.index.length,
    }
