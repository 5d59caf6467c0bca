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

Updating a tree that holds an older version (``OpenDir.ref``), each entry is
compared with what is there first: a file with the same bytes keeps its inode and
is not written (owner, mode and mtime fixed on its fd where they differ, only on a
file that is ours and has no other link, else it is copied); a changed file is a
new file whose unchanged leading bytes are copied from the old one
(``copy_file_range``: shared extents on btrfs and XFS), renamed over it; a
directory keeps its inode and gets its metadata back after its entries changed.
Building beside the old tree (``archive/switch.py``), an unchanged file is hard-
linked from it instead. The counts of each (``UntarStats``) are what the plan's
per-entry listing predicts.

Nothing is fsynced, as with casync and tar: after a crash, files extracted
shortly before may be empty or missing under their final names (never partly
someone else's data); an extraction that must survive one is followed by
``sync`` or repeated.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from desync_decl import file_batch
from desync_decl.archive import acl as posix_acl
from desync_decl.archive import fsattrs
from desync_decl.errors import DesyncError, FormatError
from desync_decl.formats import flags as ff
from desync_decl.formats.catar import feature_gates
from desync_decl.formats.catar import features as ft
from desync_decl.formats.catar.decoder import Leaves, Node
from desync_decl.formats.catar.entry import Entry
from desync_decl.fsutil import send_file, write_all
from desync_decl.lazy_logging import logger

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_UNNAMED = os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC  # without O_EXCL: it can be linked
_NOT_SUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)
_O_OLD = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_COMPARE_BLOCK = 1 << 20


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


@dataclass(slots=True)
class LeafRun:
    """Leaves ``lo..hi`` of a run decoded in C, children of ``parent``, a directory
    this extraction made (``Writer.write_leaf_run``)."""

    parent: OpenDir
    leaves: Leaves
    lo: int
    hi: int


AnyJob = Job | LeafRun


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
    bytes: int = 0  # the archive's file bytes
    # what happened to each entry (the root too) where the target had one before
    created: int = 0  # the target had no entry there
    updated: int = 0  # its contents (or type) replaced
    metadata: int = 0  # only owner, mode or mtime fixed, in place
    unchanged: int = 0  # left alone (or, building beside, linked)
    bytes_written: int = 0  # file bytes written
    bytes_kept: int = 0  # file bytes that stayed where they were

    def fates(self, deleted: int = 0) -> list[str]:
        """What became of the entries, in the words plan and apply use (``1 created,
        2 updated, 3 metadata fixed, 40 unchanged``, ``deleted`` last), counts of 0 left out."""
        return [
            f"{n} {label}"
            for n, label in (
                (self.created, "created"),
                (self.updated, "updated"),
                (self.metadata, "metadata fixed"),
                (self.unchanged, "unchanged"),
                (deleted, "deleted"),
            )
            if n
        ]

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
    # Updating: ``ref`` is the directory holding the old version of its entries (``fd``
    # itself in place, the old tree's directory when building beside it; -1: none, every
    # entry is new), ``before`` the old version's own lstat (None: it is new).
    ref: int = -1
    before: os.stat_result | None = None

    def close(self) -> None:
        os.close(self.fd)
        if self.ref >= 0 and self.ref != self.fd:
            os.close(self.ref)


