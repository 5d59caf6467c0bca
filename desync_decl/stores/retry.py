"""Retrying transient store failures (timeouts, dropped connections, 5xx) with backoff.

Retry is a wrapper, applied once where a backend's store is built (its
``open_chunk_store`` / ``open_index_store``), so no backend retries by itself:

- ``RetryingObjects`` (``RetryingListableObjects``) around a key/value backend
  (``objects.Objects``): each read, write, existence check, deletion and listing
  page is one attempt, retried as a whole; every chunk store, index store and lock
  above it gets the retries.
- ``Retrying`` around a chunk store that is not built on ``Objects`` (``ssh://``):
  each ``get_chunk`` / ``has_chunk`` is retried as a whole.

Only errors a backend marks ``transient`` are retried: a missing chunk, an
invalid chunk or a refused request (4xx, bad credentials) fail at once. One
exception, as desync has it: an S3 chunk read whose chunk is invalid is made
again (``rereading_invalid``).

A failover group asks a member once, without retries, while a healthy member is
left to hand over to (``asked_once``): a member that is down would otherwise make every
request wait through its whole backoff (3 attempts: 1.5 s of sleep, each
attempt up to a timeout) before the group could move on, and every one of the
requests running at once pays it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.asked_once import is_asked_once
from desync_decl.stores.base import ChunkInvalid, Store, StoreError
from desync_decl.stores.objects import (
    BaseChecked,
    ListableObjects,
    ListPage,
    Objects,
    object_size,
)
from desync_decl.stores.options import StoreOptions

T = TypeVar("T")


def transient(error: Exception) -> bool:
    """Whether a failed request is worth making again: the store marked it transient."""
    return isinstance(error, StoreError) and error.transient


def retrying(
    call: Callable[[], T], options: StoreOptions, *, again: Callable[[Exception], bool] = transient
) -> T:
    """``call()``, tried up to ``error_retry`` times (at least once; once inside
    ``asked_once``) while it fails with an error ``again`` accepts; before attempt
    k+1 it waits k x ``error_retry_base_interval`` (desync's schedule)."""
    attempts = 1 if is_asked_once() else max(1, options.error_retry)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (StoreError, ChunkInvalid) as e:
            if not again(e) or attempt == attempts:
                raise
        time.sleep(attempt * options.error_retry_base_interval)
    raise AssertionError("unreachable")


def rereading_invalid(options: StoreOptions) -> Callable[[Callable[[], Chunk]], Chunk]:
    """What an S3 chunk store reads chunks through: a read whose chunk is invalid is
    made again, as a failed request is (desync #334: S3-compatible services such as R2
    sometimes end a body early with a Content-Length that matches, so the bytes arrive
    short without any transport error; the object itself is fine). A chunk still
    invalid after the last attempt is ``ChunkInvalid``, as from any store. Failed
    requests are retried below, by ``RetryingObjects``, not again here."""
    return lambda read: retrying(read, options, again=lambda e: isinstance(e, ChunkInvalid))


class RetryingObjects:
    """A backend's ``Objects`` (``inner``) with every request retried (``retrying``).

    ``size`` is there whether or not the backend has one: without it, it answers as
    ``ObjectChunkStore.probe`` would (-1 when present, None when absent)."""

    def __init__(self, inner: Objects, options: StoreOptions) -> None:
        self.inner, self.options = inner, options
        self.location = inner.location

    def __str__(self) -> str:
        return str(self.inner)

    def read(self, key: str, limit: int) -> bytes:
        return retrying(lambda: self.inner.read(key, limit), self.options)

    def write(self, key: str, data: bytes | memoryview) -> None:
        retrying(lambda: self.inner.write(key, data), self.options)

    def exists(self, key: str) -> bool:
        return retrying(lambda: self.inner.exists(key), self.options)

    def size(self, key: str) -> int | None:
        return retrying(lambda: object_size(self.inner, key), self.options)

    def check_base(self) -> None:
        """The backend's ``objects.BaseChecked`` check, retried; nothing for a backend
        whose "not found" is the object's own."""
        inner = self.inner
        if isinstance(inner, BaseChecked):
            retrying(inner.check_base, self.options)

    def close(self) -> None:
        self.inner.close()


class RetryingListableObjects(RetryingObjects):
    """``RetryingObjects`` of a backend that can also list and delete: each deletion and
    each page of a listing is retried on its own."""

    inner: ListableObjects

    def __init__(self, inner: ListableObjects, options: StoreOptions) -> None:
        super().__init__(inner, options)

    def delete(self, key: str) -> bool | None:
        return retrying(lambda: self.inner.delete(key), self.options)

    def list_page(self, under: str, cursor: object) -> ListPage:
        return retrying(lambda: self.inner.list_page(under, cursor), self.options)


class Retrying:
    """A chunk store not built on ``Objects`` (``ssh://``) with each read retried."""

    fork_safe = False

    def __init__(self, inner: Store, options: StoreOptions) -> None:
        self.inner, self.options = inner, options

    def __str__(self) -> str:
        return str(self.inner)

    def get_chunk(self, id: ChunkID) -> Chunk:
        return retrying(lambda: self.inner.get_chunk(id), self.options)

    def has_chunk(self, id: ChunkID) -> bool:
        return retrying(lambda: self.inner.has_chunk(id), self.options)

    def close(self) -> None:
        self.inner.close()
