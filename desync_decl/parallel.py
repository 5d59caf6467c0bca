"""Bounded parallel map over a thread pool.

hashlib, zstd, file I/O and the C chunker all release the GIL, so threads fill
both cores. The window bounds how many items are in flight: memory stays a few
MiB per worker however large the input is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int | None = None
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in input order.

    At most ``window`` (default 4 x workers) items are submitted but not yet
    yielded. The first exception is re-raised here and the rest are cancelled.
    """
    window = window or 4 * workers
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
