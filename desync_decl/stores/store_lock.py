"""Store-level locks, after restic's repository locks: prune is exclusive, writers share.

A prune on one machine and a ``make`` publishing an index on another race: the
make finds a chunk in the store (so does not upload it) or uploads one, the
prune, whose keep set does not know the new index yet, deletes it, and the
index is published without its chunk. A lock in a local state directory does
not see the other machine; a lock object in the store does.

A lock is an object ``locks/<random id>`` in the store holding who took it
(host, pid, the process's start time and pid namespace, user, command,
exclusive or not, when). Writers (make, tar, chop, cache) take a shared lock
before they first ask the store whether it has a chunk and hold it until they
are done, which for make and tar includes publishing the index; prune takes an
exclusive one before it reads its keep set again and deletes. Taking one writes
the lock object first and then lists the others, so two processes locking at
once both see each other and both back off (restic's "re-check after
creating"): an exclusive lock is refused while any other fresh lock exists, a
shared one while a fresh exclusive lock exists. The error names the holder.

Freshness is judged by the store's own clock, never by the machines': the
modification time the store reports for a lock against the one it reports for
the lock just written (no clock skew between hosts counts). A holder rewrites
its lock every ``REFRESH_EVERY`` (a writer as it writes chunks); one not
rewritten for ``STALE_AFTER`` (its host died or lost the store) is stale and
ignored, and prune deletes it. A lock of a process of this host that no longer
runs (its pid gone, or reused by a process started at another time) is stale at
once. Locks of this very process (another task of the same apply) never
conflict with each other.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

from desync_decl.errors import DesyncError
from desync_decl.escaping import escape_line
from desync_decl.stores.base import StoreError

STALE_AFTER = 30 * 60.0  # restic's: a lock not refreshed for this long is from a dead holder
REFRESH_EVERY = 5 * 60.0
MAX_LOCK_SIZE = 4096  # a lock record is a few hundred bytes; more is not one of ours
LOCK_NAME = re.compile(r"^[0-9a-f]{32}$")


class LockSpace(Protocol):
    """Where a store keeps its lock objects (``locks/<name>``): a store that can hold
    them provides these four, each failing with ``StoreError``."""

    def write_lock(self, name: str, data: bytes) -> None:
        """Create or replace the lock object atomically (its modification time is now)."""
        ...

    def read_lock(self, name: str) -> bytes | None:
        """Its bytes (at most ``MAX_LOCK_SIZE`` + 1), None when it is gone."""
        ...

    def list_locks(self) -> list[tuple[str, float]]:
        """Every lock object's name and the store's modification time for it."""
        ...

    def remove_lock(self, name: str) -> None:
        """Delete it; already gone is fine."""
        ...


class StoreLocked(DesyncError):
    """Another process holds a lock that conflicts with the one asked for."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in its object."""

    command: str
    exclusive: bool
    host: str
    pid: int
    started: int | None  # the process's start time in clock ticks since boot (Linux)
    pids: str | None  # which pids these are: boot id and pid namespace (Linux)
    user: str
    since: float  # when the lock was taken, by the holder's clock (shown, never compared)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Holder | None:
        """The record, or None when it is not one (garbled, foreign, too large)."""
        try:
            raw = json.loads(data)
            holder = cls(
                command=str(raw["command"]),
                exclusive=raw["exclusive"] is True,
                host=str(raw["host"]),
                pid=int(raw["pid"]),
                started=None if raw.get("started") is None else int(raw["started"]),
                pids=None if raw.get("pids") is None else str(raw["pids"]),
                user=str(raw["user"]),
                since=float(raw["since"]),
            )
        except (ValueError, TypeError, KeyError, OverflowError):
            return None
        return holder

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return escape_line(
            f"{self.command} on host {self.host} pid {self.pid} (user {self.user}) since {since}"
        )

    def is_this_process(self) -> bool:
        pid = os.getpid()
        mine = (_HOST, _PIDS, pid, _start_ticks(pid))
        return (self.host, self.pids, self.pid, self.started) == mine

    def is_gone(self) -> bool:
        """A process of this host that no longer runs: its pid is free, or now another
        process's (started at another time). Only where the pid means the same as
        here: the same host name, boot and pid namespace (two containers may share
        a host name, not a pid namespace); anywhere else it may be alive."""
        if self.host != _HOST or self.pids is None or self.pids != _PIDS:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it runs, as another user
        started = _start_ticks(self.pid)
        return self.started is not None and started is not None and started != self.started


