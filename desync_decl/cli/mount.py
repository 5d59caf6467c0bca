"""``mount-index INDEX MOUNTPOINT``: FUSE-mount an index read-only.

A blob index (``.caibx``, or any other name) appears as one file named after
the index; a catar index (``.caidx``) appears as the directory tree it holds
(desync would show the raw catar stream as one file). In the foreground, like
desync: it runs until ``fusermount3 -u MOUNTPOINT``, SIGINT or SIGTERM, then
exits 0. With ``--store-file`` the stores come from a JSON file that SIGHUP
re-reads (a bad file keeps the current stores).
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from collections.abc import Callable

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import Digest
from desync_decl.mount.index import CopyOnReadOptions, mount_index
from desync_decl.server import storefile
from desync_decl.stores.base import Store
from desync_decl.stores.swap import SwappableStore


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file or index-store URL (- for stdin)")
    p.add_argument("mountpoint", help="directory to mount on")
    common.add_reloadable_store_args(p)
    g = p.add_argument_group("copy-on-read: keep what is read in a local sparse file")
    g.add_argument("--cor-file", metavar="FILE", help="sparse file holding the chunks read")
    g.add_argument(
        "--cor-state-save",
        metavar="FILE",
        help="which chunks FILE holds (a bit per chunk): used again at start, saved at exit "
        "and on SIGHUP",
    )
    g.add_argument(
        "--cor-state-init", metavar="FILE", help="preload the chunks this state file marks"
    )
    g.add_argument(
        "--cor-init-n",
        type=common.int_at_least(1),
        default=10,
        metavar="N",
        help="preload workers (default 10)",
    )
    common.add_trust_args(p)
    p.set_defaults(func=run)


def mount_name(location: str) -> str:
    """desync's file name: the index's base name without its extension (``-`` for stdin)."""
    base = _base_name(location)
    return os.path.splitext(base)[0] or base


def is_archive_index(location: str) -> bool:
    return os.path.splitext(_base_name(location))[1] == ".caidx"


def _base_name(location: str) -> str:
    path = urllib.parse.urlsplit(location).path if "://" in location else location
    return os.path.basename(path.rstrip("/"))


def run(args: argparse.Namespace, console: Console) -> int:
    if args.store_file and (args.store or args.cache):
        raise DesyncError("--store-file cannot be combined with -s or -c")
    if not args.store_file and not common.store_locations(args.store):
        raise DesyncError("no store given (-s or --store-file)")
    if (args.cor_state_save or args.cor_state_init) and not args.cor_file:
        raise DesyncError("--cor-state-save and --cor-state-init need --cor-file")
    index, signer = common.read_checked_index(args, args.index)
    signed = f", signed by {signer}" if signer else ""
    name = mount_name(args.index)
    cor = None
    if args.cor_file:
        cor = CopyOnReadOptions(
            args.cor_file, args.cor_state_save, args.cor_state_init, args.cor_init_n
        )
    store: Store
    reload: Callable[[], None] | None
    if args.store_file:
        store, reload = _from_store_file(args, index.digest, console)
    else:
        store, reload = common.open_stores(args, index.digest), None
    common.warn_about_keys(args, console)  # mounted until unmounted: not at the end
    try:
        result = mount_index(
            index,
            store,
            args.mountpoint,
            name=name,
            tree=is_archive_index(args.index),
            concurrency=args.concurrency,
            cor=cor,
            report=lambda message: console.warn(f"mount-index: {message}"),
            on_mount=lambda: console.note(
                f"mount-index: {args.index} ({index.length} bytes{signed}) mounted at"
                f" {args.mountpoint}"
            ),
            reload=reload,
        )
    finally:
        if args.store_file:
            store.close()
    console.note(
        f"mount-index: unmounted {args.mountpoint}: {result.reads} reads, "
        f"{result.bytes_read} bytes, {result.chunks_fetched} chunks fetched, "
        f"{result.failed_reads} failed reads"
        + (f", {result.chunks_in_cor_file} chunks in {args.cor_file}" if cor else "")
    )
    return 0


def _from_store_file(
    args: argparse.Namespace, digest: Digest, console: Console
) -> tuple[SwappableStore, Callable[[], None]]:
    def open_stack() -> Store:
        spec = storefile.load(args.store_file)
        # A namespace of its own: these stores belong to the swappable store, which
        # closes each stack once it is replaced and idle.
        given = {k: v for k, v in vars(args).items() if k != "_opened"}
        view = argparse.Namespace(**{**given, "store": spec.stores, "cache": spec.cache})
        return common.open_stores(view, digest)

    store = SwappableStore(open_stack())

    def reload() -> None:
        try:
            new = open_stack()
        except DesyncError as e:
            console.warn(f"mount-index: keeping the current stores: {e}")
            return
        store.swap(new)
        console.note(f"mount-index: reloaded {args.store_file}: reading from {new}")

    return store, reload
