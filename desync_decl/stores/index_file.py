"""A local index file larger than a window, checked whole in one pass and read back a
window of chunks at a time: what lets ``extract`` of any size hold one window of the
table (``index.WINDOW_CHUNKS`` chunks, 2.5 MiB), not all of it (40 bytes per chunk).

The first pass checks the file as ``read_local_index`` does and takes a digest of each
window's bytes; a window read back (``pread``) must have the same, else the file
changed since it was checked and ``windows`` raises: an extraction then fails before
its temp file gets the target's name. The file is opened again for each window: its
digest, not the inode, is what says the bytes are the ones checked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from desync_decl.errors import DesyncError, IndexMissing, file_error
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import (
    HEADER_SIZE,
    ITEM_SIZE,
    TABLE_HEADER_SIZE,
    TAIL_SIZE,
    WINDOW_CHUNKS,
    Index,
)
from desync_decl.stores.index_store import read_local_signature, read_local_signed_index

if TYPE_CHECKING:  # the signing package's crypto is loaded only when a flag asks for it
    from desync_decl.signing import Trust

_READ_PIECE = 1 << 16  # bytes read and checked at a time (as ``read_local_index``)
_FIRST_ITEM = HEADER_SIZE + TABLE_HEADER_SIZE
_ITEMS_PER_PIECE = _READ_PIECE // ITEM_SIZE


class IndexFile:
    """An index file checked in one pass (``open_index``), its table read back in
    windows of ``window`` chunks. Offers what extract asks of an ``Index`` as a whole
    (header fields, length, chunk count) and ``windows``."""

    def __init__(
        self,
        path: Path,
        flags: int,
        sizes: ChunkSizes,
        chunks: int,
        length: int,
        window: int,
        digests: list[bytes],
    ) -> None:
        self.path, self.flags, self.sizes = path, flags, sizes
        self.chunks, self.length, self.window = chunks, length, window
        self._digests = digests  # of each window's items, as checked

    @property
    def digest(self) -> Digest:
        return Digest.from_flags(self.flags)

    def __len__(self) -> int:
        return self.chunks

    def windows(self, chunks: int) -> Iterator[Index]:
        """The windows, read from the file in turn; ``chunks`` must be the window it
        was checked in (``DesyncError`` when a window is not what was checked)."""
        if chunks != self.window:
            raise ValueError(f"{self.path} was checked in windows of {self.window} chunks")
        origin = 0
        for k, digest in enumerate(self._digests):
            first = k * chunks
            window = self._read(first, min(chunks, self.chunks - first), origin, digest)
            origin = window.length
            yield window
            del window  # not held while the next is read: one window at a time

    def _read(self, first: int, count: int, origin: int, digest: bytes) -> Index:
        """Items ``first`` .. ``first + count``, read a piece at a time into the window's
        table, allocated once at its size (grown as pieces came, its buffers took twice
        their size while they moved)."""
        table, hasher = index_format.IndexTable(count), _hasher()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise file_error(self.path, e, "read") from None
        try:
            at, left = _FIRST_ITEM + first * ITEM_SIZE, count
            while left:
                n = min(left, _ITEMS_PER_PIECE)
                piece = os.pread(fd, n * ITEM_SIZE, at)
                if len(piece) != n * ITEM_SIZE:
                    break
                hasher.update(piece)
                table.add_items(piece)
                at, left = at + len(piece), left - n
        except OSError as e:
            raise file_error(self.path, e, "read") from None
        finally:
            os.close(fd)
        if left or hasher.digest() != digest:
            raise DesyncError(f"{self.path}: the index changed while it was used; run again")
        return table.index(self.flags, self.sizes, origin)


def open_index(
    path: Path, window: int = WINDOW_CHUNKS, *, trust: Trust | None = None
) -> Index | IndexFile:
    """The index in the file ``path``, checked: held (an ``Index``, read as
    ``read_local_index`` reads it) when it has no more than ``window`` chunks, else an
    ``IndexFile`` read back in windows. ``IndexMissing`` when there is none.

    With ``trust``, its signature (``<path>.sig``) must be one the trust accepts
    (``SignatureRefused`` otherwise), of the bytes checked: a held index as
    ``ops.signing.read_trusted_index`` checks it, a larger one hashed as it is read,
    never held whole (its windows are the bytes checked: ``IndexFile.windows``)."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size  # read as of now
            chunks = max(0, size - _FIRST_ITEM - TAIL_SIZE) // ITEM_SIZE
            keep = chunks <= window
            if not (keep and trust is not None):
                checker = index_format.Checker(str(path), keep=keep, size=size)
                hashes = {} if trust is None else _hashers()
                digests = _check(f, size, checker, 0 if keep else window * ITEM_SIZE, hashes)
    except FileNotFoundError:
        raise IndexMissing(f"{path}: no such file") from None
    except OSError as e:
        raise file_error(path, e, "read") from None
    if keep and trust is not None:
        signed = read_local_signed_index(path)
        trust.verify(signed.data, signed.signature, signed.where)
        return signed.index
    checker.finish()
    if trust is not None:
        signature = read_local_signature(path)
        trust.verify_hashed(lambda name: hashes[name].digest(), signature, str(path))
    if keep:
        return checker.index()
    assert checker.header is not None  # finish() passed
    flags, sizes = checker.header
    return IndexFile(path, flags, sizes, chunks, checker.last_end, window, digests)


