"""Stores built from stores: routers, failover groups, caches.

The three error kinds drive them (desync's rules): a ``Router`` moves to the
next store only when a chunk is missing; a ``FailoverGroup`` switches member
only when a store fails or serves an invalid chunk (never on missing: members
hold the same content); a ``Cache`` fetches upstream on a miss and writes what
it fetched into the cache, and with ``repair`` an invalid cached chunk counts as
a miss and is overwritten.

These rules live here only. ``locate(store, id)`` answers where a ``get_chunk``
would be served from now, walking the same wrappers with the same rules, and
moves a group's active member as a read would: a plan asks it, so what the plan
says and what apply does come from one place, and a group that lost its first
member in the plan stays on the member that works for the apply. A leaf store
answers with ``probe`` (present, and its stored size when it knows it cheaply)
or else ``has_chunk``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard, TypeVar, runtime_checkable

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.asked_once import asked_once
from desync_decl.stores.base import (
    ChunkInvalid,
    ChunkMissing,
    Composite,
    Store,
    StoreError,
    WriteStore,
)
from desync_decl.stores.keys import WrongKey
from desync_decl.stores.tally import Repair, Switch, ask, current

T = TypeVar("T")
# How long a member that failed is passed over while another member is healthy: long
# enough that a hung origin is not asked again (and waited for) on every blip of the
# mirror, short enough that a member that came back is used again within an apply.
RECOVERY = 60.0
# What is known about a leaf store's chunk before it is asked (a plan's earlier tasks):
# True (will be there), False (will be gone), None (ask the store).
Known = Callable[[object, ChunkID], "bool | None"]


@dataclass(frozen=True)
class Location:
    """Where a read of a chunk would be served from."""

    leaf: Store  # the store that holds it
    stored: int | None  # bytes the store holds it in, when it says so cheaply
    through: tuple[object, ...] = ()  # the groups and caches it is reached through, outermost first
    cached: bool = False  # a cache's own copy


class NotLocated(ChunkMissing):
    """Missing from every store a read would ask (``asked``: those leaf stores);
    ``failed``: the members of groups that failed before them, and what each said."""

    def __init__(
        self, id: ChunkID, asked: Sequence[object], failed: Sequence[tuple[object, str]] = ()
    ) -> None:
        super().__init__(id, ", ".join(str(s) for s in asked))
        self.asked, self.failed = tuple(asked), tuple(failed)
        if failed:
            self.args = (f"{self}; before it, " + "; ".join(why for _, why in failed),)


def locate(store: Store, id: ChunkID, known: Known | None = None) -> Location:
    """Where ``store.get_chunk(id)`` would be served from; raises as that would
    (``NotLocated`` for missing) and moves groups' active members as it would."""
    if _locating(store):
        return store.locate(id, known)
    will = known(store, id) if known is not None else None
    if will is not None:
        if not will:
            raise NotLocated(id, [store])
        return Location(store, None)  # written by an earlier task: its size is not known
    if _probing(store):
        held = store.probe(id)
        if held is None:
            raise NotLocated(id, [store])
        return Location(store, held if held >= 0 else None)
    if not store.has_chunk(id):
        raise NotLocated(id, [store])
    return Location(store, None)


@runtime_checkable
class Locating(Protocol):
    """A wrapper that knows which of its stores would serve a read (``locate``)."""

    def locate(self, id: ChunkID, known: Known | None = None) -> Location: ...


@runtime_checkable
class Probing(Protocol):
    """A store that tells a chunk's stored size in the request that finds it: the
    size, -1 when there but of unknown size, None when absent."""

    def probe(self, id: ChunkID) -> int | None: ...


class _ProbingStore(Store, Probing, Protocol):
    """What ``_probing`` tells the type checker: still a store, one that probes."""


def _locating(store: Store) -> TypeGuard[Locating]:
    return _has_methods(type(store), Locating)


def _probing(store: Store) -> TypeGuard[_ProbingStore]:
    return _has_methods(type(store), Probing)


_CLASSES_WITH: dict[tuple[type, type], bool] = {}


def _has_methods(cls: type, protocol: type) -> bool:
    """``isinstance`` of a methods-only protocol, asked once per class (``locate`` asks
    for every chunk; the methods are the class's, so the answer holds for all its
    instances). A race only computes an answer twice."""
    known = _CLASSES_WITH.get((cls, protocol))
    if known is None:
        known = _CLASSES_WITH[cls, protocol] = issubclass(cls, protocol)
    return known


