"""``untar``: the directory at ``path`` holds what the ``.caidx`` at ``index`` archives.

Fast path: a record of the index's digest, the options and the tree's
fingerprint (``trees.py``) as the last apply left it; while it matches,
nothing is read and no store is asked. Otherwise the tree is archived as
``tar -i`` would with the index's flags and sizes (nothing stored): the same
index means converged. Else the plan counts, per chunk of the archive, what
the tree holds in place, what each seed directory holds, and what is fetched
from which store; where the archive can be listed (every chunk here, or with
``--verify``, which fetches the rest) the tree is compared entry by entry
(``listing.py``), and differences the task does not restore are no change:
the plan then lists each entry it creates, updates (new contents), fixes the
metadata of, or deletes, with sizes, in the words apply reports.
Apply deletes what is in the way of an entry of another type (and extras, with
``delete_extra``) through ``ops.untar.make_way``, as the verb's ``--delete-extra``
does, runs ``ops.untar`` with the tree and seeds ahead of the stores (chunks
fetched once), which updates the tree entry by entry (an unchanged file keeps its
inode and is not written), and records it. With ``atomic`` nothing is deleted
first: the new tree is built beside the old one and switched in with one rename.
What the include/exclude patterns leave out is neither written nor deleted.
Under ``trust`` the index is judged first, every run, as the extract kind does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from desync_decl.archive.clearing import Cleared
from desync_decl.archive.disk_writer import UntarStats
from desync_decl.archive.patterns import Patterns
from desync_decl.archive.seed import TreeSeed, tree_seed
from desync_decl.archive.tree_walk import NotADirectory
from desync_decl.errors import DesyncError
from desync_decl.formats import flags as ff
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.manifest import Task, UntarAction
from desync_decl.ops.untar import Clearing, count_replaced, make_way, untar
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds import absent, listing
from desync_decl.reconcile.kinds.base import (
    Kind,
    Resources,
    judged_first,
    location_key,
    store_keys,
    why_words,
)
from desync_decl.reconcile.kinds.fetch import fetch_amounts, fetched_words, refuse_missing
from desync_decl.reconcile.kinds.trees import fingerprint, repeated, tree_index
from desync_decl.reconcile.model import (
    Action,
    Amount,
    Diff,
    Effects,
    Facts,
    SeedAmount,
    Status,
    TaskResult,
    Travel,
    Verb,
    human_bytes,
)
from desync_decl.reconcile.resolve import Resolver
from desync_decl.reconcile.state import after_change
from desync_decl.stores.base import ChunkMissing
from desync_decl.stores.compose import Router
from desync_decl.stores.read_only import ReadOnly
from desync_decl.stores.spool import Spool
from desync_decl.units import counted


@dataclass(frozen=True)
class _Listed:
    changes: listing.Changes
    archive: listing.Listing
    tree: listing.Listing


@dataclass(frozen=True)
class _Seen:
    index: Index | None  # None: converged by its record and the pin, the index not read
    digest: str  # of the index
    tree: str | None  # the target's fingerprint now; None if absent
    content: str  # "absent", "recorded", "converged", "outdated" or "differs"
    holds: str | None = None  # "outdated": the digest of the index the tree came from
    right: int = 0  # chunks of the archive the tree holds already
    travel: Travel | None = None  # when content changes
    listed: _Listed | None = None  # entry by entry, when the archive could be listed
    local: tuple[TreeSeed, ...] = ()  # the tree and seeds, chunks spooled (when listed)
    spool: Spool | None = None  # chunks fetched to list the archive (--verify)
    seeds: tuple[Path, ...] = ()  # the seed directories that exist
    notes: tuple[str, ...] = ()


class UntarKind:
    name: ClassVar[str] = "untar"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = True

    def resources(self, task: Task[UntarAction], resolver: Resolver) -> Resources:
        a = task.action
        if a.index is None:  # state absent
            return Resources(writes=frozenset({location_key(str(a.path))}))
        reads = {location_key(a.index)} | store_keys(resolver, a.stores)
        reads |= {location_key(str(s)) for s in a.seeds}
        return Resources(
            reads=frozenset(reads),
            adds=store_keys(resolver, resolver.caches_in(a.stores)),
            writes=frozenset({location_key(str(a.path))}),
            patterns=frozenset(f"file:{glob.escape(str(s))}/*" for s in a.seeds),
        )

    def observe(self, task: Task[UntarAction], ctx: Context) -> Facts[_Seen | absent.Standing]:
        a = task.action
        if a.state == "absent":
            return absent.look(a.path, keeps="directory")
        assert a.index is not None  # the schema requires it unless absent
        return judged_first(ctx, a.index, a.trust, lambda index: self._observe(a, ctx, index))

    def _observe(self, a: UntarAction, ctx: Context, index: Index | None) -> Facts[_Seen]:
        """The tree against the archive (``index``: read already, under trust)."""
        assert a.index is not None
        record, tree = None, None
        pinned_index = index is None or index.file_digest() == a.pin
        if a.pin is not None and not ctx.verify and pinned_index:  # converged by its record
            tree = _target(a.path)
            record = self._matching(a, ctx, tree)
            if record is not None and record.get("index") == a.pin:
                fields: dict[str, object] = {"index": a.pin, "target": tree}
                return Facts(fields, _Seen(None, a.pin, tree, "recorded"))
        if index is None:
            index, _ = ctx.read_index(a.index)
        digest = index.file_digest()
        if a.pin is not None and digest != a.pin:
            raise DesyncError(f"index {a.index} has digest {digest}, the task pins {a.pin}")
        if not index.flags & ff.WITH_MASK:
            raise DesyncError(f"{a.index} indexes a blob, not a directory archive (.caidx)")
        if record is None:
            tree = _target(a.path)
            record = self._matching(a, ctx, tree)
        fields = {"index": digest, "target": tree or {"exists": False}}
        content, holds = "absent", None
        if record is not None:
            if record.get("index") == digest:
                return Facts(fields, _Seen(index, digest, tree, "recorded"))
            content, holds = "outdated", str(record.get("index"))
        seeds, fields["seeds"], notes = _seeds(a)  # read only when the tree may change
        return Facts(fields, self._look(a, ctx, index, tree, content, holds, seeds, notes))

    def _matching(self, a: UntarAction, ctx: Context, tree: str | None) -> dict[str, object] | None:
        """The tree's record if it still describes the tree as it is (never under
        --verify, never for an absent tree)."""
        if tree is None or ctx.verify:
            return None
        record = ctx.state.get(_key(a))
        if record and record.get("tree") == tree and record.get("options") == _options(a):
            return record
        return None

    def _look(
        self,
        a: UntarAction,
        ctx: Context,
        index: Index,
        tree: str | None,
        content: str,
        holds: str | None,
        seeds: tuple[Path, ...],
        notes: list[str],
    ) -> _Seen:
        """Read the tree (and the seeds) against the archive."""
        digest = index.file_digest()

        def ids(root: Path) -> Index:
            return tree_index(
                root, index.flags, index.sizes, concurrency=ctx.concurrency, progress=ctx.progress
            )

        have = ids(a.path) if tree is not None else None
        if have is not None and have.encode() == index.encode():
            return _Seen(index, digest, tree, "converged", seeds=seeds, notes=tuple(notes))
        if tree is not None and content == "absent":
            content = "differs"
        roots = ([a.path] if have is not None else []) + list(seeds)
        sets = ([have.unique_ids()] if have is not None else []) + [
            ids(s).unique_ids() for s in seeds
        ]
        travel, right = self._travel(a, ctx, index, have is not None, seeds, sets)
        listed: _Listed | None = None
        local: tuple[TreeSeed, ...] = ()
        spool: Spool | None = None
        fetch = travel.stores or (travel.missing and travel.missing.chunks)
        # listed when that reads no network: every chunk local (the tree, seeds, local
        # stores), or with --verify
        local_only = not (travel.missing and travel.missing.chunks) and not any(
            s.remote for s in travel.stores
        )
        if content in ("differs", "outdated") and (ctx.verify or local_only):
            labels = (["in place"] if have is not None else []) + [f"seed {s}" for s in seeds]
            holders = list(zip(labels, sets, strict=True))
            listed, local, spool = self._list(a, ctx, index, roots, fetch, holders)
            if listed is not None and not listed.changes.any:
                if kept := len(listed.changes.kept):
                    what = counted(kept, "entry", "entries")
                    notes.append(f"{what} the archive does not hold kept (delete_extra is off)")
                content = "converged"
        elif content != "absent":
            notes.append("entries are counted with --verify (the archive must be fetched)")
        return _Seen(
            index,
            digest,
            tree,
            content,
            holds,
            right,
            travel,
            listed,
            local,
            spool,
            seeds,
            tuple(notes),
        )

    def _travel(
        self,
        a: UntarAction,
        ctx: Context,
        index: Index,
        in_tree: bool,
        seeds: tuple[Path, ...],
        sets: list[set[ChunkID]],
    ) -> tuple[Travel, int]:
        """Per chunk of the archive: in the tree, in a seed (first that has it), or
        fetched (each distinct chunk once, attributed to its serving store)."""
        amounts = [Amount() for _ in sets]
        fetched: dict[ChunkID, int] = {}
        for c in index:
            for k, ids in enumerate(sets):
                if c.id in ids:
                    amounts[k] += Amount(1, c.size)
                    break
            else:
                fetched[c.id] = c.size
        stores, missing = fetch_amounts(ctx, a.stores, fetched, index)
        in_place = amounts.pop(0) if in_tree else Amount()
        travel = Travel(
            total=Amount(len(index), index.length),
            seeds=tuple(
                SeedAmount(str(s), str(s), t.chunks, t.bytes)
                for s, t in zip(seeds, amounts, strict=True)
            ),
            in_place=in_place,
            stores=stores,
            missing=missing,
        )
        return travel, in_place.chunks

    def _list(
        self,
        a: UntarAction,
        ctx: Context,
        index: Index,
        roots: list[Path],
        fetch: object,
        holders: list[tuple[str, set[ChunkID]]],
    ) -> tuple[_Listed | None, tuple[TreeSeed, ...], Spool | None]:
        """Compare entry by entry, the archive read from the tree and the seeds (and
        with --verify the stores, what they send kept in a declared cache: ``ReadOnly``);
        None if it cannot be read.
        Each file written is told where its bytes come from (``holders``: the chunks
        of the tree and of each seed, by label; the rest from the stores)."""
        local = tuple(tree_seed(r, index, concurrency=ctx.concurrency) for r in roots)
        spool = Spool(
            ReadOnly(
                ctx.resolver.stack(a.stores, index.digest), ctx.planned_chunk, ", ".join(a.stores)
            )
            if fetch
            else None
        )
        store = Router([*local, spool])
        payloads: dict[str, tuple[int, int]] = {}
        try:
            archive = listing.archive_listing(
                index, store, concurrency=ctx.concurrency, payloads=payloads
            )
        except ChunkMissing:
            return None, local, spool  # an earlier task's chunks, not stored yet
        tree = listing.tree_listing(a.path, index)
        changes = listing.compare(
            archive,
            tree,
            owners=_owners(a),
            permissions=not a.no_same_permissions,
            delete_extra=a.delete_extra,
            patterns=_patterns(a),
        )
        written = (*changes.create, *changes.update)
        sources = listing.payload_sources(index, payloads, written, holders)
        changes = dataclasses.replace(changes, sources=sources)
        return _Listed(changes, archive, tree), local, spool

    def plan(
        self, task: Task[UntarAction], facts: Facts[_Seen | absent.Standing], ctx: Context
    ) -> Action[UntarAction, _Seen | absent.Standing]:
        a = task.action
        seen = facts.data
        if isinstance(seen, absent.Standing):  # state: absent
            return absent.plan(task, facts, seen, a.path)
        target = str(a.path)
        if seen.content in ("recorded", "converged"):
            why = "converged (recorded)" if seen.content == "recorded" else "converged"
            return Action(task, Verb.NOOP, why, target, facts, notes=seen.notes, detail=seen)
        travel = seen.travel
        assert travel is not None and seen.index is not None and a.index is not None
        refuse_missing(travel.missing, a.index)
        if seen.content == "absent":
            verb, reason = Verb.CREATE, "absent"
        elif seen.content == "outdated":
            verb, reason = Verb.UPDATE, f"a new index (the tree holds {seen.holds})"
        elif seen.listed is not None:
            verb, reason = Verb.UPDATE, seen.listed.changes.summary()
        else:
            verb = Verb.UPDATE
            reason = f"the tree differs: {seen.right} of {len(seen.index)} chunks right"
        if seen.listed is not None:
            travel = _with_entries(travel, seen.listed.changes)
        return Action(
            task,
            verb,
            reason,
            target,
            facts,
            travel,
            diff=_diff(target, seen, seen.index),
            effects=Effects(files={target: seen.index}),
            notes=seen.notes,
            detail=seen,
        )

    def apply(
        self,
        action: Action[UntarAction, _Seen | absent.Standing],
        ctx: Context,
        progress: Progress,
    ) -> TaskResult:
        a = action.task.action
        seen = action.detail
        if isinstance(seen, absent.Standing):  # state: absent
            return absent.apply(action, seen, a.path, lambda: ctx.state.drop(_key(a)))
        warnings: list[str] = []
        digest = seen.digest
        if not action.verb.changes:
            if seen.content != "recorded":
                ctx.state.put(_key(a), _record(a, digest, seen.tree))
            return TaskResult(action.task, Status.OK, action.reason)
        index = seen.index
        assert index is not None and a.index is not None  # only a converged tree lacks them
        route = ctx.resolver.route(a.stores, index.digest)
        with contextlib.ExitStack() as stack:
            local = list(seen.local)
            for s in local:
                stack.callback(s.close)
            if not local:  # the tree itself first: what it holds already stays in place
                for root in ([a.path] if seen.tree is not None else []) + list(seen.seeds):
                    local.append(tree_seed(root, index, concurrency=ctx.concurrency))
                    stack.callback(local[-1].close)
            if seen.spool is not None:
                spool = seen.spool.reading_from(route)
            elif seen.tree is not None:  # the archive is read twice: listed, then written
                spool = Spool(route)
            else:  # read once: only a chunk it repeats is worth keeping
                spool = Spool(route, keep=repeated(index))
            stack.callback(spool.close)
            store = Router([*local, spool])
            cleared = Cleared()
            if seen.tree is not None and not a.atomic:  # what is in the archive's way goes first
                way = Clearing.EXTRA if a.delete_extra else Clearing.IN_THE_WAY
                cleared = make_way(
                    index,
                    a.path,
                    way,
                    store=store,
                    concurrency=ctx.concurrency,
                    kept=ctx.resolver.local_paths(a.stores),
                    patterns=_patterns(a),
                    progress=progress,
                )
            before = [(s.hits, s.bytes_served) for s in local]
            result = untar(
                index,
                a.path,
                store=store,
                same_owner=not a.no_same_owner,
                same_permissions=not a.no_same_permissions,
                concurrency=ctx.concurrency,
                source=a.index,
                atomic=a.atomic,
                clearing=Clearing.EXTRA if a.atomic and a.delete_extra else Clearing.NONE,
                kept=ctx.resolver.local_paths(a.stores) if a.atomic else (),
                patterns=_patterns(a),
                progress=progress,
            )
            if a.atomic:
                cleared = result.cleared
            else:  # deleted by make_way above, not by untar
                count_replaced(result.stats, cleared)
            served = [
                (s.hits - h, s.bytes_served - b) for s, (h, b) in zip(local, before, strict=True)
            ]
        with after_change(warnings, a.path):
            ctx.state.put(_key(a), _record(a, digest, fingerprint(a.path, action="untar to")))
        stats = _stats(result.stats, served, seen.tree is not None, spool, cleared)
        msg = (
            f"untarred{why_words(action)}: {entry_words(result.stats, cleared)};"
            f" {fetched_words(ctx, a.stores, spool.bytes_fetched)},"
            f" {human_bytes(stats['bytes-in-place'])} in place,"
            f" {human_bytes(stats['bytes-from-seeds'])} from seeds"
        )
        return TaskResult(action.task, Status.CHANGED, msg, stats=stats, warnings=tuple(warnings))


def _target(path: Path) -> str | None:
    """The target's fingerprint, None if it does not exist; it must be a directory,
    reached through no symlink someone else could have planted (``archive.tree_walk.open_tree``)."""
    try:
        return fingerprint(path, action="untar to")
    except NotADirectory:
        raise DesyncError(f"cannot untar to {path}: not a directory") from None


def _seeds(a: UntarAction) -> tuple[tuple[Path, ...], list[object], list[str]]:
    found: list[Path] = []
    facts: list[object] = []
    notes: list[str] = []
    for seed in a.seeds:
        if not os.path.isdir(seed):
            notes.append(f"seed {seed}: no such directory, not used")
            facts.append({"exists": False})
            continue
        found.append(seed)
        facts.append(fingerprint(seed))
    return tuple(found), facts, notes


def _owners(a: UntarAction) -> bool:
    """Whether owners are restored: asked for, and as root (as GNU tar and ops.untar do)."""
    return not a.no_same_owner and os.geteuid() == 0


def _options(a: UntarAction) -> dict[str, object]:
    """What the tree converges to besides the archive (a record holds only for these)."""
    out: dict[str, object] = {
        "owners": _owners(a),
        "permissions": not a.no_same_permissions,
        "delete-extra": a.delete_extra,
    }
    if a.include or a.exclude:
        out["include"], out["exclude"] = list(a.include), list(a.exclude)
    return out


def _patterns(a: UntarAction) -> Patterns | None:
    """The task's include/exclude patterns (checked when the manifest was loaded)."""
    return Patterns.given(a.include, a.exclude, f"untar task of {a.path}")


