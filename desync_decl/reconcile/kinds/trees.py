"""Directory trees for the ``tar`` and ``untar`` kinds: a tree's fingerprint and the
index it would get.

The fingerprint is one ``lstat`` per entry (path, type, mode, owner, size,
mtime, ctime, inode), hashed: any write, rename, chmod, chown, xattr or ACL
change moves an mtime or a ctime, so a matching fingerprint means "as we left
it" without reading a byte of content. ``tree_index`` is what ``tar -i`` would
write for a tree, computed through ``ops.tar.tar_index`` with a store that
keeps nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.formats import flags as ff
from desync_decl.formats.catar.features import stores_type
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.fsutil import open_directory, walk_error
from desync_decl.ops.tar import TarInput, tar_index
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.dry import DryStore

_STAT = struct.Struct("<IIIQqqQQ")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotADirectory(DesyncError):
    """A tree's root is a file (or another non-directory)."""


def open_tree(root: str | os.PathLike, action: str = "read") -> int | None:
    """An fd of the directory ``root``, None when it does not exist; a symlink as it or
    on the way to it is followed only where no one else could have planted it
    (``fsutil.open_directory``: a tree of root's below a shared directory, swapped for a
    link to ``/etc``, must never be read, emptied or filled)."""
    try:
        return open_directory(root)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise NotADirectory(f"{root}: not a directory") from None
    except OSError as e:
        raise walk_error(root, e, action) from None


def walk(
    root_fd: int, where: str, *, one_file_system: bool = False
) -> Iterator[tuple[bytes, os.stat_result]]:
    """``(relative path, lstat)`` of the directory ``root_fd`` (``b"."``, shown as
    ``where`` in errors) and every entry below it, in a fixed order (children by name),
    each directory opened relative to its parent without following a symlink."""
    top = os.fstat(root_fd)
    yield b".", top
    frames: list[tuple[int, Iterator[tuple[bytes, bytes]]]] = []  # open dirs, subdirs left
    fd: int | None = os.dup(root_fd)
    rel = b""
    try:
        while True:
            if fd is not None:
                entries = _entries(fd, rel, where)
                subdirs = []
                for child, name, st in entries:
                    yield child, st
                    if stat.S_ISDIR(st.st_mode) and not (
                        one_file_system and st.st_dev != top.st_dev
                    ):
                        subdirs.append((child, name))
                frames.append((fd, iter(subdirs)))
                fd = None
            if not frames:
                return
            step = next(frames[-1][1], None)
            if step is None:
                os.close(frames.pop()[0])
                continue
            rel, name = step
            fd = _subdir(frames[-1][0], name, rel, where)
    finally:
        for open_fd, _ in frames:
            os.close(open_fd)
        if fd is not None:
            os.close(fd)


def _entries(fd: int, rel: bytes, where: str) -> list[tuple[bytes, bytes, os.stat_result]]:
    """``(relative path, name, lstat)`` of a directory's entries, by name."""
    out = []
    try:
        with os.scandir(fd) as it:
            for e in sorted(it, key=lambda e: e.name):
                name = os.fsencode(e.name)
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we walked: the fingerprint differs anyway
                out.append((rel + b"/" + name if rel else name, name, st))
    except OSError as e:
        raise DesyncError(f"cannot read {_shown(where, rel)}: {e.strerror}") from None
    return out


