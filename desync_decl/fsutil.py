"""Crash-safe file writing: a temp file beside the target, fsync, then rename.

A reader (or a rerun after a crash or kill) sees either the old file or the
complete new one, never a half-written target.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
from pathlib import Path
from types import TracebackType

_libc = ctypes.CDLL(None, use_errno=True)


def temp_name_for(path: Path) -> Path:
    """A hidden, unique name in the same directory (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


class AtomicFile:
    """A file that appears under its final name only on ``commit()``.

    Used as a context manager: leaving the block without ``commit()``
    (an exception, a failed extraction) removes the temp file.
    """

    def __init__(self, path: str | os.PathLike, mode: int = 0o644) -> None:
        self.path = Path(path)
        self.temp = temp_name_for(self.path)
        self.fd = os.open(self.temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        write_all(self.fd, data)

    def commit(self) -> None:
        """fsync the data, rename over the target, fsync the directory."""
        os.fsync(self.fd)
        os.close(self.fd)
        self._done = True
        os.replace(self.temp, self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            os.close(self.fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_SEND_MAX = 1 << 30  # bytes per sendfile call (the kernel stops near 2 GiB anyway)
_SENDFILE_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP)


def send_file(dst: int, src: int, offset: int, count: int) -> int:
    """Copy up to ``count`` bytes of ``src`` from ``offset`` to ``dst``'s position, in
    the kernel (sendfile); where the pair cannot, through a buffer. The bytes copied:
    0 at the end of ``src``, fewer than asked when a call stops short."""
    try:
        return os.sendfile(dst, src, offset, min(count, _SEND_MAX))
    except OSError as e:
        if e.errno not in _SENDFILE_UNSUPPORTED:
            raise
    block = os.pread(src, min(count, 1 << 20), offset)
    write_all(dst, block)
    return len(block)


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    with AtomicFile(path, mode) as f:
        f.write(data)
        f.commit()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike) -> None:
    """Flush every dirty file of the filesystem holding ``path`` (one call, not one per file).

    Stores write thousands of chunk files; one syncfs before the index that
    references them is written costs far less than an fsync per chunk.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err or errno.EIO), str(path))
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting.

    Called as an extraction goes, it overlaps disk writes with the work still to
    do, so the final fsync has little left to wait for. A no-op where the call
    does not exist; a failure here is harmless (the fsync still reports errors).
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_linkat = getattr(_libc, "linkat", None)
if _linkat is not None:
    _linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]


def link_fd(fd: int, path: str, dir_fd: int = _AT_FDCWD) -> None:
    """Give the unnamed file ``fd`` (opened with O_TMPFILE) the name ``path`` (relative
    to the directory ``dir_fd`` when given).

    ``linkat(fd, "", dir_fd, path, AT_EMPTY_PATH)``: fails with EEXIST rather
    than replace, and needs a kernel that allows it (Linux >= 6.10 for any user,
    older ones for root); /proc/self/fd links do not work in every sandbox.
    """
    if _linkat is None:
        raise OSError(errno.ENOSYS, "linkat is not available")
    if _linkat(fd, b"", dir_fd, os.fsencode(path), _AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)


_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_CANNOT_FALLOCATE = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def preallocate(fd: int, length: int, offset: int = 0) -> None:
    """Reserve the blocks of a range about to be written in full (Linux ``fallocate``).

    A full disk is then reported before any work is done, and ext4 skips its
    per-block delayed-allocation bookkeeping on every write (measured: about 7%
    of an extraction's time). Filesystems that cannot are left alone; unlike
    ``posix_fallocate`` this never falls back to writing zeros.
    """
    if _fallocate is None or length <= 0:
        return
    if _fallocate(fd, 0, offset, length) != 0:
        err = ctypes.get_errno()
        if err not in _CANNOT_FALLOCATE:
            raise OSError(err, os.strerror(err))


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Turn a range into a hole that reads as zeros and holds no blocks.

    False when the filesystem or device cannot (the caller then writes zeros).
    """
    if _fallocate is None or length <= 0:
        return length <= 0
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        if err in _CANNOT_FALLOCATE:
            return False
        raise OSError(err, os.strerror(err))
    return True
