"""``make``: the index at ``index`` describes ``source``, and ``store`` holds its chunks.

Fast path: a record of the source's stat, the index's digest, the chunk sizes
and the store, written when the task last converged; while it matches,
nothing is read but the (small) index. Otherwise the source is chunked
without storing anything (the index it would get) and the store is asked
which chunks it lacks: the plan's upload count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from desync_decl.errors import DesyncError
from desync_decl.manifest import MakeAction, Task
from desync_decl.ops.make import make
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds import publish
from desync_decl.reconcile.kinds.base import (
    Kind,
    Resources,
    file_facts,
    location_key,
    stat_fields,
    store_keys,
)
from desync_decl.reconcile.kinds.publish import Cut, Publication, Seen
from desync_decl.reconcile.model import Action, Facts, TaskResult
from desync_decl.reconcile.resolve import Resolver
from desync_decl.stores.base import WriteStore


class MakeKind:
    name: ClassVar[str] = "make"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = True

    def resources(self, task: Task[MakeAction], resolver: Resolver) -> Resources:
        a = task.action
        return Resources(
            reads=frozenset({location_key(str(a.source))}),
            adds=store_keys(resolver, [a.store]),
            writes=frozenset({location_key(a.index)}),
        )

    def observe(self, task: Task[MakeAction], ctx: Context) -> Facts[Seen]:
        return publish.signing(ctx, _publication(task.action), self._observe(task.action, ctx))

    def _observe(self, a: MakeAction, ctx: Context) -> Facts[Seen]:
        found = ctx.find_index(a.index)
        current = found[0] if found is not None else None
        fields: dict[str, object] = {
            "source": file_facts(ctx, a.source),
            "index": current.file_digest() if current is not None else None,
            "chunk-size": str(a.chunk_size),
            "digest": ctx.digest.value,
            "store": ctx.resolver.location(a.store),
        }
        pending = ctx.overlay.file(a.source) if ctx.simulated else None
        raw = stat_fields(a.source)
        generation = ctx.state.generation(str(fields["store"]))
        record: dict[str, object] | None = None
        if pending is None and raw is not None:
            record = {**fields, "source": raw, "generation": generation}
        key = _key(a)
        fresh = record is not None and current is not None and not ctx.verify
        if fresh and ctx.state.get(key) == record:
            return Facts(fields, Seen(current, None, frozenset(), record, True, None))
        if pending is not None:
            content, producer = pending
            if content.sizes != a.chunk_size or content.digest is not ctx.digest:
                return Facts(fields, Seen(current, None, frozenset(), None, False, producer))
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
        recorded = ctx.state.get(key) == record
        return Facts(fields, publish.compared(ctx, a.store, current, new, record, recorded))

    def plan(
        self, task: Task[MakeAction], facts: Facts[Seen], ctx: Context
    ) -> Action[MakeAction, Seen | None]:
        return publish.plan(task, facts, ctx, _publication(task.action))

    def apply(
        self, action: Action[MakeAction, Seen | None], ctx: Context, progress: Progress
    ) -> TaskResult:
        a = action.task.action

        def cut(store: WriteStore) -> Cut:
            made = make(
                a.source,
                sizes=a.chunk_size,
                digest=ctx.digest,
                store=store,
                concurrency=ctx.concurrency,
                progress=progress,
            )
            return Cut(made.index, made.chunks_stored, made.bytes_stored)

        return publish.apply(
            action,
            ctx,
            _publication(a),
            key=_key(a),
            digest=ctx.digest,
            cut=cut,
            source_now=lambda: stat_fields(a.source),
        )


def _publication(a: MakeAction) -> Publication:
    return Publication(a.source, a.index, a.store, tree=False, sign=a.sign)


def _key(a: MakeAction) -> str:
    return f"make\0{a.index}"


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[MakeAction, Seen, Seen | None] = MakeKind()
