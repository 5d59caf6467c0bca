"""What one task's reads did to each store: counts per store, failover switches, cache repairs.

The composed stores (``compose``) are opened once per run and shared by every
task, so what they see cannot be kept on them: each task observes its own reads
through a ``Tally`` made current for it (``observing``). The wrappers report into
the current tally as they go: a leaf store's answer to a ``get_chunk`` (served,
missing, failed), a group switching member, a cache repairing a copy. Without a
current tally (the plain ``extract`` verb, tests) nothing is counted.

A context variable does not follow work handed to a thread pool, so the route a
task reads through (``observed``) carries its tally and makes it current around
every read, whatever thread the read runs on.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import (
    ChunkMissing,
    Composite,
    Store,
    chunk_size_limit,
    expected_chunk_size,
)

OUTCOMES = ("served", "missing", "failed")
Namer = Callable[[object], str]  # a store object -> its name for people (a manifest's name)


@dataclass
class Counts:
    """One store's answers, in chunks and plain bytes per outcome. The bytes of a
    chunk that was missing or failed are the index's size for it (a read through
    ``plain_of``; other reads, such as a cache task's copies, count none)."""

    chunks: Counter[str] = field(default_factory=Counter)  # outcome -> chunks
    bytes: Counter[str] = field(default_factory=Counter)  # outcome -> plain bytes
    stored_bytes: int = 0  # the chunks served, as the store held them (what crossed the wire)

    def to_json(self) -> dict[str, object]:
        return {
            "requested": sum(self.chunks.values()),
            **{outcome: self.chunks[outcome] for outcome in OUTCOMES},
            "bytes-requested": sum(self.bytes.values()),
            **{f"bytes-{outcome}": self.bytes[outcome] for outcome in OUTCOMES},
            "stored-bytes-served": self.stored_bytes,
        }


@dataclass(frozen=True)
class Switch:
    group: object
    old: object
    new: object
    reason: str

    def warning(self, name: Namer) -> str:
        return (
            f"group '{name(self.group)}' switched from '{name(self.old)}' to"
            f" '{name(self.new)}': {self.reason}"
        )


@dataclass(frozen=True)
class Repair:
    cache: object  # the cache's own store
    id: ChunkID
    reason: str

    def warning(self, name: Namer) -> str:
        return f"cache '{name(self.cache)}' repaired chunk {self.id.hex()}: {self.reason}"


class Tally:
    """Counts and events of one task's reads; safe to use from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[object, Counts] = {}  # leaf store -> its answers
        self.members: dict[object, Counter[object]] = {}  # group -> member -> chunks served
        self.events: list[Switch | Repair] = []

    def answered(self, store: object, outcome: str, size: int | None, stored: int = 0) -> None:
        """``store`` answered a read of a chunk of ``size`` plain bytes (None: not
        known) with ``outcome``; ``stored``: the bytes it held a served chunk in."""
        with self._lock:
            counts = self.counts.setdefault(store, Counts())
            counts.chunks[outcome] += 1
            counts.bytes[outcome] += size or 0
            counts.stored_bytes += stored

    def served_by(self, group: object, member: object) -> None:
        with self._lock:
            self.members.setdefault(group, Counter())[member] += 1

    def event(self, event: Switch | Repair) -> None:
        with self._lock:
            self.events.append(event)

    def served(self) -> dict[object, int]:
        """Plain bytes each leaf store served so far."""
        with self._lock:
            return {store: counts.bytes["served"] for store, counts in self.counts.items()}

    def warnings(self, name: Namer) -> tuple[str, ...]:
        with self._lock:
            return tuple(e.warning(name) for e in self.events)

    def to_json(self, name: Callable[[object], str | None]) -> dict[str, object]:
        """Per store its counts, per group the chunks each member served; only the
        stores ``name`` knows (not a seed or spool a caller routes through)."""
        with self._lock:
            named = [(name(s), c) for s, c in self.counts.items()]
            stores = {n: c.to_json() for n, c in named if n is not None}
            groups = {
                str(name(g)): {str(name(m)): n for m, n in members.items()}
                for g, members in self.members.items()
            }
        return {"stores": stores, "groups": groups}


_current: ContextVar[Tally | None] = ContextVar("store_tally", default=None)


def current() -> Tally | None:
    return _current.get()


@contextlib.contextmanager
def observing(tally: Tally | None = None) -> Iterator[Tally]:
    """Make ``tally`` (a new one by default) current on this thread for the block."""
    tally = tally or Tally()
    token = _current.set(tally)
    try:
        yield tally
    finally:
        _current.reset(token)


def ask(store: Store, id: ChunkID) -> Chunk:
    """``store.get_chunk(id)``, counted in the current tally when ``store`` is a leaf
    (a wrapper counts the leaves it asks itself)."""
    tally = current()
    if tally is None or isinstance(store, Composite):
        return store.get_chunk(id)
    size = expected_chunk_size()
    try:
        chunk = store.get_chunk(id)
    except Exception as e:
        tally.answered(store, "missing" if isinstance(e, ChunkMissing) else "failed", size)
        raise
    tally.answered(store, "served", _plain_size(chunk) if size is None else size, chunk.held_size())
    return chunk


def _plain_size(chunk: Chunk) -> int | None:
    """A served chunk's plain size when no index gave it: decoded here, outside the
    tally's lock (the store has decoded it already unless it skips verification);
    None when it does not decode (the reader finds that out and says so)."""
    try:
        return len(chunk.plain(chunk_size_limit()))
    except DecodeError:
        return None


class Observed(Composite):
    """A route that makes ``tally`` current around each read, on whatever thread."""

    def __init__(self, inner: Store, tally: Tally) -> None:
        self.inner, self.tally = inner, tally

    def __str__(self) -> str:
        return str(self.inner)

    @property
    def fork_safe(self) -> bool:
        return False  # the tally lives in this process

    def get_chunk(self, id: ChunkID) -> Chunk:
        with observing(self.tally):
            return ask(self.inner, id)

    def has_chunk(self, id: ChunkID) -> bool:
        return self.inner.has_chunk(id)

    def close(self) -> None:
        pass  # the inner stores belong to whoever opened them


def observed(store: Store) -> Store:
    """``store`` counted in the current tally, if there is one."""
    tally = current()
    return store if tally is None else Observed(store, tally)
