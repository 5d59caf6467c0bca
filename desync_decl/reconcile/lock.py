"""One lock per target path or store, so two runs never write the same thing at once.

Lock files live in the state folder (``locks/<hash>.lock``, holding the pid of
the holder and what it locks) and are taken with ``fcntl.flock``: the kernel
drops them when a process dies, so a killed run never leaves a stale lock.
Both folders must be ours alone (``open_private_dir``) and a lock file is opened
relative to its folder without following a symlink or truncating, so a shared
state folder cannot turn a lock into a write to another file.
Writers of a file or a pruned store lock it exclusively; tasks that only add
chunks to a store share its lock (adds commute) and so exclude a prune.
Locks are taken in sorted order, so two runs cannot deadlock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.fsutil import open_private_dir

POLL_SECONDS = 0.05


class LockTimeout(DesyncError):
    pass


@contextlib.contextmanager
def locked(
    directory: Path,
    keys: Mapping[str, bool],
    *,
    timeout: float | None,
    waiting: Callable[[str], None] = lambda message: None,
) -> Iterator[None]:
    """Hold every lock in ``keys`` (key -> exclusive?) for the ``with`` block.

    ``waiting`` is told once per busy lock ("waiting for lock on X held by pid
    N"); after ``timeout`` seconds (None = forever) ``LockTimeout`` is raised.
    """
    fds: list[int] = []
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        if keys:
            locks = _locks_dir(directory)
            try:
                for key in sorted(keys):
                    fds.append(_acquire(locks, directory, key, keys[key], deadline, waiting))
            finally:
                os.close(locks)
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)  # closing the file releases its flock


def _locks_dir(directory: Path) -> int:
    """An fd of ``<directory>/locks``, both made or checked private (``open_private_dir``)."""
    top = open_private_dir(directory, create=True)
    assert top is not None
    try:
        locks = open_private_dir(directory / "locks", create=True, parent_fd=top)
    finally:
        os.close(top)
    assert locks is not None
    return locks


def _acquire(
    locks: int,
    directory: Path,
    key: str,
    exclusive: bool,
    deadline: float | None,
    waiting: Callable[[str], None],
) -> int:
    name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"
    path = directory / "locks" / name
    try:  # never through a symlink, and never truncated on open
        fd = os.open(
            name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=locks
        )
    except OSError as e:
        raise DesyncError(f"cannot open lock file {path}: {e.strerror}") from None
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise DesyncError(f"cannot lock {path}: {e.strerror}") from None
            holder = _holder(fd)
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(f"timed out waiting for lock on {_what(key)} held by {holder}")
            if not told:
                waiting(f"waiting for lock on {_what(key)} held by {holder}")
                told = True
            time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)  # shared holders overwrite each other: any one of them is named
        os.pwrite(fd, f"{os.getpid()} {key}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder(fd: int) -> str:
    text = os.pread(fd, 4096, 0).decode(errors="replace")
    pid = text.split(" ", 1)[0]
    return f"pid {pid}" if pid.isdigit() else "another run"


def _what(key: str) -> str:
    kind, _, name = key.partition(":")
    return name if kind == "file" else f"{kind} {name}"
