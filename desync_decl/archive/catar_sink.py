"""A catar stream written to a file descriptor by a thread of its own.

``tar`` walks the tree on the calling thread: stat, open, xattrs, with Python
between the system calls. Writing the archive is system calls only, which
release the GIL: ``writev`` for runs of small pieces (entry headers, file names,
goodbye tables) and, for payloads, ``sendfile`` from the file to the archive
(``DeferredPayload.copy_to``: page cache to page cache, never through Python).
Done here, the copying runs on the second core while the walk goes on, and the
kernel is asked to start writing back every ``WRITEBACK_EVERY`` bytes, so the
caller's final fsync has little left to wait for.

Pieces travel in batches (one queue hop per ``BATCH_BYTES`` of small pieces or
``BATCH_PAYLOADS`` payloads), at most ``QUEUED`` batches wait: memory and open
file descriptors stay bounded. The first error stops the writing; it is raised on
the walking thread at its next ``put`` or at ``close``, and every payload not
copied is closed.
"""

from __future__ import annotations

import os
import queue
import threading
from types import TracebackType

from desync_decl.formats.catar.encoder import Buffer, DeferredPayload, Piece
from desync_decl.fsutil import start_writeback, write_all

BATCH_BYTES = 1 << 20  # of pieces and payloads
BUFFER_BYTES = 2 << 20  # payloads read by the writer gathered before a writev
BATCH_PAYLOADS = 64
QUEUED = 4
WRITEBACK_EVERY = 32 << 20
_IOV_MAX = 512  # buffers per writev (Linux allows 1024)
_BUFFERS = (bytes, bytearray, memoryview)  # a piece that is bytes, not a DeferredPayload


class CatarSink:
    """Writes pieces to ``fd`` in order on a background thread. A context manager:
    leaving it normally waits for every byte, leaving it by an exception drops the rest.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._batch: list[Piece] = []
        self._batch_bytes = 0
        self._batch_payloads = 0
        self._queue: queue.Queue[list[Piece] | None] = queue.Queue(QUEUED)
        self._error: BaseException | None = None
        self._buffer = memoryview(bytearray(BUFFER_BYTES))  # the writer thread's
        self._thread = threading.Thread(target=self._run, name="catar-writer", daemon=True)
        self._thread.start()

    # -- the walking thread ----------------------------------------------------------

    def put(self, piece: Piece) -> None:
        self._batch.append(piece)
        self._batch_bytes += len(piece)
        if not isinstance(piece, _BUFFERS):
            self._batch_payloads += 1
        if self._error is not None:
            self._stop()
        if self._batch_bytes >= BATCH_BYTES or self._batch_payloads >= BATCH_PAYLOADS:
            self._send()

    def close(self) -> None:
        """Wait until everything put is written; raise the writer's error if any."""
        self._send()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop what is not written yet (closing its payloads) and stop the writer."""
        if self._error is None:
            self._error = _Aborted()
        _close_payloads(self._batch)
        self._batch = []
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _send(self) -> None:
        if self._batch:
            self._queue.put(self._batch)
            self._batch, self._batch_bytes, self._batch_payloads = [], 0, 0

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
                _close_payloads(batch)
                continue
            try:
                written += self._write(batch)
            except BaseException as e:  # raised on the walking thread
                self._error = e
                continue
            if written >= writeback_at:
                writeback_at = written + WRITEBACK_EVERY
                start_writeback(self._fd)

    def _write(self, batch: list[Piece]) -> int:
        """One batch: small pieces and payloads that fit gathered in ``_buffer`` and
        written with one writev; a payload larger than the buffer copied through it.
        After an error every payload of the batch not read yet is closed."""
        try:
            return self._write_batch(batch)
        except BaseException:
            _close_payloads(batch)  # closing one already read does nothing
            raise

    def _write_batch(self, batch: list[Piece]) -> int:
        buffer = self._buffer
        run: list[Buffer] = []
        used = total = 0
        for piece in batch:
            if isinstance(piece, _BUFFERS):
                run.append(piece)
            else:
                size = len(piece)
                if size >= len(buffer) - used:
                    total += _writev_all(self._fd, run)
                    run, used = [], 0
                if size < len(buffer):
                    piece.read_into(buffer[used:])
                    run.append(buffer[used : used + size])
                    used += size
                else:
                    piece.copy_to(self._fd, buffer)
                    total += size
            if len(run) >= _IOV_MAX:
                total += _writev_all(self._fd, run)
                run, used = [], 0
        return total + _writev_all(self._fd, run)


class _Aborted(Exception):
    """The walk stopped: nothing more is written."""


def _writev_all(fd: int, buffers: list[Buffer]) -> int:
    """Write every buffer in order (writev may write fewer bytes than asked)."""
    if not buffers:
        return 0
    total = sum(len(b) for b in buffers)
    done = os.writev(fd, buffers)
    if done < total:
        write_all(fd, memoryview(b"".join(buffers))[done:])
    return total


def _close_payloads(pieces: list[Piece]) -> None:
    for piece in pieces:
        if not isinstance(piece, _BUFFERS):
            payload: DeferredPayload = piece
            payload.close()
