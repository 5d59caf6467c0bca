"""A tar archive (GNU, POSIX/PAX, ustar; plain or compressed) as catar source nodes.

catar needs each directory's children sorted, tar gives them in any order, so
the member headers are read first into a tree (metadata only). File contents
stay where they are: read in place from an uncompressed tar file, or, for a
compressed tar or a pipe, copied once into an unnamed temporary file.

Member names are checked like archive names: absolute names, ``..`` and paths
through a non-directory (a symlink planted by an earlier member, GNU tar
CVE-2025-45582) are refused. Hard links become copies of the earlier member
they name, which must be a regular file inside the archive.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import BinaryIO

from desync_decl.archive.patterns import Patterns
from desync_decl.errors import DesyncError
from desync_decl.formats.catar import features as ft
from desync_decl.formats.catar.entry import Entry
from desync_decl.fsutil import open_file, walk_error

BLOCK_SIZE = 1 << 20
_TYPES = {
    tarfile.REGTYPE: stat.S_IFREG,
    tarfile.AREGTYPE: stat.S_IFREG,
    tarfile.CONTTYPE: stat.S_IFREG,
    tarfile.GNUTYPE_SPARSE: stat.S_IFREG,
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
_XATTR = "SCHILY.xattr."


@dataclass(frozen=True)
class TarOptions:
    flags: int  # the archive's full feature flags
    add_root: bool = False  # synthesize the root directory when the tar has no "./"
    patterns: Patterns | None = None  # --include/--exclude


class TarNode:
    __slots__ = ("entry", "fd", "kids", "offset", "rdev", "size", "target")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.kids: dict[bytes, TarNode] = {}
        self.size = self.offset = self.rdev = 0
        self.fd = -1
        self.target = b""

    def payload(self) -> Iterator[bytes]:
        pos, end = self.offset, self.offset + self.size
        while pos < end:
            block = os.pread(self.fd, min(BLOCK_SIZE, end - pos), pos)
            if not block:
                raise DesyncError("tar input truncated")
            pos += len(block)
            yield block

    def deferred_payload(self) -> None:
        return None  # payloads come in blocks (the tar's spool file is shared)

    def children(self) -> Iterator[tuple[bytes, TarNode]]:
        for name in sorted(self.kids):
            yield name, self.kids[name]


@contextlib.contextmanager
def tar_tree(source: str | os.PathLike | BinaryIO, options: TarOptions) -> Iterator[TarNode]:
    """The root node of a tar file (a path) or stream (a binary file object)."""
    with contextlib.ExitStack() as stack:
        f: BinaryIO
        if isinstance(source, str | os.PathLike):
            try:  # no symlink someone else planted is followed (fsutil.open_file)
                f = stack.enter_context(os.fdopen(open_file(source, os.O_RDONLY), "rb"))
            except OSError as e:
                raise walk_error(os.fsdecode(source), e, "read") from None
            where = os.fsdecode(source)
            if stat.S_ISDIR(os.fstat(f.fileno()).st_mode):
                raise DesyncError(f"cannot read {where}: Is a directory")
        else:
            f, where = source, "tar stream"
        builder = _Builder(options, where)
        try:
            _read(f, builder, stack)
        except (tarfile.TarError, EOFError) as e:
            raise DesyncError(f"{where}: not a readable tar archive: {e}") from None
        yield builder.finish()


def _read(f: BinaryIO, builder: _Builder, stack: contextlib.ExitStack) -> None:
    if _seekable_file(f):
        try:
            archive = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - closed below
        except tarfile.ReadError:
            f.seek(0)  # compressed: read it as a stream below
        else:
            with archive:
                _read_in_place(archive, f, builder, stack)
            return
    spool = stack.enter_context(_spool())
    with tarfile.open(fileobj=f, mode="r|*") as stream:
        for m in stream:
            builder.add(m, *_copy(stream, m, spool))


def _read_in_place(
    archive: tarfile.TarFile, f: BinaryIO, builder: _Builder, stack: contextlib.ExitStack
) -> None:
    """Headers of an uncompressed tar file; contents stay in it (sparse ones are copied)."""
    spool = None
    for m in archive:
        if not m.isreg():
            builder.add(m, -1, 0)
        elif m.sparse is None:
            builder.add(m, f.fileno(), m.offset_data)
        else:
            spool = spool or stack.enter_context(_spool())
            builder.add(m, *_copy(archive, m, spool))


def _spool() -> BinaryIO:
    """An unnamed temporary file for member data that cannot be read in place."""
    return tempfile.TemporaryFile()


def _seekable_file(f: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(f.fileno()).st_mode) and f.seekable()
    except (OSError, AttributeError, ValueError):
        return False


def _copy(archive: tarfile.TarFile, m: tarfile.TarInfo, spool: BinaryIO) -> tuple[int, int]:
    """Append a member's data to the spool file; its (fd, offset) there."""
    offset = spool.seek(0, os.SEEK_END)
    if m.isreg():
        data = archive.extractfile(m)
        assert data is not None
        while block := data.read(BLOCK_SIZE):
            spool.write(block)
        spool.flush()
    return spool.fileno(), offset


