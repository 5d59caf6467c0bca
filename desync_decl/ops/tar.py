"""``tar``: a directory (or a tar stream) as a catar archive, or chunked into a
store with a caidx index (``-i``), without an intermediate catar on disk.

The catar bytes are identical to ``casync make``'s for the same feature flags.
The index path runs the encoder, the C chunker and a pool of hashing/storing
workers as one pipeline; memory stays a few blocks per worker.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from desync_decl.archive.catar_sink import CatarSink
from desync_decl.archive.disk_source import DiskOptions, disk_tree
from desync_decl.archive.patterns import Patterns
from desync_decl.archive.streams import IterReader
from desync_decl.archive.tree_walk import open_tree, walk
from desync_decl.chunker import iter_chunks
from desync_decl.errors import DesyncError, UsageError
from desync_decl.formats.catar import encode
from desync_decl.formats.catar.encoder import Piece
from desync_decl.formats.catar.features import DESYNC_TAR
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.ops.make import ChunkStorer
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress, shown
from desync_decl.stores.base import WriteStore


@dataclass(frozen=True)
class TarInput:
    """What to archive and how: a directory (``disk``) or a tar file or stream (``tar``)."""

    source: str | os.PathLike | BinaryIO
    input_format: str = "disk"
    flags: int = DESYNC_TAR  # the archive's feature flags (formats/catar/features.py)
    one_file_system: bool = False  # disk: leave out other filesystems (-x)
    add_root: bool = False  # tar: synthesize a root directory if the tar has none
    patterns: Patterns | None = None  # --include/--exclude (archive/patterns.py)

    @contextlib.contextmanager
    def stream(
        self, exclude: frozenset[tuple[int, int]] = frozenset(), *, defer_payloads: bool = False
    ) -> Iterator[Iterator[Piece]]:
        """The catar stream, piece by piece; files whose (st_dev, st_ino) is in
        ``exclude`` (the archive being written) are left out. ``defer_payloads``: see
        ``formats/catar/encoder.py``."""
        if self.input_format == "disk":
            if self.add_root:
                raise UsageError("--tar-add-root works only with --input-format tar")
            if not isinstance(self.source, str | os.PathLike):
                raise UsageError("disk input needs a directory path")
            options = DiskOptions(
                self.flags, self.one_file_system, exclude, self.patterns, encoded=True
            )
            with contextlib.closing(  # an error: the walk's open files closed now
                encode(disk_tree(self.source, options), defer_payloads=defer_payloads)
            ) as pieces:
                yield pieces
        elif self.input_format == "tar":
            from desync_decl.archive.tar_source import TarOptions, tar_tree  # tar input only

            with (
                tar_tree(self.source, TarOptions(self.flags, self.add_root, self.patterns)) as root,
                contextlib.closing(encode(root, defer_payloads=defer_payloads)) as pieces,
            ):
                yield pieces
        else:
            raise UsageError(f"invalid input format '{self.input_format}' (known: disk, tar)")

    def estimated_size(self) -> int:
        """About how many bytes the catar will have, for a progress bar's percent and
        ETA; 0 when unknown (a stream, an unreadable tree: the walk that follows says
        why). A directory: one ``lstat`` per entry (``archive.tree_walk``), its files'
        sizes plus ``_ENTRY_BYTES`` and its name each; a tar file: its size."""
        try:
            if not isinstance(self.source, str | os.PathLike):
                return 0
            if self.input_format == "tar":
                return os.stat(self.source).st_size
            fd = open_tree(self.source)
            if fd is None:
                return 0
            try:
                return _tree_size(fd, os.fsdecode(self.source), self)
            finally:
                os.close(fd)
        except (OSError, DesyncError):
            return 0


# catar bytes per entry besides its payload: its entry record (64), filename item
# (16 + name + NUL) and its line in its directory's goodbye table (24); a file's
# payload header (16), a directory's goodbye header and tail (16 + 24), a symlink's
# record (16 + target + NUL; lstat's size is the target's length).
_ENTRY_BYTES = 64 + 17 + 24
_EXTRA_BYTES = {stat.S_IFREG: 16, stat.S_IFDIR: 40, stat.S_IFLNK: 17}


def _tree_size(fd: int, where: str, source: TarInput) -> int:
    """``TarInput.estimated_size`` of the directory open as ``fd``."""
    patterns = source.patterns
    total = 64 + 40  # the root's entry and goodbye
    for rel, st in walk(fd, where, one_file_system=source.one_file_system):
        if rel == b".":
            continue
        fmt = stat.S_IFMT(st.st_mode)
        if patterns is not None and not patterns.allows(os.fsdecode(rel), fmt == stat.S_IFDIR):
            continue
        total += _ENTRY_BYTES + len(rel) - rel.rfind(b"/") - 1 + _EXTRA_BYTES.get(fmt, 0)
        if fmt in (stat.S_IFREG, stat.S_IFLNK):
            total += st.st_size
    return total


def _start(progress: Progress, source: TarInput, stage: str = "tar") -> None:
    """The stage begins, with the archive's estimated size when someone watches."""
    progress.start(stage, source.estimated_size() if shown(progress) else 0)