def _subdir(parent: int, name: bytes, rel: bytes, where: str) -> int | None:
    """The subdirectory ``name`` opened without following a symlink; None when it was
    removed or replaced since it was listed (the fingerprint differs anyway)."""
    try:
        return os.open(name, _O_DIR, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise DesyncError(f"cannot read {_shown(where, rel)}: {e.strerror}") from None


def _shown(where: str, rel: bytes) -> str:
    return os.path.join(where, os.fsdecode(rel)) if rel else where


def fingerprint(
    root: str | os.PathLike, *, one_file_system: bool = False, action: str = "read"
) -> str | None:
    """``sha256:<hex>`` over every entry's lstat; None when ``root`` does not exist
    (``open_tree``, errors saying ``action``)."""
    fd = open_tree(root, action)
    if fd is None:
        return None
    try:
        h = hashlib.sha256()
        for rel, st in walk(fd, os.fsdecode(root), one_file_system=one_file_system):
            h.update(rel + b"\0")
            h.update(
                _STAT.pack(
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                    st.st_rdev,
                )
            )
    finally:
        os.close(fd)
    return f"sha256:{h.hexdigest()}"


def tree_index(
    root: str | os.PathLike,
    flags: int,
    sizes: ChunkSizes,
    *,
    concurrency: int,
    progress: Progress = NO_PROGRESS,
) -> Index:
    """The index ``tar -i`` with ``flags`` and ``sizes`` would write for ``root``."""
    source = TarInput(root, flags=flags, one_file_system=bool(flags & ff.EXCLUDE_SUBMOUNTS))
    result = tar_index(source, DryStore(), sizes=sizes, concurrency=concurrency, progress=progress)
    assert result.index is not None
    return result.index


def remove(root_fd: int, where: str, rel: bytes) -> None:
    """Delete the entry ``rel`` below the directory ``root_fd`` (shown as ``where``; a
    directory with everything in it), never following a symlink on the way nor
    entering another mount (``_remove_tree``); a parent we own but may not write to is
    opened up for the deletion and put back."""
    parts = rel.split(b"/")
    shown = _shown(where, rel)
    try:
        fd = os.dup(root_fd)
        try:
            for part in parts[:-1]:
                inner = os.open(part, _O_DIR, dir_fd=fd)
                os.close(fd)
                fd = inner
            mode = _opened_up(fd)
            try:
                _remove_at(fd, parts[-1], shown)
            finally:
                if mode is not None:
                    os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return  # gone already
    except OSError as e:
        raise DesyncError(f"cannot delete {shown}: {e.strerror}") from None


def _opened_up(fd: int) -> int | None:
    """Give the owner write access to a directory; its mode before, if it changed."""
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if os.geteuid() == 0 or st.st_uid != os.geteuid() or mode & 0o300 == 0o300:
        return None
    os.fchmod(fd, mode | 0o700)
    return mode


def _remove_at(parent: int, name: bytes, shown: str) -> None:
    if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
        _remove_tree(parent, name, shown)
    else:
        os.unlink(name, dir_fd=parent)


@dataclass
class _Level:
    """A directory being emptied: its name in its parent, its identity, and the
    subdirectories in it still to remove."""

    name: bytes
    ident: tuple[int, int]
    subdirs: list[bytes]


def _remove_tree(parent: int, name: bytes, shown: str) -> None:
    """Delete the directory ``name`` in ``parent`` (shown as ``shown``) and everything
    in it, at any depth: a loop, not recursion, holding one directory fd at a time
    (back up through ``..`` only to the very directory it came from). A directory on
    another mount than ``parent`` (a bind-mounted ``data/``, a tmpfs) is never
    entered: the deletion stops there, naming it."""
    mount = _mount_of(parent)
    fd = _enter(parent, name, mount, shown)
    if fd is None:
        return
    try:
        levels = [_Level(name, _ident(fd), _clear(fd))]
        while levels:
            level = levels[-1]
            if level.subdirs:
                child = level.subdirs.pop()
                at = os.path.join(shown, *map(os.fsdecode, (lv.name for lv in levels[1:])))
                inner = _enter(fd, child, mount, os.path.join(at, os.fsdecode(child)))
                if inner is not None:
                    os.close(fd)
                    fd = inner
                    levels.append(_Level(child, _ident(fd), _clear(fd)))
                continue
            levels.pop()
            if not levels:
                break
            up = os.open(b"..", _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = up
            if _ident(fd) != levels[-1].ident:
                raise DesyncError(f"cannot delete {shown}: it was moved while it was deleted")
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(level.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def _enter(parent: int, name: bytes, mount: tuple[int, int | None], shown: str) -> int | None:
    """The directory ``name`` in ``parent`` opened to empty it, if it is on ``mount``;
    None when it is gone, or was a non-directory and is now deleted."""
    try:
        fd = os.open(name, _O_DIR, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=parent)  # replaced by a file or a symlink since listed
        return None
    if _mount_of(fd) != mount:
        os.close(fd)
        raise DesyncError(f"cannot delete {shown}: it is a mount point; unmount it first")
    _opened_up(fd)  # it goes: no need to put the mode back
    return fd


def _clear(fd: int) -> list[bytes]:
    """Delete every non-directory in the directory ``fd``; the names of its subdirectories."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            name = os.fsencode(entry.name)
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
    return subdirs


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _mount_of(fd: int) -> tuple[int, int | None]:
    """The device and mount id of the open directory ``fd``: a bind mount of a folder
    of the same filesystem has the same device but a mount id of its own (read from
    ``/proc/self/fdinfo``; None where that is not available)."""
    device = os.fstat(fd).st_dev
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return device, int(line.split()[1])
    except (OSError, ValueError):
        pass
    return device, None


def mount_point_at_or_below(root: str | os.PathLike) -> str | None:
    """A mount point at ``root`` or below it, by ``/proc/self/mountinfo`` (None if
    none, or unknown): what ``state: absent`` must not empty, said before anything
    is deleted (the deletion itself stops at one too)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read()
    except OSError:
        return None
    real = os.fsencode(os.path.realpath(root))
    below = real.rstrip(b"/") + b"/"
    for line in table.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            if point == real or point.startswith(below):
                return os.fsdecode(point)
    return None


def repeated(index: Index) -> set[ChunkID]:
    """The chunks an index lists more than once."""
    seen: set[ChunkID] = set()
    again: set[ChunkID] = set()
    for c in index:
        (again if c.id in seen else seen).add(c.id)
    return again


def clear(
    root: str | os.PathLike, flags: int, archive: dict[bytes, int], *, delete_extra: bool
) -> tuple[int, int]:
    """Before an untar: delete what stands where the archive (relative path -> file
    type) has an entry of another type (a file where it has a directory, a symlink
    where it has a directory, ...) and, with ``delete_extra``, what it does not hold.
    Entries on other filesystems and of types its flags cannot hold are left alone.
    Returns the counts of entries replaced and deleted. Everything is done relative to
    one fd of ``root`` (``open_tree``)."""
    where = os.fsdecode(root)
    fd = open_tree(root, "untar to")
    if fd is None:
        return 0, 0
    try:
        entries = list(walk(fd, where))
        top = entries[0][1].st_dev
        gone: set[bytes] = set()
        replaced = deleted = 0
        for rel, st in entries[1:]:
            if _below(rel, gone):
                continue
            want = archive.get(rel)
            if want is None:
                if not delete_extra or st.st_dev != top or not stores_type(flags, st.st_mode):
                    continue
                deleted += 1
            elif (want == stat.S_IFDIR) != stat.S_ISDIR(st.st_mode):
                replaced += 1
            else:
                continue
            remove(fd, where, rel)
            gone.add(rel)
    finally:
        os.close(fd)
    return replaced, deleted


def _below(rel: bytes, dirs: set[bytes]) -> bool:
    """Whether one of ``dirs`` is an ancestor of ``rel``."""
    cut = rel.rfind(b"/")
    while cut > 0:
        if rel[:cut] in dirs:
            return True
        cut = rel.rfind(b"/", 0, cut)
    return False
