"""``untar``: a catar (a file, or the chunks of a caidx in a store) into a
directory, confined to it, or re-encoded as a GNU tar stream.

The archive is decoded as it streams in: nothing is held whole in memory, and
chunks of an index are fetched ahead by a bounded pool. Asked to (``Clearing``),
what stands in the archive's way in the directory is deleted first
(``make_way``, the one deletion path of the verb and the ``untar`` task): the
archive is then read twice, its entry types first.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from desync_decl.archive.clearing import Cleared, archive_types, clear, refuse_kept_inside
from desync_decl.archive.disk_writer import ArchiveFile, UntarStats, WriteOptions
from desync_decl.archive.extract import write_tree
from desync_decl.archive.patterns import Patterns
from desync_decl.archive.streams import index_reader
from desync_decl.errors import UsageError
from desync_decl.formats.catar import Decoder
from desync_decl.formats.index import Index
from desync_decl.ops.metered import MeteredDecoder, archive_length
from desync_decl.parallel import cpu_workers
from desync_decl.progress import NO_PROGRESS, Progress, shown
from desync_decl.stores.base import Store

if TYPE_CHECKING:  # seeds, --atomic and a tar output load their modules when asked for
    from desync_decl.archive.seed import TreeSeed


class Clearing(enum.Enum):
    """What goes from the target before the archive is written."""

    NONE = "none"  # nothing: an entry of another type in the archive's way is an error
    IN_THE_WAY = "in-the-way"  # entries of another type where the archive has one
    EXTRA = "extra"  # those, and entries the archive does not hold (--delete-extra)


@dataclass(frozen=True)
class UntarResult:
    target: str
    stats: UntarStats
    flags: int | None  # the archive's feature flags
    chunks_from_seeds: int = 0
    bytes_from_seeds: int = 0
    cleared: Cleared = field(default_factory=Cleared)  # entries deleted first (``Clearing``)


def catar_decoder(
    archive: BinaryIO | Index,
    store: Store | None = None,
    *,
    source: str,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
    stage: str = "untar",
) -> Decoder:
    """A decoder over a catar stream, or over an index's chunks fetched from ``store``;
    ``progress`` follows its position (``ops/metered.py``)."""
    stream: BinaryIO
    if isinstance(archive, Index):
        if store is None:
            raise ValueError("an index needs a store")
        stream = index_reader(archive, store, concurrency=concurrency)
    else:
        stream = archive
    if not shown(progress):
        return Decoder(stream, source)
    progress.start(stage, archive_length(archive))
    return MeteredDecoder(stream, source, progress)


@contextlib.contextmanager
def _seeded(
    archive: BinaryIO | Index,
    store: Store | None,
    seeds: Sequence[str | os.PathLike],
    concurrency: int,
) -> Iterator[tuple[Store | None, list[TreeSeed]]]:
    """``store`` behind the tree seeds (their chunks are tried first)."""
    if seeds and not isinstance(archive, Index):
        raise UsageError("seeds need an index (-i): a catar has no chunks")
    if not seeds:
        yield store, []
        return
    from desync_decl.archive.seed import tree_seed
    from desync_decl.stores.compose import Router

    with contextlib.ExitStack() as stack:
        trees = [
            stack.enter_context(contextlib.closing(tree_seed(p, archive, concurrency=concurrency)))
            for p in seeds
            if isinstance(archive, Index)
        ]
        yield (Router([*trees, store]) if trees and store is not None else store), trees


def untar(
    archive: BinaryIO | Index,
    target: str | os.PathLike,
    *,
    store: Store | None = None,
    seeds: Sequence[str | os.PathLike] = (),
    same_owner: bool = True,
    same_permissions: bool = True,
    concurrency: int = 10,
    source: str = "archive",
    clearing: Clearing = Clearing.NONE,
    kept: Sequence[str | os.PathLike] = (),
    atomic: bool = False,
    patterns: Patterns | None = None,
    progress: Progress = NO_PROGRESS,
) -> UntarResult:
    """Extract into the directory ``target`` (created if missing), first deleting
    what ``clearing`` says. With an index, ``seeds`` are directory trees whose
    matching chunks are used before ``store``'s (the target itself is a good seed
    when updating it; its chunks are read before anything is deleted). ``kept`` are
    the local stores and caches behind ``store``: see ``make_way``. ``patterns``:
    what is left out is neither written nor deleted (``archive/patterns.py``).

    What the target holds already is updated entry by entry (``archive.extract``).
    Without ``atomic`` each file is switched on its own, so an interrupted untar
    leaves every file whole, old or new, but the tree a mix of both versions until
    the next run; with ``atomic`` the new tree is built beside the old one and
    switched in one step (``archive.switch``)."""
    if atomic:
        return _untar_beside(
            archive,
            target,
            store=store,
            seeds=seeds,
            options=WriteOptions(same_owner, same_permissions),
            concurrency=concurrency,
            source=source,
            clearing=clearing,
            kept=kept,
            patterns=patterns,
            progress=progress,
        )
    with _seeded(archive, store, seeds, concurrency) as (store, trees):
        cleared = make_way(
            archive,
            target,
            clearing,
            store=store,
            concurrency=concurrency,
            source=source,
            kept=kept,
            patterns=patterns,
            progress=progress,
        )
        file = _regular_file(archive, source)  # before the decoder reads from it
        decoder = catar_decoder(
            archive, store, source=source, concurrency=concurrency, progress=progress
        )
        options = WriteOptions(same_owner, same_permissions)
        workers = cpu_workers(concurrency)
        stats = write_tree(
            decoder, target, options, workers=workers, archive=file, patterns=_active(patterns)
        )
        progress.finish()
        return _result(os.fsdecode(target), stats, decoder, trees, cleared)


def _untar_beside(
    archive: BinaryIO | Index,
    target: str | os.PathLike,
    *,
    store: Store | None,
    seeds: Sequence[str | os.PathLike],
    options: WriteOptions,
    concurrency: int,
    source: str,
    clearing: Clearing,
    kept: Sequence[str | os.PathLike],
    patterns: Patterns | None,
    progress: Progress,
) -> UntarResult:
    """``untar`` with ``atomic``: nothing is deleted first, the new tree is built from
    nothing beside the old one (its unchanged files linked), what the archive does not
    hold carried over unless ``clearing`` deletes extras; what ``patterns`` leave out
    is always carried over (never written nor deleted)."""
    from desync_decl.archive.switch import built_beside, carry_extras

    where = os.fsdecode(target)
    if clearing is Clearing.EXTRA:
        refuse_kept_inside(target, kept)
    active = _active(patterns)

    def keep(path: bytes, is_dir: bool) -> bool:
        if clearing is not Clearing.EXTRA:
            return True
        return active is not None and not active.allows(os.fsdecode(path), is_dir)

    with _seeded(archive, store, seeds, concurrency) as (store, trees):
        file = _regular_file(archive, source)
        decoder = catar_decoder(
            archive, store, source=source, concurrency=concurrency, progress=progress
        )
        with built_beside(target) as beside:
            stats = write_tree(
                decoder,
                target,
                options,
                workers=cpu_workers(concurrency),
                archive=file,
                root_fd=os.dup(beside.new),
                reference=None if beside.old is None else os.dup(beside.old),
                patterns=active,
            )
            dropped = 0
            if beside.old is not None:
                dropped = carry_extras(beside.old, beside.new, keep, where)
        progress.finish()
        return _result(where, stats, decoder, trees, Cleared(0, dropped))


def _active(patterns: Patterns | None) -> Patterns | None:
    """``patterns`` if they leave anything out (None: every entry is written)."""
    return None if patterns is None or patterns.empty else patterns


def make_way(
    archive: BinaryIO | Index,
    target: str | os.PathLike,
    clearing: Clearing,
    *,
    store: Store | None,
    concurrency: int = 10,
    source: str = "archive",
    kept: Sequence[str | os.PathLike] = (),
    patterns: Patterns | None = None,
    progress: Progress = NO_PROGRESS,
) -> Cleared:
    """Delete from the directory ``target`` what ``clearing`` says stands in the
    archive's way (``archive.clearing``). The archive's entry types are read only when
    the target exists: an index through ``store``, a catar file from where it is now,
    and put back there for the extraction (a stream that cannot be is refused).
    Deleting extras is refused first when one of ``kept`` (the local directories of
    the stores and caches ``store`` reads through) lies in the target. What
    ``patterns`` leave out is never deleted. ``progress`` follows the reading of the
    entry types (a whole pass over the archive)."""
    if clearing is Clearing.NONE:
        return Cleared()
    if clearing is Clearing.EXTRA:
        refuse_kept_inside(target, kept)
    if not isinstance(archive, Index) and not _rewindable(archive):
        raise UsageError(
            "deleting what is in the way needs an archive file or an index, not a stream"
        )

    listing = "listing entries"  # the meter's stage

    def entries() -> tuple[dict[bytes, int], int]:
        if isinstance(archive, Index):
            decoder = catar_decoder(
                archive,
                store,
                source=source,
                concurrency=concurrency,
                progress=progress,
                stage=listing,
            )
            return archive_types(decoder), archive.flags
        start = archive.tell()
        decoder = catar_decoder(archive, source=source, progress=progress, stage=listing)
        types = archive_types(decoder)
        archive.seek(start)
        return types, decoder.flags or 0

    return clear(
        target, entries, delete_extra=clearing is Clearing.EXTRA, patterns=_active(patterns)
    )


def _rewindable(archive: BinaryIO) -> bool:
    try:
        return archive.seekable()
    except (OSError, ValueError):
        return False


def untar_to_tar(
    archive: BinaryIO | Index,
    out: BinaryIO,
    *,
    store: Store | None = None,
    seeds: Sequence[str | os.PathLike] = (),
    concurrency: int = 10,
    source: str = "archive",
    progress: Progress = NO_PROGRESS,
) -> UntarResult:
    """Write the archive's tree as a GNU tar stream to ``out``."""
    from desync_decl.archive.tar_writer import write_tar

    with _seeded(archive, store, seeds, concurrency) as (store, trees):
        decoder = catar_decoder(
            archive, store, source=source, concurrency=concurrency, progress=progress
        )
        stats = write_tar(decoder, out)
        progress.finish()
        return _result("-", stats, decoder, trees, Cleared())


def _regular_file(archive: BinaryIO | Index, source: str) -> ArchiveFile | None:
    """The catar as a regular file whose payloads can be copied by offset, if it is one."""
    if isinstance(archive, Index):
        return None
    try:
        fd = archive.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not archive.seekable():
            return None
        return ArchiveFile(fd, archive.tell(), source)
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None


def count_replaced(stats: UntarStats, cleared: Cleared) -> None:
    """An entry of another type deleted first (``make_way``) and then made anew is one
    updated entry, as the plan counts it, not a created one."""
    stats.created -= cleared.replaced
    stats.updated += cleared.replaced


def _result(
    target: str,
    stats: UntarStats,
    decoder: Decoder,
    trees: list[TreeSeed],
    cleared: Cleared,
) -> UntarResult:
    count_replaced(stats, cleared)
    return UntarResult(
        target,
        stats,
        decoder.flags,
        chunks_from_seeds=sum(t.hits for t in trees),
        bytes_from_seeds=sum(t.bytes_served for t in trees),
        cleared=cleared,
    )
