"""A directory on disk as catar source nodes, read the way ``casync make`` reads it.

Everything is opened relative to its parent's directory fd with O_NOFOLLOW,
so the walk never leaves the tree through a symlink, and children are listed
in byte order of their names. Which node types and metadata are read depends
on the archive's feature flags (``formats/catar/features.py``); files marked
chattr +d are left out under exclude-nodump, other filesystems under
exclude-submounts (``-x``).
"""

from __future__ import annotations

import errno
import os
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from desync_decl.archive import acl as posix_acl
from desync_decl.archive import fsattrs
from desync_decl.archive.patterns import Patterns
from desync_decl.entry_batch import KIND_DIR, KIND_FILE, KIND_OTHER, NAMES, Config, EntryBatch
from desync_decl.errors import DesyncError
from desync_decl.formats import flags as ff
from desync_decl.formats.catar import features as ft
from desync_decl.formats.catar.encoder import Buffer, EncodedRun
from desync_decl.formats.catar.entry import Acl, Entry
from desync_decl.fsutil import open_file, walk_error
from desync_decl.output_batch import gather

BLOCK_SIZE = 1 << 20
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # a fifo
_XATTR_FLAGS = ft.WITH_XATTRS | ft.WITH_ACL | ft.WITH_SELINUX | ft.WITH_FCAPS


@dataclass(frozen=True)
class DiskOptions:
    flags: int  # the archive's full feature flags
    one_file_system: bool = False
    exclude: frozenset[tuple[int, int]] = frozenset()  # (st_dev, st_ino) left out (the output)
    patterns: Patterns | None = None  # --include/--exclude: what is left out is never opened
    # plain children encoded in C (entry_batch) where the flags allow: the children of a
    # directory may then come as Encoded, not DiskNode (tar; a seed needs every node)
    encoded: bool = False


class DiskNode:
    __slots__ = ("_fd", "_walk", "entry", "path", "rdev", "size", "target")

    def __init__(self, walk: _Walk, path: bytes, entry: Entry, fd: int | None) -> None:
        self._walk, self.path, self.entry, self._fd = walk, path, entry, fd
        self.size, self.target, self.rdev = 0, b"", 0

    def payload(self) -> Iterator[bytes]:
        fd, self._fd = self._fd, None
        assert fd is not None
        return _blocks(fd, self.size, self._walk.show(self.path))

    def deferred_payload(self) -> FilePayload:
        """Every file, small ones too: tar's writer thread reads them in C
        (``output_batch``), where a read on the walking thread cost it 0.05 CPU-s of
        its 0.9 on /usr/share (46,000 files under 128 KiB, 227 MB)."""
        fd, self._fd = self._fd, None
        assert fd is not None
        return FilePayload(fd, self.size, self._walk.root + self.path[1:])

    def children(self) -> Iterator[tuple[bytes, DiskNode | EncodedRun]]:
        fd, self._fd = self._fd, None
        assert fd is not None
        try:
            batch = self._walk.batch
            listed = None if batch is None else batch.listing(fd)
            if batch is not None and listed is not None:
                yield from self._encoded_children(fd, *listed, batch)
                return
            with os.scandir(fd) as listing:
                keys = sorted(os.fsencode(e.name) + _KIND_SUFFIX[_kind(e)] for e in listing)
            for key in keys:
                name, kind = key[:-2], _SUFFIX_KIND[key[-1]]
                node = self._walk.node(fd, name, self.path + b"/" + name, kind=kind)
                if node is not None:
                    yield name, node
        finally:
            os.close(fd)

    def _encoded_children(
        self, fd: int, listed: list[bytes], kinds: bytes, batch: EntryBatch
    ) -> Iterator[tuple[bytes, DiskNode | EncodedRun]]:
        """``children`` with the plain ones encoded in C (``entry_batch``), a run at a time."""
        where = self._walk.root + self.path[1:] + b"/"
        at = 0
        while at < len(listed):
            names = listed[at : at + NAMES]
            run_kinds = kinds[at : at + NAMES]
            done = batch.run(fd, names, run_kinds)
            at += len(done)
            run: DiskRun | None = None
            try:
                for i, (head, payload_fd, size) in enumerate(done):
                    if head is not None:
                        if run is None:
                            run = DiskRun(where)
                        run.add(names[i], head, payload_fd, size)
                        done[i] = (None, -1, 0)  # its fd is the run's now
                        continue
                    if run is not None:
                        yield run.names[0], run
                        run = None
                    name = names[i]
                    kind = _STAT_KIND[run_kinds[i]]
                    node = self._walk.node(fd, name, self.path + b"/" + name, kind=kind)
                    if node is not None:
                        yield name, node
                if run is not None:
                    yield run.names[0], run
                    run = None
            finally:  # stopped early: the files opened and not handed on closed now
                if run is not None:
                    run.close()
                for _, payload_fd, _ in done:
                    if payload_fd >= 0:
                        os.close(payload_fd)

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


