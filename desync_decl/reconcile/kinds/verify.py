"""``verify``: every chunk of ``store`` decodes and hashes to its id.

An integrity check has no fast path: observing reads every chunk (a local
store: no network). Clean is ``no-op``; invalid chunks with ``repair`` are a
``delete`` of exactly those (listed in the plan), without ``repair`` an error.
Apply reads only those again before deleting them: a run reads each chunk of a
remote store once, not twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from desync_decl.errors import DesyncError
from desync_decl.manifest import Task, VerifyAction
from desync_decl.ops.verify import BadChunk, verify_store
from desync_decl.progress import BYTES, Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import Kind, Resources, store_keys
from desync_decl.reconcile.model import (
    Action,
    Amount,
    Deletion,
    Effects,
    Facts,
    Status,
    TaskResult,
    Travel,
    Verb,
)
from desync_decl.reconcile.resolve import Resolver
from desync_decl.units import counted


@dataclass(frozen=True)
class _Seen:
    bad: tuple[BadChunk, ...]
    checked: int


class VerifyKind:
    name: ClassVar[str] = "verify"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = False

    def resources(self, task: Task[VerifyAction], resolver: Resolver) -> Resources:
        a = task.action
        keys = store_keys(resolver, [a.store])
        return Resources(writes=keys) if a.repair else Resources(reads=keys)

    def observe(self, task: Task[VerifyAction], ctx: Context) -> Facts[_Seen]:
        a = task.action
        store = ctx.resolver.prune_store(a.store, ctx.digest)
        counter = _Counter(ctx.progress)
        bad = verify_store(store, concurrency=ctx.concurrency, progress=counter)
        fields = {
            "store": ctx.resolver.location(a.store),
            "invalid": sorted(b.id.hex() for b in bad),
        }
        return Facts(fields, _Seen(tuple(bad), counter.count))

    def plan(
        self, task: Task[VerifyAction], facts: Facts[_Seen], ctx: Context
    ) -> Action[VerifyAction, _Seen]:
        a = task.action
        seen = facts.data
        location = ctx.resolver.location(a.store)
        travel = Travel(checked=Amount(seen.checked, 0))
        target = f"store '{a.store}'"
        if not seen.bad:
            why = f"every chunk is valid ({seen.checked} checked)"
            return Action(task, Verb.NOOP, why, target, facts, travel, detail=seen)
        first = seen.bad[0]
        if not a.repair:
            raise DesyncError(
                f"{counted(len(seen.bad), 'invalid chunk')} in {location}, the first"
                f" {first.id.hex()}: {first.why}; set repair: true to delete them"
            )
        ids = tuple(sorted(b.id.hex() for b in seen.bad))
        return Action(
            task,
            Verb.DELETE,
            f"{counted(len(ids), 'invalid chunk')}, the first {first.id.hex()}: {first.why}",
            target,
            facts,
            Travel(checked=travel.checked, delete=Deletion(a.store, location, ids)),
            effects=Effects(removed={a.store: {b.id for b in seen.bad}}),
            detail=seen,
        )

    def apply(
        self, action: Action[VerifyAction, _Seen], ctx: Context, progress: Progress
    ) -> TaskResult:
        a = action.task.action
        if not action.verb.changes:
            return TaskResult(action.task, Status.OK, action.reason)
        store = ctx.resolver.prune_store(a.store, ctx.digest)
        ctx.state.bump_generation(ctx.resolver.location(a.store))
        # the chunks the plan found invalid, read again (one may have been stored again
        # since) and deleted if they still are: every other chunk was read once already
        only = {b.id for b in action.detail.bad}
        bad = verify_store(
            store, repair=True, concurrency=ctx.concurrency, progress=progress, only=only
        )
        msg = f"deleted {counted(len(bad), 'invalid chunk')} from '{a.store}'"
        return TaskResult(action.task, Status.CHANGED, msg, stats={"removed": len(bad)})


class _Counter:
    """Counts the chunks checked (one ``advance`` each), passing progress on."""

    def __init__(self, inner: Progress) -> None:
        self.inner, self.count = inner, 0
        self._lock = threading.Lock()

    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        self.inner.start(stage, total, unit)

    def advance(self, n: int) -> None:
        with self._lock:
            self.count += n
        self.inner.advance(n)

    def finish(self) -> None:
        self.inner.finish()


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[VerifyAction, _Seen, _Seen] = VerifyKind()
