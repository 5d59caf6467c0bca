"""The store contract: small Protocols and three errors that drive routing.

- ``ChunkMissing``: not there. A router asks the next store, a cache fetches it.
- ``ChunkInvalid``: there, but its bytes do not decode or hash to its id.
- ``StoreError``: the store itself failed (I/O, network, auth). Never reported
  as "missing" (desync hides outages that way), so failover can react to it.

``str(store)`` is its location and appears in every message about it, with any
password masked (``url.mask_credentials``); the errors mask their text once more,
since a library's own message may quote the URL it was given.

How big a chunk may be travels with the read: ``plain_of`` (every index reader)
sets the index's largest chunk size for the duration of its ``get_chunk``; a
store bounds the bytes it reads (``max_stored_size``) and the decompression
(``verify_chunk``) by it. It is a context variable, not an argument, so the
routers, failover groups, caches and size limits in between pass it on
unchanged. Outside ``plain_of`` the bound is ``MAX_PLAIN_SIZE``, casync's
absolute maximum for a chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import MAX_PLAIN_SIZE, Chunk
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.stores.url import mask_credentials

_chunk_size_limit: ContextVar[int] = ContextVar("chunk_size_limit", default=MAX_PLAIN_SIZE)
_chunk_size: ContextVar[int | None] = ContextVar("chunk_size", default=None)


class ChunkMissing(DesyncError):
    def __init__(self, id: ChunkID, store: str) -> None:
        store = mask_credentials(store)
        super().__init__(f"chunk {id.hex()} missing from {store}")
        self.id, self.store = id, store


class ChunkInvalid(DesyncError):
    def __init__(self, id: ChunkID, store: str, why: str) -> None:
        store = mask_credentials(store)
        super().__init__(f"chunk {id.hex()} in {store} is invalid: {why}")
        self.id, self.store, self.why = id, store, why


class StoreError(DesyncError):
    """A failing store; ``transient`` errors (timeouts, 5xx) may be retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(mask_credentials(message))
        self.transient = transient


def chunk_size_limit() -> int:
    """The most plain bytes the chunk being read may have (see the module's docstring)."""
    return _chunk_size_limit.get()


def expected_chunk_size() -> int | None:
    """The plain size the index gives the chunk being read (inside ``plain_of``), so
    what a store was asked for can be counted in bytes even when it had nothing."""
    return _chunk_size.get()


@runtime_checkable
class Store(Protocol):
    """A store that can be read: every store has these, and says what it can do
    beyond them by the protocols it also meets (``WriteStore``, ``PruneStore``),
    which callers check with ``isinstance`` and mypy checks statically."""

    @property
    def fork_safe(self) -> bool:
        """True when the store answers from local files only, with no thread, socket
        or lock of its own: forked worker processes may use it (``forked.can_fork``,
        the chunk server's page-cache reads). A wrapper is fork-safe when everything
        it reads through is; a class attribute ``fork_safe = False`` says "no"."""
        ...

    def get_chunk(self, id: ChunkID) -> Chunk:
        """The chunk, verified unless the store was opened with skip_verify.

        Raises ChunkMissing, ChunkInvalid or StoreError, nothing else."""
        ...

    def has_chunk(self, id: ChunkID) -> bool:
        """False means "not there"; a failure raises StoreError."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class WriteStore(Store, Protocol):
    """A store that can be written (what ``Opener.chunk_store(create=True)`` returns)."""

    def store_chunk(self, chunk: Chunk) -> None:
        """Atomic: a crash never leaves a partial chunk under its final name."""
        ...


class Composite:
    """A store that asks other stores (a router, a failover group, a cache, a counting
    or size-limiting wrapper): a read through it is counted as its leaves' reads
    (``tally.ask``), not its own. A base class rather than a protocol: it is asked on
    every chunk read, where ``isinstance`` of a runtime protocol costs microseconds."""


@runtime_checkable
class Flushable(Protocol):
    """A store whose writes become durable in a batch (``LocalStore``: one sync of its
    directories), done before an index that refers to them is written."""

    def flush(self) -> None: ...


Hook = Callable[[], None]  # run before an irreversible step; raises to stop it


def no_hook() -> None:
    """Nothing to check before the step."""


@runtime_checkable
class PruneStore(WriteStore, Protocol):
    """A store that can list and delete its chunks (``prune``, ``verify``)."""

    @property
    def chunk_ages_known(self) -> bool:
        """True when ``chunk_ages`` gives a time for every chunk (a prune with a minimum
        age needs them: ``ops.prune``)."""
        ...

    def iter_chunk_ids(self) -> Iterator[ChunkID]: ...

    def chunk_ages(self) -> Iterator[tuple[ChunkID, float | None]]:
        """Each chunk's id and the store's own modification time for it (seconds since
        the epoch, by the store's clock), None where the store reports none (its
        ``chunk_ages_known`` is False then)."""
        ...

    def remove_chunk(self, id: ChunkID) -> None: ...

    def prune(
        self, keep: set[ChunkID], *, older_than: float | None = None, before_delete: Hook = no_hook
    ) -> int:
        """Delete every chunk not in ``keep`` (with ``older_than``: only those the store
        last modified before that time); returns how many were deleted.
        ``before_delete`` runs before each deletion and stops the prune by raising
        (a prune whose store lock was lost, ``store_lock.StoreLock.check``)."""
        ...


def refuse_empty(chunk: Chunk, store: object) -> None:
    """Raise StoreError for a chunk with no bytes at all, before anything is written.

    casync and desync never make one (every chunk has at least the minimum size);
    desync's stores refuse to write one ("no data in chunk"), and so do ours: a store
    holding one would serve an empty file under an id that is not its hash."""
    if chunk.held_size() == 0:
        raise StoreError(f"chunk {chunk.id.hex()} has no data: not stored in {store}")


def verify_chunk(chunk: Chunk, digest: Digest, store: object) -> Chunk:
    """Decode (at most ``chunk_size_limit()`` bytes: a zstd bomb stops there) and hash
    ``chunk``; raise ChunkInvalid naming ``store`` when it is wrong."""
    try:
        plain = chunk.plain(chunk_size_limit())
    except DecodeError as e:
        raise ChunkInvalid(chunk.id, str(store), str(e)) from None
    actual = digest.hash(plain)
    if actual != chunk.id:
        raise ChunkInvalid(chunk.id, str(store), f"its data hashes to {actual.hex()}")
    return chunk


def plain_of(store: Store, id: ChunkID, size: int, max_size: int) -> bytes | memoryview:
    """A chunk's verified bytes, which must be as long as the index says.

    Every reader of an index (extract, cat) gets its chunks through here, with the
    index's largest chunk size ``max_size``: the store reads and decodes no more
    than a chunk of that size can take.
    """
    size_token = _chunk_size.set(size)  # tokens, not a context manager: this runs per chunk
    limit_token = _chunk_size_limit.set(max_size)
    try:
        data = store.get_chunk(id).plain(max_size)
    finally:
        _chunk_size_limit.reset(limit_token)
        _chunk_size.reset(size_token)
    if len(data) != size:
        raise ChunkInvalid(id, str(store), f"{len(data)} bytes, the index says {size}")
    return data