def _through(wrapper: object, where: Location) -> Location:
    return dataclasses.replace(where, through=(wrapper, *where.through))


def _fork_safe(stores: Sequence[Store]) -> bool:
    return all(s.fork_safe for s in stores)


class Router(Composite):
    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise ValueError("a router needs at least one store")
        self.stores = list(stores)

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self.stores)

    @property
    def fork_safe(self) -> bool:
        return _fork_safe(self.stores)

    def get_chunk(self, id: ChunkID) -> Chunk:
        """From the first store that has it; a store that fails ends the search (a
        later store cannot tell whether the failing one held a newer copy), and the
        error names the stores that said missing before it."""
        missing: list[str] = []
        for store in self.stores:
            try:
                return ask(store, id)
            except ChunkMissing:
                missing.append(str(store))
            except StoreError as e:
                if not missing:
                    raise
                raise StoreError(
                    f"chunk {id.hex()} missing from {', '.join(missing)}; {e}",
                    transient=e.transient,
                ) from e
        raise ChunkMissing(id, f"all stores: {self}" if len(self.stores) > 1 else str(self))

    def has_chunk(self, id: ChunkID) -> bool:
        return any(store.has_chunk(id) for store in self.stores)

    def locate(self, id: ChunkID, known: Known | None = None) -> Location:
        asked: list[object] = []
        failed: list[tuple[object, str]] = []
        for store in self.stores:
            try:
                return locate(store, id, known)
            except NotLocated as e:
                asked += e.asked
                failed += e.failed
        raise NotLocated(id, asked, failed)

    def close(self) -> None:
        for store in self.stores:
            store.close()


class FailoverGroup(Composite):
    """Equivalent stores (``-s "a|b"``): one is active; a failing one hands over to another.

    No fail-back: the group stays on the new member until that one fails too.
    Each member remembers when it last failed, and a group hands over only to a
    member that has not failed in the last ``RECOVERY`` seconds: with the origin
    hung and the mirror active, one transient 503 from the mirror does not send
    every request back to wait for the origin's timeout. A member is first asked
    once, without its retries (``asked_once``), while a healthy member is
    left to hand over to: a dead member costs a request one failed attempt, not
    its whole backoff. With no healthy member left, the one asked gets its
    retries (a blip on the member that works still heals), and then the others
    get theirs, the one that failed longest ago first.
    """

    def __init__(self, members: Sequence[Store]) -> None:
        if not members:
            raise ValueError("a failover group needs at least one store")
        self.members = list(members)
        self._active = 0
        self._failed_at: list[float | None] = [None] * len(self.members)  # monotonic
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.members)

    @property
    def fork_safe(self) -> bool:
        return _fork_safe(self.members)

    def get_chunk(self, id: ChunkID) -> Chunk:
        return self._try(lambda store: self._read(store, id))

    def has_chunk(self, id: ChunkID) -> bool:
        return self._try(lambda store: store.has_chunk(id))

    def _read(self, member: Store, id: ChunkID) -> Chunk:
        """A read from ``member``, counted as served by it (``tally``)."""
        chunk = ask(member, id)
        tally = current()
        if tally is not None:
            tally.served_by(self, member)
        return chunk

    def locate(self, id: ChunkID, known: Known | None = None) -> Location:
        return _through(self, self._try(lambda store: locate(store, id, known)))

    def _try(self, call: Callable[[Store], T]) -> T:
        failed: dict[int, str] = {}  # member -> what it said last, in the order first asked
        once: set[int] = set()  # asked without retries in this call
        fully: set[int] = set()  # asked with retries in this call
        member: int | None = self._active
        while member is not None:
            retries = self._healthy(member, skip=once | fully) is None
            try:
                with contextlib.nullcontext() if retries else asked_once():
                    answer = call(self.members[member])
            except NotLocated as e:
                before = [(self.members[m], why) for m, why in failed.items()]
                raise NotLocated(e.id, e.asked, [*before, *e.failed]) from None
            except ChunkMissing as e:
                if failed:
                    raise MissingAfterFailures(e, list(failed.values())) from None
                raise
            except (StoreError, ChunkInvalid) as e:
                with self._lock:
                    self._failed_at[member] = time.monotonic()
                failed[member] = str(e)
                (fully if retries else once).add(member)
                member = self._hand_over(member, str(e), fully)
                continue
            self._settle(member, failed)
            return answer
        raise StoreError(
            f"every store of the failover group {self} failed: " + "; ".join(failed.values())
        )

    def _healthy(self, member: int, skip: set[int]) -> int | None:
        """The first member after ``member`` (in the group's order) that has not
        failed in the last ``RECOVERY`` seconds and is not in ``skip``."""
        now = time.monotonic()
        count = len(self.members)
        with self._lock:
            for step in range(1, count):
                other = (member + step) % count
                at = self._failed_at[other]
                if other not in skip and (at is None or now - at >= RECOVERY):
                    return other
        return None

    def _hand_over(self, member: int, reason: str, fully: set[int]) -> int | None:
        """After ``member`` failed: the member to ask next. A healthy one becomes the
        group's active member at once; else the one that failed longest ago and was
        not yet asked with retries is asked without a switch (it becomes active only
        if it answers: ``_settle``), so a group whose members are all down says
        nothing but the error, rather than a switch per request; None when every
        member was asked with retries."""
        following = self._healthy(member, skip=fully)
        if following is None:
            with self._lock:
                left = [m for m in range(len(self.members)) if m not in fully]
                left.sort(key=lambda m: self._failed_at[m] or 0.0)
            return left[0] if left else None
        with self._lock:
            if self._active != member:  # another request switched already: follow it
                return self._active if self._active not in fully else following
            self._active = following
        if following != member:
            self._announce(member, following, reason)
        return following

    def _settle(self, member: int, failed: dict[int, str]) -> None:
        """``member`` answered: if the group's active member failed in this call (and
        no other request moved it meanwhile), ``member`` becomes the active one."""
        with self._lock:
            active = self._active
            if active == member or active not in failed:
                return
            self._active = member
        self._announce(active, member, failed[active])

    def _announce(self, old: int, new: int, reason: str) -> None:
        """Tell the current task's tally that the group moved from ``old`` to ``new``."""
        tally = current()
        if tally is not None:
            tally.event(Switch(self, self.members[old], self.members[new], reason))

    def close(self) -> None:
        for store in self.members:
            store.close()


