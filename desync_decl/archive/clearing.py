"""Clearing the way for an untar: what stands in the target where the archive
has an entry of another type (a file where it has a directory, a symlink where it
has a directory, ...) and, asked to, what the archive does not hold, is deleted
before the archive is written. The ``untar`` verb (``--delete-extra``) and the
``untar`` task both clear through ``clear``, so they delete the same entries.

Everything is relative to one fd of the target (``tree_walk.open_tree``): no
symlink is followed on the way down nor into a directory being emptied, another
mount is never entered (the deletion stops there, naming it), and a directory
moved while it is emptied stops the deletion. Entries on other filesystems and of
types the archive's flags cannot hold are never extras.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from desync_decl.archive.patterns import Patterns
from desync_decl.archive.tree_walk import O_DIR, open_tree, shown_path, walk
from desync_decl.errors import DesyncError, UsageError
from desync_decl.formats.catar.decoder import Decoder, Node
from desync_decl.formats.catar.features import stores_type


class Cleared(NamedTuple):
    replaced: int = 0  # entries of another type than the archive's, deleted
    deleted: int = 0  # entries the archive does not hold, deleted


def archive_types(decoder: Decoder) -> dict[bytes, int]:
    """Relative path (``b"."`` for the root) -> file type of every entry the decoder
    yields; payloads are skipped, not hashed."""
    out: dict[bytes, int] = {}
    for ev in decoder:
        if isinstance(ev, Node):
            out[b"/".join(ev.path) if ev.path else b"."] = ev.entry.mode & 0o170000
    return out


def remove(root_fd: int, where: str, rel: bytes) -> None:
    """Delete the entry ``rel`` below the directory ``root_fd`` (shown as ``where``; a
    directory with everything in it), never following a symlink on the way nor
    entering another mount (``_remove_tree``); a parent we own but may not write to is
    opened up for the deletion and put back."""
    parts = rel.split(b"/")
    shown = shown_path(where, rel)
    try:
        fd = os.dup(root_fd)
        try:
            for part in parts[:-1]:
                inner = os.open(part, O_DIR, dir_fd=fd)
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
            up = os.open(b"..", O_DIR, dir_fd=fd)
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
        fd = os.open(name, O_DIR, dir_fd=parent)
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


def refuse_kept_inside(root: str | os.PathLike, kept: Iterable[str | os.PathLike]) -> None:
    """Refuse, before anything is deleted, to delete extra entries of ``root`` when
    one of ``kept`` (the local chunk stores and caches the untar reads through) lies
    at or below it: they are not in the archive, so they would be deleted first and
    the untar would then miss its chunks. Real paths are compared: each of ``kept``
    with its symlinks resolved, then its directory and every parent by device and
    inode against ``root``'s (a bind mount or a second path to the same tree too)."""
    try:
        top = os.stat(root)
    except OSError:
        return  # no target yet: nothing in it to delete
    for path in kept:
        if _at_or_below(path, (top.st_dev, top.st_ino)):
            raise UsageError(
                f"{os.fsdecode(path)} lies in {os.fsdecode(root)}: deleting what the archive"
                " does not hold would delete it (keep the store and cache outside the target)"
            )


def _at_or_below(path: str | os.PathLike, top: tuple[int, int]) -> bool:
    """Whether ``path`` (resolved) or one of its parents is the directory ``top``."""
    at = os.path.realpath(path)
    while True:
        with contextlib.suppress(OSError):  # a part not made yet: its parent may be
            st = os.stat(at)
            if (st.st_dev, st.st_ino) == top:
                return True
        parent = os.path.dirname(at)
        if parent == at:
            return False
        at = parent


def clear(
    root: str | os.PathLike,
    archive: Callable[[], tuple[Mapping[bytes, int], int]],
    *,
    delete_extra: bool,
    patterns: Patterns | None = None,
) -> Cleared:
    """Before an untar: delete what stands where the archive has an entry of another
    type and, with ``delete_extra``, what it does not hold. ``archive`` gives its
    entries (relative path -> file type) and feature flags; it is read only when
    ``root`` exists. Everything is done relative to one fd of ``root``. What
    ``patterns`` leave out is never deleted (as rsync protects excluded files)."""
    where = os.fsdecode(root)
    fd = open_tree(root, "untar to")
    if fd is None:
        return Cleared()
    try:
        types, flags = archive()
        entries = list(walk(fd, where))
        top = entries[0][1].st_dev
        gone: set[bytes] = set()
        replaced = deleted = 0
        for rel, st in entries[1:]:
            if _below(rel, gone):
                continue
            if patterns is not None and not patterns.allows(
                os.fsdecode(rel), stat.S_ISDIR(st.st_mode)
            ):
                continue
            want = types.get(rel)
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
    return Cleared(replaced, deleted)


def _below(rel: bytes, dirs: set[bytes]) -> bool:
    """Whether one of ``dirs`` is an ancestor of ``rel``."""
    cut = rel.rfind(b"/")
    while cut > 0:
        if rel[:cut] in dirs:
            return True
        cut = rel.rfind(b"/", 0, cut)
    return False
