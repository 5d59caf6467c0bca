"""Retrying transient store failures (timeouts, dropped connections, 5xx) with backoff.

Only errors a backend marks ``transient`` are retried: a missing chunk, an
invalid chunk or a refused request (4xx, bad credentials) fail at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from desync_decl.stores.base import StoreError
from desync_decl.stores.options import StoreOptions

T = TypeVar("T")


def retrying(call: Callable[[], T], options: StoreOptions) -> T:
    """``call()``, tried up to ``error_retry`` times (at least once); before
    attempt k+1 it waits k x ``error_retry_base_interval`` (desync's schedule)."""
    attempts = max(1, options.error_retry)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except StoreError as e:
            if not e.transient or attempt == attempts:
                raise
        time.sleep(attempt * options.error_retry_base_interval)
    raise AssertionError("unreachable")
