"""``prune``: ``store`` holds no chunk that the ``keep`` indexes do not reference.

Destructive, so explicit: the keep list (paths, globs, index URLs) must match
indexes that reference chunks (an empty keep set is refused: it would empty
the store), and the plan lists every chunk id it would delete. Under
``--check`` nothing is deleted; the facts digest covers the keep set and the
deletion list, so a saved plan is refused when either changed.

Safe while other machines publish into the store (``ops.prune``): chunks younger
than ``min_age`` stay (the plan leaves them out, by this host's clock; apply
judges by the store's), and apply holds the store's exclusive lock while it
reads the keep list again and deletes.

The plan says how many bytes the store holds the doomed chunks in (each one's
stored size where the store tells it: ``ops.prune.stored_sizes``; for a registry
its manifest, which apply's deletion then reuses), and notes when deleting frees
no space by itself (a registry's garbage collection: ``ops.prune.reclaim_note``).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.manifest import PruneAction, Task
from desync_decl.manifest.convert import is_url
from desync_decl.ops.prune import (
    check_ages_known,
    describe_age,
    keep_set,
    prune,
    reclaim_note,
    stored_sizes,
)
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import Kind, Resources, location_key, store_keys
from desync_decl.reconcile.model import (
    Action,
    Deletion,
    Effects,
    Facts,
    Status,
    TaskResult,
    Travel,
    Verb,
    chunks,
    human_bytes,
)
from desync_decl.reconcile.resolve import Resolver


@dataclass(frozen=True)
class _Seen:
    keep: frozenset[ChunkID]
    delete: frozenset[ChunkID]
    young: int  # unreferenced chunks younger than the minimum age: they stay
    bytes: int = 0  # the stored bytes of ``delete`` whose size the store tells
    sized: int = 0  # how many of ``delete`` told their size
    note: str | None = None  # what deleting does not do in this store (reclaim_note)


class PruneKind:
    name: ClassVar[str] = "prune"
    supports_check: ClassVar[bool] = True  # observe and plan only read; apply never runs
    supports_diff: ClassVar[bool] = True

    def resources(self, task: Task[PruneAction], resolver: Resolver) -> Resources:
        a = task.action
        urls = frozenset(location_key(k) for k in a.keep if is_url(k))
        return Resources(
            reads=urls,
            writes=store_keys(resolver, [a.store]),
            patterns=frozenset(location_key(k) for k in a.keep if not is_url(k)),
        )

    def observe(self, task: Task[PruneAction], ctx: Context) -> Facts[_Seen]:
        a = task.action
        locations = kept_indexes(ctx, a.keep)
        indexes = {loc: ctx.read_index(loc)[0] for loc in locations}
        keep = keep_set(indexes.values())
        location = ctx.resolver.location(a.store)
        if not keep:
            raise DesyncError(
                f"refusing to prune {location}: the keep set is empty"
                f" (no index with chunks matches {', '.join(a.keep)})"
            )
        store = ctx.resolver.prune_store(a.store, ctx.digest)
        check_ages_known(store, a.min_age)
        cutoff = time.time() - a.min_age
        listed: set[ChunkID] = set()
        young: set[ChunkID] = set()
        for id, mtime in store.chunk_ages():
            if ctx.overlay.chunk(a.store, id) is False:
                continue  # an earlier task of this run deletes it
            old = a.min_age <= 0 or (mtime is not None and mtime < cutoff)
            (listed if old else young).add(id)
        if a.min_age <= 0:  # with a minimum age, chunks earlier tasks add are young
            listed |= ctx.overlay.added(a.store)
        delete = frozenset(listed - keep)
        sizes = [
            size
            for size in stored_sizes(store, sorted(delete), ctx.concurrency)
            if size is not None and size >= 0
        ]
        fields = {
            "store": location,
            "keep": {loc: index.file_digest() for loc, index in indexes.items()},
            "delete": _ids_digest(delete),
        }
        seen = _Seen(
            frozenset(keep),
            delete,
            len(young - keep),
            sum(sizes),
            len(sizes),
            reclaim_note(store),
        )
        return Facts(fields, seen)

    def plan(
        self, task: Task[PruneAction], facts: Facts[_Seen], ctx: Context
    ) -> Action[PruneAction, _Seen]:
        a = task.action
        seen = facts.data
        target = f"store '{a.store}'"
        kept = f"{len(seen.keep)} kept"
        if seen.young:
            kept += f", {seen.young} unreferenced younger than {describe_age(a.min_age)} stay"
        if not seen.delete:
            why = f"every chunk is referenced ({kept})"
            if seen.young:
                why = f"no unreferenced chunk is old enough ({kept})"
            return Action(task, Verb.NOOP, why, target, facts, detail=seen)
        ids = tuple(sorted(id.hex() for id in seen.delete))
        deletion = Deletion(a.store, ctx.resolver.location(a.store), ids)
        size = human_bytes(seen.bytes)
        if seen.sized < len(ids):
            size = f"{size} in the {seen.sized} whose size the store tells" if seen.sized else ""
        return Action(
            task,
            Verb.DELETE,
            f"{chunks(len(ids))}{f' ({size})' if size else ''} no kept index references ({kept})",
            target,
            facts,
            Travel(delete=deletion),
            effects=Effects(removed={a.store: set(seen.delete)}),
            notes=(seen.note,) if seen.note else (),
            detail=seen,
        )

    def apply(
        self, action: Action[PruneAction, _Seen], ctx: Context, progress: Progress
    ) -> TaskResult:
        a = action.task.action
        seen = action.detail
        if not action.verb.changes:
            return TaskResult(action.task, Status.OK, action.reason)
        store = ctx.resolver.prune_store(a.store, ctx.digest)
        location = ctx.resolver.location(a.store)
        ctx.state.bump_generation(location)  # before: "holds every chunk" records go stale
        result = prune(
            store,
            set(seen.keep),
            min_age=a.min_age,
            reread=lambda: _keep_now(ctx, a.keep),
            patience=ctx.lock_patience,
            progress=progress,
            expected=len(seen.delete),
        )
        msg = f"deleted {result.removed} chunk files from '{a.store}' ({result.kept} kept)"
        if seen.note and result.removed:
            msg += f"; {seen.note}"
        stats = {"kept": result.kept, "removed": result.removed}
        return TaskResult(action.task, Status.CHANGED, msg, stats=stats)


def kept_indexes(ctx: Context, patterns: tuple[str, ...]) -> list[str]:
    """Index locations the keep list names: URLs as given, local globs expanded,
    including indexes earlier tasks of this run write."""
    found: list[str] = []
    pending = ctx.overlay.index_locations()
    for pattern in patterns:
        if is_url(pattern):
            matches = [pattern]
        else:
            matches = sorted(glob.glob(pattern))
            matches += [p for p in pending if not is_url(p) and fnmatch.fnmatch(p, pattern)]
        found += [m for m in matches if m not in found]
    return found


def _keep_now(ctx: Context, patterns: tuple[str, ...]) -> set[ChunkID]:
    """The keep set read again (under the store's lock): indexes published since the
    plan count."""
    return keep_set(ctx.read_index(loc)[0] for loc in kept_indexes(ctx, patterns))


def _ids_digest(ids: frozenset[ChunkID]) -> str:
    h = hashlib.sha256()
    for id in sorted(ids):
        h.update(id)
    return f"sha256:{h.hexdigest()}"


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[PruneAction, _Seen, _Seen] = PruneKind()
