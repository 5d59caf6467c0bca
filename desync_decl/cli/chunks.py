"""Chunk listings: ``list-chunks``, ``inspect-chunks`` and ``chunk`` (boundaries only)."""

from __future__ import annotations

import argparse
import json
import os

from desync_decl.chunker import iter_chunks
from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.fsutil import write_atomic
from desync_decl.ops.info import chunk_info_rows
from desync_decl.ops.source import open_source
from desync_decl.stores.local import LocalStore


def list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    p.set_defaults(func=run_list)


def inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    p.add_argument("output", nargs="?", help="file to write (default stdout)")
    common.add_store_args(p, required=False, many=False)
    p.set_defaults(func=run_inspect)


def chunk_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument(
        "-S",
        "--start",
        type=common.non_negative_int,
        default=0,
        help="byte offset to start chunking at",
    )
    common.add_chunk_size_arg(p)
    p.set_defaults(func=run_chunk)


def run_list(args: argparse.Namespace, console: Console) -> int:
    index = common.read_index(args, args.index)
    for c in index:
        console.out.write(c.id.hex() + "\n")
    return 0


def run_inspect(args: argparse.Namespace, console: Console) -> int:
    index = common.read_index(args, args.index)
    store: LocalStore | None = None
    if args.store:
        given = common.open_single_store(args, index.digest)
        if not isinstance(given, LocalStore):
            raise DesyncError(f"inspect-chunks needs a local store, not {given}")
        store = given
    rows = chunk_info_rows(index, store.stored_size if store is not None else None)
    if args.output:
        try:
            write_atomic(args.output, (json.dumps(rows, indent=2) + "\n").encode())
        except OSError as e:
            raise DesyncError(f"cannot write {args.output}: {e.strerror}") from None
    else:
        console.json(rows)
    return 0


def run_chunk(args: argparse.Namespace, console: Console) -> int:
    sizes = common.chunk_sizes(args)
    digest = common.digest_arg(args)
    with open_source(args.file) as (reader, size):
        if args.start > size:
            raise DesyncError(f"start {args.start} is beyond the end of {args.file} ({size} bytes)")
        reader.seek(args.start, os.SEEK_SET)
        for start, data in iter_chunks(reader, sizes):
            console.out.write(f"{args.start + start}\t{len(data)}\t{digest.hash(data).hex()}\n")
    return 0
