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
from desync_decl.formats.index import Index
from desync_decl.ops.make import Made, MakeOptions, make_file, make_held
from desync_decl.stores.store_lock import writing
from desync_decl.stores.url import url_scheme


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
    # a local file is written as the chunks come: the same memory at any size
    streamed = args.index != "-" and url_scheme(args.index) is None
    options = MakeOptions(
        sizes, digest, store, args.concurrency, args.blob_digest, console.progress()
    )
    # the index is published under the store's lock (store_lock)
    with writing(store, common.lock_patience(args, console)):
        if streamed:
            made, written = make_file(args.index, args.file, options, key)
            index_digest = written.file_digest
        else:
            result = make_held(args.file, options)
            common.write_index(args, args.index, result.index, console, key)
            made, index_digest = result, result.index.file_digest()
    # stats only when asked: counting the unique ids costs ~1.6 MiB per GiB of input
    # (and a streamed index is read back for them)
    stats: dict[str, int] = {}
    if args.print_stats or args.json:
        stats = _stats(made, common.read_index(args, args.index) if streamed else result.index)
    if args.print_stats:
        console.err.write(json.dumps(stats, indent=2) + "\n")
    if args.index == "-":
        return 0
    blob = made.blob_digest.hex() if made.blob_digest is not None else None
    if args.json:
        extra = {"blob-digest": blob} if blob else {}
        console.json({"index": args.index, "index-digest": index_digest, **extra, **stats})
    else:
        console.print(blob if blob else index_digest)
    return 0


def _stats(made: Made, index: Index) -> dict[str, int]:
    return {
        "chunks": made.chunks_total,
        "unique": len(index.unique_ids()),
        "stored": made.chunks_stored,
        "bytes-stored": made.bytes_stored,
        "size": index.length,
    }
