"""``make``: the index at ``index`` describes ``source``, and ``store`` holds its chunks.

Fast path: a record of the source's stat, the index's digest, the chunk sizes
and the store, written when the task last converged; while it matches,
nothing is read but the (small) index. Otherwise the source is chunked
without storing anything (the index it would get) and the store is asked
which chunks it lacks: the plan's upload count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.manifest import MakeAction, Task
from desync_decl.ops.make import make
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import (
    Resources,
    file_facts,
    location_key,
    stat_fields,
    store_keys,
)
from desync_decl.reconcile.kinds.upload import upload_amount
from desync_decl.reconcile.model import (
    Action,
    Amount,
    Diff,
    Effects,
    Facts,
    Status,
    TaskResult,
    Travel,
    Verb,
    chunks,
)
from desync_decl.reconcile.resolve import Resolver
from desync_decl.stores.location import Opener
from desync_decl.stores.store_lock import writing


@dataclass(frozen=True)
class _Seen:
    current: Index | None  # the index there now
    new: Index | None  # the index the source gets (None: fast path, or deferred)
    missing: frozenset[ChunkID]  # chunks of ``new`` the store lacks
    record: dict[str, object] | None  # what to record once converged
    recorded: bool  # the state record matches already
    deferred: str | None  # the task writing the source, when it cannot be planned yet


class MakeKind:
    name: ClassVar[str] = "make"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = True

    def resources(self, task: Task, resolver: Resolver) -> Resources:
        a: MakeAction = task.action  # type: ignore[assignment]
        return Resources(
            reads=frozenset({location_key(str(a.source))}),
            adds=store_keys(resolver, [a.store]),
            writes=frozenset({location_key(a.index)}),
        )

    def observe(self, task: Task, ctx: Context) -> Facts:
        a: MakeAction = task.action  # type: ignore[assignment]
        found = ctx.find_index(a.index)
        current = found[0] if found is not None else None
        fields = {
            "source": file_facts(ctx, a.source),
            "index": current.file_digest() if current is not None else None,
            "chunk-size": str(a.chunk_size),
            "digest": ctx.digest.value,
            "store": ctx.resolver.location(a.store),
        }
        pending = ctx.overlay.file(a.source) if ctx.simulated else None
        raw = stat_fields(a.source)
        generation = ctx.state.generation(str(fields["store"]))
        record = None
        if pending is None and raw is not None:
            record = {**fields, "source": raw, "generation": generation}
        key = _key(a)
        fresh = record is not None and current is not None and not ctx.verify
        if fresh and ctx.state.get(key) == record:
            return Facts(fields, _Seen(current, None, frozenset(), record, True, None))
        if pending is not None:
            content, producer = pending
            if content.sizes != a.chunk_size or content.digest is not ctx.digest:
                return Facts(fields, _Seen(current, None, frozenset(), None, False, producer))
            new = content  # the same bytes cut the same way: the same index
        elif raw is None:
            raise DesyncError(f"{a.source}: no such file")
        else:
            new = make(
                a.source,
                sizes=a.chunk_size,
                digest=ctx.digest,
                concurrency=ctx.concurrency,
                progress=ctx.progress,
            ).index
        ids = new.unique_ids()
        missing = frozenset(ids - ctx.present(a.store, ids, ctx.digest))
        recorded = ctx.state.get(key) == record
        return Facts(fields, _Seen(current, new, missing, record, recorded, None))

    def plan(self, task: Task, facts: Facts, ctx: Context) -> Action:
        a: MakeAction = task.action  # type: ignore[assignment]
        seen: _Seen = facts.data
        verb = Verb.UPDATE if seen.current is not None else Verb.CREATE
        if seen.deferred is not None:
            return Action(
                task,
                verb,
                f"its source is written by task '{seen.deferred}': planned when that has run",
                a.index,
                facts,
                deferred=(seen.deferred,),
            )
        new = seen.new
        if new is None:  # fast path
            return Action(task, Verb.NOOP, "index is current (recorded)", a.index, facts)
        travel = Travel(
            total=Amount(len(new), new.length),
            upload=upload_amount(ctx, a.store, new, seen.missing, str(a.source)),
        )
        same = seen.current is not None and seen.current.encode() == new.encode()
        if same and not seen.missing:
            return Action(task, Verb.NOOP, "index is current", a.index, facts, travel, detail=seen)
        if same:
            reason = f"store '{a.store}' lacks {len(seen.missing)} of its chunks"
        elif seen.current is None:
            reason = "no index yet"
        elif seen.current.sizes != new.sizes:
            reason = f"chunk sizes change from {seen.current.sizes} to {new.sizes}"
        else:
            reason = "the source changed"
        effects = Effects(indexes={a.index: new}, added={a.store: set(seen.missing)})
        return Action(
            task,
            verb,
            reason,
            a.index,
            facts,
            travel,
            diff=_diff(a.index, seen.current, new),
            effects=effects,
            detail=seen,
        )

    def apply(self, action: Action, ctx: Context, progress: Progress) -> TaskResult:
        a: MakeAction = action.task.action  # type: ignore[assignment]
        seen: _Seen = action.detail
        if not action.verb.changes:
            if seen is not None and not seen.recorded and seen.record is not None:
                ctx.state.put(_key(a), seen.record)
            return TaskResult(action.task, Status.OK, action.reason)
        store = ctx.resolver.write_store(a.store, ctx.digest)
        with writing(
            store, ctx.lock_patience
        ):  # the index is published under the store's lock (store_lock)
            result = make(
                a.source,
                sizes=a.chunk_size,
                digest=ctx.digest,
                store=store,
                concurrency=ctx.concurrency,
                progress=progress,
            )
            new = seen.new if seen is not None else None
            if new is not None and result.index.encode() != new.encode():
                raise DesyncError(f"{a.source} changed while the task ran; run it again")
            Opener(config=ctx.config).write_index(a.index, result.index, make_dirs=True)
        # the source as observed before it was read: changed since, it is chunked again
        base = seen.record if seen is not None else None
        if base is None and (raw := stat_fields(a.source)) is not None:
            generation = ctx.state.generation(ctx.resolver.location(a.store))
            base = {**action.facts.digest_fields, "source": raw, "generation": generation}
        if base is not None:
            ctx.state.put(_key(a), {**base, "index": result.index.file_digest()})
        msg = f"wrote {a.index}: {chunks(result.chunks_total)}, {result.chunks_stored} stored"
        stats = {
            "chunks": result.chunks_total,
            "chunks-stored": result.chunks_stored,
            "bytes-stored": result.bytes_stored,
            "size": result.index.length,
            "index-digest": result.index.file_digest(),
        }
        return TaskResult(action.task, Status.CHANGED, msg, stats=stats)


def _key(a: MakeAction) -> str:
    return f"make\0{a.index}"


def _diff(target: str, before: Index | None, after: Index) -> Diff:
    return Diff(target, _describe(before), _describe(after))


def _describe(index: Index | None) -> dict[str, str]:
    if index is None:
        return {"index": "absent"}
    return {
        "index": index.file_digest(),
        "chunks": str(len(index)),
        "size": str(index.length),
        "chunk-size": str(index.sizes),
    }
