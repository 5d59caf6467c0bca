"""Store-level locks, after restic's repository locks: prune is exclusive, writers share.

A prune on one machine and a ``make`` publishing an index on another race: the
make finds a chunk in the store (so does not upload it) or uploads one, the
prune, whose keep set does not know the new index yet, deletes it, and the
index is published without its chunk. A lock in a local state directory does
not see the other machine; a lock object in the store does.

A lock is an object ``locks/<random id>`` in the store holding who took it:
host name, user, pid, the process's start time, a hash of the boot id and pid
namespace (where the pid means that process; the hash says nothing more about
the machine), the command, exclusive or not, and when. Writers (make, tar,
chop, cache) take a shared lock
before they first ask the store whether it has a chunk and hold it until they
are done, which for make and tar includes publishing the index; prune takes an
exclusive one before it reads its keep set again and deletes. Taking one writes
the lock object first and then lists the others, so two processes locking at
once both see each other (restic's "re-check after creating"): an exclusive
lock is refused while any other fresh lock exists, a shared one while a fresh
exclusive lock exists. Both then remove their objects and try again after a
random pause, until ``Patience.seconds`` have passed (the one that comes back
first wins); the error names the holder.

Freshness is judged by the store's own clock, never by the machines': the
modification time the store reports for a lock against the one it reports for
the lock just written (no clock skew between hosts counts). A holder rewrites
its lock every ``REFRESH_EVERY`` (a writer as it writes chunks); one not
rewritten for ``STALE_AFTER`` (its host died or lost the store) is stale and
ignored, and prune deletes it. A lock of a process of this host that no longer
runs (its pid gone, or reused by a process started at another time) is stale at
once. Locks of this very process (another task of the same apply) never
conflict with each other.

A holder whose own lock may have been judged stale (it could not rewrite it
for ``overdue_after``, by this machine's clock including suspended time, or the
store's modification times of two rewrites lie that far apart, or the object
is gone) has lost it: a prune may have deleted chunks a writer relies on, or a
writer may have started under a prune. It stops (``LockLost``): a writer before
it publishes its index, a prune before its next deletion.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from desync_decl.errors import DesyncError
from desync_decl.escaping import escape_line
from desync_decl.stores.base import StoreError
from desync_decl.whoami import host_name, user_name

STALE_AFTER = 30 * 60.0  # restic's: a lock not refreshed for this long is from a dead holder
REFRESH_EVERY = 5 * 60.0
MAX_LOCK_SIZE = 4096  # a lock record is a few hundred bytes; more is not one of ours
LOCK_NAME = re.compile(r"^[0-9a-f]{32}$")
COLLISION_WAIT = 10.0  # seconds: two processes locking at once sort themselves out well within
FIRST_PAUSE, LONGEST_PAUSE = 0.1, 2.0  # between attempts: doubling, each jittered


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


class LockLost(StoreError):
    """Our own lock may have been judged stale by another process: what it protected
    may have changed under us."""


@dataclass(frozen=True)
class Patience:
    """How long ``acquire`` keeps trying while another process holds a conflicting
    lock, and whom it tells (once) that it waits. The default is a short window:
    enough for two processes that locked at the same moment, not for a prune."""

    seconds: float = COLLISION_WAIT
    tell: Callable[[str], None] = lambda message: None


IMPATIENT = Patience()


def _clock() -> float:
    """Seconds on a clock that also runs while the machine is suspended (a suspended
    holder's lock goes stale in the store meanwhile)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in its object."""

    command: str
    exclusive: bool
    host: str
    pid: int
    started: int | None  # the process's start time in clock ticks since boot (Linux)
    pids: str | None  # which pids these are: a hash of the boot id and pid namespace (Linux)
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
    """Which pids this process's are: this boot's id and this pid namespace's inode,
    hashed (equal here and in the store, telling nobody the boot id)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        space = f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None
    return hashlib.sha256(f"desync-decl pids {space}".encode()).hexdigest()[:32]


_HOST = host_name()
_PIDS = _pid_namespace()


def _start_ticks(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/PID/stat), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat.rpartition(b")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class StoreLock:
    """A lock taken, rewritten every ``refresh_every`` until released: by a thread of
    its own (``threaded``: prune's, whose deleting calls ``check`` between chunks),
    or by ``refresh_if_due``, which a writer calls for every chunk (no thread: a
    process with another thread may not fork its extraction workers,
    ``forked.can_fork``).

    ``store_now`` is the store's time when the lock was taken (the modification
    time it reported for the new lock object): prune measures chunk ages by it.
    A lock that may have gone stale in the store is lost (``check`` raises): not
    rewritten for ``overdue_after`` by this machine's clock, two rewrites that far
    apart by the store's, or its object gone.
    """

    def __init__(
        self,
        space: LockSpace,
        location: str,
        name: str,
        holder: Holder,
        store_now: float,
        timing: tuple[float, float],
        threaded: bool,
    ) -> None:
        self.space, self.location, self.name, self.holder = space, location, name, holder
        self.store_now = store_now
        stale_after, self.refresh_every = timing
        self.overdue_after = stale_after * 5 / 6  # a margin for the store's clock and ours
        self.lost: LockLost | None = None
        self._mtime = store_now  # the store's time of the last rewrite that succeeded
        self._confirmed = self._attempted = _clock()
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
        """A writer's refresh, between chunks; raises ``LockLost`` once it is lost."""
        self.check()
        if _clock() - self._attempted >= self.refresh_every:
            self.rewrite()
            self.check()

    def confirm(self) -> None:
        """Make sure the lock has held all along, and refresh it: before a writer
        publishes an index that relies on what the lock protected."""
        self.check()
        self.rewrite()
        self.check()

    def check(self) -> None:
        """Raise ``LockLost`` if another process may have judged the lock stale."""
        if self.lost is None and _clock() - self._confirmed >= self.overdue_after:
            self._lose(f"went stale: it was not refreshed for {_span(_clock() - self._confirmed)}")
        if self.lost is not None:
            raise self.lost

    def rewrite(self) -> None:
        """Write the lock object again: its modification time, by which others judge
        it fresh, is now. A failure to reach the store is retried at the next
        refresh (the lock goes stale only after many); the object gone, or the
        store's time since the last rewrite too long, loses the lock."""
        if self.lost is not None:
            return
        self._attempted = started = _clock()
        try:
            if self.space.read_lock(self.name) != self.holder.encode():
                self._lose("was removed by another process")
                return
            self.space.write_lock(self.name, self.holder.encode())
            mtime = dict(self.space.list_locks()).get(self.name)
        except StoreError:
            return
        if mtime is None:
            self._lose("was removed by another process")
        elif mtime - self._mtime >= self.overdue_after:
            self._lose(f"went stale: the store saw no refresh for {_span(mtime - self._mtime)}")
        else:
            self._mtime, self._confirmed = mtime, started

    def _lose(self, why: str) -> None:
        if self.holder.exclusive:
            then = "a writer may have started, so this prune stopped deleting"
        else:
            then = "a prune may have deleted chunks this run relies on"
        self.lost = LockLost(f"our lock on store {self.location} {why}; {then}; run it again")

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


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"


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
    patience: Patience = IMPATIENT,
    stale_after: float = STALE_AFTER,
    refresh_every: float = REFRESH_EVERY,
) -> StoreLock:
    """Take a lock on the store at ``location``; while a conflicting one is held, try
    again after jittered pauses for ``patience.seconds``, then raise ``StoreLocked``
    naming its holder (see the module's docstring for the rules)."""
    deadline = _clock() + patience.seconds
    pause = FIRST_PAUSE
    told = False
    while True:
        taken = _try_acquire(space, location, command, exclusive, (stale_after, refresh_every))
        if isinstance(taken, StoreLock):
            return taken
        left = deadline - _clock()
        if left <= 0:
            raise StoreLocked(f"store {location} is locked by {taken}")
        if not told:
            patience.tell(f"waiting for lock on store {location} held by {taken}")
            told = True
        time.sleep(min(left, pause * random.uniform(0.5, 1.5)))
        pause = min(pause * 2, LONGEST_PAUSE)


