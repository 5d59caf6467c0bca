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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from desync_decl.archive.catar_sink import CatarSink
from desync_decl.archive.disk_source import DiskOptions, disk_tree
from desync_decl.archive.streams import IterReader
from desync_decl.archive.tar_source import TarOptions, tar_tree
from desync_decl.chunker import iter_chunks
from desync_decl.errors import UsageError
from desync_decl.formats.catar import encode
from desync_decl.formats.catar.encoder import Piece
from desync_decl.formats.catar.features import DESYNC_TAR
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.ops.make import ChunkStorer
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import WriteStore


@dataclass(frozen=True)
class TarInput:
    """What to archive and how: a directory (``disk``) or a tar file or stream (``tar``)."""

    source: str | os.PathLike | BinaryIO
    input_format: str = "disk"
    flags: int = DESYNC_TAR  # the archive's feature flags (formats/catar/features.py)
    one_file_system: bool = False  # disk: leave out other filesystems (-x)
    add_root: bool = False  # tar: synthesize a root directory if the tar has none

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
            options = DiskOptions(self.flags, self.one_file_system, exclude)
            with contextlib.closing(  # an error: the walk's open files closed now
                encode(disk_tree(self.source, options), defer_payloads=defer_payloads)
            ) as pieces:
                yield pieces
        elif self.input_format == "tar":
            with (
                tar_tree(self.source, TarOptions(self.flags, self.add_root)) as root,
                contextlib.closing(encode(root, defer_payloads=defer_payloads)) as pieces,
            ):
                yield pieces
        else:
            raise UsageError(f"invalid input format '{self.input_format}' (known: disk, tar)")


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
    progress.start("tar", 0)
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
) -> TarResult:
    """Chunk the catar of ``source`` into ``store``; the result holds its caidx index,
    whose header carries the archive's feature flags (as casync writes them)."""
    digest = Digest.from_flags(source.flags)
    with ChunkStorer(store, "tar") as storer:
        return _tar_index(source, storer, digest, sizes, concurrency, progress)


def _tar_index(
    source: TarInput,
    storer: ChunkStorer,
    digest: Digest,
    sizes: ChunkSizes,
    concurrency: int,
    progress: Progress,
) -> TarResult:
    """``tar_index`` with the storer's writing scope open."""

    def process(item: tuple[int, memoryview]) -> tuple[int, ChunkID]:
        data = item[1]
        cid = digest.hash(data)
        storer.add(Chunk(cid, plain=data))
        progress.advance(len(data))
        return len(data), cid

    progress.start("tar", 0)
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
