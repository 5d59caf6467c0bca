"""``chop``: ``store`` holds every chunk of ``index``, cut from ``source``.

The store is asked which chunks it lacks (``has_chunk``); only those are cut
from the source and stored. Fast path: a record that this index was complete
in this store, made stale by any prune of the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.manifest import ChopAction, Task
from desync_decl.ops.chop import chop
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import (
    Kind,
    Resources,
    file_facts,
    location_key,
    size_of,
    store_keys,
    with_signatures,
)
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
    index: Index
    present: frozenset[ChunkID]
    missing: frozenset[ChunkID] | None  # None: recorded complete (fast path)
    record: tuple[str, dict[str, object]]


class ChopKind:
    name: ClassVar[str] = "chop"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = False

    def resources(self, task: Task[ChopAction], resolver: Resolver) -> Resources:
        a = task.action
        return Resources(
            reads=frozenset({location_key(a.index), location_key(str(a.source))}),
            adds=store_keys(resolver, [a.store]),
        )

    def observe(self, task: Task[ChopAction], ctx: Context) -> Facts[_Seen]:
        a = task.action
        if a.trust is None:
            return self._observe(a, ctx, ctx.read_index(a.index)[0])
        index, signed = ctx.trusted_index(a.index, a.trust)
        return with_signatures(self._observe(a, ctx, index), [signed])

    def _observe(self, a: ChopAction, ctx: Context, index: Index) -> Facts[_Seen]:
        digest = index.file_digest()
        location = ctx.resolver.location(a.store)
        fields = {"index": digest, "store": location, "source": file_facts(ctx, a.source)}
        key = f"chop\0{digest}\0{location}"
        record = {"index": digest, "generation": ctx.state.generation(location)}
        if not ctx.verify and ctx.state.get(key) == record:
            return Facts(fields, _Seen(index, frozenset(), None, (key, record)))
        ids = index.unique_ids()
        present = frozenset(ctx.present(a.store, ids, index.digest))
        return Facts(fields, _Seen(index, present, frozenset(ids - present), (key, record)))

    def plan(
        self, task: Task[ChopAction], facts: Facts[_Seen], ctx: Context
    ) -> Action[ChopAction, _Seen | None]:
        a = task.action
        seen = facts.data
        target = f"store '{a.store}'"
        if seen.missing is None:
            why = "store holds every chunk (recorded)"
            return Action(task, Verb.NOOP, why, target, facts, detail=None)
        travel = Travel(
            total=Amount(len(seen.index.unique_ids()), seen.index.length),
            upload=StoreAmount(
                a.store,
                ctx.resolver.location(a.store),
                len(seen.missing),
                size_of([seen.index], seen.missing),
            ),
        )
        if not seen.missing:
            return Action(
                task, Verb.NOOP, "store holds every chunk", target, facts, travel, detail=seen
            )
        if facts.digest_fields["source"] == {"exists": False}:
            raise DesyncError(f"{a.source}: no such file")
        verb = Verb.UPDATE if seen.present else Verb.CREATE
        reason = (
            f"store lacks {len(seen.missing)} of {len(seen.missing) + len(seen.present)} chunks"
        )
        return Action(
            task,
            verb,
            reason,
            target,
            facts,
            travel,
            effects=Effects(added={a.store: set(seen.missing)}),
            detail=seen,
        )

    def apply(
        self, action: Action[ChopAction, _Seen | None], ctx: Context, progress: Progress
    ) -> TaskResult:
        a = action.task.action
        seen = action.detail
        if seen is None:
            return TaskResult(action.task, Status.OK, action.reason)
        key, record = seen.record
        if not action.verb.changes:
            ctx.state.put(key, record)
            return TaskResult(action.task, Status.OK, action.reason)
        store = ctx.resolver.write_store(a.store, seen.index.digest)
        with writing(store, ctx.lock_patience):
            result = chop(
                seen.index,
                a.source,
                store,
                ignore=set(seen.present),
                concurrency=ctx.concurrency,
                progress=progress,
            )
        ctx.state.put(key, record)
        stats = {"chunks": result.chunks_total, "chunks-stored": result.chunks_stored}
        stats["bytes-stored"] = result.bytes_stored
        msg = f"stored {chunks(result.chunks_stored)} in '{a.store}'"
        return TaskResult(action.task, Status.CHANGED, msg, stats=stats)


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[ChopAction, _Seen, _Seen | None] = ChopKind()
