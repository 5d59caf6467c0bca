"""File attributes an ``extract`` task converges (mode, owner, group) and backups.

As Ansible's file modules: an attribute left out of the task is left alone;
``owner``/``group`` are names or numeric ids; ``backup`` keeps the previous
file as ``<path>.<timestamp>~`` before it is replaced.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError


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

    def set(self, path: Path) -> None:
        try:
            if self.uid is not None or self.gid is not None:
                os.chown(
                    path, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid
                )
            if self.mode is not None:  # after chown, which may clear set-id bits
                os.chmod(path, self.mode)
        except OSError as e:
            raise DesyncError(f"cannot set the attributes of {path}: {e.strerror}") from None


def attributes(st: os.stat_result | None) -> dict[str, str]:
    if st is None:
        return {}
    return {
        "mode": _mode(stat.S_IMODE(st.st_mode)) or "",
        "owner": _user(st.st_uid) or "",
        "group": _group(st.st_gid) or "",
    }


def backup(path: Path, *, copy: bool) -> Path:
    """Keep the current file as ``<path>.<timestamp>~``: a hard link when the file is
    about to be replaced by a rename, a copy when it is about to be overwritten."""
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S")
    target = path.with_name(f"{path.name}.{stamp}~")
    if target.exists():
        target = path.with_name(f"{path.name}.{os.getpid()}.{stamp}~")
    try:
        if not copy:
            try:
                os.link(path, target)
                return target
            except OSError:
                pass  # no hard links here: copy
        shutil.copy2(path, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            target.unlink()
        raise DesyncError(f"cannot back up {path} to {target}: {e.strerror}") from None
    return target


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