def _record(a: UntarAction, digest: str, tree: str | None) -> dict[str, object]:
    return {"index": digest, "tree": tree, "options": _options(a)}


def _key(a: UntarAction) -> str:
    return f"untar\0{os.path.abspath(a.path)}"


def _stats(
    written: UntarStats,
    served: list[tuple[int, int]],
    in_tree: bool,
    spool: Spool,
    cleared: Cleared,
) -> dict[str, int]:
    out = {
        "dirs": written.dirs,
        "files": written.files,
        "symlinks": written.symlinks,
        "devices": written.devices,
        "others": written.others,
        "bytes": written.bytes,
        "created": written.created,
        "updated": written.updated,
        "metadata": written.metadata,
        "unchanged": written.unchanged,
        "bytes-written": written.bytes_written,
        "bytes-kept": written.bytes_kept,
    }
    tree, seeds = (served[0], served[1:]) if in_tree else ((0, 0), served)
    out["chunks-in-place"], out["bytes-in-place"] = tree
    out["chunks-from-seeds"] = sum(h for h, _ in seeds)
    out["bytes-from-seeds"] = sum(b for _, b in seeds)
    out["chunks-from-store"], out["bytes-from-store"] = spool.fetched, spool.bytes_fetched
    out["replaced"], out["deleted"] = cleared
    return out


