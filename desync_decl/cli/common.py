"""Argument helpers shared by the verbs: index arguments, store flags, chunk sizes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from desync_decl.chunker import ChunkSizes
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError, file_error
from desync_decl.formats import index as index_format
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index
from desync_decl.fsutil import write_atomic
from desync_decl.stores.base import Store
from desync_decl.stores.compose import single_or_router
from desync_decl.stores.location import open_store


def read_index(arg: str) -> Index:
    """An index from a path, or from stdin for ``-``."""
    if arg == "-":
        return index_format.decode(sys.stdin.buffer.read(), "<stdin>")
    try:
        data = Path(arg).read_bytes()
    except OSError as e:
        raise file_error(arg, e, "read") from None
    return index_format.decode(data, arg)


def write_index(arg: str, index: Index, console: Console) -> None:
    """Write atomically (temp file + fsync + rename), or to stdout for ``-``."""
    data = index.encode()
    if arg == "-":
        console.binary().write(data)
        console.binary().flush()
        return
    try:
        write_atomic(arg, data)
    except OSError as e:
        raise DesyncError(f"cannot write {arg}: {e.strerror}") from None


def add_store_args(p: argparse.ArgumentParser, *, required: bool, many: bool) -> None:
    p.add_argument(
        "-s",
        "--store",
        action="append",
        default=[],
        required=required,
        metavar="STORE",
        help="chunk store location"
        + (" (repeat or comma-separate: tried in order)" if many else ""),
    )


def add_concurrency_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n", "--concurrency", type=int_at_least(1), default=10, help="worker threads (default 10)"
    )


def add_chunk_size_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-m",
        "--chunk-size",
        default="16:64:256",
        metavar="MIN:AVG:MAX",
        help="chunk sizes in KiB (suffix B/K/M for other units; default 16:64:256)",
    )


def chunk_sizes(args: argparse.Namespace) -> ChunkSizes:
    return ChunkSizes.parse(args.chunk_size)


def store_locations(values: list[str]) -> list[str]:
    """desync's list flags: repeatable and comma-separated."""
    return [loc for v in values for loc in v.split(",") if loc]


def open_stores(values: list[str], digest: Digest) -> Store:
    """The ``-s`` stores as one store (a router when there are several)."""
    locations = store_locations(values)
    if not locations:
        raise DesyncError("no store given (-s)")
    return single_or_router([open_store(loc, digest=digest) for loc in locations])


def open_single_store(values: list[str], digest: Digest, *, create: bool = False) -> Store:
    locations = store_locations(values)
    if len(locations) != 1:
        raise DesyncError("exactly one store (-s) is needed")
    return open_store(locations[0], digest=digest, create=create)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


non_negative_int = int_at_least(0)


def digest_arg(args: argparse.Namespace) -> Digest:
    return Digest.parse(args.digest)
