"""Crash-safe file writing: a temp file beside the target, fsync, then rename; and
opening files in directories others may write without following what they plant.

A reader (or a rerun after a crash or kill) sees either the old file or the
complete new one, never a half-written target. Temp files are made relative to
an open fd of their directory, with O_EXCL and O_NOFOLLOW, and readable by
their owner only until their data is complete.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from desync_decl.errors import DesyncError, file_error

_libc = ctypes.CDLL(None, use_errno=True)

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_NEW = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name_for(path: Path) -> Path:
    """A hidden, unique name in the same directory (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")


def current_umask() -> int:
    """The process's umask, read without setting it (``os.umask`` sets it for every
    thread at once, and other threads create files meanwhile)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # no /proc: the usual one


class AtomicFile:
    """A file that appears under its final name only on ``commit()``.

    The temp file is created beside ``path`` (relative to an fd of the directory,
    opened by ``open_parent`` so that no symlink planted where others can write is
    followed, or of ``dir_fd`` when ``path`` is a name in it) with only the owner's bits of
    ``mode``, so no one else can read a half-written file; ``commit()`` gives it
    ``mode`` less the umask (or what ``settle`` sets). Used as a context manager:
    leaving the block without ``commit()`` (an exception, a failed extraction)
    removes the temp file.
    """

    def __init__(
        self, path: str | os.PathLike, mode: int = 0o644, *, dir_fd: int | None = None
    ) -> None:
        self.path = Path(path)
        self.mode = mode & ~current_umask()
        self._dir = os.dup(dir_fd) if dir_fd is not None else open_parent(self.path)
        self.temp = temp_name_for(self.path)
        try:
            self.fd = os.open(self.temp.name, os.O_RDWR | _O_NEW, mode & 0o600, dir_fd=self._dir)
        except BaseException:
            os.close(self._dir)
            raise
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        write_all(self.fd, data)

    def commit(self, settle: Callable[[int], None] | None = None) -> os.stat_result:
        """Give the complete file its attributes, fsync it, rename it over the target,
        fsync the directory; the file's status once it has its name.

        ``settle(fd)`` sets the owner, mode (all of it: the file is still private)
        and xattrs the file must have before it gets its name; without it the file
        gets ``mode``.
        """
        try:
            if settle is None:
                os.fchmod(self.fd, self.mode)
            else:
                settle(self.fd)
            os.fsync(self.fd)
            os.replace(self.temp.name, self.path.name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
            self._done = True
            os.fsync(self._dir)
            return os.fstat(self.fd)
        finally:
            if self._done:
                self._close()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp.name, dir_fd=self._dir)
            self._close()

    def _close(self) -> None:
        os.close(self.fd)
        os.close(self._dir)

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


def write_atomic(
    path: str | os.PathLike,
    data: bytes | Iterable[bytes],
    mode: int = 0o644,
    *,
    dir_fd: int | None = None,
) -> None:
    """``data`` (bytes, or pieces of them: a large index is never joined) as ``path``."""
    with AtomicFile(path, mode, dir_fd=dir_fd) as f:
        for piece in (data,) if isinstance(data, bytes | bytearray | memoryview) else data:
            f.write(piece)
        f.commit()


SYMLINK_REFUSED = "a symlink in a directory others can write"  # the OSError's strerror


def _only_ours(st: os.stat_result) -> bool:
    """A directory no one but root and us can write: nothing in it was planted."""
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


def open_in(dir_fd: int, name: str, flags: int, mode: int = 0o600) -> int:
    """Open ``name`` in the directory ``dir_fd`` without following a symlink there,
    unless the directory is ``_only_ours`` (then whoever made the symlink could as well
    have written the file: ``/dev/disk/by-id/...`` for an in-place extract)."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        if not _only_ours(os.fstat(dir_fd)):
            raise OSError(errno.ELOOP, SYMLINK_REFUSED, name) from None
    return os.open(name, flags | os.O_CLOEXEC, mode, dir_fd=dir_fd)


MAX_SYMLINKS = 40  # followed while walking one path, as the kernel's ELOOP bound


def open_directory(path: str | os.PathLike, *, create: bool = False, mode: int = 0o755) -> int:
    """An fd of the directory ``path``, walked from ``/`` one component at a time so
    that no symlink in a directory others can write is followed (``_only_ours``:
    whoever made a symlink there could as well have written what it points to, so
    ``/lib -> usr/lib`` and ``/dev/disk/by-id/...`` still work). Missing components
    are made with ``mode`` when ``create``. Raises ``OSError`` (``ELOOP`` naming the
    symlink refused); ``..`` is taken textually, as ``os.path.abspath`` does.

    Opening ``os.path.dirname`` of a target by path would follow a symlink that a
    local user planted as one of its directories (``/shared/sub -> /root-only``),
    and every write below it would land where root alone may write."""
    parts = [p for p in os.path.abspath(path).split("/") if p]
    stack = [os.open("/", O_DIR)]
    names: list[str] = []  # the directories stack[1:] are, from /: a refusal names its link
    followed = 0
    try:
        while parts:
            name = parts.pop(0)
            try:
                fd = _open_component(stack[-1], name, create, mode)
            except _SymlinkSeen as link:
                followed += 1
                if followed > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks", str(path)) from None
                target = link.target.split("/")
                if link.target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                    names.clear()
                parts[:0] = [p for p in target if p and p != "."]
                continue
            except OSError as e:
                if _refused(e):
                    raise OSError(e.errno, e.strerror, "/" + "/".join([*names, name])) from None
                raise
            if fd is None:  # ".."
                if len(stack) > 1:
                    os.close(stack.pop())
                    names.pop()
                continue
            stack.append(fd)
            names.append(name)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def open_parent(path: str | os.PathLike, *, create: bool = False, mode: int = 0o777) -> int:
    """``open_directory`` of ``path``'s directory (``mode`` less the umask for those
    made when ``create``)."""
    return open_directory(os.path.dirname(os.path.abspath(path)), create=create, mode=mode)


def open_file(path: str | os.PathLike, flags: int, mode: int = 0o600) -> int:
    """``path`` opened with ``flags``: its directory by ``open_directory``, the file in it
    by ``open_in``, so no symlink someone else could have planted, on the way or as the
    file itself, is followed (a source of root's ``make`` planted as a link to a
    root-only file would otherwise be published)."""
    head, name = os.path.split(os.path.abspath(path))
    if not name:  # "/"
        return open_directory(head)
    dir_fd = open_directory(head)
    try:
        return open_in(dir_fd, name, flags, mode)
    except OSError as e:
        if _refused(e):
            raise OSError(e.errno, e.strerror, os.path.join(head, name)) from None
        raise
    finally:
        os.close(dir_fd)


def walk_error(path: object, error: OSError, action: str = "open") -> DesyncError:
    """One line for a failed ``open_directory``, ``open_parent`` or ``open_file`` of
    ``path``: a refused symlink is named by its path; a failed read as ``file_error``
    says it ("no such file"), other actions with the system's reason."""
    if _refused(error):
        return DesyncError(f"cannot {action} {path}: {error.filename} is {SYMLINK_REFUSED}")
    if action in ("open", "read"):
        return file_error(path, error, action)
    return DesyncError(f"cannot {action} {path}: {error.strerror or error}")


def _refused(error: OSError) -> bool:
    """The refusal of a symlink planted where others can write (``open_in``)."""
    return error.errno == errno.ELOOP and error.strerror == SYMLINK_REFUSED


class _SymlinkSeen(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


def _open_component(dir_fd: int, name: str, create: bool, mode: int) -> int | None:
    """``name`` in ``dir_fd`` opened as a directory without following a symlink
    (``_SymlinkSeen`` for one that may be followed); None for ``..``."""
    if name == ".":
        return os.dup(dir_fd)
    if name == "..":
        return None
    try:
        return os.open(name, O_DIR | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=dir_fd)
        return os.open(name, O_DIR | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR) or not _is_symlink(name, dir_fd):
            raise
        if not _only_ours(os.fstat(dir_fd)):
            raise OSError(errno.ELOOP, SYMLINK_REFUSED, name) from None
        raise _SymlinkSeen(os.readlink(name, dir_fd=dir_fd)) from None


def open_private_dir(path: Path, *, create: bool, parent_fd: int | None = None) -> int | None:
    """An fd of the directory ``path`` (opened as ``path.name`` in ``parent_fd`` when
    given), made 0700 when missing and ``create``; None when missing otherwise.

    Refused (DesyncError) when it is a symlink, is not ours or others can write it:
    whoever else can write there can plant a symlink to a file of ours or a forged
    record.
    """
    name = path if parent_fd is None else path.name
    flags = O_DIR | os.O_NOFOLLOW
    try:
        try:
            fd = os.open(name, flags, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                return None
            if parent_fd is None:
                path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, flags, dir_fd=parent_fd)
    except OSError as e:
        why = "it is a symlink" if _is_symlink(name, parent_fd) else e.strerror
        raise DesyncError(f"refusing {path}: {why}") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise DesyncError(
            f"refusing {path}: owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}"
            " (it must be ours and writable by no one else)"
        )
    return fd


def _is_symlink(name: str | os.PathLike, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


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


def find_holes(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """The holes of an open file between ``start`` and ``end``: ``(first, stop)`` byte
    ranges that read as zeros, in order (``SEEK_DATA``/``SEEK_HOLE``).

    A reader can take their content for granted instead of reading it: a hole of
    GiB costs nothing to find and nothing to skip. Where the filesystem or device
    cannot tell (``EINVAL``: block devices, old filesystems) the answer is "no holes",
    which is always true. The file offset is left where it was.
    """
    holes: list[tuple[int, int]] = []
    where = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        pos = start
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no data after pos, the rest is a hole
                    return []
                data = end
            if data > pos:
                holes.append((pos, min(data, end)))
            if data >= end:
                break
            pos = os.lseek(fd, data, os.SEEK_HOLE)
    finally:
        os.lseek(fd, where, os.SEEK_SET)
    return holes


def within_holes(holes: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside one of ``holes`` (sorted, as ``find_holes``
    returns them), so its bytes are known to be zeros without reading them."""
    i = bisect.bisect_right(holes, (start, _NO_END)) - 1
    return i >= 0 and holes[i][0] <= start and end <= holes[i][1]


_NO_END = 1 << 64  # sorts after any hole starting at the same offset
