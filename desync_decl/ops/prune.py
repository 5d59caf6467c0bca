"""``prune``: delete every chunk of a store that no given index references, safely
while other machines write to it.

Two guards, because a chunk can be lost two ways while another machine
publishes an index into the store being pruned:

- a chunk uploaded after the keep set was read is not in it: it is younger than
  ``min_age`` (judged by the store's own modification time) and stays;
- a chunk the writer found already there (so did not upload) is old: only the
  store lock protects it. Prune holds the store's exclusive lock
  (``store_lock``) while it reads its keep set a second time and deletes, and
  writers hold a shared one from their first chunk until their index is
  published, so the two never overlap. A prune whose lock may have gone stale
  (the machine was suspended, the store unreachable) stops deleting: a writer
  may have taken the store meanwhile.

A store that reports no modification times (an OCI registry) cannot honour a
minimum age: prune refuses rather than delete a chunk that might be young.

Before deleting, ``survey`` says what a prune would delete, in chunks and in the
bytes the store holds them in (each chunk's stored size where the store tells it:
a local file's size, an object's, an OCI artifact's blob), so a person confirms
a number, and ``prune --dry-run`` (and a manifest's plan) shows it without
deleting. Where deleting does not free the space by itself (a registry frees
blobs only in its own garbage collection), the store says so (``reclaim_note``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.parallel import ordered_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import PruneStore
from desync_decl.stores.compose import Probing
from desync_decl.stores.objects import doomed_chunks
from desync_decl.stores.store_lock import IMPATIENT, Patience, keeper_of

DEFAULT_MIN_AGE = 3600.0  # an hour: longer than any make's upload, shorter than a release cycle


@dataclass(frozen=True)
class PruneResult:
    kept: int  # distinct chunk ids referenced by the indexes
    removed: int  # chunk files deleted


@dataclass(frozen=True)
class Survey:
    """What a prune would delete now: the chunks, and the bytes the store holds them
    in (``sized`` of them told their size; the others count nothing)."""

    doomed: tuple[ChunkID, ...]
    bytes: int
    sized: int
    young: int  # unreferenced chunks that stay: younger than the minimum age

    @property
    def all_sized(self) -> bool:
        return self.sized == len(self.doomed)


def survey(
    store: PruneStore,
    keep: set[ChunkID],
    *,
    min_age: float = 0.0,
    concurrency: int = 8,
    now: float | None = None,
) -> Survey:
    """The chunks of ``store`` a prune keeping ``keep`` would delete (by this host's
    clock for ``min_age``; apply judges by the store's) and their stored bytes, each
    size asked on ``concurrency`` threads where the store tells it (``probe``)."""
    check_ages_known(store, min_age)
    older_than = (now if now is not None else time.time()) - min_age if min_age > 0 else None
    ages = [(id, mtime) for id, mtime in store.chunk_ages() if id not in keep]
    doomed = doomed_chunks(ages, keep, older_than)
    sizes = stored_sizes(store, doomed, concurrency)
    known = [size for size in sizes if size is not None and size >= 0]
    return Survey(tuple(doomed), sum(known), len(known), len(ages) - len(doomed))


def stored_sizes(store: object, ids: list[ChunkID], concurrency: int) -> list[int | None]:
    """Each chunk's size as ``store`` holds it, None where it does not say (or the chunk
    is gone meanwhile)."""
    if not isinstance(store, Probing):
        return [None] * len(ids)
    return list(ordered_map(store.probe, ids, workers=max(1, concurrency)))


def reclaim_note(store: object) -> str | None:
    """What a person must know about the space a prune frees in ``store``: said by the
    store (an OCI registry: only its own garbage collection frees blobs); None when
    deleting frees it."""
    note = getattr(store, "reclaim_note", None)
    return note if isinstance(note, str) else None


def keep_set(indexes: Iterable[Index]) -> set[ChunkID]:
    keep: set[ChunkID] = set()
    for index in indexes:
        keep |= index.unique_ids()
    return keep


def prune(
    store: PruneStore,
    keep: set[ChunkID],
    *,
    min_age: float = 0.0,
    reread: Callable[[], set[ChunkID]] | None = None,
    patience: Patience = IMPATIENT,
    progress: Progress = NO_PROGRESS,
    expected: int = 0,
) -> PruneResult:
    """Delete the chunks of ``store`` that are neither in ``keep`` nor in ``reread()``
    (the keep set read again under the lock: indexes published meanwhile count) nor
    younger than ``min_age`` seconds. Refuses an empty keep set: that would delete
    the whole store. ``patience``: how long to wait while writers hold the store.
    ``progress`` counts deletions, of ``expected`` (what a survey found; 0: unknown)."""
    if not keep:
        raise DesyncError(f"refusing to prune {store}: the indexes reference no chunks")
    check_ages_known(store, min_age)
    keeper = keeper_of(store)
    progress.start("prune", expected, unit="chunks")
    try:
        if keeper is None:
            return _prune(store, keep, reread, time.time(), min_age, progress)
        with keeper.exclusive("prune", patience) as lock:
            return _prune(store, keep, reread, lock.store_now, min_age, progress, lock.check)
    finally:
        progress.finish()


def describe_age(seconds: float) -> str:
    """1h, 30m, 90s: a minimum age as a manifest or the command line would say it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def check_ages_known(store: PruneStore, min_age: float) -> None:
    """Refuse a minimum age the store cannot honour (no modification times)."""
    if min_age > 0 and not store.chunk_ages_known:
        raise DesyncError(
            f"cannot prune {store} with a minimum age: it reports no modification time for"
            " its chunks; a minimum age of 0 deletes young chunks too, so only while"
            " nothing writes to it"
        )


def _prune(
    store: PruneStore,
    keep: set[ChunkID],
    reread: Callable[[], set[ChunkID]] | None,
    now: float,
    min_age: float,
    progress: Progress,
    check: Callable[[], None] = lambda: None,
) -> PruneResult:
    if reread is not None:
        keep = keep | reread()
    older_than = now - min_age if min_age > 0 else None

    def before_delete() -> None:
        check()  # a lost lock stops the prune before this deletion
        progress.advance(1)

    removed = store.prune(keep, older_than=older_than, before_delete=before_delete)
    return PruneResult(len(keep), removed)
