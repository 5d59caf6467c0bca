"""Extract decoded catar nodes into a directory, never writing outside it.

Every operation is relative to an open directory fd and names exactly one path
component (the decoder refuses anything else, and this module checks again);
directories are entered with O_NOFOLLOW, so a symlink, whether the archive
planted it or it was already in the target, is never followed. Files,
symlinks and special nodes are made under a temporary name, get their
metadata, then are renamed over the final name: a failed extraction leaves no
half-written file under a final name, and an existing symlink or hard link at
that name is replaced, never written through. Directory metadata (owner, mode,
times) is applied when the directory is complete, so read-only directories
can be filled.

Directories are made on the decoding thread; files, symlinks and special
nodes are written by worker threads (write_queue.py), which finishes each
directory only after everything below it is written.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import secrets
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from desync_decl.archive import acl as posix_acl
from desync_decl.archive import fsattrs
from desync_decl.archive.write_queue import WriteQueue
from desync_decl.errors import DesyncError
from desync_decl.formats import flags as ff
from desync_decl.formats.catar import features as ft
from desync_decl.formats.catar import records
from desync_decl.formats.catar.decoder import Decoder, DirEnd, Node
from desync_decl.formats.catar.entry import Entry
from desync_decl.fsutil import write_all

log = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_SUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)


class UntarError(DesyncError):
    """The archive asks for something that would leave or damage the target."""


@dataclass(frozen=True)
class WriteOptions:
    same_owner: bool = True  # owners (as root) and xattrs from the archive
    same_permissions: bool = True  # modes and ACLs from the archive (else umask defaults)


@dataclass
class UntarStats:
    dirs: int = 0
    files: int = 0
    symlinks: int = 0
    devices: int = 0
    others: int = 0  # fifos and sockets
    bytes: int = 0

    def count(self, fmt: int, size: int = 0) -> None:
        """One node of type ``fmt`` (``stat.S_IF*``); ``size``: a file's bytes."""
        if fmt == stat.S_IFDIR:
            self.dirs += 1
        elif fmt == stat.S_IFREG:
            self.files += 1
            self.bytes += size
        elif fmt == stat.S_IFLNK:
            self.symlinks += 1
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            self.devices += 1
        else:
            self.others += 1


@dataclass
class _Dir:
    fd: int
    entry: Entry
    path: str


