"""``tar``: the ``.caidx`` at ``index`` describes the directory ``source`` as it is
now (with the task's feature flags and chunk sizes), and ``store`` holds its chunks.

Fast path: a record of the tree's fingerprint (one ``lstat`` per entry, see
``trees.py``), the index's digest, the flags, chunk sizes and store, written
when the task last converged; while it matches, nothing is read but the
tree's metadata and the (small) index. Otherwise the tree is archived and
chunked without storing anything (the index it would get), and the store is
asked which chunks it lacks: the plan's upload count.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import ClassVar

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.manifest import TarAction, Task
from desync_decl.ops.tar import TarInput, tar_index
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import Resources, location_key, store_keys
from desync_decl.reconcile.kinds.trees import fingerprint, tree_index
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
    new: Index | None  # the index the tree gets (None: fast path, or deferred)
    missing: frozenset[ChunkID]  # chunks of ``new`` the store lacks
    record: dict[str, object] | None  # what to record once converged
    recorded: bool  # the state record matches already
    deferred: str | None  # the task writing the source, when it cannot be planned yet


def archive_flags(a: TarAction, digest: Digest) -> int:
    """The full feature flags of the archive the task writes (as ``tar`` computes them)."""
    from desync_decl.formats.catar import features

    return features.archive_flags(
        a.features,
        sha512_256=digest is Digest.SHA512_256,
        exclude_submounts=a.one_file_system,
    )


class TarKind:
    name: ClassVar[str] = "tar"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = True

    def resources(self, task: Task, resolver: Resolver) -> Resources:
        a: TarAction = task.action  # type: ignore[assignment]
        source = os.path.abspath(a.source)
        return Resources(
            reads=frozenset({location_key(source)}),
            adds=store_keys(resolver, [a.store]),
            writes=frozenset({location_key(a.index)}),
            patterns=frozenset({f"file:{glob.escape(source)}/*"}),
        )

    def observe(self, task: Task, ctx: Context) -> Facts:
        a: TarAction = task.action  # type: ignore[assignment]
        flags = archive_flags(a, ctx.digest)
        found = ctx.find_index(a.index)
        current = found[0] if found is not None else None
        pending = ctx.overlay.file(a.source) if ctx.simulated else None
        tree = _tree(a) if pending is None else None
        fields = {
            "source": tree if pending is None else {"produced-by": pending[1]},
            "index": current.file_digest() if current is not None else None,
            "flags": f"0x{flags:016x}",
            "chunk-size": str(a.chunk_size),
            "store": ctx.resolver.location(a.store),
        }
        if pending is not None:
            return Facts(fields, _Seen(current, None, frozenset(), None, False, pending[1]))
        generation = ctx.state.generation(str(fields["store"]))
        record = {**fields, "generation": generation}
        recorded = ctx.state.get(_key(a)) == record
        if recorded and current is not None and not ctx.verify:
            return Facts(fields, _Seen(current, None, frozenset(), record, True, None))
        new = tree_index(
            a.source, flags, a.chunk_size, concurrency=ctx.concurrency, progress=ctx.progress
        )
        ids = new.unique_ids()
        missing = frozenset(ids - ctx.present(a.store, ids, new.digest))
        return Facts(fields, _Seen(current, new, missing, record, recorded, None))

    def plan(self, task: Task, facts: Facts, ctx: Context) -> Action:
        a: TarAction = task.action  # type: ignore[assignment]
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
            upload=upload_amount(ctx, a.store, new, seen.missing),
        )
        same = seen.current is not None and seen.current.encode() == new.encode()
        if same and not seen.missing:
            return Action(task, Verb.NOOP, "index is current", a.index, facts, travel, detail=seen)
        effects = Effects(indexes={a.index: new}, added={a.store: set(seen.missing)})
        return Action(
            task,
            verb,
            _reason(a, seen, new, same),
            a.index,
            facts,
            travel,
            diff=Diff(a.index, _describe(seen.current), _describe(new)),
            effects=effects,
            detail=seen,
        )

    def apply(self, action: Action, ctx: Context, progress: Progress) -> TaskResult:
        a: TarAction = action.task.action  # type: ignore[assignment]
        seen: _Seen = action.detail
        if not action.verb.changes:
            if seen is not None and not seen.recorded and seen.record is not None:
                ctx.state.put(_key(a), seen.record)
            return TaskResult(action.task, Status.OK, action.reason)
        flags = archive_flags(a, ctx.digest)
        store = ctx.resolver.write_store(a.store, Digest.from_flags(flags))
        with writing(
            store, ctx.lock_patience
        ):  # the index is published under the store's lock (store_lock)
            result = tar_index(
                TarInput(a.source, flags=flags, one_file_system=a.one_file_system),
                store,
                sizes=a.chunk_size,
                concurrency=ctx.concurrency,
                progress=progress,
            )
            index = result.index
            assert index is not None
            if seen is not None and seen.new is not None and index.encode() != seen.new.encode():
                raise DesyncError(f"{a.source} changed while the task ran; run it again")
            Opener(config=ctx.config).write_index(a.index, index, make_dirs=True)
        # the tree as observed before it was read: changed since, it is archived again
        base = seen.record if seen is not None else None
        if base is None:
            generation = ctx.state.generation(ctx.resolver.location(a.store))
            base = {**action.facts.digest_fields, "source": _tree(a), "generation": generation}
        ctx.state.put(_key(a), {**base, "index": index.file_digest()})
        msg = f"wrote {a.index}: {chunks(len(index))}, {result.chunks_stored} stored"
        stats = {
            "chunks": len(index),
            "chunks-stored": result.chunks_stored,
            "bytes-stored": result.bytes_stored,
            "size": index.length,
            "index-digest": index.file_digest(),
        }
        return TaskResult(action.task, Status.CHANGED, msg, stats=stats)


def _tree(a: TarAction) -> str:
    """The source's fingerprint; it must be a directory, reached through no symlink
    someone else could have planted (``trees.open_tree``)."""
    found = fingerprint(a.source, one_file_system=a.one_file_system)
    if found is None:
        raise DesyncError(f"{a.source}: no such directory")
    return found


def _reason(a: TarAction, seen: _Seen, new: Index, same: bool) -> str:
    if same:
        return f"store '{a.store}' lacks {len(seen.missing)} of its chunks"
    current = seen.current
    if current is None:
        return "no index yet"
    if current.flags != new.flags:
        return f"feature flags change from 0x{current.flags:016x} to 0x{new.flags:016x}"
    if current.sizes != new.sizes:
        return f"chunk sizes change from {current.sizes} to {new.sizes}"
    return "the directory changed"


def _key(a: TarAction) -> str:
    return f"tar\0{a.index}"


def _describe(index: Index | None) -> dict[str, str]:
    if index is None:
        return {"index": "absent"}
    return {
        "index": index.file_digest(),
        "chunks": str(len(index)),
        "size": str(index.length),
        "chunk-size": str(index.sizes),
        "flags": f"0x{index.flags:016x}",
    }