class MissingAfterFailures(ChunkMissing):
    """Missing from the member of a group asked last, after the members before it failed:
    the message names each of them and what it said."""

    def __init__(self, missing: ChunkMissing, failures: Sequence[str]) -> None:
        super().__init__(missing.id, missing.store)
        self.args = (f"{missing}; before it, " + "; ".join(failures),)


class Cache(Composite):
    """Read-through, write-back cache in front of ``upstream`` (``-c``)."""

    def __init__(self, upstream: Store, cache: WriteStore, *, repair: bool = True) -> None:
        self.upstream, self.cache, self.repair = upstream, cache, repair

    def __str__(self) -> str:
        return f"{self.upstream}, cached in {self.cache}"

    @property
    def fork_safe(self) -> bool:
        return _fork_safe([self.upstream, self.cache])

    def get_chunk(self, id: ChunkID) -> Chunk:
        try:
            return ask(self.cache, id)
        except (ChunkMissing, WrongKey):  # a copy under another key is no copy: fetch it
            pass
        except ChunkInvalid as e:
            if not self.repair:
                raise
            tally = current()
            if tally is not None:
                tally.event(Repair(self.cache, id, e.why))
        chunk = ask(self.upstream, id)
        try:
            self.cache.store_chunk(chunk)
        except StoreError as e:
            raise StoreError(f"failed to store chunk {id.hex()} in cache {self.cache}: {e}") from e
        return chunk

    def has_chunk(self, id: ChunkID) -> bool:
        return self.cache.has_chunk(id) or self.upstream.has_chunk(id)

    def locate(self, id: ChunkID, known: Known | None = None) -> Location:
        try:
            where = locate(self.cache, id, known)
        except NotLocated as e:
            missed = e
        except WrongKey:
            missed = NotLocated(id, [self.cache])
        else:
            return _through(self, dataclasses.replace(where, cached=True))
        try:
            return _through(self, locate(self.upstream, id, known))
        except NotLocated as e:
            raise NotLocated(id, [*missed.asked, *e.asked], [*missed.failed, *e.failed]) from None

    def close(self) -> None:
        self.upstream.close()
        self.cache.close()


def single_or_router(stores: Sequence[Store]) -> Store:
    return stores[0] if len(stores) == 1 else Router(stores)
