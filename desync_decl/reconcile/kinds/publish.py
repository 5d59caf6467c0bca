"""The "index + upload" that ``make`` and ``tar`` share: the index at ``index``
describes a source, and ``store`` holds its chunks.

Each kind observes its source its own way (a file's stat, a tree's fingerprint)
and cuts it its own way (``ops.make``, ``ops.tar``); from there on the two are one
task, kept here once: the facts they hand on (``Seen``), the plan (converged, the
chunks the store lacks, a new or changed index, an upload's numbers, the diff), and
apply's frame around the cut (the store's lock, the index written only if it is
the one planned, the record of the converged source, the result's numbers).
With ``sign``, the index's signature is written after it, by the task's key; a
converged index whose ``.sig`` is not that key's signature of it is signed again
(an update that writes only the signature).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.manifest import Task, TaskAction
from desync_decl.ops.signing import write_signed_index
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import with_signatures
from desync_decl.reconcile.kinds.upload import upload_amount
from desync_decl.reconcile.model import (
    Action,
    Amount,
    Diff,
    Effects,
    Facts,
    SignedBy,
    Status,
    TaskResult,
    Travel,
    Verb,
    chunks,
)
from desync_decl.reconcile.signatures import signed_with
from desync_decl.signing import SigningKey
from desync_decl.stores.base import WriteStore
from desync_decl.stores.index_store import signature_name
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
    sign: Path | None = None  # the key signing the index (``sign:``)


@dataclass(frozen=True)
class Signing:
    """The key a task signs its index with, and what is wrong with the signature
    beside the index now (None: it is that key's signature of the index as it is)."""

    key: SigningKey
    wrong: str | None


@dataclass(frozen=True)
class Seen:
    current: Index | None  # the index there now
    new: Index | None  # the index the source gets (None: fast path, or deferred)
    missing: frozenset[ChunkID]  # chunks of ``new`` the store lacks
    record: dict[str, object] | None  # what to record once converged
    recorded: bool  # the state record matches already
    deferred: str | None  # the task writing the source, when it cannot be planned yet
    signing: Signing | None = None  # with ``sign:``

    def index_current(self) -> bool:
        """The index there is the one the source gets and the store holds its chunks."""
        if self.new is None:
            return self.current is not None  # the fast path: recorded as converged
        same = self.current is not None and self.current.encode() == self.new.encode()
        return same and not self.missing

    def resign(self) -> bool:
        """Only the signature is to be written: the index is current, its ``.sig`` is not
        the signing key's signature of it."""
        wrong = self.signing is not None and self.signing.wrong is not None
        return wrong and self.deferred is None and self.index_current()


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


def signing(ctx: Context, p: Publication, facts: Facts[Seen]) -> Facts[Seen]:
    """``facts`` with the task's signing key and whether the ``.sig`` beside the index
    is its signature of the index as it is (read once: the bytes, never re-encoded)."""
    if p.sign is None:
        return facts
    key = ctx.signatures.key(p.sign)
    wrong: str | None = None
    if facts.data.current is not None:
        signed = ctx.signatures.read(p.index, ctx.config)
        if signed.signature is None:
            wrong = f"its signature {signature_name(p.index)} is missing"
        elif not signed_with(key, signed.data, signed.signature):
            wrong = f"its signature is not {key.fingerprint}'s signature of it"
    seen = dataclasses.replace(facts.data, signing=Signing(key, wrong))
    marked = with_signatures(facts, [SignedBy(p.index, key.fingerprint, writes=True)])
    return dataclasses.replace(marked, data=seen)


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
    if seen.resign():
        assert seen.current is not None and seen.signing is not None
        effects = Effects(
            indexes={p.index: seen.current}, signed={p.index: seen.signing.key.public_key}
        )
        why = f"index is current, but {seen.signing.wrong}: signed again"
        return Action(task, Verb.UPDATE, why, p.index, facts, effects=effects, detail=seen)
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
    if seen.signing is not None:
        effects.signed[p.index] = seen.signing.key.public_key
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
    if seen is not None and seen.resign():
        return _resign(action, ctx, p, seen, key)
    store = ctx.resolver.write_store(p.store, digest)
    opener = Opener(config=ctx.config)
    with writing(store, ctx.lock_patience):  # the index is published under the store's lock
        result = cut(store)
        index = result.index
        new = seen.new if seen is not None else None
        if new is not None and index.encode() != new.encode():
            raise DesyncError(f"{p.source} changed while the task ran; run it again")
        if seen is not None and seen.signing is not None:
            write_signed_index(opener, p.index, index, seen.signing.key, make_dirs=True)
        else:
            opener.write_index(p.index, index, make_dirs=True)
        ctx.signatures.forget(p.index)
    # the source as observed before it was read: changed since, it is cut again
    base = seen.record if seen is not None else None
    if base is None and (now := source_now()) is not None:
        generation = ctx.state.generation(ctx.resolver.location(p.store))
        base = {**action.facts.digest_fields, "source": now, "generation": generation}
    if base is not None:
        ctx.state.put(key, {**base, "index": index.file_digest()})
    msg = f"wrote {p.index}: {chunks(len(index))}, {result.chunks_stored} stored"
    stats: dict[str, object] = {
        "chunks": len(index),
        "chunks-stored": result.chunks_stored,
        "bytes-stored": result.bytes_stored,
        "size": index.length,
        "index-digest": index.file_digest(),
    }
    if seen is not None and seen.signing is not None:
        msg += f", signed by {seen.signing.key.fingerprint}"
        stats["signed-by"] = seen.signing.key.fingerprint
    return TaskResult(action.task, Status.CHANGED, msg, stats=stats)


def _resign(
    action: Action[A, Seen | None], ctx: Context, p: Publication, seen: Seen, key: str
) -> TaskResult:
    """Sign the index as it is (the bytes observed, as stored) and record it converged."""
    assert seen.signing is not None and seen.current is not None
    signed = ctx.signatures.read(p.index, ctx.config)
    Opener(config=ctx.config).write_signature(p.index, seen.signing.key.sign(signed.data))
    ctx.signatures.forget(p.index)
    if not seen.recorded and seen.record is not None:
        ctx.state.put(key, seen.record)
    fingerprint = seen.signing.key.fingerprint
    msg = f"signed {p.index} again: {seen.signing.wrong}; signed by {fingerprint}"
    stats = {"index-digest": seen.current.file_digest(), "signed-by": fingerprint}
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
