"""Writes of adjacent pieces of a file gathered into one ``pwritev``.

An extraction writes chunk after chunk, end to end. Every buffered write to a
file takes its inode lock, and two workers writing one file wait for each other
there: measured on 2 cores, two processes writing 256 MiB as 64 KiB ``pwrite``
calls used 52-67 ms of CPU, as 1 MiB ``pwritev`` calls 31-34 ms. The buffers are
not copied; memory stays what the caller's batch of chunks holds.
"""

from __future__ import annotations

import os

_IOV_MAX = 1024  # buffers per pwritev call: Linux refuses more (IOV_MAX)


class Gather:
    """Collects pieces written at adjacent offsets; ``flush`` writes them at once.

    A piece that does not continue the ones held sends those first. The caller
    flushes before anything reads what it wrote.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pieces: list[bytes | memoryview] = []
        self._start = self._end = 0

    def write(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``, now or at the next ``flush``."""
        if self._pieces and (offset != self._end or len(self._pieces) >= _IOV_MAX):
            self.flush()
        if not self._pieces:
            self._start = self._end = offset
        self._pieces.append(data)
        self._end += len(data)

    def flush(self) -> None:
        """Write what is held (all of it: a short write is completed piece by piece)."""
        pieces, self._pieces = self._pieces, []
        if not pieces:
            return
        done = os.pwritev(self.fd, pieces, self._start)
        offset = self._start
        for piece in pieces:
            if done < len(piece):
                pwrite_all(self.fd, memoryview(piece)[done:], offset + done)
            done = max(0, done - len(piece))
            offset += len(piece)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` until every byte of ``data`` is written at ``offset``."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
