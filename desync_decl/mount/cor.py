"""Copy-on-read: what a mount reads is kept in a local sparse file (``--cor-file``).

As in desync: the file has the blob's length; a read first copies every chunk
it overlaps that is not there yet into the file (null chunks never: the file's
holes already read as zeros), marks it, then answers from the file. A chunk is
marked only once it is written, so a failed fetch never leaves zeros that
later reads would trust (desync #339).

The marks can be saved (``--cor-state-save``): one bit per chunk, chunk ``i``
in byte ``i // 8`` as ``1 << (i % 8)``. A saved state is used again at start
only when it has the right length and the file has the blob's length;
otherwise the file starts empty. ``preload`` copies the chunks another state
file marks (``--cor-state-init``) in the background.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from desync_decl.errors import DesyncError
from desync_decl.ops.blobreader import BlobReader, Stream


class CopyOnRead:
    def __init__(self, reader: BlobReader, path: str, *, state: str | None = None) -> None:
        self.reader, self.path, self.state = reader, path, state
        n = len(reader.index)
        self._marks = bytearray((n + 7) // 8)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._preloading: threading.Thread | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise DesyncError(f"cannot open {path}: {e.strerror}") from None
        saved = _read_marks(state, n) if state else None
        try:
            if saved is not None and os.fstat(self._fd).st_size == reader.length:
                self._marks[:] = saved
            else:  # start empty: old data must not be taken for chunks
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, reader.length)
        except OSError as e:
            os.close(self._fd)
            raise DesyncError(f"cannot prepare {path}: {e.strerror}") from None

    def read(self, offset: int, size: int, stream: Stream | None = None) -> bytes:
        chunks = self.reader.span(offset, size)
        if not chunks:
            return b""
        missing = [i for i in chunks if not self.has(i)]
        if missing:
            self.reader.fetch_ahead(chunks, stream)
            for i in missing:
                self._copy(i)
        try:
            return os.pread(self._fd, min(size, self.reader.length - offset), offset)
        except OSError as e:
            raise DesyncError(f"cannot read {self.path}: {e.strerror}") from None

    def has(self, i: int) -> bool:
        return bool(self._marks[i >> 3] & (1 << (i & 7)))

    def copied(self) -> int:
        """Chunks marked as present in the file."""
        with self._lock:
            return sum(bin(b).count("1") for b in self._marks)

    def preload(
        self, path: str, *, workers: int, report: Callable[[str], None] = lambda _: None
    ) -> None:
        """Copy the chunks ``path`` marks in the background (stopped by ``close``)."""
        wanted = _read_marks(path, len(self.reader.index))
        if wanted is None:
            raise DesyncError(f"{path} is not a state file for this index")
        todo = [i for i in range(len(self.reader.index)) if wanted[i >> 3] & (1 << (i & 7))]

        def one(i: int) -> None:
            if self._stop.is_set():
                return
            try:
                self._copy(i)
            except DesyncError as e:
                report(f"cannot preload chunk {i}: {e}")

        def run() -> None:
            with ThreadPoolExecutor(max(1, workers), "desync-cor-init") as pool:
                for _ in pool.map(one, todo):
                    pass

        self._preloading = threading.Thread(target=run, name="desync-cor-init", daemon=True)
        self._preloading.start()

    def save(self) -> None:
        """Write the marks to the state file (temp file, then rename)."""
        if self.state is None:
            return
        with self._lock:
            marks = bytes(self._marks)
        tmp = f"{self.state}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(marks)
            os.replace(tmp, self.state)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise DesyncError(f"cannot write {self.state}: {e.strerror}") from None

    def close(self) -> None:
        self._stop.set()
        if self._preloading is not None:
            self._preloading.join()
        os.close(self._fd)

    def _copy(self, i: int) -> None:
        c = self.reader.index.chunk(i)
        if not self.reader.is_null(c):
            data = memoryview(self.reader.chunk(i))
            try:
                written = 0
                while written < len(data):
                    written += os.pwrite(self._fd, data[written:], c.start + written)
            except OSError as e:
                raise DesyncError(f"cannot write {self.path}: {e.strerror}") from None
        with self._lock:
            self._marks[i >> 3] |= 1 << (i & 7)


def _read_marks(path: str, chunks: int) -> bytearray | None:
    """A state file's marks for ``chunks`` chunks, or None when it is missing or has
    the wrong length; bits past the last chunk are ignored."""
    size = (chunks + 7) // 8
    try:
        with open(path, "rb") as f:
            data = f.read(size + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DesyncError(f"cannot read {path}: {e.strerror}") from None
    if len(data) != size:
        return None
    marks = bytearray(data)
    if chunks % 8:
        marks[-1] &= (1 << (chunks % 8)) - 1
    return marks
