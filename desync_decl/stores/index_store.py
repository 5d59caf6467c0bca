"""Index stores: named index files, beside the chunk stores (``index-server``, and an
index argument given as a URL ending in ``name.caibx``).

``IndexStore`` is the contract; ``LocalIndexStore`` keeps them in a directory, and
``objects.ObjectIndexStore`` on any key/value backend. Every one of them checks a
name with ``checked_index_name`` before using it as a file name or key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from desync_decl.errors import IndexMissing, file_error
from desync_decl.formats import index as index_format
from desync_decl.formats.index import Index
from desync_decl.fsutil import write_atomic
from desync_decl.stores.base import StoreError


@dataclass(frozen=True)
class SignedIndex:
    """An index with what a signature check needs: the file's bytes as stored (what
    a signature covers; never re-encoded) and the ``.sig`` beside it."""

    index: Index
    data: bytes
    signature: bytes | None  # the armored SSHSIG in ``<name>.sig``; None: there is none
    where: str  # the index's location, credentials masked (for messages)


class IndexStore(Protocol):
    def get_index(self, name: str) -> Index: ...

    def get_signed_index(self, name: str) -> SignedIndex:
        """The index ``name`` with its bytes and its ``name.sig`` (None if absent;
        at most ``signing.MAX_SIGNATURE_SIZE`` bytes read)."""
        ...

    def store_index(self, name: str, index: Index) -> None: ...

    def store_signature(self, name: str, signature: bytes) -> None:
        """Write ``name.sig`` (atomically, as an index) beside the index ``name``."""
        ...

    def close(self) -> None: ...


def checked_index_name(name: str) -> str:
    """``name`` if it names one file in the store's own folder: not empty, ``.`` or
    ``..``, and without ``/``, ``\\`` or NUL (which would leave the folder or cut the
    name short); else ``StoreError``."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise StoreError(f"invalid index name {name!r}")
    return name


class LocalIndexStore:
    """Index files in a directory (index-server's local backend)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def get_index(self, name: str) -> Index:
        return read_local_index(self.path / checked_index_name(name))

    def store_index(self, name: str, index: Index) -> None:
        target = self.path / checked_index_name(name)
        try:
            write_atomic(target, index.encode())
        except OSError as e:
            raise StoreError(f"cannot write {target}: {e.strerror}") from None

    def close(self) -> None:
        pass


def read_local_index(path: Path) -> Index:
    """The index in the file ``path``; ``IndexMissing`` when there is none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IndexMissing(f"{path}: no such file") from None
    except OSError as e:
        raise file_error(path, e, "read") from None
    return index_format.decode(data, str(path))
