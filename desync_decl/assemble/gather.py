"""Writes of adjacent pieces of a file gathered into one ``pwritev``, or, where the
file takes them, one ``O_DIRECT`` write of the whole blocks among them.

An extraction writes chunk after chunk, end to end. Every buffered write to a
file takes its inode lock, and two workers writing one file wait for each other
there: measured on 2 cores, two processes writing 256 MiB as 64 KiB ``pwrite``
calls used 52-67 ms of CPU, as 1 MiB ``pwritev`` calls 31-34 ms. The buffers are
not copied; memory stays what the caller's batch of chunks holds.

A buffered write also copies every byte into the page cache (new pages to
allocate, often memory to reclaim first) and leaves dirty pages that the final
``fsync`` (or the kernel's flusher) must write back. Written with ``O_DIRECT``
from page-aligned staging buffers (``Direct``), the bytes go from there to the
device: 256 MiB took 8-19 ms of system time against 45-290 ms buffered
(``pwrite`` of 1 MiB pieces then ``fsync``, ext4 on the host disk and on a loop
device). The copy into the staging buffer costs about what the kernel's copy did
(extractions with memory to spare: the same CPU either way); what goes is the
page allocation and reclaim (when memory is full of cache, 0.1-0.6 s of system
time per GiB) and the writeback, which otherwise runs while we do or in the fsync.
Only whole aligned blocks go that way; the partial blocks at either end
of a run are written buffered (each block is written by one way only: the page
cache stays coherent), and so is everything where the file refuses ``O_DIRECT``
(tmpfs on older kernels, some network filesystems).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence

_IOV_MAX = 1024  # buffers per pwritev call: Linux refuses more (IOV_MAX)
_HELD = _IOV_MAX - 2  # pieces held: a flush may split two of them (the block edges)
# O_DIRECT offsets, lengths and memory are multiples of the device's logical block
# size: 512 or 4096 bytes on every disk in use, so 4096 (the page size) fits them all.
ALIGN = 4096
STAGE = 1 << 20  # bytes of a staging buffer
STAGES = 2  # staging buffers per process: one being written, one being filled
DIRECT_MIN = 64 * 1024  # smaller runs of whole blocks are not worth a second system call
# What a file says when it does not take an O_DIRECT write as made (alignment, support).
_REFUSED = {errno.EINVAL, errno.EOPNOTSUPP}


class Direct:
    """A second open file description of a file, with ``O_DIRECT``, written by one
    thread per process from ``STAGES`` staging buffers that the workers fill.

    An ``O_DIRECT`` write returns when the device has the bytes (about 1.3 ms per MiB
    on a loop device here): written by the worker itself, each of two workers spent
    0.25-0.30 s of a 256 MiB extraction waiting, its core idle. The writer thread
    waits instead (``pwrite`` releases the GIL) while the worker fills the next buffer.
    Nothing reads what went this way before the run ends: ``drain`` waits for it all
    and raises the first failure (a forked worker drains before it reports done).

    ``fd`` is None where the file cannot be opened so (not a regular file, no /proc, a
    filesystem that refuses) or once a write was refused: that write and everything
    after it are written buffered through the caller's descriptor ``target``.
    """

    def __init__(self, target: int, *, use: bool = True) -> None:
        self.target = target
        self.fd = _open_direct(target) if use else None
        self._lock = threading.Lock()
        self._pid = 0  # the process whose writer thread and buffers these are
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._todo: queue.SimpleQueue[tuple[memoryview, int, int] | None] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def write(self, parts: Iterable[memoryview], offset: int) -> None:
        """Write ``parts`` (whole blocks, at most ``STAGE`` bytes together) at the aligned
        ``offset``, in the background."""
        self._start()
        stage = self._free.get()
        self._raise_failure(stage)
        n = 0
        for part in parts:
            stage[n : n + len(part)] = part
            n += len(part)
        self._todo.put((stage, n, offset))

    def drain(self) -> None:
        """Wait for every write handed over; raise the first that failed."""
        if self._pid != os.getpid():
            return
        stages = [self._free.get() for _ in range(STAGES)]
        for stage in stages:
            self._free.put(stage)
        self._raise_failure()

    def close(self) -> None:
        """Drain and close. A failure of a write is raised by ``drain`` on the way to a
        finished run; here the caller is already failing (or has drained): not again."""
        with contextlib.suppress(Exception):
            self.drain()
        if self._pid == os.getpid() and self._thread is not None:
            self._todo.put(None)
            self._thread.join()  # gone before the caller may fork (``forked.can_fork``)
            self._thread = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _raise_failure(self, stage: memoryview | None = None) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            if stage is not None:
                self._free.put(stage)
            raise failure

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # after a fork: the parent's thread and buffers are not this process's
            self._pid = os.getpid()
            self._free, self._todo = queue.SimpleQueue(), queue.SimpleQueue()
            for _ in range(STAGES):
                self._free.put(memoryview(mmap.mmap(-1, STAGE)))
            self._thread = threading.Thread(target=self._writer, name="direct-writer", daemon=True)
            self._thread.start()

    def _writer(self) -> None:
        free, todo = self._free, self._todo
        while (item := todo.get()) is not None:
            stage, n, offset = item
            try:
                if self._failure is None:
                    self._write(stage[:n], offset)
            except BaseException as e:  # raised in the worker, at its next write or drain
                self._failure = e
            finally:
                free.put(stage)

    def _write(self, view: memoryview, offset: int) -> None:
        while view:
            if self.fd is not None:
                try:
                    written = os.pwrite(self.fd, view, offset)
                except OSError as e:
                    if e.errno not in _REFUSED:
                        raise
                    self._give_up()
                    continue
                if written % ALIGN:  # a short write off the block grid: the rest buffered
                    self._give_up()
                view, offset = view[written:], offset + written
            else:
                pwrite_all(self.target, view, offset)
                return

    def _give_up(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _open_direct(fd: int) -> int | None:
    o_direct = getattr(os, "O_DIRECT", 0)
    if not o_direct or not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | o_direct | os.O_CLOEXEC)
    except OSError:
        return None


class Gather:
    """Collects pieces written at adjacent offsets; ``flush`` writes them at once.

    A piece that does not continue the ones held sends those first. The caller
    flushes before anything reads what it wrote. With ``direct``, the whole
    aligned blocks of what is held go out through it, in the background: read
    only after its ``drain``.
    """

    def __init__(self, fd: int, direct: Direct | None = None) -> None:
        self.fd, self.direct = fd, direct
        self._pieces: list[bytes | memoryview] = []
        self._start = self._end = 0

    def write(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``, now or at the next ``flush``."""
        if self._pieces and (offset != self._end or len(self._pieces) >= _HELD):
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
        start, end = self._start, self._end
        low, high = -(-start // ALIGN) * ALIGN, end // ALIGN * ALIGN
        if self.direct is None or self.direct.fd is None or high - low < DIRECT_MIN:
            pwritev_all(self.fd, pieces, start)
            return
        run = _Run(pieces)
        pwritev_all(self.fd, run.take(low - start), start)
        for offset in range(low, high, STAGE):
            self.direct.write(run.take(min(STAGE, high - offset)), offset)
        pwritev_all(self.fd, run.take(end - high), high)


class _Run:
    """Consecutive bytes held in pieces, taken from the front as views (no copies)."""

    def __init__(self, pieces: Iterable[bytes | memoryview]) -> None:
        self._pieces: Iterator[bytes | memoryview] = iter(pieces)
        self._rest = memoryview(b"")

    def take(self, n: int) -> list[memoryview]:
        parts: list[memoryview] = []
        while n > 0:
            if not self._rest:
                self._rest = memoryview(next(self._pieces))
            part = self._rest[:n]
            self._rest = self._rest[len(part) :]
            parts.append(part)
            n -= len(part)
        return parts


def pwritev_all(fd: int, pieces: Sequence[bytes | memoryview], offset: int) -> None:
    """``pwritev`` of ``pieces`` at ``offset``, a short write completed piece by piece."""
    if not pieces:
        return
    done = os.pwritev(fd, pieces, offset)
    for piece in pieces:
        if done < len(piece):
            pwrite_all(fd, memoryview(piece)[done:], offset + done)
        done = max(0, done - len(piece))
        offset += len(piece)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` until every byte of ``data`` is written at ``offset``."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