class _Builder:
    def __init__(self, options: TarOptions, where: str) -> None:
        self.flags = options.flags
        self.add_root = options.add_root
        self.patterns = options.patterns
        self.where = where
        self._left_out: dict[tuple[bytes, ...], TarNode] = {}  # files a hard link may name
        self.root: TarNode | None = None
        self._dirs = TarNode(self._synthesized())  # holds the tree until finish()

    def _synthesized(self) -> Entry:
        mode = ft.entry_mode(self.flags, stat.S_IFDIR | 0o755)
        return Entry(feature_flags=self.flags, mode=mode)

    def fail(self, m: tarfile.TarInfo, why: str) -> DesyncError:
        return DesyncError(f"{self.where}: entry {m.name!r}: {why}")

    def add(self, m: tarfile.TarInfo, fd: int, offset: int) -> None:
        parts = self._parts(m, m.name)
        if m.islnk():
            if not self._keeps(parts, False):
                return  # its target may be left out too
            node = self._hardlink(m)
        else:
            fmt = _TYPES.get(m.type)
            if fmt is None:
                raise self.fail(m, f"unsupported tar entry type {m.type!r}")
            mode = fmt | (m.mode & 0o7777)
            if not ft.stores_type(self.flags, mode):
                return
            node = TarNode(self._entry(m, mode))
            if fmt == stat.S_IFREG:
                node.fd, node.offset, node.size = fd, offset, m.size
            elif fmt == stat.S_IFLNK:
                node.target = os.fsencode(m.linkname)
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                node.rdev = os.makedev(m.devmajor, m.devminor)
        if not self._keeps(parts, stat.S_ISDIR(node.entry.mode)):
            if stat.S_ISREG(node.entry.mode):
                self._left_out[parts] = node  # a kept hard link to it gets its data
            return
        self._place(m, parts, node)

    def _keeps(self, parts: tuple[bytes, ...], is_dir: bool) -> bool:
        """Whether the include/exclude patterns keep the member (the root always)."""
        if not parts or self.patterns is None:
            return True
        return self.patterns.allows(os.fsdecode(b"/".join(parts)), is_dir)

    def _parts(self, m: tarfile.TarInfo, name: str) -> tuple[bytes, ...]:
        raw = os.fsencode(name)
        if raw.startswith(b"/"):
            raise self.fail(m, "absolute names are refused")
        parts = tuple(p for p in raw.split(b"/") if p not in (b"", b"."))
        if b".." in parts:
            raise self.fail(m, "'..' in a name is refused")
        return parts

    def _hardlink(self, m: tarfile.TarInfo) -> TarNode:
        node: TarNode | None = self._dirs
        target = self._parts(m, m.linkname)
        for p in target:
            node = node.kids.get(p) if node is not None else None
        node = node or self._left_out.get(target)
        if node is None or not stat.S_ISREG(node.entry.mode):
            raise self.fail(m, f"hard link to {m.linkname!r}, not an earlier regular file")
        link = TarNode(node.entry)
        link.fd, link.offset, link.size = node.fd, node.offset, node.size
        return link

    def _place(self, m: tarfile.TarInfo, parts: tuple[bytes, ...], node: TarNode) -> None:
        if not parts:
            if not stat.S_ISDIR(node.entry.mode):
                raise self.fail(m, "the archive root is not a directory")
            self._dirs.entry = node.entry
            self.root = self._dirs
            return
        parent = self._dirs
        for p in parts[:-1]:
            child = parent.kids.get(p)
            if child is None:
                child = parent.kids[p] = TarNode(self._synthesized())
            elif not stat.S_ISDIR(child.entry.mode):
                raise self.fail(m, f"{os.fsdecode(p)!r} on its path is not a directory")
            parent = child
        old = parent.kids.get(parts[-1])
        if old is not None and stat.S_ISDIR(old.entry.mode):
            if not stat.S_ISDIR(node.entry.mode):
                raise self.fail(m, "would replace a directory")
            old.entry = node.entry  # a directory listed twice keeps its children
            return
        parent.kids[parts[-1]] = node  # a later member replaces an earlier one, as in tar

    def _entry(self, m: tarfile.TarInfo, mode: int) -> Entry:
        flags = self.flags
        uid, gid = ft.entry_ids(flags, m.uid, m.gid, lambda: f"{self.where}: {m.name}")
        entry = Entry(
            feature_flags=flags,
            mode=ft.entry_mode(flags, mode),
            uid=uid,
            gid=gid,
            mtime=ft.entry_mtime(flags, _mtime_ns(m)),
        )
        if flags & ft.WITH_USER_NAMES:
            entry.user = os.fsencode(m.uname) if uid and m.uname else None
            entry.group = os.fsencode(m.gname) if gid and m.gname else None
        xattrs = {
            k[len(_XATTR) :].encode("utf-8", "surrogateescape"): v.encode(
                "utf-8", "surrogateescape"
            )
            for k, v in m.pax_headers.items()
            if k.startswith(_XATTR)
        }
        if flags & ft.WITH_XATTRS:
            entry.xattrs = tuple(sorted((k, v) for k, v in xattrs.items() if ft.stores_xattr(k)))
        if flags & ft.WITH_SELINUX and b"security.selinux" in xattrs:
            entry.selinux = xattrs[b"security.selinux"].split(b"\0", 1)[0]
        if flags & ft.WITH_FCAPS and b"security.capability" in xattrs and stat.S_ISREG(mode):
            entry.fcaps = xattrs[b"security.capability"]
        return entry

    def finish(self) -> TarNode:
        if self.root is None:
            if not self.add_root:
                raise DesyncError(
                    f"{self.where}: no root directory entry ('./') in the tar;"
                    " use --tar-add-root to add one"
                )
            self.root = self._dirs
        return self.root


def _mtime_ns(m: tarfile.TarInfo) -> int:
    """The member's mtime in ns, exact when a PAX header gives fractions."""
    text = m.pax_headers.get("mtime")
    if text is not None:
        with contextlib.suppress(InvalidOperation):
            return max(0, int(Decimal(text) * 10**9))
    return max(0, int(m.mtime) * 10**9)