def _try_acquire(
    space: LockSpace,
    location: str,
    command: str,
    exclusive: bool,
    timing: tuple[float, float],
) -> StoreLock | str:
    """The lock, or who holds a conflicting one (our own object removed again)."""
    pid = os.getpid()
    since = time.time()
    holder = Holder(command, exclusive, _HOST, pid, _start_ticks(pid), _PIDS, user_name(), since)
    name = secrets.token_hex(16)
    space.write_lock(name, holder.encode())
    try:
        listed = dict(space.list_locks())
        now = listed.pop(name, None)
        if now is None:
            raise StoreError(f"store {location}: the lock just written is not listed")
        for other, mtime in sorted(listed.items()):
            conflict = _conflict(space, other, mtime, now, exclusive, timing[0], tidy=exclusive)
            if conflict is not None:
                space.remove_lock(name)
                return conflict
    except BaseException:
        with contextlib.suppress(StoreError):
            space.remove_lock(name)
        raise
    return StoreLock(space, location, name, holder, now, timing, threaded=exclusive)


def blockers(space: LockSpace, *, exclusive: bool) -> list[str]:
    """Who holds a lock that taking one (exclusive: a prune's; else a writer's) would
    wait for now, for ``plan`` to say so: a peek that writes nothing, so freshness is
    judged by this machine's clock (apply judges by the store's)."""
    found = []
    for name, mtime in sorted(space.list_locks()):
        holder = _conflict(space, name, mtime, time.time(), exclusive, STALE_AFTER, tidy=False)
        if holder is not None:
            found.append(holder)
    return found