@dataclass
class Writer:
    target: str
    options: WriteOptions
    stats: UntarStats = field(default_factory=UntarStats)
    umask: int = 0o022
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    # temporary names: unguessable per extraction, then counted (no getrandom per file)
    temp_prefix: str = field(default_factory=lambda: f".#untar.{os.urandom(8).hex()}.")
    temp_numbers: Iterator[int] = field(default_factory=itertools.count)
    archive: ArchiveFile | None = None  # where payloads given by offset are
    # files are made unnamed (O_TMPFILE) and linked in through /proc where both work
    unnamed: bool = field(default_factory=lambda: os.path.isdir("/proc/self/fd"))
    ignored: set[bytes] = field(default_factory=set)  # XATTR names left out (warned once)
    tally_lock: threading.Lock = field(default_factory=threading.Lock)

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

    def write_job(self, job: AnyJob) -> None:
        """A file, symlink or special node, on a worker thread (``errors`` written out:
        a context manager is microseconds for each of a tree's files)."""
        if isinstance(job, LeafRun):
            self.write_leaf_run(job)
            return
        parent, name, node, data = job
        try:
            if data is None:
                self.other(parent, name, node)
            else:
                self.file(parent, name, node, data)
        except OSError as e:
            raise DesyncError(f"cannot extract {self.show(node.path)}: {e.strerror}") from None

    def write_leaf_run(self, job: LeafRun) -> None:
        """The leaves of ``job`` made in C (``file_batch.LeafFiles``), any C could not
        make one by one (``write_job``), which raises its error."""
        leaves, parent = job.leaves, job.parent
        if not self.unnamed:  # no O_TMPFILE here: each the careful way
            for i in range(job.lo, job.hi):
                self.write_job(self._leaf_job(parent, leaves, i))
            return
        made = file_batch.LeafFiles(
            self._leaf_policy(parent, leaves.feature_flags), os.fsencode(self.temp_prefix)
        )
        run = leaves.run
        try:
            for failed, _ in made.write(
                run.leaves, run.starts, leaves.window, leaves.start, job.lo, job.hi
            ):
                self.write_job(self._leaf_job(parent, leaves, failed))
        finally:
            self.tally("created", written=made.bytes, count=made.entries)

    @staticmethod
    def _leaf_job(parent: OpenDir, leaves: Leaves, i: int) -> Job:
        node, data = leaves.node(i)
        return parent, node.path[-1], node, [data] if stat.S_ISREG(node.entry.mode) else None

    def _leaf_policy(self, parent: OpenDir, flags: int) -> file_batch.LeafPolicy:
        """What ``_plain`` decides for every plain file of ``parent`` (flags: the
        archive's), for the C writer."""
        same = self.options.same_permissions
        return file_batch.LeafPolicy(
            parent.fd,
            self.umask,
            archive_modes=same and bool(flags & (ft.WITH_PERMISSIONS | ft.WITH_ACL)),
            read_only=same and bool(flags & ft.WITH_READ_ONLY),
            always_chmod=parent.default_acl,
            chown=bool(
                self.options.same_owner
                and self.is_root
                and flags & (ft.WITH_16BIT_UIDS | ft.WITH_32BIT_UIDS)
            ),
            new_uid=parent.new_owner[0] & 0xFFFFFFFF,  # (-1, -1): matches no owner
            new_gid=parent.new_owner[1] & 0xFFFFFFFF,
            times=bool(flags & _TIME_FLAGS),
            python_flags=ft.CHATTR_FLAGS,
        )

    def write_jobs(self, jobs: Sequence[AnyJob], stopped: Callable[[], bool]) -> None:
        """A worker's batch of jobs, in order, until ``stopped()``: runs of plain files
        (``_plain``) made in one call to C (``file_batch``), the rest and any file the
        C code could not make one by one (``write_job``), which raises its error."""
        run: list[Job] = []
        batch = file_batch.FileBatch()
        for job in jobs:
            if not isinstance(job, LeafRun) and self._plain(batch, job):
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
        made = set(range(len(run)))
        for failed, _ in batch.write(src):
            made.discard(failed)
            self.write_job(run[failed])  # made again the careful way, or its error raised
        self.tally("created", written=sum(run[k][2].size for k in made), count=len(made))

    def _plain(self, batch: file_batch.FileBatch, job: Job) -> bool:
        """Add ``job`` to ``batch`` if it is a file ``file`` would make with no more than
        the C code does: no xattrs, ACLs, project id or chattr flags, made unnamed."""
        parent, name, node, data = job
        e = node.entry
        if (
            data is None
            or parent.ref >= 0
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
            d.close()

    def tally(self, what: str, *, written: int = 0, kept: int = 0, count: int = 1) -> None:
        """``count`` entries ``created``, ``updated``, ``metadata`` or ``unchanged``
        (from worker threads)."""
        with self.tally_lock:
            setattr(self.stats, what, getattr(self.stats, what) + count)
            self.stats.bytes_written += written
            self.stats.bytes_kept += kept

    # -- per node ------------------------------------------------------------------

    def directory(self, parent: OpenDir, name: bytes, node: Node) -> OpenDir:
        where = self.show(node.path)
        if parent.ref >= 0 and parent.ref != parent.fd:  # building beside the old tree
            self._mkdir(parent.fd, name, node.entry)
            old = _open_old_dir(parent.ref, name)
            fd = os.open(name, _O_DIR, dir_fd=parent.fd)
            before = os.fstat(old) if old >= 0 else None
            return self.opened(fd, node.entry, where, ref=old, before=before)
        try:
            self._mkdir(parent.fd, name, node.entry)
            made = True
        except FileExistsError:
            made = False
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
        if made:
            return self.opened(fd, node.entry, where)
        return self.opened(fd, node.entry, where, ref=fd, before=os.fstat(fd))

    def _mkdir(self, parent_fd: int, name: bytes, e: Entry) -> None:
        """A directory, or a btrfs subvolume where the archive had one (and btrfs is here)."""
        if e.flags & ff.WITH_SUBVOLUME:
            if os.path.lexists(b"/proc/self/fd/%d/%s" % (parent_fd, name)):
                raise FileExistsError(errno.EEXIST, "exists")
            if fsattrs.create_subvolume(parent_fd, name):
                return
            logger(__name__).warning(
                "not on btrfs: subvolume %s made a plain directory", os.fsdecode(name)
            )
        os.mkdir(name, 0o700, dir_fd=parent_fd)

    def opened(
        self,
        fd: int,
        e: Entry,
        where: str,
        *,
        ref: int = -1,
        before: os.stat_result | None = None,
    ) -> OpenDir:
        """A directory just opened: writable for us, and what entries made in it get.
        Where its mode in the archive has the setgid bit, it has it already while it is
        filled, so what is made in it gets its group (as desync does). ``ref`` and
        ``before``: see ``OpenDir``."""
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
        owner = (st.st_uid, st.st_gid)
        return OpenDir(fd, e, where, owner, (os.geteuid(), gid), default_acl, ref, before)

    def file(self, parent: OpenDir, name: bytes, node: Node, data: FileData) -> None:
        """A regular file. Where the old tree has one (``parent.ref``), its contents are
        compared first: the same bytes keep their inode (only owner, mode and mtime are
        fixed where they differ; building beside, it is linked in), else the new file
        starts as a copy of the old one's common prefix."""
        if parent.ref < 0:
            self._new(parent, name, node, data)
            self.tally("created", written=node.size)
            return
        old, existed = _open_old_file(parent.ref, name)
        if old is not None and not self._trusted(old[1], node.entry):
            # A file of another user than us and than its new owner: its bytes are never
            # taken (it may change under us); it is replaced, from the archive alone.
            os.close(old[0])
            old = None
        try:
            prefix = 0
            if old is not None and old[1].st_size == node.size:
                same, prefix, data = self._compare(old[0], node.size, data)
                if same:
                    self._keep(parent, name, node, *old)
                    return
            self._new(parent, name, node, data, seed=(old[0], prefix) if old else None)
            self.tally("updated" if existed else "created", written=node.size)
        finally:
            if old is not None:
                os.close(old[0])

    def _compare(self, fd: int, size: int, data: FileData) -> tuple[bool, int, FileData]:
        """Whether the open file ``fd`` holds ``data`` (``size`` bytes): (True, ...) or
        (False, how many leading bytes match, the data still to write after them)."""
        if isinstance(data, int):
            assert self.archive is not None
            return _same_as_file(fd, self.archive.fd, data, size), 0, data
        blocks = iter(data)
        at = 0
        for block in blocks:
            if os.pread(fd, len(block), at) != block:
                return False, at, itertools.chain([block], blocks)
            at += len(block)
        return True, at, ()

    def _keep(self, parent: OpenDir, name: bytes, node: Node, fd: int, st: os.stat_result) -> None:
        """The old file ``fd`` has the archive's contents: keep it (fixing what metadata
        differs, in place), or, building beside the old tree, link it in (or copy it
        where its metadata differs: the old tree must stay as it is)."""
        e = node.entry
        differs = self._differs(st, e, is_dir=False)
        # Owner and mode are never set on a file someone else owns (who may hold it open
        # for writing): such a file is copied, the copy given them, then renamed over.
        if parent.ref == parent.fd and (not differs or st.st_uid == os.geteuid()):
            if differs or _extra_metadata(e):
                self._settle(fd, st, e, is_dir=False)
            self.tally("metadata" if differs else "unchanged", kept=node.size)
            return
        if not differs and not _extra_metadata(e):
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=parent.fd)
                self.tally("unchanged", kept=node.size)
                return
            except OSError as err:
                if err.errno == errno.EEXIST:
                    raise
        self._new(parent, name, node, (), seed=(fd, node.size))
        self.tally("metadata" if differs else "unchanged", written=node.size)

    def _trusted(self, st: os.stat_result, e: Entry) -> bool:
        """Whether the old file's bytes may seed the new one: it is ours, or its owner is
        the one the new file gets (who could write those bytes into it anyway)."""
        owner = e.uid if self._chown(e) else os.geteuid()
        return st.st_uid in (os.geteuid(), owner)

    def _differs(self, st: os.stat_result, e: Entry, *, is_dir: bool, mode: bool = True) -> bool:
        """Whether owner, mode (if ``mode``) or mtime of the old entry ``st`` differ
        from what the archive gives it."""
        if self._chown(e) and (st.st_uid, st.st_gid) != (e.uid, e.gid):
            return True
        if mode and self._restores_mode(e) and stat.S_IMODE(st.st_mode) != self._mode(e, is_dir):
            return True
        return bool(e.feature_flags & _TIME_FLAGS) and st.st_mtime_ns != e.mtime

    def _restores_mode(self, e: Entry) -> bool:
        """An entry that exists keeps its mode unless the archive's is restored (as rsync
        without ``-p``)."""
        flags = e.feature_flags
        return self.options.same_permissions and bool(flags & (ft.WITH_PERMISSIONS | ft.WITH_ACL))

    def _settle(self, fd: int, st: os.stat_result, e: Entry, *, is_dir: bool) -> None:
        """Owner, mode, xattrs, ACLs and mtime of an entry kept in place, each set only
        where it differs (the data is not touched)."""
        chowned = self._chown(e) and (st.st_uid, st.st_gid) != (e.uid, e.gid)
        if chowned:
            os.fchown(fd, e.uid, e.gid)  # clears set-id bits: the mode is set again
        mode = self._mode(e, is_dir)
        if self._restores_mode(e) and (chowned or stat.S_IMODE(st.st_mode) != mode):
            os.fchmod(fd, mode)
        self._xattrs(fd, e)
        if self.options.same_permissions and e.acl and e.feature_flags & ft.WITH_ACL:
            self._acls(fd, e, mode, is_dir)
        if e.feature_flags & _TIME_FLAGS and os.fstat(fd).st_mtime_ns != e.mtime:
            os.utime(fd, ns=(e.mtime, e.mtime))

    def _new(
        self,
        parent: OpenDir,
        name: bytes,
        node: Node,
        data: FileData,
        *,
        seed: tuple[int, int] | None = None,
    ) -> None:
        """A new file under ``name``, replacing what is there; with ``seed`` (an open
        old file, a length), its first bytes are copied from the old file first."""
        e = node.entry
        # Made with its final mode where the kernel gives exactly that (no fchmod then):
        # the umask does not cut it, no default ACL replaces it and no chown can clear
        # set-id bits.
        mode = self._mode(e, False)
        exact = not (mode & (0o7000 | self.umask) or parent.default_acl or e.acl)
        fd, tmp = self._new_file(parent, mode if exact else 0o600)
        placed = False
        try:
            if seed is not None and seed[1]:
                _copy_prefix(fd, *seed)
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
        outcome = "created"
        if parent.ref >= 0:
            try:
                st = os.stat(name, dir_fd=parent.ref, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                outcome = self._node_change(parent.ref, name, st, node)
        self.tally(outcome)
        if outcome == "unchanged" and parent.ref == parent.fd:
            return  # in place: the very node is there already
        # Made again otherwise, even where only its metadata differs: setting that by
        # name could follow a symlink swapped in meanwhile; a node has no data to save.
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

    def _node_change(self, dir_fd: int, name: bytes, st: os.stat_result, node: Node) -> str:
        """How the old symlink, device, fifo or socket ``st`` differs from ``node``:
        ``updated`` (another type, target or device), ``metadata`` or ``unchanged``."""
        e = node.entry
        if stat.S_IFMT(st.st_mode) != stat.S_IFMT(e.mode):
            return "updated"
        if stat.S_ISLNK(st.st_mode):
            if os.readlink(name, dir_fd=dir_fd) != node.target:
                return "updated"
        elif (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and st.st_rdev != node.rdev:
            return "updated"
        link = stat.S_ISLNK(st.st_mode)  # a symlink's mode is not set
        if self._differs(st, e, is_dir=False, mode=not link):
            return "metadata"
        return "unchanged"

    def finish_directory(self, d: OpenDir) -> None:
        if d.before is not None:
            self.tally("metadata" if self._differs(d.before, d.entry, is_dir=True) else "unchanged")
        else:
            self.tally("created")
        if d.ref == d.fd:  # kept in place: only what differs is set
            self._settle(d.fd, os.fstat(d.fd), d.entry, is_dir=True)
        else:
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
                logger(__name__).warning(
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
            logger(__name__).warning("cannot set xattr %s: %s", os.fsdecode(name), e.strerror)

    def _chattr(self, fd: int, e: Entry) -> None:
        if not e.flags & ft.CHATTR_FLAGS:
            return
        bits = fsattrs.from_features(e.flags & ft.CHATTR_FLAGS)
        if bits and self.options.same_permissions and not fsattrs.set_chattr(fd, bits):
            logger(__name__).warning("filesystem has no chattr flags; flags %#x not set", bits)


_TIME_FLAGS = ft.WITH_NSEC_TIME | ft.WITH_USEC_TIME | ft.WITH_SEC_TIME | ft.WITH_2SEC_TIME


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _open_old_file(dir_fd: int, name: bytes) -> tuple[tuple[int, os.stat_result] | None, bool]:
    """The old entry ``name`` of ``dir_fd`` opened for reading if it is a regular file
    with no other link (a hard link planted from outside the tree must not have its
    metadata changed: it is replaced instead), and whether there was an entry at all.
    Only a regular file by ``lstat`` is opened (opening a device can act on it), with
    ``O_NOFOLLOW``, and must be the same file once open."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None, False
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        return None, True
    try:
        fd = os.open(name, _O_OLD, dir_fd=dir_fd)
    except OSError:
        return None, True
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or now.st_nlink != 1:
        os.close(fd)
        return None, True
    return (fd, now), True


def _open_old_dir(dir_fd: int, name: bytes) -> int:
    """The old tree's directory ``name`` (never through a symlink), -1 if it has none."""
    try:
        return os.open(name, _O_DIR, dir_fd=dir_fd)
    except OSError:
        return -1


def _same_as_file(fd: int, archive_fd: int, offset: int, size: int) -> bool:
    """Whether ``fd`` holds the ``size`` bytes of ``archive_fd`` at ``offset``."""
    at = 0
    while at < size:
        n = min(_COMPARE_BLOCK, size - at)
        if os.pread(fd, n, at) != os.pread(archive_fd, n, offset + at):
            return False
        at += n
    return True


def _copy_prefix(fd: int, old: int, length: int) -> None:
    """The first ``length`` bytes of the file ``old`` into the new file ``fd``, by
    ``copy_file_range`` (which shares the extents on btrfs and XFS: nothing written),
    leaving ``fd``'s position after them."""
    at = 0
    while at < length:
        try:
            n = os.copy_file_range(old, fd, length - at, at, at)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, *_NOT_SUPPORTED):
                raise
            n = send_file(fd, old, at, length - at) if os.lseek(fd, at, os.SEEK_SET) == at else 0
        if n <= 0:
            raise OSError(errno.EIO, "the old file shrank while it was copied")
        at += n
    os.lseek(fd, length, os.SEEK_SET)


def _extra_metadata(e: Entry) -> bool:
    """Whether the entry carries xattrs, ACLs or a label (set again on a kept file:
    comparing them would cost more reads than setting them)."""
    return bool(e.xattrs or e.acl or e.selinux is not None or e.fcaps is not None)
