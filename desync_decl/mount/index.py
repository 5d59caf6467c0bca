"""``mount_index``: serve an index's stream until unmounted, as one file (a blob,
``.caibx``) or as the directory tree it encodes (a catar, ``.caidx``)."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index
from desync_decl.mount.base import SourceFilesystem, no_report
from desync_decl.mount.blob import BlobFilesystem
from desync_decl.mount.cor import CopyOnRead
from desync_decl.mount.fuse import check_mountpoint, serve
from desync_decl.mount.tree import TreeFilesystem, load_tree
from desync_decl.ops.blobreader import DEFAULT_CACHE_SIZE, BlobReader
from desync_decl.stores.base import Store


@dataclass(frozen=True)
class MountResult:
    name: str
    size: int  # of the indexed stream
    reads: int
    bytes_read: int
    failed_reads: int
    chunks_fetched: int
    chunks_in_cor_file: int | None = None  # with copy-on-read


@dataclass(frozen=True)
class CopyOnReadOptions:
    """desync's ``--cor-file``, ``--cor-state-save``, ``--cor-state-init``, ``--cor-init-n``."""

    file: str
    state_save: str | None = None
    state_init: str | None = None
    init_workers: int = 10


def mount_index(
    index: Index,
    store: Store,
    mountpoint: str,
    *,
    name: str,
    tree: bool = False,
    concurrency: int = 10,
    cache_size: int = DEFAULT_CACHE_SIZE,
    cor: CopyOnReadOptions | None = None,
    report: Callable[[str], None] = no_report,
    on_mount: Callable[[], None] = lambda: None,
    reload: Callable[[], None] | None = None,
) -> MountResult:
    """Serve the stream as ``mountpoint/name``, or with ``tree`` its catar tree as
    ``mountpoint``, until unmounted or signalled.

    ``report`` gets one line per failed read; ``on_mount`` is called once the
    mount is visible; SIGHUP calls ``reload`` and saves the copy-on-read state.
    """
    check_mountpoint(mountpoint)  # before a tree is loaded for nothing
    reader = BlobReader(index, store, cache_size=cache_size, workers=concurrency)
    copies = CopyOnRead(reader, cor.file, state=cor.state_save) if cor else None
    try:
        source = copies or reader
        fs: SourceFilesystem
        if tree:
            root = load_tree(reader, source, name=name)
            if not stat.S_ISDIR(root.entry.mode):
                raise DesyncError(f"{name}: the archive's root is not a directory")
            fs = TreeFilesystem(reader, root, source=source, report=report, on_mount=on_mount)
        else:
            fs = BlobFilesystem(reader, name, source=source, report=report, on_mount=on_mount)
        if copies and cor and cor.state_init:
            copies.preload(cor.state_init, workers=cor.init_workers, report=report)
        serve(
            fs,
            mountpoint,
            threads=concurrency,
            permissions=tree,
            reload=_on_sighup(reload, copies, report),
        )
    finally:
        reader.close()
        if copies:
            copies.close()
    if copies:
        copies.save()
    return MountResult(
        name,
        reader.length,
        fs.reads,
        fs.bytes_read,
        fs.failed_reads,
        reader.fetched,
        copies.copied() if copies else None,
    )


def _on_sighup(
    reload: Callable[[], None] | None, copies: CopyOnRead | None, report: Callable[[str], None]
) -> Callable[[], None] | None:
    if copies is None or copies.state is None:
        return reload

    def both() -> None:
        try:
            copies.save()
        except DesyncError as e:
            report(str(e))
        if reload:
            reload()

    return both
