"""``untar --atomic``: the new tree is built beside the old one and switched in with
one ``renameat2(RENAME_EXCHANGE)``, so a reader, and an untar interrupted at any
point, sees the whole old tree or the whole new one, never a mix.

The new tree is a hidden directory in the target's parent (``.NAME.untar-<hex>``,
mode 0700 until its root gets the archive's mode). Unchanged files are hard links
to the old tree's (``Writer._keep``: only a file whose metadata is right and that
has no other link; the old tree is never written, so sharing its inodes is safe),
everything else is new. What the archive does not hold is carried over (files
linked, directories and nodes made again) unless extras are deleted; what an
exclude pattern protects always is. After the exchange the old tree, now under the
hidden name, is deleted. An interrupted run leaves the old tree in place and the
hidden directory beside it, which the next ``--atomic`` untar of the same target
deletes first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from desync_decl.archive.clearing import remove
from desync_decl.archive.disk_writer import UntarError
from desync_decl.archive.tree_walk import O_DIR
from desync_decl.errors import DesyncError
from desync_decl.fsutil import open_parent, walk_error

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_LEFTOVER = re.compile(rb"\.(.+)\.untar-[0-9a-f]{16}")


def rename_at(dir_fd: int, old: bytes, new: bytes, flags: int) -> None:
    """``renameat2`` within the directory ``dir_fd`` (Python has no binding for it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        call = libc.renameat2
    except AttributeError:
        raise DesyncError("--atomic needs renameat2 (glibc 2.28 or later)") from None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if call(dir_fd, old, dir_fd, new, flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@dataclass
class Beside:
    """The directories of a switch: the new tree's root (being built) and the old one's
    (None: there is none yet), both fds owned by ``built_beside``."""

    new: int
    old: int | None


@contextlib.contextmanager
def built_beside(target: str | os.PathLike) -> Iterator[Beside]:
    """A new empty directory beside ``target`` to build the tree in; switched with the
    target when the block ends without an error (deleted when it raises), the old tree
    deleted after. ``target`` must be a directory or missing, never a symlink."""
    where = os.fsdecode(target)
    head, name = os.path.split(os.path.abspath(where))
    if not name:
        raise UntarError("--atomic cannot switch /: untar into a directory below it")
    try:
        parent = open_parent(where, create=True)
    except OSError as e:
        raise walk_error(where, e, "untar to") from None
    bname = os.fsencode(name)
    try:
        _remove_leftovers(parent, head, bname)
        old = _open_old(parent, bname, where)
        temp = b".%s.untar-%s" % (bname, secrets.token_hex(8).encode())
        os.mkdir(temp, 0o700, dir_fd=parent)
        switched = False
        try:
            new = os.open(temp, O_DIR, dir_fd=parent)
            try:
                yield Beside(new, old)
            finally:
                os.close(new)
                if old is not None:
                    os.close(old)
            try:
                rename_at(
                    parent, temp, bname, RENAME_EXCHANGE if old is not None else RENAME_NOREPLACE
                )
            except OSError as e:
                raise DesyncError(
                    f"cannot switch {where} to its new version: {e.strerror}"
                    + (" (the filesystem cannot exchange names)" if e.errno == errno.EINVAL else "")
                ) from None
            switched = True
        finally:
            if switched and old is None:
                pass  # nothing to delete: the new tree took a free name
            else:
                remove(parent, head, temp)  # the old tree after a switch, else the new one
    finally:
        os.close(parent)


def _open_old(parent: int, name: bytes, where: str) -> int | None:
    try:
        return os.open(name, O_DIR, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntarError(
                f"--atomic: {where} is not a directory (a symlink or a file)"
            ) from None
        raise walk_error(where, e, "untar to") from None


def _remove_leftovers(parent: int, head: str, name: bytes) -> None:
    """The hidden trees an interrupted ``--atomic`` untar of ``name`` left."""
    with os.scandir(parent) as entries:
        leftovers = [
            os.fsencode(e.name)
            for e in entries
            if (m := _LEFTOVER.fullmatch(os.fsencode(e.name))) and m[1] == name
        ]
    for leftover in leftovers:
        remove(parent, head, leftover)


def carry_extras(old: int, new: int, keep: Callable[[bytes, bool], bool], where: str) -> int:
    """Carry what the old tree ``old`` holds and the new tree ``new`` does not into the
    new one, where ``keep(relative path, is a directory)`` says so; the number of
    entries left behind. The mtimes of the new tree's directories stay as they are."""
    return _carry_level(old, new, b"", keep, where)


def _carry_level(
    old: int, new: int, rel: bytes, keep: Callable[[bytes, bool], bool], where: str
) -> int:
    dropped = 0
    before = os.fstat(new)
    with os.scandir(old) as entries:
        names = sorted(os.fsencode(e.name) for e in entries)
    for name in names:
        path = rel + name
        st = os.stat(name, dir_fd=old, follow_symlinks=False)
        try:
            there = os.stat(name, dir_fd=new, follow_symlinks=False)
        except FileNotFoundError:
            there = None
        is_dir = stat.S_ISDIR(st.st_mode)
        if there is not None:
            if is_dir and stat.S_ISDIR(there.st_mode):
                with _both(old, new, name) as (o, n):
                    dropped += _carry_level(o, n, path + b"/", keep, where)
            continue
        if not keep(path, is_dir):
            dropped += 1
            continue
        _carry(old, new, name, st, os.path.join(where, os.fsdecode(path)))
    if os.fstat(new).st_mtime_ns != before.st_mtime_ns:
        os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    return dropped


@contextlib.contextmanager
def _both(old: int, new: int, name: bytes) -> Iterator[tuple[int, int]]:
    o = os.open(name, O_DIR, dir_fd=old)
    try:
        n = os.open(name, O_DIR, dir_fd=new)
        try:
            yield o, n
        finally:
            os.close(n)
    finally:
        os.close(o)


def _carry(old: int, new: int, name: bytes, st: os.stat_result, shown: str) -> None:
    """One entry of the old tree made in the new one: a file linked, a directory made
    and filled, a symlink or node made again, with its owner, mode and times."""
    try:
        if stat.S_ISREG(st.st_mode):
            os.link(name, name, src_dir_fd=old, dst_dir_fd=new, follow_symlinks=False)
            return
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=new)
            with _both(old, new, name) as (o, n):
                _carry_level(o, n, b"", lambda _p, _d: True, shown)
                made = os.fstat(n)
                if (made.st_uid, made.st_gid) != (st.st_uid, st.st_gid):
                    os.fchown(n, st.st_uid, st.st_gid)
                os.fchmod(n, stat.S_IMODE(st.st_mode))
                os.utime(n, ns=(st.st_atime_ns, st.st_mtime_ns))
            return
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=old), name, dir_fd=new)
        else:
            os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=new)
            # never through a symlink swapped in meanwhile (the new tree's directories
            # have the archive's modes now): fchmodat(AT_SYMLINK_NOFOLLOW)
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=new, follow_symlinks=False)
        made = os.stat(name, dir_fd=new, follow_symlinks=False)
        if (made.st_uid, made.st_gid) != (st.st_uid, st.st_gid):
            os.chown(name, st.st_uid, st.st_gid, dir_fd=new, follow_symlinks=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=new, follow_symlinks=False)
    except OSError as e:
        raise DesyncError(
            f"--atomic: cannot carry {shown} into the new tree: {e.strerror}"
        ) from None
