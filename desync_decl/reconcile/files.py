"""File attributes an ``extract`` task converges (mode, owner, group) and backups.

As Ansible's file modules: an attribute left out of the task is left alone;
``owner``/``group`` are names or numeric ids; ``backup`` keeps the previous
file as ``<path>.<timestamp>~`` before it is replaced.

The target's directory may be writable by someone else, who can swap the target
for a symlink at any moment, or plant a symlink as one of its directories: the
directory is opened walking from ``/`` (``fsutil.open_directory``) and everything
is done relative to its fd; attributes are set on an open fd (of the new file
before it gets its name, or of the target opened without following a symlink
and found to be the file that was planned on), and backups are made relative to
the directory's fd with names that never existed, never through a symlink.

Owner and mode are only ever set on a file of ours: a file someone else owns
(or one of ours linked elsewhere, when it is to be set-id) is replaced by a new
file instead (``replace_reason``). Its owner may hold it open, mapped shared
and writable: chowned and chmodded in place it would be root's set-uid program
with content its owner still writes.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError, file_error
from desync_decl.fsutil import current_umask, open_in, open_parent, send_file, walk_error

_SET_ID = stat.S_ISUID | stat.S_ISGID


@dataclass(frozen=True)
class Wanted:
    mode: int | None  # permission bits
    uid: int | None
    gid: int | None

    @classmethod
    def resolve(cls, mode: int | None, owner: str | int | None, group: str | int | None) -> Wanted:
        """Names looked up now: an unknown user or group is an error in the plan."""
        return cls(mode, _uid(owner), _gid(group))

    def changes(self, st: os.stat_result | None) -> list[tuple[str, str, str]]:
        """(attribute, now, wanted) for each attribute that differs; all of them for a new file."""
        out = []
        now = attributes(st)
        for key, value in (
            ("mode", _mode(self.mode)),
            ("owner", _user(self.uid)),
            ("group", _group(self.gid)),
        ):
            if value is not None and now.get(key) != value:
                out.append((key, now.get(key, "absent"), value))
        return out

    def for_new_file(self, old: os.stat_result | None) -> Wanted:
        """What a new file replacing one whose status is ``old`` (as opened without
        following a symlink, and the file that was planned on; None when there is no
        such file) gets: the task's mode, else the old file's (``kept_mode``), else
        0644 less the umask. The owner and group are the task's (else ours)."""
        mode = self.mode
        if mode is None:
            mode = kept_mode(old) if old is not None else 0o644 & ~current_umask()
        return Wanted(mode, self.uid, self.gid)

    def sets_any(self) -> bool:
        return (self.mode, self.uid, self.gid) != (None, None, None)

    def set(self, fd: int, path: Path) -> None:
        """Set them on the open file ``fd`` (named ``path`` in messages); refused on a
        file that ``replace_reason`` says must be replaced instead (it changed into
        one since it was planned on)."""
        if not self.sets_any():
            return
        why = _not_adoptable(os.fstat(fd), self)
        if why is not None:
            raise DesyncError(f"refusing to set the attributes of {path}: it is {why}")
        try:
            if self.uid is not None or self.gid is not None:
                os.fchown(
                    fd, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
                )
            if self.mode is not None:  # after chown, which may clear set-id bits
                os.fchmod(fd, self.mode)
        except OSError as e:
            raise DesyncError(f"cannot set the attributes of {path}: {e.strerror}") from None


def replace_reason(st: os.stat_result | None, wanted: Wanted, in_place: bool) -> str | None:
    """Why the regular file ``st`` must be replaced by a new file of ours rather than
    get ``wanted`` set on it (None when it may): its owner or mode must change (in
    place: the task sets any of them) and it is not ours, or it is linked elsewhere
    and is to be set-id (the other name would keep a set-id program we no longer
    update)."""
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    if not (wanted.changes(st) or (in_place and wanted.sets_any())):
        return None
    return _not_adoptable(st, wanted)


def _not_adoptable(st: os.stat_result, wanted: Wanted) -> str | None:
    if st.st_uid != os.geteuid():
        return f"owned by {_user(st.st_uid)}, not by us"
    if wanted.mode is not None and wanted.mode & _SET_ID and st.st_nlink > 1:
        return f"linked elsewhere ({st.st_nlink} links) and to be set-id"
    return None


def kept_mode(old: os.stat_result) -> int:
    """The mode a file replacing ``old`` keeps from it when the task names none: all
    of it from a file of ours (as an administrator set it), but from someone else's
    file never the set-id and sticky bits nor group/other write, which its owner
    chose and a file of ours must not get from them."""
    mode = stat.S_IMODE(old.st_mode)
    if old.st_uid == os.geteuid():
        return mode
    return mode & 0o755


_O_LOOK = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY  # a FIFO or a tty planted there: no wait


@contextlib.contextmanager
def directory_of(path: Path, *, create: bool = False) -> Iterator[int]:
    """An fd of ``path``'s directory (its missing directories made when ``create``),
    walked from ``/`` without following a symlink planted where others can write:
    everything about the target is done relative to it, so a directory renamed or
    swapped meanwhile changes nothing."""
    try:
        fd = _open_directory(path, create=create)
    except FileNotFoundError as e:
        raise file_error(path.parent, e) from None
    with _closing(fd):
        yield fd


