"""Stores replaced whole while reads run: ``--store-file`` re-read on SIGHUP
(chunk-server, index-server, mount-index).

A read leases the current store for its duration (``StoreStack.use``). ``swap``
installs a new one at once; the old one is closed when its last read has
finished, so no read ever sees a closed store or a half-built stack. After
``close`` nothing is served: a lease is a ``StoreError``, and the store is
closed once, by whichever of ``close`` and its last lease comes last.
``SwappableStore`` is a ``Store`` that reads through such a stack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import Store, StoreError


class _Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=_Closable)  # a chunk store or an index store


class _Entry(Generic[S]):
    __slots__ = ("retired", "store", "users")

    def __init__(self, store: S) -> None:
        self.store, self.users, self.retired = store, 0, False


class StoreStack(Generic[S]):
    def __init__(self, store: S) -> None:
        self._entry = _Entry(store)
        self._closed = False
        self._lock = threading.Lock()

    @property
    def current(self) -> S:
        return self._entry.store

    @contextmanager
    def use(self) -> Iterator[S]:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._entry.store}: closed (the server is stopping)")
            entry = self._entry
            entry.users += 1
        try:
            yield entry.store
        finally:
            with self._lock:
                entry.users -= 1
                finished = entry.retired and entry.users == 0
            if finished:
                entry.store.close()

    def swap(self, store: S) -> None:
        """Serve from ``store`` from now on; the old store closes once it is idle.
        After ``close``, ``store`` is closed at once: nothing would serve from it."""
        with self._lock:
            if self._closed:
                old = _Entry(store)  # never leased
            else:
                old, self._entry = self._entry, _Entry(store)
            old.retired = True
            idle = old.users == 0
        if idle:
            old.store.close()

    def close(self) -> None:
        """Close the current store once its last lease ends; serve nothing after.
        Closing again does nothing."""
        with self._lock:
            entry, closed = self._entry, self._closed
            self._closed = entry.retired = True
            idle = entry.users == 0
        if idle and not closed:
            entry.store.close()


class SwappableStore:
    """A ``Store`` read through a ``StoreStack``: ``swap`` replaces what it reads."""

    fork_safe = False  # a swap in one process would not reach the others

    def __init__(self, store: Store) -> None:
        self._stack: StoreStack[Store] = StoreStack(store)

    def __str__(self) -> str:
        return str(self._stack.current)

    def get_chunk(self, id: ChunkID) -> Chunk:
        with self._stack.use() as store:
            return store.get_chunk(id)

    def has_chunk(self, id: ChunkID) -> bool:
        with self._stack.use() as store:
            return store.has_chunk(id)

    def swap(self, store: Store) -> None:
        self._stack.swap(store)

    def close(self) -> None:
        self._stack.close()
