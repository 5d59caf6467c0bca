"""Concurrent requests for one chunk share one upstream call (desync's request de-duplicator).

When many clients extract the same image at once they ask for the same
chunks at the same moment; in front of a remote store that would fetch each
chunk once per client. Here the first request for an id calls the store and
the others wait for its answer (the chunk, or the same error). Writes pass
straight through, and only over a store that can be written (``single_flight``
picks the class): a ``SingleFlight`` is a ``WriteStore`` exactly when its store is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, overload

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import Store, WriteStore


class _Call:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """A store whose concurrent ``get_chunk``/``has_chunk`` calls for one id run once."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, ChunkID], _Call] = {}

    def __str__(self) -> str:
        return str(self.inner)

    @property
    def fork_safe(self) -> bool:
        """Whether the store behind answers from local files only."""
        return self.inner.fork_safe

    def get_chunk(self, id: ChunkID) -> Chunk:
        return self._shared("get", id, lambda: self.inner.get_chunk(id))

    def has_chunk(self, id: ChunkID) -> bool:
        return self._shared("has", id, lambda: self.inner.has_chunk(id))

    def close(self) -> None:
        self.inner.close()

    def _shared(self, op: str, id: ChunkID, call: Callable[[], Any]) -> Any:
        key = (op, id)
        with self._lock:
            pending = self._calls.get(key)
            leader = pending is None
            if pending is None:
                pending = self._calls[key] = _Call()
        if leader:
            try:
                pending.result = call()
            except BaseException as e:  # handed to every waiter, then re-raised here too
                pending.error = e
            finally:
                with self._lock:
                    del self._calls[key]
                pending.done.set()
        else:
            pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result


class WritableSingleFlight(SingleFlight):
    """A ``SingleFlight`` over a store that can be written: writes go straight to it."""

    inner: WriteStore

    def __init__(self, inner: WriteStore) -> None:
        super().__init__(inner)

    def store_chunk(self, chunk: Chunk) -> None:
        self.inner.store_chunk(chunk)


@overload
def single_flight(inner: WriteStore) -> WritableSingleFlight: ...


@overload
def single_flight(inner: Store) -> SingleFlight: ...


def single_flight(inner: Store) -> SingleFlight:
    """``inner`` with its concurrent reads of one id shared, writable when it is."""
    return WritableSingleFlight(inner) if isinstance(inner, WriteStore) else SingleFlight(inner)