@contextlib.contextmanager
def directory_if_any(path: Path) -> Iterator[int | None]:
    """``directory_of``, or None when a directory of ``path`` does not exist yet."""
    try:
        fd = _open_directory(path, create=False)
    except FileNotFoundError:
        fd = None
    with _closing(fd):
        yield fd


@contextlib.contextmanager
def _closing(fd: int | None) -> Iterator[None]:
    """Close ``fd`` (if any) on leaving."""
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _open_directory(path: Path, *, create: bool) -> int:
    """``fsutil.open_parent`` of ``path``; a one-line error naming a symlink refused
    on the way (FileNotFoundError as it is)."""
    try:
        return open_parent(path, create=create)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise walk_error(path, e, "write") from None
        raise file_error(path.parent, e) from None


@contextlib.contextmanager
def looked_at(dir_fd: int | None, path: Path) -> Iterator[tuple[int | None, os.stat_result | None]]:
    """The target ``path`` (its name in ``dir_fd``) opened to read (``open_in``: a
    symlink only where we alone write) and its status; (None, its lstat) for a
    symlink that is not followed, (None, None) when it or its directory is absent."""
    fd = None
    st = None
    if dir_fd is not None:
        try:
            fd = open_in(dir_fd, path.name, _O_LOOK)
            st = os.fstat(fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise file_error(path, e, "stat") from None
            st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
    with _closing(fd):
        yield fd, st


@contextlib.contextmanager
def planned(dir_fd: int, name: str, st: os.stat_result | None) -> Iterator[int | None]:
    """``name`` in ``dir_fd`` opened (``fsutil.open_in``: a symlink only where we alone
    write) if it is still the file ``st`` describes (same device and inode); None
    when it is gone, swapped or a symlink: it is not the file the plan saw."""
    fd = None
    if st is not None:
        with contextlib.suppress(OSError):
            fd = open_in(dir_fd, name, _O_LOOK)
        if fd is not None:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                fd = None
    with _closing(fd):
        yield fd


def attributes(st: os.stat_result | None) -> dict[str, str]:
    if st is None:
        return {}
    return {
        "mode": _mode(stat.S_IMODE(st.st_mode)) or "",
        "owner": _user(st.st_uid) or "",
        "group": _group(st.st_gid) or "",
    }


def new_file_owner() -> dict[str, str]:
    """Who a file this process creates belongs to, where a task names no owner or
    group (a diff's "after" of a file that does not exist yet)."""
    return {"owner": _user(os.geteuid()) or "", "group": _group(os.getegid()) or ""}


_BACKUP_NAMES = 4  # tries: the dated name, then dated names with a random part


def backup(dir_fd: int, path: Path, *, copy: bool) -> Path:
    """Keep the file ``path`` (in ``dir_fd``) as ``<path>.<timestamp>~``: a hard link
    when the file is about to be replaced by a rename, a copy when it is about to
    be overwritten.

    The file is opened without following a symlink (``open_in``); the backup gets a
    name that did not exist in any form (a planted symlink there makes another
    name be tried, never a write through it).
    """
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S")
    try:
        src = open_in(dir_fd, path.name, _O_LOOK)
    except OSError as e:
        raise DesyncError(f"cannot back up {path}: {e.strerror}") from None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise DesyncError(f"cannot back up {path}: not a regular file")
        for attempt in range(_BACKUP_NAMES):
            name = (
                f"{path.name}.{stamp}~"
                if attempt == 0
                else f"{path.name}.{stamp}.{secrets.token_hex(4)}~"
            )
            try:
                if copy or not _link(dir_fd, path.name, name, st):
                    _copy(src, st, dir_fd, name)
                return path.with_name(name)
            except FileExistsError:
                continue
            except OSError as e:
                raise DesyncError(
                    f"cannot back up {path} to {path.with_name(name)}: {e.strerror}"
                ) from None
        raise DesyncError(f"cannot back up {path}: every backup name is taken")
    finally:
        os.close(src)


def _link(dir_fd: int, name: str, backup_name: str, st: os.stat_result) -> bool:
    """Hard-link ``name`` as ``backup_name`` (never following a symlink); False when
    the filesystem cannot, or ``name`` is no longer the file ``st`` (then undone)."""
    try:
        os.link(name, backup_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        return False  # no hard links here: copy
    linked = os.stat(backup_name, dir_fd=dir_fd, follow_symlinks=False)
    if (linked.st_dev, linked.st_ino) == (st.st_dev, st.st_ino):
        return True
    os.unlink(backup_name, dir_fd=dir_fd)  # swapped meanwhile: copy what was opened
    return False


def _copy(src: int, st: os.stat_result, dir_fd: int, name: str) -> None:
    """Copy the open file ``src`` to a new file ``name`` (0600 until complete), with
    its owner, mode and times (owner first: a chown clears set-id bits)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        offset = 0
        while n := send_file(out, src, offset, st.st_size - offset):
            offset += n
        with contextlib.suppress(PermissionError):  # not root: the copy stays ours
            os.fchown(out, st.st_uid, st.st_gid)
        os.fchmod(out, stat.S_IMODE(st.st_mode))
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    except BaseException:
        os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(out)


def _mode(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


def _user(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int | None) -> str | None:
    if gid is None:
        return None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _uid(owner: str | int | None) -> int | None:
    if owner is None or isinstance(owner, int):
        return owner
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise DesyncError(f"unknown user '{owner}'") from None


def _gid(group: str | int | None) -> int | None:
    if group is None or isinstance(group, int):
        return group
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise DesyncError(f"unknown group '{group}'") from None
