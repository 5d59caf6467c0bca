"""The store a server answers from, swapped whole while requests run (SIGHUP reload).

A request leases the current store for its duration. ``swap`` installs a new
one at once; the old one is closed when its last request has finished, so
no request ever sees a closed store or a half-built stack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

S = TypeVar("S")


class _Entry(Generic[S]):
    __slots__ = ("retired", "store", "users")

    def __init__(self, store: S) -> None:
        self.store, self.users, self.retired = store, 0, False


class StoreStack(Generic[S]):
    def __init__(self, store: S) -> None:
        self._entry = _Entry(store)
        self._lock = threading.Lock()

    @property
    def current(self) -> S:
        return self._entry.store

    @contextmanager
    def use(self) -> Iterator[S]:
        with self._lock:
            entry = self._entry
            entry.users += 1
        try:
            yield entry.store
        finally:
            with self._lock:
                entry.users -= 1
                finished = entry.retired and entry.users == 0
            if finished:
                _close(entry.store)

    def swap(self, store: S) -> None:
        """Serve from ``store`` from now on; the old store closes once it is idle."""
        with self._lock:
            old, self._entry = self._entry, _Entry(store)
            old.retired = True
            idle = old.users == 0
        if idle:
            _close(old.store)

    def close(self) -> None:
        self.swap(None)  # type: ignore[arg-type]


def _close(store: object) -> None:
    if store is not None:
        store.close()  # type: ignore[attr-defined]