def _pid_namespace() -> str | None:
    """This boot's id and this pid namespace's inode: where a pid names one process."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


_HOST = socket.gethostname()
_PIDS = _pid_namespace()


def _start_ticks(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/PID/stat), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat.rpartition(b")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class StoreLock:
    """A lock taken, rewritten every ``refresh_every`` until released: by a thread of
    its own (``threaded``: prune's, whose deleting calls no code of ours), or by
    ``refresh_if_due``, which a writer calls for every chunk (no thread: a process
    with another thread may not fork its extraction workers, ``forked.can_fork``).

    ``store_now`` is the store's time when the lock was taken (the modification
    time it reported for the new lock object): prune measures chunk ages by it.
    """

    def __init__(
        self,
        space: LockSpace,
        name: str,
        holder: Holder,
        store_now: float,
        refresh_every: float,
        threaded: bool,
    ) -> None:
        self.space, self.name, self.holder, self.store_now = space, name, holder, store_now
        self.refresh_every = refresh_every
        self.refresh_error: StoreError | None = None  # the last refresh's failure, if any
        self._written = time.monotonic()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        if threaded:
            self._refresher = threading.Thread(target=self._refresh, name="store-lock", daemon=True)
            self._refresher.start()
        with _held_mutex:
            _held.add(self)

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh_every):
            self.rewrite()

    def refresh_if_due(self) -> None:
        if time.monotonic() - self._written >= self.refresh_every:
            self.rewrite()

    def rewrite(self) -> None:
        """Write the lock object again: its modification time, by which others judge
        it fresh, is now. A failure is kept and retried at the next refresh: the lock
        goes stale only after many."""
        self._written = time.monotonic()
        try:
            self.space.write_lock(self.name, self.holder.encode())
            self.refresh_error = None
        except StoreError as e:
            self.refresh_error = e

    def release(self) -> None:
        """Stop refreshing and delete the lock object (only in the process that took it:
        a forked worker closing its copy of a store leaves its parent's lock alone)."""
        if self.holder.pid != os.getpid():
            return
        with _held_mutex:
            if self not in _held:
                return  # released already
            _held.discard(self)
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        self.space.remove_lock(self.name)


_held: set[StoreLock] = set()  # locks this process holds, released at exit at the latest
_held_mutex = threading.Lock()


@atexit.register
def _release_all() -> None:
    """A store never closed (a library caller's) leaves no lock behind a clean exit."""
    with _held_mutex:
        held = list(_held)
    for lock in held:
        with contextlib.suppress(StoreError):
            lock.release()


def acquire(
    space: LockSpace,
    location: str,
    command: str,
    *,
    exclusive: bool,
    stale_after: float = STALE_AFTER,
    refresh_every: float = REFRESH_EVERY,
) -> StoreLock:
    """Take a lock on the store at ``location``, or raise ``StoreLocked`` naming the
    holder of a conflicting one (see the module's docstring for the rules)."""
    pid = os.getpid()
    holder = Holder(command, exclusive, _HOST, pid, _start_ticks(pid), _PIDS, _user(), time.time())
    name = secrets.token_hex(16)
    space.write_lock(name, holder.encode())
    try:
        listed = dict(space.list_locks())
        now = listed.pop(name, None)
        if now is None:
            raise StoreError(f"store {location}: the lock just written is not listed")
        for other, mtime in sorted(listed.items()):
            conflict = _conflict(space, other, mtime, now, exclusive, stale_after)
            if conflict is not None:
                raise StoreLocked(f"store {location} is locked by {conflict}")
    except BaseException:
        with contextlib.suppress(StoreError):
            space.remove_lock(name)
        raise
    return StoreLock(space, name, holder, now, refresh_every, threaded=exclusive)


def _conflict(
    space: LockSpace, name: str, mtime: float, now: float, exclusive: bool, stale_after: float
) -> str | None:
    """Who holds the lock ``name`` if it conflicts with the one being taken, else None.
    An exclusive taker (prune) deletes the stale locks it meets."""
    if not LOCK_NAME.match(name):
        return None  # not a lock object (a temp file, something foreign)
    stale = now - mtime >= stale_after
    data = None if stale else space.read_lock(name)
    if data is None and not stale:
        return None  # released meanwhile
    holder = Holder.decode(data) if data is not None and len(data) <= MAX_LOCK_SIZE else None
    if holder is not None and holder.is_this_process():
        return None
    if stale or (holder is not None and holder.is_gone()):
        if exclusive:  # cleaning up is a courtesy: failing to is no reason not to prune
            with contextlib.suppress(StoreError):
                space.remove_lock(name)
        return None
    if holder is None:
        return f"an unreadable lock object locks/{name}"  # fresh: assume the worst
    if exclusive or holder.exclusive:
        return holder.describe()
    return None


class LockKeeper:
    """The locks one store object holds: a shared one while it is written to, an
    exclusive one for the duration of a prune.

    The shared lock is taken by the first ``hold_shared`` (a writer's first chunk,
    before it asks whether the store has it) and held until the outermost
    ``writing`` scope ends: the operation's own, or one around it that also covers
    publishing the index (``make`` and ``tar`` do that), or else until the store is
    closed.
    """

    def __init__(self, space: LockSpace, location: str) -> None:
        self.space, self.location = space, location
        self._shared: StoreLock | None = None
        self._scopes = 0
        self._mutex = threading.Lock()

    def hold_shared(self, command: str) -> None:
        """Take the shared lock unless this store object holds it already (any thread);
        refresh it when that is due."""
        with self._mutex:
            if self._shared is None:
                self._shared = acquire(self.space, self.location, command, exclusive=False)
            else:
                self._shared.refresh_if_due()

    def begin_writing(self) -> None:
        with self._mutex:
            self._scopes += 1

    def end_writing(self) -> None:
        """End a scope of writes; the last one to end releases the shared lock."""
        with self._mutex:
            self._scopes -= 1
            ended = self._scopes == 0
        if ended:
            self.release()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        self.begin_writing()
        try:
            yield
        finally:
            self.end_writing()

    @contextlib.contextmanager
    def exclusive(self, command: str, **timing: float) -> Iterator[StoreLock]:
        lock = acquire(self.space, self.location, command, exclusive=True, **timing)
        try:
            yield lock
        finally:
            lock.release()

    def release(self) -> None:
        with self._mutex:
            lock, self._shared = self._shared, None
        if lock is not None:
            lock.release()


def keeper_of(store: object) -> LockKeeper | None:
    """The store's ``LockKeeper``; None for a store that cannot hold lock objects
    (HTTP, ssh, OCI, and wrappers such as a size-limited cache)."""
    keeper = getattr(store, "locks", None)
    return keeper if isinstance(keeper, LockKeeper) else None


def writing(store: object) -> contextlib.AbstractContextManager[None]:
    """A scope of writes to ``store`` (None: no store) that ends with its shared lock
    released: an operation, or an operation and the publishing of its index."""
    keeper = keeper_of(store)
    return keeper.writing() if keeper is not None else contextlib.nullcontext()
