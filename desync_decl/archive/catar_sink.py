"""A catar stream written to a file descriptor by a thread of its own.

``tar`` walks the tree on the calling thread: stat, open, xattrs, with Python
between the system calls. Writing the archive is system calls only: the pieces
(entry headers, file names, goodbye tables) and every regular file's payload,
handed over as its open descriptor, go in batches to ``output_batch``, which reads
the files and writes everything with ``writev`` in C, without the GIL. Done here,
the reading and copying run on the second core while the walk goes on, and the
kernel is asked to start writing back every ``WRITEBACK_EVERY`` bytes, so the
caller's final fsync has little left to wait for. That request runs on a thread of
its own (``_Writeback``): ``sync_file_range`` waits while the disk's queue is full,
and on the writer it stalled the copying for 5-70 ms a call (/usr/share: 15 calls).

Pieces travel in batches (one queue hop per ``BATCH_BYTES`` of pieces and payloads
or ``BATCH_PAYLOADS`` files), at most ``QUEUED`` batches wait: memory and open file
descriptors stay bounded. The first error stops the writing; it is raised on the
walking thread at its next ``put`` or at ``close``, and every file not copied is
closed.
"""

from __future__ import annotations

import queue
import threading
from types import TracebackType

from desync_decl.formats.catar.encoder import EncodedRun, Piece
from desync_decl.fsutil import start_writeback
from desync_decl.output_batch import OutputBatch

BATCH_BYTES = 1 << 20  # of pieces and payloads
BUFFER_BYTES = 2 << 20  # payloads read by the writer gathered before a writev
BATCH_PAYLOADS = 64  # open files a batch holds
QUEUED = 4
WRITEBACK_EVERY = 32 << 20
_BUFFERS = (bytes, bytearray, memoryview)  # a piece that is bytes, not a DeferredPayload


class CatarSink:
    """Writes pieces to ``fd`` in order on a background thread. A context manager:
    leaving it normally waits for every byte, leaving it by an exception drops the rest.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._batch = OutputBatch()
        self._batch_bytes = 0
        self._queue: queue.Queue[OutputBatch | None] = queue.Queue(QUEUED)
        self._error: BaseException | None = None
        self._buffer = bytearray(BUFFER_BYTES)  # the writer thread's
        self._writeback = _Writeback(fd)
        self._thread = threading.Thread(target=self._run, name="catar-writer", daemon=True)
        self._thread.start()

    # -- the walking thread ----------------------------------------------------------

    def put(self, piece: Piece) -> None:
        batch = self._batch
        if isinstance(piece, _BUFFERS):
            batch.add_bytes(piece)
        elif isinstance(piece, EncodedRun):
            batch.add_run(*piece.take())
        else:
            batch.add_file(piece.take(), len(piece), piece.where)
        self._batch_bytes += len(piece)
        if self._error is not None:
            self._stop()
        if self._batch_bytes >= BATCH_BYTES or batch.files >= BATCH_PAYLOADS:
            self._send()

    def close(self) -> None:
        """Wait until everything put is written; raise the writer's error if any."""
        self._send()
        self._queue.put(None)
        self._thread.join()
        self._writeback.wait()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop what is not written yet (closing its payloads) and stop the writer."""
        if self._error is None:
            self._error = _Aborted()
        self._batch.close()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._writeback.wait()

    def _send(self) -> None:
        if len(self._batch):
            self._queue.put(self._batch)
            self._batch, self._batch_bytes = OutputBatch(), 0

    def _stop(self) -> None:
        error = self._error
        self.abort()
        assert error is not None
        raise error

    def __enter__(self) -> CatarSink:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if typ is None:
            self.close()
        else:
            self.abort()

    # -- the writing thread ----------------------------------------------------------

    def _run(self) -> None:
        written = 0
        writeback_at = WRITEBACK_EVERY
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                batch.close()
                continue
            try:
                written += batch.write(self._fd, self._buffer)
            except BaseException as e:  # raised on the walking thread
                self._error = e
                continue
            if written >= writeback_at:
                writeback_at = written + WRITEBACK_EVERY
                self._writeback.start()


class _Writeback:
    """``start_writeback`` of ``fd`` on a thread of its own, unless one still runs (the
    next request covers what this one would have). Never fails: the caller's fsync
    reports what writing back met. ``wait`` ends the thread (a process forks only
    without other threads: ``forked.can_fork``)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._running = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._running.acquire(blocking=False):
            self._thread = threading.Thread(target=self._run, name="catar-writeback", daemon=True)
            self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            start_writeback(self._fd)
        finally:
            self._running.release()


class _Aborted(Exception):
    """The walk stopped: nothing more is written."""
