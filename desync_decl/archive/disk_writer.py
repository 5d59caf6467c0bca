"""Write decoded catar nodes into a directory, never writing outside it.

Every operation is relative to an open directory fd and names exactly one path
component (the decoder refuses anything else, and this module checks again);
directories are entered with O_NOFOLLOW, so a symlink, whether the archive
planted it or it was already in the target, is never followed. A file is made
without a name (O_TMPFILE) or under a temporary one, filled, given its metadata
on the open fd, and only then linked in under its final name; where something
is already there (a file, a symlink, a hard link) it is linked under a temporary
name and renamed over it, so it is replaced, never written through. Symlinks and
special nodes are made under a temporary name and renamed. A failed extraction
leaves no half-written file under a final name. Directory metadata (owner, mode,
times) is applied when the directory is complete, so read-only directories can
be filled. extract.py runs the loop (on worker threads).

Nothing is fsynced, as with casync and tar: after a crash, files extracted
shortly before may be empty or missing under their final names (never partly
someone else's data); an extraction that must survive one is followed by
``sync`` or repeated.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from desync_decl import file_batch
from desync_decl.archive import acl as posix_acl
from desync_decl.archive import fsattrs
from desync_decl.errors import DesyncError, FormatError
from desync_decl.formats import flags as ff
from desync_decl.formats.catar import feature_gates
from desync_decl.formats.catar import features as ft
from desync_decl.formats.catar.decoder import Node
from desync_decl.formats.catar.entry import Entry
from desync_decl.fsutil import send_file, write_all

log = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_UNNAMED = os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC  # without O_EXCL: it can be linked
_NOT_SUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)


@dataclass(frozen=True)
class ArchiveFile:
    """The catar as a regular file: workers copy payloads from it by offset."""

    fd: int
    base: int  # where the archive starts in the file (the decoder counts from there)
    name: str


# A file's contents: blocks (in memory, or streamed on the decoding thread), or the
# offset of its payload in the ArchiveFile.
FileData = Iterable[bytes] | int
Job = tuple["OpenDir", bytes, Node, "list[bytes] | int | None"]  # parent, name, node, data


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
class OpenDir:
    fd: int
    entry: Entry
    path: str
    owner: tuple[int, int] = (-1, -1)  # its own uid, gid
    new_owner: tuple[int, int] = (-1, -1)  # what the kernel gives an entry made in it
    default_acl: bool = True  # it has a default ACL (modes of new entries follow it)


@dataclass
class Writer:
    target: str
    options: WriteOptions
    stats: UntarStats = field(default_factory=UntarStats)
    umask: int = 0o022
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    # temporary names: unguessable per extraction, then counted (no getrandom per file)
    temp_prefix: str = field(default_factory=lambda: f".#untar.{secrets.token_hex(8)}.")
    temp_numbers: Iterator[int] = field(default_factory=itertools.count)
    archive: ArchiveFile | None = None  # where payloads given by offset are
    # files are made unnamed (O_TMPFILE) and linked in through /proc where both work
    unnamed: bool = field(default_factory=lambda: os.path.isdir("/proc/self/fd"))
    ignored: set[bytes] = field(default_factory=set)  # XATTR names left out (warned once)

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

    def write_job(self, job: Job) -> None:
        """A file, symlink or special node, on a worker thread (``errors`` written out:
        a context manager is microseconds for each of a tree's files)."""
        parent, name, node, data = job
        try:
            if data is None:
                self.other(parent, name, node)
            else:
                self.file(parent, name, node, data)
        except OSError as e:
            raise DesyncError(f"cannot extract {self.show(node.path)}: {e.strerror}") from None

    def write_jobs(self, jobs: Sequence[Job], stopped: Callable[[], bool]) -> None:
        """A worker's batch of jobs, in order, until ``stopped()``: runs of plain files
        (``_plain``) made in one call to C (``file_batch``), the rest and any file the
        C code could not make one by one (``write_job``), which raises its error."""
        run: list[Job] = []
        batch = file_batch.FileBatch()
        for job in jobs:
            if self._plain(batch, job):
                run.append(job)
                continue
            self._write_run(run, batch, stopped)
            run, batch = [], file_batch.FileBatch()
            if stopped():
                return
            self.write_job(job)
        self._write_run(run, batch, stopped)

    def _write_run(
        self, run: list[Job], batch: file_batch.FileBatch, stopped: Callable[[], bool]
    ) -> None:
        if not run or stopped():
            return
        src = self.archive.fd if self.archive is not None else -1
        for failed, _ in batch.write(src):
            self.write_job(run[failed])  # made again the careful way, or its error raised

    def _plain(self, batch: file_batch.FileBatch, job: Job) -> bool:
        """Add ``job`` to ``batch`` if it is a file ``file`` would make with no more than
        the C code does: no xattrs, ACLs, project id or chattr flags, made unnamed."""
        parent, name, node, data = job
        e = node.entry
        if (
            data is None
            or not self.unnamed
            or e.xattrs
            or e.selinux is not None
            or e.fcaps is not None
            or e.quota_projid is not None
            or e.flags & ft.CHATTR_FLAGS
            or e.acl
            or not 0 <= e.mtime <= file_batch.MAX_TIME_NS
        ):
            return False
        mode = self._mode(e, False)
        what = 0 if not (mode & (0o7000 | self.umask) or parent.default_acl) else file_batch.CHMOD
        if self._chown(e) and (e.uid, e.gid) != parent.new_owner:
            if e.uid > file_batch.MAX_ID or e.gid > file_batch.MAX_ID:
                return False
            what |= file_batch.CHOWN
        if e.feature_flags & _TIME_FLAGS:
            what |= file_batch.TIMES
        offset, content = 0, None  # the contents: at an offset of the archive, or in hand
        if isinstance(data, int):
            if self.archive is None:
                return False
            offset = data
        else:
            content = b"".join(data)
        batch.add(
            parent.fd,
            name,
            mode,
            what,
            uid=e.uid,
            gid=e.gid,
            mtime_ns=e.mtime,
            offset=offset,
            size=node.size,
            data=content,
        )
        return True

    def close_directory(self, d: OpenDir) -> None:
        try:
            with self.errors(d.path):
                self.finish_directory(d)
        finally:
            os.close(d.fd)

    # -- per node ------------------------------------------------------------------

    def directory(self, parent: OpenDir, name: bytes, node: Node) -> OpenDir:
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
        return self.opened(fd, node.entry, where)

    def _mkdir(self, parent_fd: int, name: bytes, e: Entry) -> None:
        """A directory, or a btrfs subvolume where the archive had one (and btrfs is here)."""
        if e.flags & ff.WITH_SUBVOLUME:
            if os.path.lexists(b"/proc/self/fd/%d/%s" % (parent_fd, name)):
                raise FileExistsError(errno.EEXIST, "exists")
            if fsattrs.create_subvolume(parent_fd, name):
                return
            log.warning("not on btrfs: subvolume %s made a plain directory", os.fsdecode(name))
        os.mkdir(name, 0o700, dir_fd=parent_fd)

    def opened(self, fd: int, e: Entry, where: str) -> OpenDir:
        """A directory just opened: writable for us, and what entries made in it get.
        Where its mode in the archive has the setgid bit, it has it already while it is
        filled, so what is made in it gets its group (as desync does)."""
        st = os.fstat(fd)
        mode = st.st_mode & 0o7777
        if not self.is_root:
            mode |= 0o700
        mode |= self._mode(e, True) & stat.S_ISGID
        if mode != st.st_mode & 0o7777:
            os.fchmod(fd, mode)
            st = os.fstat(fd)  # the kernel drops setgid for a group we are not in
        gid = st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()
        try:
            default_acl = bool(os.getxattr(fd, posix_acl.DEFAULT))
        except OSError:  # ENODATA: none; ENOTSUP: none possible
            default_acl = False
        return OpenDir(fd, e, where, (st.st_uid, st.st_gid), (os.geteuid(), gid), default_acl)

    def file(self, parent: OpenDir, name: bytes, node: Node, data: FileData) -> None:
        e = node.entry
        # Made with its final mode where the kernel gives exactly that (no fchmod then):
        # the umask does not cut it, no default ACL replaces it and no chown can clear
        # set-id bits.
        mode = self._mode(e, False)
        exact = not (mode & (0o7000 | self.umask) or parent.default_acl or e.acl)
        fd, tmp = self._new_file(parent, mode if exact else 0o600)
        placed = False
        try:
            if isinstance(data, int):
                self._copy(fd, data, node.size)
            else:
                for block in data:
                    write_all(fd, block)
            self._metadata(fd, e, is_dir=False, owner=parent.new_owner, mode_set=exact)
            self._place(parent, fd, tmp, name, node)
            placed = True
            self._chattr(fd, node.entry)
        finally:
            os.close(fd)
            if tmp is not None and not placed:
                _unlink(parent.fd, tmp)

    def _new_file(self, parent: OpenDir, mode: int) -> tuple[int, str | None]:
        """A new open file without a name (O_TMPFILE) where the filesystem has them, else
        under a temporary name."""
        if self.unnamed:
            try:
                return os.open(".", _O_UNNAMED, mode, dir_fd=parent.fd), None
            except OSError as e:
                if e.errno not in (errno.EISDIR, errno.EINVAL, *_NOT_SUPPORTED):
                    raise
                self.unnamed = False  # this filesystem has none: temporary names from now
        tmp = self.temp_name()
        return os.open(tmp, _O_NEW, mode, dir_fd=parent.fd), tmp

    def _place(self, parent: OpenDir, fd: int, tmp: str | None, name: bytes, node: Node) -> None:
        """The finished file under its final name, replacing (never writing through) what
        is there: an unnamed file is linked in, or first linked under a temporary name and
        renamed over what is in the way."""
        if tmp is None:
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=parent.fd)
                return
            except FileExistsError:
                pass
            tmp = self.temp_name()
            os.link(f"/proc/self/fd/{fd}", tmp, dst_dir_fd=parent.fd)
        try:
            self._rename(parent, tmp, name, node)
        except BaseException:
            _unlink(parent.fd, tmp)
            raise

    def _copy(self, fd: int, offset: int, size: int) -> None:
        """``size`` bytes of the archive file from ``offset``, copied in the kernel."""
        assert self.archive is not None
        src = self.archive.fd
        while size:
            n = send_file(fd, src, offset, size)
            if n == 0:
                raise FormatError(
                    f"{self.archive.name}: invalid archive at byte {offset - self.archive.base}:"
                    f" archive truncated inside a payload ({size} bytes missing)"
                )
            offset += n
            size -= n

    def other(self, parent: OpenDir, name: bytes, node: Node) -> None:
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
            self._path_metadata(parent, tmp, e, symlink=fmt == stat.S_IFLNK)
            self._rename(parent, tmp, name, node)
        except BaseException:
            _unlink(parent.fd, tmp)
            raise

    def _rename(self, parent: OpenDir, tmp: str, name: bytes, node: Node) -> None:
        try:
            os.rename(tmp, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise UntarError(
                    f"cannot extract {self.show(node.path)}: a directory is in the way"
                ) from None
            raise

    def finish_directory(self, d: OpenDir) -> None:
        self._metadata(d.fd, d.entry, is_dir=True, owner=d.owner)
        self._chattr(d.fd, d.entry)
        if d.entry.flags & ff.WITH_SUBVOLUME_RO and self.options.same_permissions:
            fsattrs.set_subvolume_read_only(d.fd)  # last: nothing can change it after this

    # -- metadata ------------------------------------------------------------------

    def _metadata(
        self, fd: int, e: Entry, *, is_dir: bool, owner: tuple[int, int], mode_set: bool = False
    ) -> None:
        """Owner, mode, xattrs, ACLs, project id and times of an open file or directory
        now owned by ``owner``, with its final mode already if ``mode_set``."""
        flags, opt = e.feature_flags, self.options
        if self._chown(e) and (e.uid, e.gid) != owner:
            os.fchown(fd, e.uid, e.gid)  # before the xattrs: a chown drops capabilities
        mode = self._mode(e, is_dir)
        if not mode_set:
            os.fchmod(fd, mode)
        self._xattrs(fd, e)
        if opt.same_permissions and e.acl and flags & ft.WITH_ACL:
            self._acls(fd, e, mode, is_dir)
        if e.quota_projid and flags & ft.WITH_QUOTA_PROJID:
            fsattrs.set_project_id(fd, e.quota_projid)
        if flags & _TIME_FLAGS:
            os.utime(fd, ns=(e.mtime, e.mtime))

    def _xattrs(self, target: int | bytes, e: Entry) -> None:
        """The extended attributes the archive's flags cover (capability, label and
        casync's XATTR namespaces, feature_gates.py); other XATTR records are left out."""
        if not self.options.same_owner or not (
            e.xattrs or e.selinux is not None or e.fcaps is not None
        ):
            return  # most nodes: none to set, none to leave out
        for name, value in feature_gates.applied_xattrs(e):
            self._setxattr(target, name, value)
        for name in feature_gates.ignored_xattrs(e):
            if name not in self.ignored:
                self.ignored.add(name)  # one warning per name, not per file
                log.warning(
                    "xattr %s not set: XATTR records carry only user.* and trusted.*"
                    " (capabilities, labels and ACLs have records and feature flags of"
                    " their own)",
                    os.fsdecode(name),
                )

    def _chown(self, e: Entry) -> bool:
        """Owners are restored as root only (like GNU tar) and when the archive has them."""
        has_ids = e.feature_flags & (ft.WITH_16BIT_UIDS | ft.WITH_32BIT_UIDS)
        return bool(self.options.same_owner and self.is_root and has_ids)

    def _mode(self, e: Entry, is_dir: bool) -> int:
        """The archive's mode where its flags store modes (permissions or acl), else
        the umask's default, without write bits for a read-only node with read-only:
        as with casync, an archive without permissions sets no mode bits of its own
        (before, every node of one became 0666/0777)."""
        flags, same = e.feature_flags, self.options.same_permissions
        if same and flags & (ft.WITH_PERMISSIONS | ft.WITH_ACL):
            return e.mode & 0o7777
        mode = (0o777 if is_dir else 0o666) & ~self.umask
        if same and flags & ft.WITH_READ_ONLY and not e.mode & 0o222:
            mode &= ~0o222
        return mode

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

    def _path_metadata(self, parent: OpenDir, name: str, e: Entry, *, symlink: bool) -> None:
        """Metadata of a node just made under ``name`` in ``parent``, never following it."""
        flags, dir_fd = e.feature_flags, parent.fd
        if self._chown(e) and (e.uid, e.gid) != parent.new_owner:
            os.chown(name, e.uid, e.gid, dir_fd=dir_fd, follow_symlinks=False)
        if not symlink:  # a fresh fifo/socket/device we just made under a random name
            os.chmod(name, self._mode(e, False), dir_fd=dir_fd)
        self._xattrs(b"/proc/self/fd/%d/%s" % (dir_fd, name.encode()), e)
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
        if not e.flags & ft.CHATTR_FLAGS:
            return
        bits = fsattrs.from_features(e.flags & ft.CHATTR_FLAGS)
        if bits and self.options.same_permissions and not fsattrs.set_chattr(fd, bits):
            log.warning("filesystem has no chattr flags; flags %#x not set", bits)


_TIME_FLAGS = ft.WITH_NSEC_TIME | ft.WITH_USEC_TIME | ft.WITH_SEC_TIME | ft.WITH_2SEC_TIME


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