@dataclass(frozen=True)
class TarResult:
    flags: int  # the archive's feature flags
    size: int  # bytes of the catar stream
    index: Index | None  # with -i
    chunks_stored: int = 0
    bytes_stored: int = 0


def tar(source: TarInput, out: BinaryIO, *, progress: Progress = NO_PROGRESS) -> TarResult:
    """Write the catar of ``source`` to ``out``.

    Where ``out`` has a file descriptor, a writer thread copies the stream to it
    (payloads of files on disk in the kernel, ``archive/catar_sink.py``) while
    this thread walks the tree.
    """
    size = 0
    _start(progress, source)
    fd = _fileno(out)
    with contextlib.ExitStack() as stack:
        pieces = stack.enter_context(
            source.stream(exclude=_inode_of(fd), defer_payloads=fd is not None)
        )
        put: Callable[[Piece], object]
        if fd is None:
            put = out.write  # type: ignore[assignment]  # no payload deferred without fd: Buffers
        else:
            out.flush()
            put = stack.enter_context(CatarSink(fd)).put
        for piece in pieces:
            put(piece)
            size += len(piece)
            progress.advance(len(piece))
    progress.finish()
    return TarResult(flags=source.flags, size=size, index=None)


def _fileno(out: BinaryIO) -> int | None:
    try:
        return out.fileno()
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None


def _inode_of(fd: int | None) -> frozenset[tuple[int, int]]:
    """The output file itself, so archiving a tree that holds it does not read it."""
    if fd is None:
        return frozenset()
    try:
        st = os.fstat(fd)
    except OSError:
        return frozenset()
    return frozenset({(st.st_dev, st.st_ino)})


def tar_index(
    source: TarInput,
    store: WriteStore,
    *,
    sizes: ChunkSizes = DEFAULT_CHUNK_SIZES,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
    stage: str = "tar",
) -> TarResult:
    """Chunk the catar of ``source`` into ``store``; the result holds its caidx index,
    whose header carries the archive's feature flags (as casync writes them).
    ``stage``: what the meter calls it (a plan reading a tree stores nothing)."""
    digest = Digest.from_flags(source.flags)
    with ChunkStorer(store, "tar") as storer:
        return _tar_index(source, storer, digest, sizes, concurrency, progress, stage)


def _tar_index(
    source: TarInput,
    storer: ChunkStorer,
    digest: Digest,
    sizes: ChunkSizes,
    concurrency: int,
    progress: Progress,
    stage: str,
) -> TarResult:
    """``tar_index`` with the storer's writing scope open."""

    def process(item: tuple[int, memoryview]) -> tuple[int, ChunkID]:
        data = item[1]
        cid = digest.hash(data)
        storer.add(Chunk(cid, plain=data))
        progress.advance(len(data))
        return len(data), cid

    _start(progress, source, stage)
    with source.stream() as pieces:
        chunks = iter_chunks(IterReader(pieces), sizes)  # type: ignore[arg-type]  # encode defers no payload here: Buffers; iter_chunks takes any binary stream
        weight = lambda c: len(c[1])  # noqa: E731
        table = list(batched_map(process, chunks, workers=concurrency, weight=weight))
    progress.finish()
    storer.flush()  # chunks durable before any index refers to them
    index = Index.from_chunks(source.flags, sizes, table)
    return TarResult(
        flags=source.flags,
        size=index.length,
        index=index,
        chunks_stored=storer.stored,
        bytes_stored=storer.bytes_stored,
    )
