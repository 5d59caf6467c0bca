"""What the mounted filesystems share: read-only opens, a reader ``Stream`` per
handle, reads of a ``Source`` with EIO (and a report) for any that fails, counts."""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections.abc import Callable
from typing import Protocol

from desync_decl.errors import DesyncError
from desync_decl.mount.fuse import Filesystem
from desync_decl.ops.blobreader import BlobReader, Stream


class Source(Protocol):
    """Where the indexed stream's bytes come from: a ``BlobReader`` or ``CopyOnRead``."""

    def read(self, offset: int, size: int, stream: Stream | None = None) -> bytes: ...


def no_report(message: str) -> None:
    pass


class SourceFilesystem(Filesystem):
    def __init__(
        self,
        reader: BlobReader,
        source: Source,
        *,
        report: Callable[[str], None] = no_report,
        on_mount: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(on_mount=on_mount)
        self.reader, self.source = reader, source
        self._report = report
        self._handles: dict[int, Stream] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self.reads = self.bytes_read = self.failed_reads = 0

    def _open_handle(self, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise OSError(errno.EROFS, "read-only file system")
        with self._lock:
            fh = next(self._numbers)
            self._handles[fh] = self.reader.stream()
        return fh

    def _read(self, what: str, offset: int, size: int, fh: int) -> bytes:
        """``size`` bytes of the stream at ``offset``, for a read of ``what``."""
        try:
            data = self.source.read(offset, size, self._handles.get(fh))
        except DesyncError as e:
            with self._lock:
                self.failed_reads += 1
            self._report(f"cannot read {what}: {e}")
            raise OSError(errno.EIO, "input/output error") from None
        with self._lock:
            self.reads += 1
            self.bytes_read += len(data)
        return data

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
        return 0