class DiskRun(EncodedRun):
    """Children encoded by ``entry_batch``: their heads, and their files open."""

    __slots__ = ("_heads", "_segments", "_where", "wheres")

    def __init__(self, where: bytes) -> None:
        super().__init__()
        self._where = where  # the directory's path and a slash, for messages
        self._heads: list[bytes] = []
        self._segments = array("q")  # (fd, length): -1 for the next head, else a file
        self.wheres: dict[int, bytes] = {}  # segment -> its file's path

    def add(self, name: bytes, head: bytes, fd: int, size: int) -> None:
        at = self.ends[-1] if self.ends else 0
        self.names.append(name)
        self.starts.append(at)
        self._heads.append(head)
        self._segments.extend((-1, len(head)))
        at += len(head)
        if fd >= 0:
            self.wheres[len(self._segments) // 2] = self._where + name
            self._segments.extend((fd, size))
            at += size
        self.ends.append(at)

    def take(self) -> tuple[bytes, array[int], dict[int, bytes]]:
        """(heads, segments, paths) for ``output_batch``, which owns the files now."""
        segments, self._segments = self._segments, array("q")
        return b"".join(self._heads), segments, self.wheres

    def pieces(self) -> Iterator[Buffer]:
        """The run's bytes: heads and files up to ``BLOCK_SIZE`` gathered in one C call
        per ``BLOCK_SIZE`` (``output_batch.gather``), a larger file in blocks."""
        segments, self._segments = self._segments, array("q")
        heads = memoryview(b"".join(self._heads))
        at = 0  # bytes of heads taken
        i, n = 0, len(segments)
        try:
            while i < n:
                if segments[i] >= 0 and segments[i + 1] >= BLOCK_SIZE:
                    fd, segments[i] = segments[i], -1  # _blocks closes it
                    yield from _blocks(fd, segments[i + 1], os.fsdecode(self.wheres[i // 2]))
                    i += 2
                    continue
                j, size, head_bytes = i, 0, 0
                while j < n and (j == i or size + segments[j + 1] < BLOCK_SIZE):
                    if segments[j] < 0:
                        head_bytes += segments[j + 1]
                    elif segments[j + 1] >= BLOCK_SIZE:
                        break
                    size += segments[j + 1]
                    j += 2
                group = segments[i:j]
                segments[i:j:2] = array("q", [-1]) * ((j - i) // 2)  # gather closes them
                yield gather(heads[at:], group, self.wheres, i // 2)
                at += head_bytes
                i = j
        finally:
            _close_files(segments)

    def close(self) -> None:
        segments, self._segments = self._segments, array("q")
        _close_files(segments)

    def __del__(self) -> None:
        _close_files(self._segments)


def _close_files(segments: array[int]) -> None:
    for fd in segments[::2]:
        if fd >= 0:
            os.close(fd)


class FilePayload:
    """A regular file's payload read by the consumer (``archive/catar_sink.py``) on its
    own thread. Owns the file's descriptor until ``take``. ``where``: the file's path,
    for messages."""

    __slots__ = ("_fd", "size", "where")

    def __init__(self, fd: int, size: int, where: bytes) -> None:
        self._fd, self.size, self.where = fd, size, where

    def __len__(self) -> int:
        return self.size

    @property
    def name(self) -> str:
        return os.fsdecode(self.where)

    def take(self) -> int:
        fd, self._fd = self._fd, -1
        assert fd >= 0, "a payload is taken or closed once"
        return fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self.take())

    def __del__(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)


def _blocks(fd: int, size: int, name: str) -> Iterator[bytes]:
    """Exactly ``size`` bytes of the open file ``fd``, in blocks; closes it."""
    try:
        left = size
        while True:
            # one byte more than is left: a short read is the end, and a file that
            # grew shows here without a read of its own at the end
            want = min(BLOCK_SIZE, left + 1)
            block = os.read(fd, want)
            if len(block) > left:
                left = -1
                break
            left -= len(block)
            if block:
                yield block
            if not block or (not left and len(block) < want):
                break
        if left:
            raise DesyncError(f"{name}: file changed while archiving")
    except OSError as e:
        raise DesyncError(f"cannot read {name}: {e.strerror}") from None
    finally:
        os.close(fd)


def disk_tree(path: str | os.PathLike, options: DiskOptions) -> DiskNode:
    """The root node of ``path``. A symlink as the root or on the way to it is followed
    only in a directory no one else can write (``fsutil.open_file``): root archiving a
    tree below a shared directory must not publish what a planted link points to."""
    walk = _Walk(os.fsencode(path), options)
    try:
        opened = open_file(path, _O_FILE & ~os.O_NOFOLLOW)
    except OSError as e:
        raise walk_error(os.fsdecode(path), e, "read") from None
    st = os.fstat(opened)
    fd = opened if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) else None
    if fd is None:
        os.close(opened)  # only directories and files are read through their fd
    walk.root_dev = st.st_dev
    node = walk.node(None, os.fsencode(path), b".", st, fd=fd)
    if node is None:
        raise DesyncError(f"{os.fsdecode(path)}: excluded from the archive by its flags")
    return node


class _Walk:
    def __init__(self, root: bytes, options: DiskOptions) -> None:
        self.root = root
        self.flags = options.flags
        self.one_file_system = options.one_file_system
        self.exclude = options.exclude
        self.patterns = options.patterns
        self.root_dev = 0
        self.batch = _entry_batch(options)

    def show(self, path: bytes) -> str:
        return os.fsdecode(self.root + path[1:])

    def allowed(self, path: bytes, is_dir: bool) -> bool:
        """Whether the include/exclude patterns keep ``path`` (``./a/b``; the root always)."""
        if self.patterns is None or path == b".":
            return True
        return self.patterns.allows(os.fsdecode(path[2:]), is_dir)

    def node(
        self,
        dir_fd: int | None,
        name: bytes,
        path: bytes,
        st: os.stat_result | None = None,
        kind: int = 0,
        fd: int | None = None,
    ) -> DiskNode | None:
        """The node for ``name`` in ``dir_fd``, or None when it is left out or vanished.

        ``kind`` is the type the directory listing gave (``stat.S_IFREG`` or
        ``S_IFDIR``, else 0): such a node is opened at once and its inode read with
        fstat, one system call fewer than a stat by name before the open. ``fd``: the
        node opened already (the root), ``st`` its fstat.
        """
        if kind and not self.allowed(path, kind == stat.S_IFDIR):
            return None  # before it is opened: an unreadable excluded directory is fine
        try:
            if st is None and kind:
                fd = os.open(name, _O_DIR if kind == stat.S_IFDIR else _O_FILE, dir_fd=dir_fd)
                st = os.fstat(fd)
                if stat.S_IFMT(st.st_mode) != kind:  # replaced since listed
                    os.close(fd)
                    fd = st = None
            if st is None:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            fmt = stat.S_IFMT(st.st_mode)
            if (
                not ft.stores_type(self.flags, st.st_mode)
                or (self.exclude and (st.st_dev, st.st_ino) in self.exclude)
                or (fmt == stat.S_IFDIR and self.one_file_system and st.st_dev != self.root_dev)
                or not self.allowed(path, fmt == stat.S_IFDIR)
            ):
                if fd is not None:
                    os.close(fd)
                return None
            if fd is None and fmt in (stat.S_IFDIR, stat.S_IFREG):
                fd = os.open(name, _O_DIR if fmt == stat.S_IFDIR else _O_FILE, dir_fd=dir_fd)
                st = os.fstat(fd)  # the inode we opened, not the name we stat'ed
            return self._node(dir_fd, name, path, st, fd)
        except BaseException as e:
            if fd is not None:
                os.close(fd)
            if isinstance(e, FileNotFoundError):
                return None  # removed while we walked: casync skips it too
            if isinstance(e, OSError):
                raise DesyncError(f"cannot read {self.show(path)}: {e.strerror}") from None
            raise

    def _node(
        self, dir_fd: int | None, name: bytes, path: bytes, st: os.stat_result, fd: int | None
    ) -> DiskNode | None:
        flags = self.flags
        chattr = 0
        if fd is not None and flags & (ft.CHATTR_FLAGS | ff.EXCLUDE_NODUMP):
            chattr = fsattrs.chattr_flags(fd)
            if flags & ff.EXCLUDE_NODUMP and chattr & fsattrs.FS_NODUMP_FL:
                os.close(fd)
                return None
        uid, gid = ft.entry_ids(flags, st.st_uid, st.st_gid, lambda: self.show(path))
        entry = Entry(
            feature_flags=flags,
            mode=ft.entry_mode(flags, st.st_mode),
            flags=self._entry_flags(fd, st, chattr),
            uid=uid,
            gid=gid,
            mtime=ft.entry_mtime(flags, max(0, st.st_mtime_ns)),
        )
        if flags & ft.WITH_USER_NAMES:
            if uid and (user := fsattrs.user_name(uid)):
                entry.user = user
            if gid and (group := fsattrs.group_name(gid)):
                entry.group = group
        if flags & _XATTR_FLAGS:
            self._xattrs(entry, fd, dir_fd, name, st.st_mode)
        if fd is not None and flags & ft.WITH_QUOTA_PROJID:
            projid = fsattrs.project_id(fd)
            entry.quota_projid = projid or None
        node = DiskNode(self, path, entry, fd)
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFREG:
            node.size = st.st_size
        elif fmt == stat.S_IFLNK:
            node.target = os.readlink(name, dir_fd=dir_fd)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            node.rdev = st.st_rdev
        return node

    def _entry_flags(self, fd: int | None, st: os.stat_result, chattr: int) -> int:
        """chattr flags, and for btrfs subvolumes the subvolume bits, as the flags ask."""
        if fd is None:
            return 0
        out = fsattrs.to_features(chattr, self.flags)
        if self.flags & ff.WITH_SUBVOLUME and stat.S_ISDIR(st.st_mode):
            is_subvolume, read_only = fsattrs.subvolume(fd, st.st_ino)
            if is_subvolume:
                out |= ff.WITH_SUBVOLUME
                if read_only:
                    out |= self.flags & ff.WITH_SUBVOLUME_RO
        return out

    def _xattrs(
        self, entry: Entry, fd: int | None, dir_fd: int | None, name: bytes, mode: int
    ) -> None:
        """XATTR, SELINUX, FCAPS and ACL records from the node's extended attributes."""
        target: int | bytes = fd if fd is not None else _proc_path(dir_fd, name)
        follow = fd is not None
        try:
            names = os.listxattr(target, follow_symlinks=follow)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return
            raise
        if not names:
            return
        values = {}
        for n in names:
            try:
                values[n] = os.getxattr(target, n, follow_symlinks=follow)
            except OSError as e:
                if e.errno != errno.ENODATA:  # removed since listed
                    raise
        flags = self.flags
        if flags & ft.WITH_XATTRS:
            picked = sorted((os.fsencode(n), v) for n, v in values.items())
            entry.xattrs = tuple((n, v) for n, v in picked if ft.stores_xattr(n))
        if flags & ft.WITH_ACL and not stat.S_ISLNK(mode):
            entry.acl = self._acl(values)
        if flags & ft.WITH_SELINUX and "security.selinux" in values:
            entry.selinux = values["security.selinux"].split(b"\0", 1)[0]
        if flags & ft.WITH_FCAPS and "security.capability" in values:
            entry.fcaps = values["security.capability"]

    def _acl(self, values: dict[str, bytes]) -> Acl:
        named = self.flags & ft.WITH_USER_NAMES

        def users(i: int) -> bytes:
            return fsattrs.user_name(i) if named else b""

        def groups(i: int) -> bytes:
            return fsattrs.group_name(i) if named else b""

        try:
            return posix_acl.to_catar(
                values.get(posix_acl.ACCESS), values.get(posix_acl.DEFAULT), users, groups
            )
        except posix_acl.AclFormatError as e:
            raise DesyncError(f"unreadable ACL: {e}") from None


# The feature bits an ENTRY alone holds (entry_batch encodes nothing else) and those
# it needs; the rest of the flags (which types are stored, xattrs, exclusions) it follows.
_BATCH_ALLOWS = (
    ft.WITH_32BIT_UIDS
    | ft.WITH_NSEC_TIME
    | ft.WITH_PERMISSIONS
    | ft.WITH_SYMLINKS
    | ft.WITH_DEVICE_NODES
    | ft.WITH_FIFOS
    | ft.WITH_SOCKETS
    | ft.WITH_XATTRS
)
_BATCH_NEEDS = ft.WITH_32BIT_UIDS | ft.WITH_NSEC_TIME | ft.WITH_PERMISSIONS


def _entry_batch(options: DiskOptions) -> EntryBatch | None:
    """The C encoder of plain children for these options, None when it cannot be used."""
    flags = options.flags
    features = flags & ff.WITH_MASK
    if (
        not options.encoded
        or options.patterns is not None
        or features & ~_BATCH_ALLOWS
        or features & _BATCH_NEEDS != _BATCH_NEEDS
        or len(options.exclude) > 1
    ):
        return None
    return EntryBatch(
        Config(
            feature_flags=flags,
            xattrs=bool(flags & ft.WITH_XATTRS),
            nodump=bool(flags & ff.EXCLUDE_NODUMP),
            symlinks=bool(flags & ft.WITH_SYMLINKS),
            exclude=next(iter(options.exclude), None),
        )
    )


# A directory's listing is held, sorted, while its children are archived: a million
# entries as (name, kind) tuples took 110 MB, as one bytes each (name, NUL, kind) 50.
# NUL sorts before any byte a name holds, so the keys sort as the names do.
_KIND_SUFFIX = {stat.S_IFREG: b"\0f", stat.S_IFDIR: b"\0d", 0: b"\0?"}
_SUFFIX_KIND = {suffix[-1]: kind for kind, suffix in _KIND_SUFFIX.items()}
_STAT_KIND = {KIND_FILE: stat.S_IFREG, KIND_DIR: stat.S_IFDIR, KIND_OTHER: 0}


def _kind(entry: os.DirEntry) -> int:
    """S_IFREG or S_IFDIR when the listing says so without a stat of its own, else 0."""
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    return 0


def _proc_path(dir_fd: int | None, name: bytes) -> bytes:
    """A path to ``name`` in ``dir_fd`` that resolves through no symlink the tree holds."""
    if dir_fd is None:
        return name
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)
