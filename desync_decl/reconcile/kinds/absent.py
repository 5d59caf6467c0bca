"""``state: absent`` for ``extract`` and ``untar``: what stands at the path goes, and its record.

``look`` sees what the path holds without following a symlink planted there:
its directory is opened walking from ``/`` (``files.directory_if_any``) and the
name is looked at in it (``lstat``). ``plan`` is a delete with a diff, or "absent"
when nothing is there. ``remove`` deletes relative to that directory's fd: a
directory with everything in it (``archive.clearing.remove``: each level opened relative to
its parent, never through a symlink), a symlink standing at the path itself and
never what it points to. What is removed must still be what was planned on (same
device and inode), else the run stops and the next one looks again. A tree with a
mount point in it (a bind-mounted ``data/``) is refused before anything goes, in
plan and apply; the deletion walk stops at one mounted since.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from desync_decl.archive.clearing import remove as remove_below
from desync_decl.errors import DesyncError
from desync_decl.manifest import Task, TaskAction
from desync_decl.reconcile import files
from desync_decl.reconcile.kinds.trees import mount_point_at_or_below
from desync_decl.reconcile.model import Action, Diff, Facts, Status, TaskResult, Verb
from desync_decl.reconcile.state import after_change

A = TypeVar("A", bound=TaskAction)


@dataclass(frozen=True)
class Standing:
    """What ``look`` found at the path (its ``lstat``; None: nothing stands there):
    the facts and the detail of an ``absent`` task, told apart from a present one's."""

    st: os.stat_result | None


def look(path: Path, *, keeps: str) -> Facts[Standing]:
    """What stands at ``path`` now (its ``lstat``, None when nothing does); an error
    when it is something the task does not manage (``keeps``: "file" or "directory")."""
    st = None
    with files.directory_if_any(path) as dir_fd:
        if dir_fd is not None:
            try:
                st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise DesyncError(f"cannot look at {path}: {e.strerror}") from None
    if st is not None and _what(st) not in (keeps, "symlink"):
        raise DesyncError(f"cannot remove {path}: it is a {_what(st)}, not a {keeps}")
    if st is not None and stat.S_ISDIR(st.st_mode):
        point = mount_point_at_or_below(path)
        if point is not None:
            raise DesyncError(f"cannot remove {path}: {point} is a mount point; unmount it first")
    fields: dict[str, object] = {"state": "absent", "target": _fields(st)}
    return Facts(fields, Standing(st))


def plan(task: Task[A], facts: Facts[object], seen: Standing, path: Path) -> Action[A, Standing]:
    """Delete what ``look`` found (``seen``, the data of ``facts``), or nothing when
    the path is absent already."""
    st = seen.st
    target = str(path)
    if st is None:
        return Action(task, Verb.NOOP, "absent", target, facts, detail=seen)
    what = _what(st)
    before = {"content": what, **files.attributes(st)}
    if stat.S_ISREG(st.st_mode):
        before["size"] = str(st.st_size)
    diff = Diff(target, before, {"content": "absent"})
    reason = f"state absent: the {what} is removed"
    return Action(task, Verb.DELETE, reason, target, facts, diff=diff, detail=seen)


def apply(
    action: Action[A, object], seen: Standing, path: Path, forget: Callable[[], None]
) -> TaskResult:
    """Remove what the plan saw at ``path`` (``seen``, the action's detail) if it
    deletes, then ``forget`` the path's record either way."""
    warnings: list[str] = []
    if action.verb.changes and seen.st is not None:
        remove(path, seen.st)
    with after_change(warnings, path):
        forget()
    status = Status.CHANGED if action.verb.changes else Status.OK
    return TaskResult(action.task, status, action.reason, warnings=tuple(warnings))


def remove(path: Path, st: os.stat_result) -> None:
    """Delete what stands at ``path`` if it is still the entry ``st`` describes."""
    with files.directory_if_any(path) as dir_fd:
        if dir_fd is None:
            return  # gone already, with its directory: what the task wants
        try:
            now = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise DesyncError(f"{path} changed since it was looked at; run again")
        remove_below(dir_fd, str(path.parent), os.fsencode(path.name))


def _what(st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "special file"


def _fields(st: os.stat_result | None) -> dict[str, object]:
    if st is None:
        return {"exists": False}
    return {"mode": st.st_mode, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
