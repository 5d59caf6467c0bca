"""``cache``: the store ``cache`` holds every chunk of ``indexes``, copied from ``stores``.

The target is asked which chunks it lacks; each of those is attributed to the
source store that would serve it (the plan's per-store numbers) and copied
by ``ops.cache.fill_cache``. Fast path: a record that these indexes were
complete in the target, made stale by any prune of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.manifest import CacheAction, Task
from desync_decl.ops.cache import fill_cache
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import (
    Kind,
    Resources,
    location_key,
    store_keys,
    with_signatures,
)
from desync_decl.reconcile.kinds.fetch import fetch_amounts, refuse_missing
from desync_decl.reconcile.model import (
    Action,
    Amount,
    Effects,
    Facts,
    Status,
    StoreAmount,
    TaskResult,
    Travel,
    Verb,
    chunks,
)
from desync_decl.reconcile.resolve import Resolver
from desync_decl.stores.store_lock import writing


@dataclass(frozen=True)
class _Seen:
    indexes: tuple[Index, ...]
    total: int  # distinct chunks
    missing: frozenset[ChunkID] | None  # None: recorded complete (fast path)
    record: tuple[str, dict[str, object]]


class CacheKind:
    name: ClassVar[str] = "cache"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = False

    def resources(self, task: Task[CacheAction], resolver: Resolver) -> Resources:
        a = task.action
        return Resources(
            reads=frozenset(location_key(i) for i in a.indexes) | store_keys(resolver, a.stores),
            adds=store_keys(resolver, [a.cache, *resolver.caches_in(a.stores)]),
        )

    def observe(self, task: Task[CacheAction], ctx: Context) -> Facts[_Seen]:
        a = task.action
        if a.trust is None:
            return self._observe(a, ctx, tuple(ctx.read_index(i)[0] for i in a.indexes))
        trust = a.trust
        read = [ctx.trusted_index(i, trust) for i in a.indexes]  # all judged before any fetch
        indexes = tuple(index for index, _ in read)
        return with_signatures(self._observe(a, ctx, indexes), [s for _, s in read])

    def _observe(self, a: CacheAction, ctx: Context, indexes: tuple[Index, ...]) -> Facts[_Seen]:
        digest = indexes[0].digest
        if any(i.digest is not digest for i in indexes):
            raise DesyncError("the indexes use different chunk digests")
        location = ctx.resolver.location(a.cache)
        digests = [i.file_digest() for i in indexes]
        fields = {"indexes": digests, "cache": location}
        key = f"cache\0{location}\0{','.join(sorted(digests))}"
        record = {"indexes": sorted(digests), "generation": ctx.state.generation(location)}
        ids: set[ChunkID] = set().union(*(i.unique_ids() for i in indexes))
        if not ctx.verify and ctx.state.get(key) == record:
            return Facts(fields, _Seen(indexes, len(ids), None, (key, record)))
        missing = frozenset(ids - ctx.present(a.cache, ids, digest))
        return Facts(fields, _Seen(indexes, len(ids), missing, (key, record)))

    def plan(
        self, task: Task[CacheAction], facts: Facts[_Seen], ctx: Context
    ) -> Action[CacheAction, _Seen | None]:
        a = task.action
        seen = facts.data
        target = f"store '{a.cache}'"
        if seen.missing is None:
            why = "cache holds every chunk (recorded)"
            return Action(task, Verb.NOOP, why, target, facts, detail=None)
        every = {c.id: c.size for index in seen.indexes for c in index}
        sizes = {id: every[id] for id in seen.missing}
        stores, missing = fetch_amounts(ctx, a.stores, sizes, seen.indexes[0])
        refuse_missing(missing, "the indexes")
        location = ctx.resolver.location(a.cache)
        travel = Travel(
            total=Amount(len(every), sum(every.values())),
            stores=stores,
            upload=StoreAmount(a.cache, location, len(sizes), sum(sizes.values())),
        )
        if not seen.missing:
            return Action(
                task, Verb.NOOP, "cache holds every chunk", target, facts, travel, detail=seen
            )
        verb = Verb.CREATE if len(seen.missing) == seen.total else Verb.UPDATE
        return Action(
            task,
            verb,
            f"cache lacks {len(seen.missing)} of {seen.total} chunks",
            target,
            facts,
            travel,
            effects=Effects(added={a.cache: set(seen.missing)}),
            detail=seen,
        )

    def apply(
        self, action: Action[CacheAction, _Seen | None], ctx: Context, progress: Progress
    ) -> TaskResult:
        a = action.task.action
        seen = action.detail
        if seen is None:
            return TaskResult(action.task, Status.OK, action.reason)
        key, record = seen.record
        if not action.verb.changes:
            ctx.state.put(key, record)
            return TaskResult(action.task, Status.OK, action.reason)
        digest = seen.indexes[0].digest
        target = ctx.resolver.write_store(a.cache, digest)
        with writing(target, ctx.lock_patience):
            result = fill_cache(
                seen.missing or (),
                ctx.resolver.route(a.stores, digest),
                target,
                concurrency=ctx.concurrency,
                progress=progress,
            )
        ctx.state.put(key, record)
        stats = {"chunks": result.chunks_total, "chunks-copied": result.chunks_copied}
        msg = f"copied {chunks(result.chunks_copied)} to '{a.cache}'"
        return TaskResult(action.task, Status.CHANGED, msg, stats=stats)


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[CacheAction, _Seen, _Seen | None] = CacheKind()
