"""Small writes of an extraction on worker threads, directories finished in order.

``untar`` decodes the archive on one thread; creating, filling, renaming and
closing files is system calls that release the GIL, so worker threads do them
while the decoder goes on. Consecutive entries are grouped into batches (a
future and a queue hop per 64 files instead of per file) that run in any
order on the workers.

A directory's own metadata (mode, times, chattr flags, read-only subvolume)
must come after everything written into it and below it, as in a sequential
extraction: ``dir_end`` queues it behind every batch started so far and the
directories are finished in the order of their ends (the archive's post-order),
each once all batches up to its own are done. Memory and open directory fds
stay bounded: at most ``2 x workers + 1`` batches are in flight and at most
``MAX_WAITING_DIRS`` directories wait to be finished; beyond that the decoder
waits.

After an error in a batch the entries after it are not written (each entry
still leaves no temporary file behind), the queue stops and the error is
raised on the decoding thread, the earliest in archive order first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Dir = TypeVar("Dir")

BATCH_ITEMS = 64
BATCH_BYTES = 1 << 20
MAX_WAITING_DIRS = 256
_NEVER = 1 << 62


class WriteQueue(Generic[Item, Dir]):
    """Runs ``write(item)`` on worker threads in batches and ``finish(dir)`` in order on
    the caller's thread once everything queued before the directory's end is done.

    With ``workers=0`` both run at once on the caller's thread (a sequential extraction).
    ``write_many(batch, stopped)``, if given, writes a worker's whole batch instead, in
    order, checking ``stopped()`` between items it writes apart (a batch made in one
    call to C holds the GIL once, not once per file: ``file_batch.py``).
    """

    def __init__(
        self,
        write: Callable[[Item], None],
        finish: Callable[[Dir], None],
        *,
        workers: int = 2,
        write_many: Callable[[Sequence[Item], Callable[[], bool]], None] | None = None,
    ) -> None:
        self._write = write
        self._write_many = write_many
        self._finish = finish
        self._workers = max(0, workers)
        self._pool = ThreadPoolExecutor(self._workers, "untar") if self._workers else None
        self._batch: list[Item] = []
        self._weight = 0
        self._items = 0  # entries in the batch (an item may hold several)
        self._running: deque[Future[None]] = deque()
        self._started = 0  # batches submitted
        self._done = 0  # batches 0 .. _done - 1 are complete
        self._waiting: deque[tuple[int, Dir]] = deque()  # (batches needed, directory)
        self._failed = _NEVER  # the first batch that failed: later ones write nothing
        self._raised = False  # an error was raised: nothing more is finished
        self._lock = threading.Lock()

    # -- the decoding thread ---------------------------------------------------------

    def add(self, item: Item, weight: int, entries: int = 1) -> None:
        """Queue ``write(item)``; ``weight`` is about the bytes it holds, ``entries``
        how many entries it writes."""
        if self._pool is None:
            self._write(item)
            return
        self._batch.append(item)
        self._weight += weight
        self._items += entries
        if self._items >= BATCH_ITEMS or self._weight >= BATCH_BYTES:
            self._submit()

    def dir_end(self, d: Dir) -> None:
        """Finish ``d`` once everything queued so far is written."""
        if self._pool is None:
            self._finish(d)
            return
        self._waiting.append((self._started + (1 if self._batch else 0), d))
        if len(self._waiting) > MAX_WAITING_DIRS:
            if self._batch:
                self._submit()
            while self._running and len(self._waiting) > MAX_WAITING_DIRS:
                self._reap(block=True)
        self._reap(block=False)

    def close(self) -> None:
        """Write everything queued and finish every directory that ended.

        Also after an error on the decoding thread: what came before it in the archive
        is written and finished, as a sequential extraction would have done. After an
        error in a batch, nothing more is finished and only the first error is raised.
        """
        if self._pool is None:
            return
        try:
            if self._batch:
                self._submit()
            while self._running:
                self._reap(block=True)
        finally:
            self._pool.shutdown(wait=True)

    def stop(self) -> None:
        """Stop at once (e.g. on KeyboardInterrupt): no further entry is written."""
        self._raised = True
        self._fail(-1)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self) -> None:
        batch, self._batch, self._weight, self._items = self._batch, [], 0, 0
        assert self._pool is not None
        self._running.append(self._pool.submit(self._run, self._started, batch))
        self._started += 1
        self._reap(block=len(self._running) > 2 * self._workers)

    def _reap(self, *, block: bool) -> None:
        """Collect finished batches (waiting for the oldest if ``block``), then finish
        the directories whose batches are all done."""
        while self._running and (block or self._running[0].done()):
            error = self._running.popleft().exception()
            block = False
            if self._raised:
                continue  # after the first error: only waiting for the workers
            if error is not None:
                self._raised = True
                self._fail(self._done)
                raise error
            self._done += 1
        while self._waiting and self._waiting[0][0] <= self._done and not self._raised:
            self._finish(self._waiting.popleft()[1])

    # -- workers ---------------------------------------------------------------------

    def _run(self, number: int, batch: list[Item]) -> None:
        if self._write_many is not None:
            try:
                self._write_many(batch, lambda: number > self._failed)
            except BaseException:
                self._fail(number)
                raise
            return
        for item in batch:
            if number > self._failed:
                return
            try:
                self._write(item)
            except BaseException:
                self._fail(number)
                raise

    def _fail(self, number: int) -> None:
        """Batches after ``number`` stop writing; earlier ones (earlier in the archive) go on."""
        with self._lock:
            self._failed = min(self._failed, number)

    def pending_dirs(self) -> list[Dir]:
        """Directories ended but not finished (their fds are the caller's to close)."""
        return [d for _, d in self._waiting]
