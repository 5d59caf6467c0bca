"""Chunk and index stores on top of any key/value backend (S3, GCS, SFTP, HTTP, OCI).

A backend implements only ``Objects``: read, write, exists, delete and list
keys under its base (a page per request), mapping its own "not found" to
``ObjectMissing`` and every other failure to ``StoreError`` (transient ones
marked, for ``retry.RetryingObjects``, which its factory wraps it in).
Everything about chunks lives here once: key layout ``xxxx/<id><ext>``,
storage format (compression, encryption), verification, prune, and how many
bytes a read may bring: a backend reads at most ``limit + 1`` bytes of an
object and refuses a bigger one (``ObjectTooLarge``), so a broken or hostile
store cannot fill memory. For a chunk the limit is the largest stored form of
a chunk of its size (``StorageFormat.max_stored_size``), for an index
``MAX_INDEX_SIZE``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from desync_decl.errors import IndexMissing
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunkfile import COMPRESSED_SUFFIX, DecodeError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.signing import MAX_SIGNATURE_SIZE
from desync_decl.stores.base import (
    ChunkInvalid,
    ChunkMissing,
    Hook,
    StoreError,
    chunk_size_limit,
    no_hook,
    refuse_empty,
    verify_chunk,
)
from desync_decl.stores.converters import COMPRESSED, StorageFormat
from desync_decl.stores.index_store import SignedIndex, checked_index_name, signature_name
from desync_decl.stores.keys import MissCheck, configured_key, key_of
from desync_decl.stores.store_lock import MAX_LOCK_SIZE, LockKeeper

MAX_INDEX_SIZE = 1 << 30  # 40 bytes a chunk: about 27 million chunks (index-server's limit)


class ObjectMissing(Exception):
    """The key does not exist (a backend's 404 / NoSuchKey / ENOENT)."""


class ObjectTooLarge(StoreError):
    """An object larger than any valid one: the store is broken or hostile (not a
    missing or invalid chunk), and retrying will not shrink it."""

    def __init__(self, where: str, limit: int) -> None:
        super().__init__(f"{where}: more than {limit} bytes, larger than any valid object there")


def read_at_most(pieces: Iterable[bytes], limit: int, where: str) -> bytes:
    """The pieces of a body gathered in one buffer, refused (``ObjectTooLarge``) as soon
    as they pass ``limit``: a backend stops reading there and drops the connection.
    The buffer is returned as it is (a ``bytearray``): joining a list of pieces held
    the body twice at its end, 2 GiB for an index near its 1 GiB bound."""
    body = bytearray()
    for piece in pieces:
        body += piece
        if len(body) > limit:
            raise ObjectTooLarge(where, limit)
    return body  # a bytearray reads as bytes do


class Objects(Protocol):
    """What a key/value backend provides; keys are relative to the store's base."""

    location: str  # the store location for messages (any password masked)

    def read(self, key: str, limit: int) -> bytes:
        """The object's bytes; ``ObjectMissing`` if absent, ``ObjectTooLarge`` past
        ``limit`` bytes (having read no more than about ``limit``), ``StoreError``
        on failure."""
        ...

    def write(self, key: str, data: bytes | memoryview) -> None:
        """Store atomically: readers never see a partial object under ``key``."""
        ...

    def exists(self, key: str) -> bool:
        """False only when the object is absent; failures raise ``StoreError``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SizedObjects(Objects, Protocol):
    """A backend that tells an object's size in the request that finds it."""

    def size(self, key: str) -> int | None:
        """The object's size; None when absent."""
        ...


def object_size(objects: Objects, key: str) -> int | None:
    """The size of ``key`` when the backend tells it (``SizedObjects``), -1 when it
    only tells that the object is there, None when absent."""
    if isinstance(objects, SizedObjects):
        return objects.size(key)
    return -1 if objects.exists(key) else None


@runtime_checkable
class BaseChecked(Protocol):
    """A backend whose "not found" cannot tell a missing object from a wrong store
    location (HTTP: every path under a wrong base answers 404): asked once, after the
    first object found missing, whether anything is at the base at all."""

    def check_base(self) -> None:
        """Raise ``StoreError`` (one line: what was asked, what answered) when the
        store's base location does not exist."""
        ...


# One page of a listing: (key, modification time) pairs and where the next page starts
# (None: this was the last). A cursor is the backend's own (a token, a URL, a stack).
ListPage = tuple[list[tuple[str, float | None]], object]


class ListableObjects(Objects, Protocol):
    """A backend that can also list and delete (all but plain HTTP)."""

    def delete(self, key: str) -> bool | None:
        """Remove; an absent key is not an error (OCI says whether it deleted)."""
        ...

    def list_page(self, under: str, cursor: object) -> ListPage:
        """One request's worth of the keys under the base (under ``under`` below it, a
        folder such as ``locks/``), relative to the base, with the store's modification
        time of each object (seconds since the epoch; None where the backend reports
        none); ``cursor`` is None for the first page, then what the previous page gave."""
        ...


def list_entries(objects: ListableObjects, under: str = "") -> Iterator[tuple[str, float | None]]:
    """Every key under ``under`` with its modification time, page by page
    (``list_page``: a retry wrapper retries each page on its own)."""
    cursor: object = None
    while True:
        entries, cursor = objects.list_page(under, cursor)
        yield from entries
        if cursor is None:
            return


Reread = Callable[[Callable[[], Chunk]], Chunk]  # how a chunk read is made (and remade)


def read_once(read: Callable[[], Chunk]) -> Chunk:
    """A chunk read made once: an invalid chunk is invalid (every store but S3)."""
    return read()


class ObjectChunkStore:
    """A chunk store (get/has/store) over ``Objects``. ``reread`` makes each read
    (request, decoding, verification) as a whole: once, or again while the chunk is
    invalid (``retry.rereading_invalid``, S3)."""

    fork_safe = False  # a backend's connections belong to one process

    def __init__(
        self,
        objects: Objects,
        *,
        digest: Digest = Digest.SHA512_256,
        format: StorageFormat = COMPRESSED,
        skip_verify: bool = False,
        reread: Reread = read_once,
    ) -> None:
        self.objects, self.digest, self.format = objects, digest, format
        self.skip_verify, self.reread = skip_verify, reread
        suffix = re.escape(format.extension)
        self._name = re.compile(rf"^([0-9a-f]{{4}})/(\1[0-9a-f]{{60}}){suffix}$")
        self._misses = MissCheck(format)  # a miss under another key's suffix is WrongKey
        self._sampled: set[str] | None = None

    def __str__(self) -> str:
        return self.objects.location

    def key(self, id: ChunkID, extension: str | None = None) -> str:
        """The chunk's object key, in the store's format or with ``extension``."""
        h = id.hex()
        return f"{h[:4]}/{h}{self.format.extension if extension is None else extension}"

    def get_chunk(self, id: ChunkID) -> Chunk:
        return self.reread(lambda: self._read_chunk(id))

    def _read_chunk(self, id: ChunkID) -> Chunk:
        limit = self.format.max_stored_size(chunk_size_limit())
        try:
            data = self.objects.read(self.key(id), limit)
        except ObjectMissing:
            self._misses.after_miss(id, self, lambda: self._other_forms(id))
            raise ChunkMissing(id, str(self)) from None
        try:
            chunk = self.format.decode(id, bytes(data))  # immutable, as a chunk's data is
        except DecodeError as e:
            raise ChunkInvalid(id, str(self), str(e)) from None
        return chunk if self.skip_verify else verify_chunk(chunk, self.digest, self)

    def has_chunk(self, id: ChunkID) -> bool:
        return self.objects.exists(self.key(id))

    def probe(self, id: ChunkID) -> int | None:
        """The chunk's size as stored (what a read transfers) in the one request that
        tells whether it is there, for a backend that says it (``size``); -1 when
        there but of unknown size; None when absent (``compose.locate``)."""
        size = object_size(self.objects, self.key(id))
        if size is None:
            self._misses.after_miss(id, self, lambda: self._other_forms(id))
        return size

    def _other_forms(self, id: ChunkID) -> list[str]:
        """The extensions, other than the store's own, that the chunk is held under:
        each one the store's chunks are seen under (``sample_forms``, asked once) is
        checked for this chunk (``keys.MissCheck``)."""
        if isinstance(self.objects, BaseChecked):  # a wrong URL is no missing chunk
            self.objects.check_base()
        if self._sampled is None:
            self._sampled = self._candidate_forms()
        ours = configured_key(self.format)
        others = sorted(ext for ext in self._sampled if key_of(ext) != ours)
        return [ext for ext in others if self.objects.exists(self.key(id, ext))]

    def _candidate_forms(self) -> set[str]:
        """The extensions a chunk missed may be under: a backend that cannot list is
        asked for the unencrypted forms only (another key's fingerprint cannot be
        guessed)."""
        return {COMPRESSED_SUFFIX, ""}

    def store_chunk(self, chunk: Chunk) -> None:
        refuse_empty(chunk, self)
        self.objects.write(self.key(chunk.id), self.format.encode(chunk))

    def close(self) -> None:
        self.objects.close()


class ListableObjectChunkStore(ObjectChunkStore):
    """A chunk store that can also list, remove and prune (over ``ListableObjects``),
    and hold lock objects ``locks/<name>`` (``store_lock``)."""

    objects: ListableObjects
    chunk_ages_known = True  # every listing reports modification times (OCI: none)

    def __init__(self, objects: ListableObjects, **kwargs: Any) -> None:
        super().__init__(objects, **kwargs)
        self.locks: LockKeeper | None = LockKeeper(self, str(self))

    def _candidate_forms(self) -> set[str]:
        return self.sample_forms()

    def sample_forms(self) -> set[str]:
        """``keys.KeyedStore``: the extensions of the chunks on the first page of the
        store's listing that names any (SFTP's first page is the folders; at most
        ``SAMPLED_PAGES`` pages)."""
        forms: set[str] = set()
        cursor: object = None
        for _ in range(SAMPLED_PAGES):
            entries, cursor = self.objects.list_page("", cursor)
            forms = {
                m.group(1) or "" for m in map(_ANY_CHUNK.fullmatch, (k for k, _ in entries)) if m
            }
            if forms or cursor is None:
                break
        return forms

    def chunk_ages(self) -> Iterator[tuple[ChunkID, float | None]]:
        """Each chunk's id and the store's modification time of its object."""
        for key, mtime in list_entries(self.objects):
            m = self._name.match(key)
            if m:
                yield ChunkID(bytes.fromhex(m.group(2))), mtime

    def iter_chunk_ids(self) -> Iterator[ChunkID]:
        for id, _ in self.chunk_ages():
            yield id

    def remove_chunk(self, id: ChunkID) -> None:
        self.objects.delete(self.key(id))

    def prune(
        self, keep: set[ChunkID], *, older_than: float | None = None, before_delete: Hook = no_hook
    ) -> int:
        """Delete every chunk not in ``keep`` (with ``older_than``, only those the store
        last modified before it); returns how many were deleted."""
        doomed = doomed_chunks(self.chunk_ages(), keep, older_than)
        for id in doomed:
            before_delete()
            self.remove_chunk(id)
        return len(doomed)

    # --- lock objects (store_lock.LockSpace) ------------------------------------------

    def write_lock(self, name: str, data: bytes) -> None:
        self.objects.write(LOCKS + name, data)

    def read_lock(self, name: str) -> bytes | None:
        try:
            return self.objects.read(LOCKS + name, MAX_LOCK_SIZE)
        except ObjectMissing:
            return None
        except ObjectTooLarge:
            return b""  # not a lock record of ours: unreadable

    def list_locks(self) -> list[tuple[str, float]]:
        return [
            (key[len(LOCKS) :], mtime)
            for key, mtime in list_entries(self.objects, LOCKS)
            if mtime is not None and "/" not in key[len(LOCKS) :]
        ]

    def remove_lock(self, name: str) -> None:
        self.objects.delete(LOCKS + name)

    def close(self) -> None:
        if self.locks is not None:
            self.locks.release()
        super().close()


LOCKS = "locks/"  # where lock objects live, beside the chunks' xxxx/ folders
SAMPLED_PAGES = 4  # listing pages looked at for the keys a store's chunks are under
_ANY_CHUNK = re.compile(r"[0-9a-f]{4}/[0-9a-f]{64}(\.[a-z0-9.-]+)?")  # a chunk of any format


def doomed_chunks(
    ages: Iterable[tuple[ChunkID, float | None]], keep: set[ChunkID], older_than: float | None
) -> list[ChunkID]:
    """The chunks ``prune`` deletes: not kept, and (with ``older_than``) last modified
    before it; a chunk of unknown age is never old enough."""
    return [
        id
        for id, mtime in ages
        if id not in keep and (older_than is None or (mtime is not None and mtime < older_than))
    ]


class ObjectIndexStore:
    """Index files by name over ``Objects`` (``s3+http://host/bucket/dir/`` + ``x.caibx``),
    each index's signature beside it as ``x.caibx.sig``. Reads are bounded: an index
    by ``MAX_INDEX_SIZE``, a signature by ``signing.MAX_SIGNATURE_SIZE``."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    def __str__(self) -> str:
        return self.objects.location

    def where(self, name: str) -> str:
        """The location of the index ``name``, for messages (credentials masked)."""
        return f"{self.objects.location.rstrip('/')}/{name}"

    def get_index(self, name: str) -> Index:
        return index_format.decode(self._read_index(name), self.where(name))

    def get_index_bytes(self, name: str) -> bytes:
        data = self._read_index(name)
        index_format.decode(data, self.where(name))  # raises when it is no index
        return data

    def get_signature(self, name: str) -> bytes | None:
        key = signature_name(checked_index_name(name))
        try:
            return bytes(self.objects.read(key, MAX_SIGNATURE_SIZE))
        except ObjectMissing:
            return None

    def get_signed_index(self, name: str) -> SignedIndex:
        data = self._read_index(name)
        index = index_format.decode(data, self.where(name))
        return SignedIndex(index, data, self.get_signature(name), self.where(name))

    def _read_index(self, name: str) -> bytes:
        checked_index_name(name)
        try:
            return self.objects.read(name, MAX_INDEX_SIZE)  # not copied: up to 1 GiB
        except ObjectMissing:
            if isinstance(self.objects, BaseChecked):  # a wrong URL is no missing index
                self.objects.check_base()
            raise IndexMissing(f"index {name} not found in {self}") from None

    def store_index(self, name: str, index: Index) -> None:
        self.store_index_bytes(name, index.encode())

    def store_index_bytes(self, name: str, data: bytes) -> None:
        self.objects.write(checked_index_name(name), data)

    def store_signature(self, name: str, signature: bytes) -> None:
        self.objects.write(signature_name(checked_index_name(name)), signature)

    def close(self) -> None:
        self.objects.close()
