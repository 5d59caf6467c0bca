"""The "index + upload" that ``make`` and ``tar`` share: the index at ``index``
describes a source, and ``store`` holds its chunks.

Each kind observes its source its own way (a file's stat, a tree's fingerprint)
and cuts it its own way (``ops.make``, ``ops.tar``); from there on the two are one
task, kept here once: the facts they hand on (``Seen``), the plan (converged, the
chunks the store lacks, a new or changed index, an upload's numbers, the diff), and
apply's frame around the cut (the store's lock, the index written only if it is
the one planned, the record of the converged source, the result's numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.manifest import Task, TaskAction
from desync_decl.reconcile.context import Context
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
from desync_decl.stores.base import WriteStore
from desync_decl.stores.location import Opener
from desync_decl.stores.store_lock import writing

A = TypeVar("A", bound=TaskAction)


@dataclass(frozen=True)
class Publication:
    """What a make or tar task converges: ``index`` describes ``source`` (a file, or
    with ``tree`` a directory, archived with feature flags), ``store`` holds its chunks."""

    source: Path
    index: str
    store: str
    tree: bool


@dataclass(frozen=True)
class Seen:
    current: Index | None  # the index there now
    new: Index | None  # the index the source gets (None: fast path, or deferred)
    missing: frozenset[ChunkID]  # chunks of ``new`` the store lacks
    record: dict[str, object] | None  # what to record once converged
    recorded: bool  # the state record matches already
    deferred: str | None  # the task writing the source, when it cannot be planned yet


@dataclass(frozen=True)
class Cut:
    """What apply's cut of the source gave: the index, the chunks it stored."""

    index: Index
    chunks_stored: int
    bytes_stored: int


def compared(
    ctx: Context,
    store: str,
    current: Index | None,
    new: Index,
    record: dict[str, object] | None,
    recorded: bool,
) -> Seen:
    """The facts of a source cut into ``new``: which of its chunks ``store`` lacks."""
    ids = new.unique_ids()
    missing = frozenset(ids - ctx.present(store, ids, new.digest))
    return Seen(current, new, missing, record, recorded, None)


def plan(task: Task[A], facts: Facts[Seen], ctx: Context, p: Publication) -> Action[A, Seen | None]:
    """No-op while the index is current and the store holds its chunks; else a
    create or update, with what the upload sends and the index's diff."""
    seen = facts.data
    verb = Verb.UPDATE if seen.current is not None else Verb.CREATE
    if seen.deferred is not None:
        return Action(
            task,
            verb,
            f"its source is written by task '{seen.deferred}': planned when that has run",
            p.index,
            facts,
            deferred=(seen.deferred,),
            detail=None,
        )
    new = seen.new
    if new is None:  # fast path
        return Action(task, Verb.NOOP, "index is current (recorded)", p.index, facts, detail=None)
    sample = None if p.tree else str(p.source)  # a file's chunks are sampled to estimate
    travel = Travel(
        total=Amount(len(new), new.length),
        upload=upload_amount(ctx, p.store, new, seen.missing, sample),
    )
    same = seen.current is not None and seen.current.encode() == new.encode()
    if same and not seen.missing:
        return Action(task, Verb.NOOP, "index is current", p.index, facts, travel, detail=seen)
    effects = Effects(indexes={p.index: new}, added={p.store: set(seen.missing)})
    return Action(
        task,
        verb,
        _reason(p, seen, new, same),
        p.index,
        facts,
        travel,
        diff=Diff(p.index, _describe(seen.current, p.tree), _describe(new, p.tree)),
        effects=effects,
        detail=seen,
    )


def apply(
    action: Action[A, Seen | None],
    ctx: Context,
    p: Publication,
    *,
    key: str,
    digest: Digest,
    cut: Callable[[WriteStore], Cut],
    source_now: Callable[[], object | None],
) -> TaskResult:
    """Record a converged source, or ``cut`` it into the store (under the store's lock,
    the index published only if it is the one planned) and record it: ``source_now``
    is its identity when the plan had no record to make (None: it is gone)."""
    seen = action.detail
    if not action.verb.changes:
        if seen is not None and not seen.recorded and seen.record is not None:
            ctx.state.put(key, seen.record)
        return TaskResult(action.task, Status.OK, action.reason)
    store = ctx.resolver.write_store(p.store, digest)
    with writing(store, ctx.lock_patience):  # the index is published under the store's lock
        result = cut(store)
        index = result.index
        new = seen.new if seen is not None else None
        if new is not None and index.encode() != new.encode():
            raise DesyncError(f"{p.source} changed while the task ran; run it again")
        Opener(config=ctx.config).write_index(p.index, index, make_dirs=True)
    # the source as observed before it was read: changed since, it is cut again
    base = seen.record if seen is not None else None
    if base is None and (now := source_now()) is not None:
        generation = ctx.state.generation(ctx.resolver.location(p.store))
        base = {**action.facts.digest_fields, "source": now, "generation": generation}
    if base is not None:
        ctx.state.put(key, {**base, "index": index.file_digest()})
    msg = f"wrote {p.index}: {chunks(len(index))}, {result.chunks_stored} stored"
    stats = {
        "chunks": len(index),
        "chunks-stored": result.chunks_stored,
        "bytes-stored": result.bytes_stored,
        "size": index.length,
        "index-digest": index.file_digest(),
    }
    return TaskResult(action.task, Status.CHANGED, msg, stats=stats)


def _reason(p: Publication, seen: Seen, new: Index, same: bool) -> str:
    if same:
        return f"store '{p.store}' lacks {len(seen.missing)} of its chunks"
    current = seen.current
    if current is None:
        return "no index yet"
    if p.tree and current.flags != new.flags:
        return f"feature flags change from 0x{current.flags:016x} to 0x{new.flags:016x}"
    if current.sizes != new.sizes:
        return f"chunk sizes change from {current.sizes} to {new.sizes}"
    return "the directory changed" if p.tree else "the source changed"


def _describe(index: Index | None, tree: bool) -> dict[str, str]:
    if index is None:
        return {"index": "absent"}
    out = {
        "index": index.file_digest(),
        "chunks": str(len(index)),
        "size": str(index.length),
        "chunk-size": str(index.sizes),
    }
    if tree:
        out["flags"] = f"0x{index.flags:016x}"
    return out
