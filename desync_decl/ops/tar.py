"""``tar``: a directory (or a tar stream) as a catar archive, or chunked into a
store with a caidx index (``-i``), without an intermediate catar on disk.

The catar bytes are identical to ``casync make``'s for the same feature flags.
The index path runs the encoder, the C chunker and a pool of hashing/storing
workers as one pipeline; memory stays a few blocks per worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from desync_decl.archive.disk_source import DiskOptions, disk_tree
from desync_decl.archive.streams import Buffer, IterReader
from desync_decl.archive.tar_source import TarOptions, tar_tree
from desync_decl.chunker import DEFAULT_CHUNK_SIZES, ChunkSizes, iter_chunks
from desync_decl.errors import UsageError
from desync_decl.formats.catar import encode
from desync_decl.formats.catar.features import DESYNC_TAR
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.ops.make import ChunkStorer
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import WriteStore

INPUT_FORMATS = ("disk", "tar")


@dataclass(frozen=True)
class TarResult:
    flags: int  # the archive's feature flags
    size: int  # bytes of the catar stream
    index: Index | None  # with -i
    chunks_stored: int = 0
    bytes_stored: int = 0


@contextlib.contextmanager
def catar_stream(
    source: str | os.PathLike | BinaryIO,
    *,
    input_format: str = "disk",
    flags: int = DESYNC_TAR,
    one_file_system: bool = False,
    add_root: bool = False,
) -> Iterator[Iterator[Buffer]]:
    """The catar stream of a directory (``disk``) or of a tar file or stream (``tar``)."""
    if input_format == "disk":
        if add_root:
            raise UsageError("--tar-add-root works only with --input-format tar")
        if isinstance(source, str | os.PathLike):
            yield encode(disk_tree(source, DiskOptions(flags, one_file_system)))
            return
        raise UsageError("disk input needs a directory path")
    if input_format != "tar":
        raise UsageError(f"invalid input format '{input_format}' (known: disk, tar)")
    with tar_tree(source, TarOptions(flags, add_root)) as root:
        yield encode(root)


def tar(
    source: str | os.PathLike | BinaryIO,
    out: BinaryIO,
    *,
    input_format: str = "disk",
    flags: int = DESYNC_TAR,
    one_file_system: bool = False,
    add_root: bool = False,
    progress: Progress = NO_PROGRESS,
) -> TarResult:
    """Write the catar of ``source`` to ``out``."""
    size = 0
    progress.start("tar", 0)
    with catar_stream(
        source,
        input_format=input_format,
        flags=flags,
        one_file_system=one_file_system,
        add_root=add_root,
    ) as pieces:
        for piece in pieces:
            out.write(piece)
            size += len(piece)
            progress.advance(len(piece))
    progress.finish()
    return TarResult(flags=flags, size=size, index=None)


def tar_index(
    source: str | os.PathLike | BinaryIO,
    store: WriteStore,
    *,
    sizes: ChunkSizes = DEFAULT_CHUNK_SIZES,
    input_format: str = "disk",
    flags: int = DESYNC_TAR,
    one_file_system: bool = False,
    add_root: bool = False,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
) -> TarResult:
    """Chunk the catar of ``source`` into ``store``; the result holds its caidx index,
    whose header carries the archive's feature flags (as casync writes them)."""
    digest = Digest.from_flags(flags)
    storer = ChunkStorer(store)

    def process(item: tuple[int, memoryview]) -> tuple[int, ChunkID]:
        data = item[1]
        cid = digest.hash(data)
        storer.add(Chunk(cid, plain=data))
        progress.advance(len(data))
        return len(data), cid

    progress.start("tar", 0)
    with catar_stream(
        source,
        input_format=input_format,
        flags=flags,
        one_file_system=one_file_system,
        add_root=add_root,
    ) as pieces:
        chunks = iter_chunks(IterReader(pieces), sizes)  # type: ignore[arg-type]
        weight = lambda c: len(c[1])  # noqa: E731
        table = list(batched_map(process, chunks, workers=concurrency, weight=weight))
    progress.finish()
    storer.flush()  # chunks durable before any index refers to them
    index = Index.from_chunks(flags, sizes, table)
    return TarResult(
        flags=flags,
        size=index.length,
        index=index,
        chunks_stored=storer.stored,
        bytes_stored=storer.bytes_stored,
    )
