"""The store contract: small Protocols and three errors that drive routing.

- ``ChunkMissing``: not there. A router asks the next store, a cache fetches it.
- ``ChunkInvalid``: there, but its bytes do not decode or hash to its id.
- ``StoreError``: the store itself failed (I/O, network, auth). Never reported
  as "missing" (desync hides outages that way), so failover can react to it.

``str(store)`` is its location and appears in every message about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import MAX_PLAIN_SIZE, Chunk
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.formats.digest import ChunkID, Digest


class ChunkMissing(DesyncError):
    def __init__(self, id: ChunkID, store: str) -> None:
        super().__init__(f"chunk {id.hex()} missing from {store}")
        self.id, self.store = id, store


class ChunkInvalid(DesyncError):
    def __init__(self, id: ChunkID, store: str, why: str) -> None:
        super().__init__(f"chunk {id.hex()} in {store} is invalid: {why}")
        self.id, self.store, self.why = id, store, why


class StoreError(DesyncError):
    """A failing store; ``transient`` errors (timeouts, 5xx) may be retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@runtime_checkable
class Store(Protocol):
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
    def store_chunk(self, chunk: Chunk) -> None:
        """Atomic: a crash never leaves a partial chunk under its final name."""
        ...


@runtime_checkable
class PruneStore(WriteStore, Protocol):
    def iter_chunk_ids(self) -> Iterator[ChunkID]: ...

    def remove_chunk(self, id: ChunkID) -> None: ...

    def prune(self, keep: set[ChunkID]) -> int:
        """Delete every chunk not in ``keep``; returns how many were deleted."""
        ...


def verify_chunk(chunk: Chunk, digest: Digest, store: object) -> Chunk:
    """Decode and hash ``chunk``; raise ChunkInvalid naming ``store`` when it is wrong."""
    try:
        plain = chunk.plain(MAX_PLAIN_SIZE)
    except DecodeError as e:
        raise ChunkInvalid(chunk.id, str(store), str(e)) from None
    actual = digest.hash(plain)
    if actual != chunk.id:
        raise ChunkInvalid(chunk.id, str(store), f"its data hashes to {actual.hex()}")
    return chunk


def plain_of(store: Store, id: ChunkID, size: int) -> bytes | memoryview:
    """A chunk's verified bytes, which must be as long as the index says.

    Every reader of an index (extract, cat) gets its chunks through here.
    """
    data = store.get_chunk(id).plain(size)
    if len(data) != size:
        raise ChunkInvalid(id, str(store), f"{len(data)} bytes, the index says {size}")
    return data
