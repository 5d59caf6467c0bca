"""Retrying transient store failures (timeouts, dropped connections, 5xx) with backoff.

Only errors a backend marks ``transient`` are retried: a missing chunk, an
invalid chunk or a refused request (4xx, bad credentials) fail at once.

A failover group asks a member once, without retries, while a healthy member is
left to hand over to (``asked_once``): a member that is down would otherwise make every
request wait through its whole backoff (3 attempts: 1.5 s of sleep, each
attempt up to a timeout) before the group could move on, and every one of the
requests running at once pays it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from desync_decl.stores.base import StoreError
from desync_decl.stores.options import StoreOptions

T = TypeVar("T")
_once: ContextVar[bool] = ContextVar("store_asked_once", default=False)


@contextlib.contextmanager
def asked_once() -> Iterator[None]:
    """Store calls in this block (on this thread) get one attempt each."""
    token = _once.set(True)
    try:
        yield
    finally:
        _once.reset(token)


def retrying(call: Callable[[], T], options: StoreOptions) -> T:
    """``call()``, tried up to ``error_retry`` times (at least once; once inside
    ``asked_once``); before attempt k+1 it waits k x ``error_retry_base_interval``
    (desync's schedule)."""
    attempts = 1 if _once.get() else max(1, options.error_retry)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except StoreError as e:
            if not e.transient or attempt == attempts:
                raise
        time.sleep(attempt * options.error_retry_base_interval)
    raise AssertionError("unreachable")