def _hashers() -> dict[str, Any]:
    """One hasher per algorithm a signature may name; imported here, as the trust
    that asks for them loaded the signing package (and its crypto) already."""
    from desync_decl.signing.sshsig import HASHES

    return {name: hashlib.new(name) for name in HASHES}


def _check(
    f: BinaryIO,
    size: int,
    checker: index_format.Checker,
    window_bytes: int,
    hashes: dict[str, Any],
) -> list[bytes]:
    """Feed ``size`` bytes of ``f`` to ``checker`` and to ``hashes``; with
    ``window_bytes``, the digests of the table's windows (``_WindowDigests``) as the
    bytes pass."""
    table_end = _FIRST_ITEM + max(0, size - _FIRST_ITEM - TAIL_SIZE) // ITEM_SIZE * ITEM_SIZE
    windows = _WindowDigests(table_end, window_bytes) if window_bytes else None
    at, left = 0, size
    while left and (piece := f.read(min(_READ_PIECE, left))):
        checker.feed(piece)
        for hasher in hashes.values():
            hasher.update(piece)
        if windows is not None:
            windows.feed(piece, at)
        at, left = at + len(piece), left - len(piece)
    return windows.done() if windows is not None else []


class _WindowDigests:
    """The digest of each window's items (``window_bytes`` of the table from its first
    item; the last window ends at ``table_end``, before the tail), taken from pieces
    of the file as they pass in order."""

    def __init__(self, table_end: int, window_bytes: int) -> None:
        self.end, self.step = table_end, window_bytes
        self.digests: list[bytes] = []
        self._hasher = _hasher()
        self._next = _FIRST_ITEM + window_bytes  # where the open window ends

    def feed(self, piece: bytes, pos: int) -> None:
        """``piece``: the file's bytes from offset ``pos``."""
        start, stop = max(pos, _FIRST_ITEM), min(pos + len(piece), self.end)
        with memoryview(piece) as view:
            while start < stop:
                cut = min(stop, self._next)
                self._hasher.update(view[start - pos : cut - pos])
                start = cut
                if cut == self._next:
                    self._close()

    def done(self) -> list[bytes]:
        if self._next - self.step < self.end:  # the last window, shorter
            self._close()
        return self.digests

    def _close(self) -> None:
        self.digests.append(self._hasher.digest())
        self._hasher, self._next = _hasher(), self._next + self.step


def _hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=32)
