"""Argument helpers shared by the verbs: index arguments, store flags, chunk sizes."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from desync_decl.cli.console import Console
from desync_decl.cli.opened import opened
from desync_decl.errors import DesyncError
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import ChunkID, Digest, parse_id
from desync_decl.formats.index import Index
from desync_decl.stores.base import Store, WriteStore
from desync_decl.stores.compose import Cache, single_or_router
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.lru import SizeLimited
from desync_decl.stores.store_lock import COLLISION_WAIT, Patience
from desync_decl.units import parse_size


def opener(args: argparse.Namespace, digest: Digest | None = None) -> Opener:
    """What opens this command's stores: config file (read once), digest, store flags."""
    config = getattr(args, "_config", None)
    if config is None:
        config = args._config = Config.load(getattr(args, "config", None))
    return Opener(
        digest=digest or digest_arg(args),
        config=config,
        overrides=store_overrides(args),
    )


def read_index(args: argparse.Namespace, arg: str) -> Index:
    """An index from a path, an index-store URL, or stdin for ``-``."""
    if arg == "-":
        return index_format.decode(sys.stdin.buffer.read(), "<stdin>")
    return opener(args).read_index(arg)


def write_index(args: argparse.Namespace, arg: str, index: Index, console: Console) -> None:
    """Write atomically (temp file + fsync + rename) or to an index store; ``-`` is stdout."""
    if arg == "-":
        console.binary().write(index.encode())
        console.binary().flush()
        return
    opener(args, index.digest).write_index(arg, index)


def add_store_args(p: argparse.ArgumentParser, *, required: bool, many: bool) -> None:
    p.add_argument(
        "-s",
        "--store",
        action="append",
        default=[],
        required=required,
        metavar="STORE",
        help="chunk store location"
        + (" (repeat or comma-separate: tried in order; a|b = failover group)" if many else ""),
    )
    g = p.add_argument_group("store options (override the config file's store-options)")
    g.add_argument("--client-cert", metavar="FILE", help="TLS client certificate (PEM)")
    g.add_argument("--client-key", metavar="FILE", help="TLS client key (PEM)")
    g.add_argument("--ca-cert", metavar="FILE", help="CA bundle replacing the system's (PEM)")
    g.add_argument(
        "-t",
        "--trust-insecure",
        action="store_const",
        const=True,
        default=None,
        help="accept any server certificate",
    )
    g.add_argument(
        "-e", "--error-retry", type=int_at_least(0), metavar="N", help="attempts (default 3)"
    )
    g.add_argument(
        "-b",
        "--error-retry-base-interval",
        type=parse_duration,
        metavar="DURATION",
        help="wait k x this before attempt k+1 (default 500ms)",
    )


def add_reloadable_store_args(p: argparse.ArgumentParser) -> None:
    """Stores of a long-running command (server, mount): -s/-c, or a store file that
    is re-read on SIGHUP."""
    add_store_args(p, required=False, many=True)
    add_cache_args(p)
    add_concurrency_arg(p)
    p.add_argument(
        "--store-file",
        metavar="FILE",
        help='JSON {"stores": [...], "cache": "..."} instead of -s/-c; re-read on SIGHUP',
    )


def add_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--cache", metavar="STORE", help="store used as a read-through cache")
    p.add_argument(
        "-r",
        "--cache-repair",
        action="store_true",
        default=True,
        help="replace invalid chunks found in the cache (default; -r=false keeps them)",
    )
    p.add_argument(
        "--cache-max-size",
        type=_size,
        metavar="SIZE",
        help="keep a local cache under SIZE (e.g. 20G): least recently used chunks are evicted",
    )


def store_overrides(args: argparse.Namespace) -> dict[str, object]:
    """StoreOptions fields the command line set (-n always applies, as in desync)."""
    names = (
        "client_cert",
        "client_key",
        "ca_cert",
        "trust_insecure",
        "error_retry",
        "error_retry_base_interval",
        "skip_verify",
    )
    out: dict[str, object] = {
        n: getattr(args, n) for n in names if getattr(args, n, None) is not None
    }
    if getattr(args, "concurrency", None) is not None:
        out["n"] = args.concurrency
    return out


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


