"""Opening the file an operation reads: a regular file or a block device."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import IndexChunk
from desync_decl.fsutil import open_file, walk_error


@contextlib.contextmanager
def open_source(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int]]:
    """Yield the open file and its size; a clear error for anything else.

    A symlink is followed only where no one else could have planted it
    (``fsutil.open_file``): root's ``make`` of a file in a shared directory must not
    publish the root-only file a planted link points to."""
    path = Path(path)
    try:
        f = os.fdopen(open_file(path, os.O_RDONLY), "rb", buffering=0)
    except OSError as e:
        raise walk_error(path, e) from None
    with f:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode):
            size = st.st_size
        elif stat.S_ISBLK(st.st_mode):
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
        else:
            raise DesyncError(f"{path}: not a regular file or block device")
        yield f, size


def read_chunk(fd: int, path: object, chunk: IndexChunk, digest: Digest) -> bytes:
    """The bytes of ``chunk`` read from an open file; an error naming the range if
    they are not what the index says (the file changed, or is another file)."""
    data = os.pread(fd, chunk.size, chunk.start)
    if len(data) != chunk.size or digest.hash(data) != chunk.id:
        raise chunk_mismatch(path, chunk)
    return data


def chunk_mismatch(path: object, chunk: IndexChunk) -> DesyncError:
    """The error for a file range that is not the chunk the index says it is."""
    return DesyncError(
        f"{path}: bytes {chunk.start}..{chunk.end} do not match chunk {chunk.id.hex()} of the index"
    )