def _conflict(
    space: LockSpace,
    name: str,
    mtime: float,
    now: float,
    exclusive: bool,
    stale_after: float,
    *,
    tidy: bool,
) -> str | None:
    """Who holds the lock ``name`` if it conflicts with the one being taken, else None.
    With ``tidy`` (an exclusive taker: prune), the stale locks it meets are deleted."""
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
        if tidy:  # cleaning up is a courtesy: failing to is no reason not to prune
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
    ``writing`` scope ends, failed or not: the operation's own, or one around it
    that also covers publishing the index (``make`` and ``tar`` do that), or else
    until the store is closed. The outermost scope's ``Patience`` applies; a
    failure to take the lock is remembered for the rest of the scope, so the
    other writer threads do not each wait again.
    """

    def __init__(self, space: LockSpace, location: str) -> None:
        self.space, self.location = space, location
        self._shared: StoreLock | None = None
        self._refused: DesyncError | None = None
        self._patience = IMPATIENT
        self._scopes = 0
        self._mutex = threading.Lock()

    def hold_shared(self, command: str) -> None:
        """Take the shared lock unless this store object holds it already (any thread);
        refresh it when that is due (``LockLost`` once it is lost)."""
        with self._mutex:
            if self._refused is not None:
                raise self._refused
            if self._shared is not None:
                self._shared.refresh_if_due()
                return
            try:
                self._shared = acquire(
                    self.space, self.location, command, exclusive=False, patience=self._patience
                )
            except DesyncError as e:
                self._refused = e
                raise

    def confirm(self) -> None:
        """Before publishing what the writes made: ``LockLost`` unless the shared lock
        has held all along (see ``StoreLock.confirm``)."""
        with self._mutex:
            if self._shared is not None:
                self._shared.confirm()

    def begin_writing(self, patience: Patience | None = None) -> None:
        with self._mutex:
            if self._scopes == 0:
                self._patience = patience or IMPATIENT
            self._scopes += 1

    def end_writing(self, failed: bool = False) -> None:
        """End a scope of writes; the last one to end releases the shared lock (after
        a failure, a failure to delete the lock object is left for it to go stale:
        the first error is the one to report)."""
        with self._mutex:
            self._scopes -= 1
            ended = self._scopes == 0
            if ended:
                self._refused = None
        if ended:
            with contextlib.suppress(StoreError) if failed else contextlib.nullcontext():
                self.release()

    @contextlib.contextmanager
    def writing(self, patience: Patience | None = None) -> Iterator[None]:
        self.begin_writing(patience)
        try:
            yield
        except BaseException:
            self.end_writing(failed=True)
            raise
        self.end_writing()

    @contextlib.contextmanager
    def exclusive(
        self, command: str, patience: Patience = IMPATIENT, **timing: float
    ) -> Iterator[StoreLock]:
        lock = acquire(
            self.space, self.location, command, exclusive=True, patience=patience, **timing
        )
        try:
            yield lock
        finally:
            lock.release()

    def release(self) -> None:
        with self._mutex:
            lock, self._shared = self._shared, None
        if lock is not None:
            lock.release()


@runtime_checkable
class HoldsLocks(Protocol):
    """A store that can hold lock objects (local, and object stores that can list);
    ``None`` where its backend cannot (OCI)."""

    locks: LockKeeper | None


def keeper_of(store: object) -> LockKeeper | None:
    """The store's ``LockKeeper``; None for a store that cannot hold lock objects
    (HTTP, ssh, OCI, and wrappers such as a size-limited cache)."""
    return store.locks if isinstance(store, HoldsLocks) else None


def writing(
    store: object, patience: Patience | None = None
) -> contextlib.AbstractContextManager[None]:
    """A scope of writes to ``store`` (None: no store) that ends with its shared lock
    released, failed or not: an operation, or an operation and the publishing of
    its index. ``patience`` applies to the shared lock the writes take."""
    keeper = keeper_of(store)
    return keeper.writing(patience) if keeper is not None else contextlib.nullcontext()


def confirm(store: object) -> None:
    """Before publishing an index of chunks written to or found in ``store``: raise
    ``LockLost`` unless our shared lock on it has held all along."""
    keeper = keeper_of(store)
    if keeper is not None:
        keeper.confirm()