@dataclass
class _Writer:
    target: str
    options: WriteOptions
    stats: UntarStats = field(default_factory=UntarStats)
    umask: int = 0o022
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    # temporary names: unguessable per extraction, then counted (no getrandom per file)
    temp_prefix: str = field(default_factory=lambda: f".#untar.{secrets.token_hex(8)}.")
    temp_numbers: Iterator[int] = field(default_factory=itertools.count)

    def temp_name(self) -> str:
        return f"{self.temp_prefix}{next(self.temp_numbers)}"

    def show(self, path: tuple[bytes, ...]) -> str:
        return os.path.join(self.target, *map(os.fsdecode, path))

    @contextlib.contextmanager
    def errors(self, where: Node | str) -> Iterator[None]:
        """A system call's failure as one line that names the node (or path)."""
        try:
            yield
        except OSError as e:
            shown = self.show(where.path) if isinstance(where, Node) else where
            raise DesyncError(f"cannot extract {shown}: {e.strerror}") from None

    def write_job(self, job: _Job) -> None:
        """A file (its contents in memory), symlink or special node, on a worker thread."""
        parent, name, node, data = job
        with self.errors(node):
            if data is None:
                self.other(parent, name, node)
            else:
                self.file(parent, name, node, data)

    def close_directory(self, d: _Dir) -> None:
        try:
            with self.errors(d.path):
                self.finish_directory(d)
        finally:
            os.close(d.fd)

    # -- per node ------------------------------------------------------------------

    def directory(self, parent: _Dir, name: bytes, node: Node) -> _Dir:
        where = self.show(node.path)
        try:
            self._mkdir(parent.fd, name, node.entry)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise UntarError(f"refusing to extract into {where}: it is a symlink") from None
            if not stat.S_ISDIR(st.st_mode):
                raise UntarError(
                    f"cannot extract directory {where}: a file is in the way"
                ) from None
        try:
            fd = os.open(name, _O_DIR, dir_fd=parent.fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UntarError(f"refusing to extract into {where}: not a directory") from None
            raise
        self._make_writable(fd)
        return _Dir(fd, node.entry, where)

    def _mkdir(self, parent_fd: int, name: bytes, e: Entry) -> None:
        """A directory, or a btrfs subvolume where the archive had one (and btrfs is here)."""
        if e.flags & ff.WITH_SUBVOLUME:
            if os.path.lexists(b"/proc/self/fd/%d/%s" % (parent_fd, name)):
                raise FileExistsError(errno.EEXIST, "exists")
            if fsattrs.create_subvolume(parent_fd, name):
                return
            log.warning("not on btrfs: subvolume %s made a plain directory", os.fsdecode(name))
        os.mkdir(name, 0o700, dir_fd=parent_fd)

    def _make_writable(self, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        if not self.is_root and mode & 0o700 != 0o700:
            os.fchmod(fd, (mode & 0o7777) | 0o700)

    def file(self, parent: _Dir, name: bytes, node: Node, data: Iterable[bytes]) -> None:
        tmp = self.temp_name()
        fd = os.open(tmp, _O_NEW, 0o600, dir_fd=parent.fd)
        renamed = False
        try:
            for block in data:
                write_all(fd, block)
            self._metadata(fd, node.entry, is_dir=False)
            self._rename(parent, tmp, name, node)
            renamed = True
            self._chattr(fd, node.entry)
        finally:
            os.close(fd)
            if not renamed:
                _unlink(parent.fd, tmp)

    def other(self, parent: _Dir, name: bytes, node: Node) -> None:
        """Symlinks, devices, fifos and sockets."""
        e = node.entry
        fmt = stat.S_IFMT(e.mode)
        if fmt in (stat.S_IFCHR, stat.S_IFBLK) and not self.is_root:
            raise UntarError(f"refusing to create device node {self.show(node.path)}: needs root")
        tmp = self.temp_name()
        if fmt == stat.S_IFLNK:
            os.symlink(node.target, tmp, dir_fd=parent.fd)
        elif fmt == stat.S_IFIFO:
            os.mkfifo(tmp, 0o600, dir_fd=parent.fd)
        else:
            os.mknod(tmp, fmt | 0o600, node.rdev, dir_fd=parent.fd)
        try:
            self._path_metadata(parent.fd, tmp, e, symlink=fmt == stat.S_IFLNK)
            self._rename(parent, tmp, name, node)
        except BaseException:
            _unlink(parent.fd, tmp)
            raise

    def _rename(self, parent: _Dir, tmp: str, name: bytes, node: Node) -> None:
        try:
            os.rename(tmp, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise UntarError(
                    f"cannot extract {self.show(node.path)}: a directory is in the way"
                ) from None
            raise

    def finish_directory(self, d: _Dir) -> None:
        self._metadata(d.fd, d.entry, is_dir=True)
        self._chattr(d.fd, d.entry)
        if d.entry.flags & ff.WITH_SUBVOLUME_RO and self.options.same_permissions:
            fsattrs.set_subvolume_read_only(d.fd)  # last: nothing can change it after this

    # -- metadata ------------------------------------------------------------------

    def _metadata(self, fd: int, e: Entry, *, is_dir: bool) -> None:
        """Owner, mode, xattrs, ACLs, project id and times of an open file or directory."""
        flags, opt = e.feature_flags, self.options
        if self._chown(e):
            os.fchown(fd, e.uid, e.gid)
        mode = self._mode(e, is_dir)
        os.fchmod(fd, mode)
        if opt.same_owner:
            for name, value in e.xattrs:
                self._setxattr(fd, name, value)
            if e.selinux is not None:
                self._setxattr(fd, b"security.selinux", e.selinux + b"\0")
            if e.fcaps is not None:
                self._setxattr(fd, b"security.capability", e.fcaps)
        if opt.same_permissions and e.acl:
            self._acls(fd, e, mode, is_dir)
        if e.quota_projid:
            fsattrs.set_project_id(fd, e.quota_projid)
        if flags & _TIME_FLAGS:
            os.utime(fd, ns=(e.mtime, e.mtime))

    def _chown(self, e: Entry) -> bool:
        """Owners are restored as root only (like GNU tar) and when the archive has them."""
        has_ids = e.feature_flags & (ft.WITH_16BIT_UIDS | ft.WITH_32BIT_UIDS)
        return bool(self.options.same_owner and self.is_root and has_ids)

    def _mode(self, e: Entry, is_dir: bool) -> int:
        if self.options.same_permissions:
            return e.mode & 0o7777
        return (0o777 if is_dir else 0o666) & ~self.umask

    def _acls(self, fd: int, e: Entry, mode: int, is_dir: bool) -> None:
        try:
            access = posix_acl.access_xattr(e.acl, mode)
            default = posix_acl.default_xattr(e.acl) if is_dir else None
        except struct.error as err:  # ids or bits that do not fit
            raise UntarError(f"invalid ACL in the archive: {err}") from None
        if access is not None:
            self._setxattr(fd, posix_acl.ACCESS.encode(), access)
        if default is not None:
            self._setxattr(fd, posix_acl.DEFAULT.encode(), default)

    def _path_metadata(self, dir_fd: int, name: str, e: Entry, *, symlink: bool) -> None:
        """Metadata of a node made under ``name`` in ``dir_fd``, never following it."""
        flags, opt = e.feature_flags, self.options
        if self._chown(e):
            os.chown(name, e.uid, e.gid, dir_fd=dir_fd, follow_symlinks=False)
        if not symlink:  # a fresh fifo/socket/device we just made under a random name
            os.chmod(name, self._mode(e, False), dir_fd=dir_fd)
        if opt.same_owner:
            path = b"/proc/self/fd/%d/%s" % (dir_fd, name.encode())
            for xname, value in e.xattrs:
                self._setxattr(path, xname, value)
        if flags & _TIME_FLAGS:
            os.utime(name, ns=(e.mtime, e.mtime), dir_fd=dir_fd, follow_symlinks=False)

    def _setxattr(self, target: int | bytes, name: bytes, value: bytes) -> None:
        try:
            os.setxattr(target, name, value, follow_symlinks=isinstance(target, int))
        except OSError as e:
            if e.errno not in _NOT_SUPPORTED and e.errno != errno.EPERM:
                raise
            log.warning("cannot set xattr %s: %s", os.fsdecode(name), e.strerror)

    def _chattr(self, fd: int, e: Entry) -> None:
        bits = fsattrs.from_features(e.flags & ft.CHATTR_FLAGS)
        if bits and self.options.same_permissions and not fsattrs.set_chattr(fd, bits):
            log.warning("filesystem has no chattr flags; flags %#x not set", bits)


_TIME_FLAGS = ft.WITH_NSEC_TIME | ft.WITH_USEC_TIME | ft.WITH_SEC_TIME | ft.WITH_2SEC_TIME


def _current_umask() -> int:
    """The process umask, read without setting it (other threads may be creating files)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the only other way to read it is to set it
    os.umask(mask)
    return mask


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def write_tree(
    decoder: Decoder, target: str | os.PathLike, options: WriteOptions, *, workers: int = 2
) -> UntarStats:
    """Extract everything ``decoder`` yields under ``target`` (made if missing).

    Directories are made on this thread as the decoder reaches them; files up to
    ``SMALL_FILE`` bytes (read into memory), symlinks and special nodes are written by
    ``workers`` threads (write_queue.py), larger files here as they stream in.
    """
    target = os.fsdecode(target)
    w = _Writer(target, options, umask=_current_umask())
    os.makedirs(target, exist_ok=True)
    stack: list[_Dir] = []
    queue: WriteQueue[_Job, _Dir] = WriteQueue(w.write_job, w.close_directory, workers=workers)
    try:
        for ev in decoder:
            if isinstance(ev, DirEnd):
                queue.dir_end(stack.pop())
            elif not ev.path:
                if not stat.S_ISDIR(ev.entry.mode):
                    raise UntarError("the archive's root is not a directory")
                fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                w._make_writable(fd)
                stack.append(_Dir(fd, ev.entry, target))
            else:
                _node(w, stack, ev, decoder, queue)
        queue.close()
    except Exception:
        queue.close()  # what came before the error (or raises the error of an earlier entry)
        raise
    except BaseException:
        queue.stop()
        raise
    finally:
        for d in [*stack, *queue.pending_dirs()]:
            os.close(d.fd)
    return w.stats


SMALL_FILE = 1 << 20
_Job = tuple[_Dir, bytes, Node, "list[bytes] | None"]  # parent, name, node, file contents


def _node(w: _Writer, stack: list[_Dir], node: Node, decoder: Decoder, queue: WriteQueue) -> None:
    name = node.path[-1]
    if records.name_problem(name) is not None:  # the decoder already refused these
        raise UntarError(f"refusing file name {name!r}")
    parent = stack[-1]
    fmt = stat.S_IFMT(node.entry.mode)
    w.stats.count(fmt, node.size)
    if fmt == stat.S_IFDIR:
        with w.errors(node):
            stack.append(w.directory(parent, name, node))
    elif fmt != stat.S_IFREG:
        queue.add((parent, name, node, None), 256)
    elif node.size <= SMALL_FILE:
        queue.add((parent, name, node, list(decoder.payload())), node.size + 256)
    else:
        with w.errors(node):
            w.file(parent, name, node, decoder.payload())
