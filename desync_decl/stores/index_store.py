"""Index stores: named index files, beside the chunk stores (``index-server``, and an
index argument given as a URL ending in ``name.caibx``).

``IndexStore`` is the contract; ``LocalIndexStore`` keeps them in a directory, and
``objects.ObjectIndexStore`` on any key/value backend. Every one of them checks a
name with ``checked_index_name`` before using it as a file name or key.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from desync_decl.errors import IndexMissing, file_error
from desync_decl.formats import index as index_format
from desync_decl.formats.index import Index
from desync_decl.fsutil import open_file, walk_error, write_atomic
from desync_decl.signing import MAX_SIGNATURE_SIZE, SIGNATURE_SUFFIX
from desync_decl.stores.base import StoreError

_READ_PIECE = 1 << 16  # a local index is read and checked this many bytes at a time


@dataclass(frozen=True)
class SignedIndex:
    """An index with what a signature check needs: the file's bytes as stored (what
    a signature covers; never re-encoded) and the ``.sig`` beside it."""

    index: Index
    data: bytes
    signature: bytes | None  # the armored SSHSIG in ``<name>.sig``; None: there is none
    where: str  # the index's location, credentials masked (for messages)


class IndexStore(Protocol):
    """Index files by name. An index's signature is the file ``<name>.sig`` beside it
    (``signing.SIGNATURE_SUFFIX``): it covers the index file's exact bytes, so what
    moves an index (the index-server, ``cache --indexes-to``) moves those bytes
    (``get_index_bytes``/``store_index_bytes``), never a re-encoding."""

    def get_index(self, name: str) -> Index: ...

    def get_index_bytes(self, name: str) -> bytes:
        """The index file ``name`` as stored, checked to be an index (``FormatError``
        otherwise, ``IndexMissing`` when absent)."""
        ...

    def get_signature(self, name: str) -> bytes | None:
        """The bytes of ``name.sig``; None only when there is none (a store that fails
        is a ``StoreError``, never "no signature"); more than
        ``signing.MAX_SIGNATURE_SIZE`` bytes is a ``StoreError`` too, having read
        no more than that."""
        ...

    def get_signed_index(self, name: str) -> SignedIndex:
        """The index ``name`` with its bytes and its ``name.sig`` (None if absent;
        at most ``signing.MAX_SIGNATURE_SIZE`` bytes read)."""
        ...

    def store_index(self, name: str, index: Index) -> None: ...

    def store_index_bytes(self, name: str, data: bytes) -> None:
        """Write ``data``, an index file's bytes the caller has checked (decoded, or
        ``index.Checker``), as ``name``, exactly (a copy keeps its signature valid)."""
        ...

    def store_signature(self, name: str, signature: bytes) -> None:
        """Write ``name.sig`` (atomically, as an index) beside the index ``name``."""
        ...

    def close(self) -> None: ...


def signature_name(index_name: str) -> str:
    """The file or key of the signature of the index ``index_name`` (a name, or a path
    or location ending in one): ``<name>.sig``."""
    return index_name + SIGNATURE_SUFFIX


def index_of_signature(name: str) -> str | None:
    """The index whose signature the file or key ``name`` is (``x.caibx`` of
    ``x.caibx.sig``); None when ``name`` names no signature."""
    if name.endswith(SIGNATURE_SUFFIX) and len(name) > len(SIGNATURE_SUFFIX):
        return name[: -len(SIGNATURE_SUFFIX)]
    return None


def checked_index_name(name: str) -> str:
    """``name`` if it names one file in the store's own folder: not empty, ``.`` or
    ``..``, and without ``/``, ``\\`` or NUL (which would leave the folder or cut the
    name short); else ``StoreError``."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise StoreError(f"invalid index name {name!r}")
    return name


class LocalIndexStore:
    """Index files in a directory (index-server's local backend). Each write is a temp
    file renamed over the name, relative to the directory opened by walking from ``/``
    (``fsutil.write_atomic``), as every index write is."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def get_index(self, name: str) -> Index:
        return read_local_index(self.path / checked_index_name(name))

    def get_index_bytes(self, name: str) -> bytes:
        return read_local_index_bytes(self.path / checked_index_name(name))[1]

    def get_signature(self, name: str) -> bytes | None:
        return read_local_signature(self.path / checked_index_name(name))

    def get_signed_index(self, name: str) -> SignedIndex:
        return read_local_signed_index(self.path / checked_index_name(name))

    def store_index(self, name: str, index: Index) -> None:
        self.store_index_bytes(name, index.encode())

    def store_index_bytes(self, name: str, data: bytes) -> None:
        self._write(checked_index_name(name), data)

    def store_signature(self, name: str, signature: bytes) -> None:
        self._write(signature_name(checked_index_name(name)), signature)

    def _write(self, file_name: str, data: bytes) -> None:
        target = self.path / file_name
        try:
            write_atomic(target, data)
        except OSError as e:
            raise StoreError(f"cannot write {target}: {e.strerror}") from None

    def close(self) -> None:
        pass


def read_local_index(path: Path) -> Index:
    """The index in the file ``path``; ``IndexMissing`` when there is none. Read in
    pieces, so a large index is held once, as its compact table (a 64 GiB image's
    10 MiB index was also held as bytes while it was decoded), allocated at its size."""
    try:
        with path.open("rb") as f:
            left = os.fstat(f.fileno()).st_size  # read as of now: the table's size
            checker = index_format.Checker(str(path), keep=True, size=left)
            while left and (piece := f.read(min(_READ_PIECE, left))):
                checker.feed(piece)
                left -= len(piece)
    except FileNotFoundError:
        raise IndexMissing(f"{path}: no such file") from None
    except OSError as e:
        raise file_error(path, e, "read") from None
    checker.finish()
    return checker.index()


def read_local_index_bytes(path: Path) -> tuple[Index, bytes]:
    """The index in the file ``path`` and the file's bytes; ``IndexMissing`` when there
    is none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexMissing(f"{path}: no such file") from None
    except OSError as e:
        raise file_error(path, e, "read") from None
    return index_format.decode(data, str(path)), data


def read_local_signed_index(path: Path) -> SignedIndex:
    """The index in the file ``path`` with its bytes and ``<path>.sig``."""
    index, data = read_local_index_bytes(path)
    return SignedIndex(index, data, read_local_signature(path), str(path))


def read_local_signature(index_path: Path) -> bytes | None:
    """The bytes of ``<index_path>.sig``, None when there is no such file. Opened
    without following a symlink someone else could have planted (``fsutil.open_file``)
    and only when it is a regular file (a FIFO would block the reader); at most
    ``MAX_SIGNATURE_SIZE`` bytes are read. Any other failure is a ``StoreError``:
    an unreadable signature is never "no signature"."""
    path = Path(signature_name(str(index_path)))
    try:
        fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(str(walk_error(path, e, "read"))) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path}: not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_SIGNATURE_SIZE + 1)
    except OSError as e:
        raise StoreError(str(file_error(path, e, "read"))) from None
    finally:
        os.close(fd)
    if len(data) > MAX_SIGNATURE_SIZE:
        raise StoreError(f"{path}: more than {MAX_SIGNATURE_SIZE} bytes, larger than any signature")
    return data
