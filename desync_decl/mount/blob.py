"""A blob index mounted as one read-only file, ``<mountpoint>/<name>`` (``mount-index``).

Like desync: mode 0444, the blob's size, the mount time as mtime, an otherwise
empty directory, pages kept in the kernel's cache (the content never changes).
Each open handle reads through a ``Stream`` of one ``BlobReader``, so a
sequential reader gets its next chunks prefetched while random readers share
the chunk cache.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable

from desync_decl.errors import DesyncError
from desync_decl.mount.base import Source, SourceFilesystem, no_report
from desync_decl.ops.blobreader import BlobReader


class BlobFilesystem(SourceFilesystem):
    """FUSE operations for a directory holding one file: the blob."""

    def __init__(
        self,
        reader: BlobReader,
        name: str,
        *,
        source: Source | None = None,
        report: Callable[[str], None] = no_report,
        on_mount: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(reader, source or reader, report=report, on_mount=on_mount)
        if not name or "/" in name or name in (".", ".."):
            raise DesyncError(f"cannot mount a file named '{name}'")
        self.name, self._path = name, "/" + name
        self._time = time.time_ns()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        times = {"st_atime": self._time, "st_mtime": self._time, "st_ctime": self._time}
        ids = {"st_uid": os.getuid(), "st_gid": os.getgid()}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, **times, **ids}
        if path == self._path:
            size = self.reader.length
            return {
                "st_mode": stat.S_IFREG | 0o444,
                "st_nlink": 1,
                "st_size": size,
                "st_blocks": (size + 511) // 512,
                **times,
                **ids,
            }
        raise OSError(errno.ENOENT, "no such file")

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise OSError(errno.ENOTDIR, "not a directory")
        return [".", "..", self.name]

    def open(self, path: str, flags: int) -> int:
        if path != self._path:
            raise OSError(errno.ENOENT, "no such file")
        return self._open_handle(flags)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self._read(f"{self.name} at {offset}+{size}", offset, size, fh)