def entry_words(s: UntarStats, cleared: Cleared) -> str:
    """``1 created, 2 updated, 3 metadata fixed, 40 unchanged, 1 deleted; 2.0 MiB
    written, 190.1 MiB kept``: what an untar did, in the words its plan uses."""
    parts = s.fates(cleared.deleted)
    written = f"{human_bytes(s.bytes_written)} written, {human_bytes(s.bytes_kept)} kept"
    return f"{', '.join(parts) or 'nothing'}; {written}"


def _with_entries(travel: Travel, changes: listing.Changes) -> Travel:
    return dataclasses.replace(travel, entries=changes.to_json(), changes=tuple(changes.listed()))


def _diff(target: str, seen: _Seen, index: Index) -> Diff:
    digest = seen.digest
    if seen.listed is not None:
        listed = seen.listed
        before, after = listing.diff_sides(listed.changes, listed.archive, listed.tree)
        return Diff(target, before, after)
    held = {
        "absent": "absent",
        "outdated": f"index {seen.holds}",
        "differs": f"{seen.right} of {len(index)} chunks of {digest}",
    }[seen.content]
    return Diff(target, {"content": held}, {"content": f"index {digest}"})


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[UntarAction, _Seen | absent.Standing, _Seen | absent.Standing] = UntarKind()
