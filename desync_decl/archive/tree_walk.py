"""Walking a directory tree no one else can redirect: the root opened through no
symlink someone else could have planted (``fsutil.open_directory``), every
directory below opened relative to its parent with ``O_NOFOLLOW``, entries by
``lstat``, in a fixed order. What the tree's fingerprint (``reconcile/kinds/trees``)
and the clearing before an untar (``clearing.py``) both read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

from desync_decl.errors import DesyncError
from desync_decl.fsutil import open_directory, walk_error

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        raise DesyncError(f"cannot read {shown_path(where, rel)}: {e.strerror}") from None
    return out


def _subdir(parent: int, name: bytes, rel: bytes, where: str) -> int | None:
    """The subdirectory ``name`` opened without following a symlink; None when it was
    removed or replaced since it was listed (the fingerprint differs anyway)."""
    try:
        return os.open(name, O_DIR, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise DesyncError(f"cannot read {shown_path(where, rel)}: {e.strerror}") from None


def shown_path(where: str, rel: bytes) -> str:
    """The entry ``rel`` below the tree shown as ``where``, for messages."""
    return os.path.join(where, os.fsdecode(rel)) if rel else where
