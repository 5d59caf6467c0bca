"""Bounded parallel map over a thread pool.

hashlib, zstd, file I/O and the C chunker all release the GIL, so threads fill
both cores. The window bounds how many items are in flight: memory stays a few
MiB per worker however large the input is.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int | None = None
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in input order.

    At most ``window`` (default 4 x workers) items are submitted but not yet
    yielded. The first exception is re-raised here and the rest are cancelled.
    """
    from concurrent.futures import ThreadPoolExecutor  # here: extraction on processes needs none

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


def batched_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    weight: Callable[[T], int],
    batch_weight: int = 1 << 20,
) -> Iterator[R]:
    """``ordered_map`` over runs of consecutive items weighing about ``batch_weight``.

    A chunk is ~64 KiB: one task per chunk would pay a future, a queue hop and
    several GIL hand-offs 16,000 times per GiB. One task per MiB of chunks pays
    them 1,000 times. At most 2 x workers batches are in flight.

    Batches are CPU work (hashing, zstd, local file I/O), so ``workers`` is
    capped at the number of cores: measured on 2 cores, 10 threads made
    ``make`` slower than 2, through GIL hand-offs and directory lock contention.
    """
    workers = cpu_workers(workers)

    def run(batch: list[T]) -> list[R]:
        return [fn(item) for item in batch]

    for results in ordered_map(
        run, batches(items, weight, batch_weight), workers=workers, window=2 * workers
    ):
        yield from results


def batches(items: Iterable[T], weight: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Runs of consecutive items, each weighing at least ``limit`` (but the last)."""
    batch: list[T] = []
    total = 0
    for item in items:
        batch.append(item)
        total += weight(item)
        if total >= limit:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def cpu_workers(concurrency: int) -> int:
    """Threads or processes for CPU-bound work: ``concurrency``, at most one per core."""
    return max(1, min(concurrency, os.cpu_count() or 1))
