"""One lock per target path or store, so two runs never write the same thing at once.

Lock files live in the state folder (``locks/<hash>.lock``, holding who holds
it: pid, host, user, since when, and what it locks, as one JSON line) and are
taken with ``fcntl.flock``: the kernel drops them when a process dies, so a
killed run never leaves a stale lock. ``holders`` peeks without waiting and
without creating anything, for ``plan`` to say which apply holds what.
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
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.fsutil import open_private_dir
from desync_decl.whoami import host_name, user_name

POLL_SECONDS = 0.05


class LockTimeout(DesyncError):
    pass


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its lock file says (written by the holder once it has it)."""

    what: str  # the file or store locked, as messages name it
    pid: int | None
    host: str | None = None
    user: str | None = None
    since: str | None = None  # ISO 8601, UTC

    @classmethod
    def parse(cls, key: str, text: str) -> Holder:
        """The holder of ``key`` from its lock file; the older ``<pid> <key>`` form too."""
        try:
            doc = json.loads(text)
        except ValueError:
            first = text.split(" ", 1)[0]
            return cls(_what(key), int(first) if first.isdigit() else None)
        if not isinstance(doc, dict):
            return cls(_what(key), None)
        fields = {name: doc.get(name) for name in ("host", "user", "since")}
        pid = doc.get("pid")
        return cls(
            _what(key),
            pid if isinstance(pid, int) else None,
            **{k: v if isinstance(v, str) else None for k, v in fields.items()},
        )

    def __str__(self) -> str:
        """``pid 812 on host web-3, user root, since 2026-12-07T04:01:02Z``."""
        text = f"pid {self.pid}" if self.pid is not None else "another run"
        if self.host:
            text += f" on host {self.host}"
        if self.user:
            text += f", user {self.user}"
        if self.since:
            text += f", since {self.since}"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "what": self.what,
            "pid": self.pid,
            "host": self.host,
            "user": self.user,
            "since": self.since,
        }


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
    name = _name(key)
    path = directory / "locks" / name
    try:  # never through a symlink, and never truncated on open
        fd = os.open(
            name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=locks
        )
    except OSError as e:
        raise DesyncError(f"cannot open lock file {path}: {e.strerror}") from None
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    told = busy = False
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
            if busy and not told:  # busy twice: not a plan's peek (``holders``)
                waiting(f"waiting for lock on {_what(key)} held by {holder}")
                told = True
            busy = True
            time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)  # shared holders overwrite each other: any one of them is named
        os.pwrite(fd, _holder_line(key), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder_line(key: str) -> bytes:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc = {"pid": os.getpid(), "host": host_name(), "user": user_name(), "since": since}
    return (json.dumps({**doc, "key": key}) + "\n").encode()


def _holder(fd: int) -> str:
    """The pid holding the lock open as ``fd``, as waiting messages name it."""
    holder = Holder.parse("", os.pread(fd, 4096, 0).decode(errors="replace"))
    return f"pid {holder.pid}" if holder.pid is not None else "another run"


def holders(directory: Path, keys: Iterable[str]) -> list[Holder]:
    """Who holds any of ``keys`` now, without waiting and without creating the state
    folder or a lock file (``plan`` writes nothing). A free lock is taken and let go
    at once; a run that tries it in that instant retries before saying it waits."""
    try:
        top = open_private_dir(directory, create=False)
        if top is None:
            return []
        try:
            locks = open_private_dir(directory / "locks", create=False, parent_fd=top)
        finally:
            os.close(top)
    except DesyncError:
        return []  # apply will refuse the folder and say why
    if locks is None:
        return []
    try:
        return [h for key in sorted(set(keys)) if (h := _peek(locks, key)) is not None]
    finally:
        os.close(locks)


def _peek(locks: int, key: str) -> Holder | None:
    try:
        fd = os.open(_name(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=locks)
    except OSError:
        return None  # never taken (or not a lock file we would use): free
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        return Holder.parse(key, os.pread(fd, 4096, 0).decode(errors="replace"))
    else:
        return None
    finally:
        os.close(fd)  # releases the peek's own lock, if it got it


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"


def _what(key: str) -> str:
    kind, _, name = key.partition(":")
    return name if kind == "file" else f"{kind} {name}"