def open_stores(args: argparse.Namespace, digest: Digest, *, with_cache: bool = True) -> Store:
    """The ``-s`` stores as one store (a router when there are several), behind the
    ``-c`` cache when one is given and ``with_cache``."""
    store = single_or_router(open_store_list(args, digest))
    cache = getattr(args, "cache", None) if with_cache else None
    if cache:
        cache_store = open_writable_store(args, digest, cache)
        if getattr(args, "cache_max_size", None):
            cache_store = SizeLimited(cache_store, args.cache_max_size)
        return Cache(store, cache_store, repair=args.cache_repair)
    return store


def open_store_list(args: argparse.Namespace, digest: Digest) -> list[Store]:
    """Each ``-s`` store on its own (``info`` counts per store)."""
    locations = store_locations(args.store)
    if not locations:
        raise DesyncError("no store given (-s)")
    make = opener(args, digest)
    return [opened(args, make.chunk_store(loc)) for loc in locations]


def open_single_store(args: argparse.Namespace, digest: Digest) -> Store:
    """The one ``-s`` store, to read."""
    return opened(args, opener(args, digest).chunk_store(_single_location(args)))


def open_single_writable_store(
    args: argparse.Namespace, digest: Digest, *, make_missing: bool = True
) -> WriteStore:
    """The one ``-s`` store, to write to (a missing local store is created, unless
    not ``make_missing``: then it is an error)."""
    return open_writable_store(args, digest, _single_location(args), make_missing=make_missing)


def open_writable_store(
    args: argparse.Namespace, digest: Digest, location: str, *, make_missing: bool = True
) -> WriteStore:
    """The store at ``location``, to write to (a missing local store is created, unless
    not ``make_missing``: then it is an error)."""
    store = opener(args, digest).chunk_store(location, create=True, make_missing=make_missing)
    return opened(args, store)


def _single_location(args: argparse.Namespace) -> str:
    locations = store_locations(args.store)
    if len(locations) != 1:
        raise DesyncError("exactly one store (-s) is needed")
    return locations[0]


def parse_duration(text: str) -> float:
    """A Go-style duration (``500ms``, ``2s``, ``1m30s``) in seconds; a bare number is seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration (e.g. 500ms, 2s)")
    return sum(float(n) * units[u] for n, u in parts)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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


def add_ignore_args(p: argparse.ArgumentParser) -> None:
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


def ignored_ids(args: argparse.Namespace) -> set[ChunkID]:
    """Chunk ids of the --ignore indexes and --ignore-chunks files."""
    ids: set[ChunkID] = set()
    for name in store_locations(args.ignore):
        ids |= read_index(args, name).unique_ids()
    for name in store_locations(args.ignore_chunks):
        try:
            lines = Path(name).read_text().splitlines()
        except OSError as e:
            raise DesyncError(f"cannot read {name}: {e.strerror}") from None
        ids |= {parse_id(line, f"{name}:{n}") for n, line in enumerate(lines, 1) if line.strip()}
    return ids


def add_lock_timeout_arg(p: argparse.ArgumentParser) -> None:
    """``--lock-timeout`` of the verbs that take a store's lock (make, tar, chop, cache,
    prune): how long to wait while another process holds a conflicting one."""
    p.add_argument(
        "--lock-timeout",
        type=parse_duration,
        default=COLLISION_WAIT,
        metavar="DURATION",
        help="wait this long while another process holds the store's lock: a prune, or"
        f" for prune a writer (default {COLLISION_WAIT:g}s; 0 gives up at once)",
    )


def lock_patience(args: argparse.Namespace, console: Console) -> Patience:
    """The store-lock wait ``--lock-timeout`` asks for, said once on stderr when it waits."""
    return Patience(args.lock_timeout, console.warn)
