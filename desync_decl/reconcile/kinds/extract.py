"""``extract``: the file at ``path`` holds the index's content, with the wanted attributes.

Fast path: the file's record (index digest, size, mtime_ns, inode; see
``state.py``) matches, so it is converged without being read. Otherwise it is
hashed chunk by chunk against the index (the assembler's in-place check).
When content must change, the travel numbers are the assembler's own plan
(``plan_extract``) with the task's seeds, and the chunks it fetches are
attributed to the store, cache or group member that would serve each one.
Missing parent directories of the target are created. The target's directory
may be one others can write, or lie below one: it is opened walking from ``/``
without following a symlink planted there, and everything is done relative to its
fd; the new file gets its owner, mode and record on its fd before it is renamed
into place, and the old one is looked at (its mode, a backup, its content) only
opened without following a symlink (``files``). A file someone else owns never
gets our owner or mode set on it: it is replaced by a new file (``files.replace_reason``).

The target is a seed of its own replacement, and the seed chunks the plan counts
on are read as apply reads them, with the task's ``invalid_seeds`` policy
(``seeding.py``): plan and apply take the same bytes from the same places. With
``pin``, a target whose matching record names the pinned digest is converged
without the index being fetched. With ``state: absent`` the file and its record
are removed (``absent.py``).

Under ``trust`` the index and its signature are read and judged first, on every run
(``Context.trusted_index``): a refused index fails the task before the target is
looked at or a chunk fetched, a converged (or pinned) target included, and the target
is left as it is. The pin's fast path then only spares reading the target.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from desync_decl.assemble.execute import SeedInvalid
from desync_decl.assemble.plan import AssemblyPlan, Source, Tally
from desync_decl.assemble.seeds import Seed
from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index
from desync_decl.manifest import ExtractAction, Task
from desync_decl.ops.extract import InvalidSeeds, extract, plan_extract, plan_with_valid_seeds
from desync_decl.progress import Progress
from desync_decl.reconcile import files
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds import absent, seeding
from desync_decl.reconcile.kinds.base import (
    Kind,
    Resources,
    judged_first,
    location_key,
    store_keys,
    why_words,
)
from desync_decl.reconcile.kinds.fetch import (
    fetch_amounts,
    fetched_words,
    refuse_missing,
)
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
from desync_decl.reconcile.state import FileRecord, after_change


@dataclass(frozen=True)
class _Seen:
    index: Index | None  # None: converged by its record and the pin, the index not read
    digest: str  # of the index
    st: os.stat_result | None  # the target now; None if absent
    content: str  # "absent", "recorded", "converged", "outdated" or "differs"
    replace: str | None  # why the file must be replaced by a new one, not changed
    in_place: int  # chunks already right (when hashed)
    holds: str | None  # "outdated": the digest of the index the file was extracted from
    wanted: files.Wanted
    seeds: tuple[Seed, ...]
    plan: AssemblyPlan | None  # where the bytes come from, when content changes
    notes: tuple[str, ...]


class ExtractKind:
    name: ClassVar[str] = "extract"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = True

    def resources(self, task: Task[ExtractAction], resolver: Resolver) -> Resources:
        a = task.action
        if a.index is None:  # state absent
            return Resources(writes=frozenset({location_key(str(a.path))}))
        reads = {location_key(a.index)} | store_keys(resolver, a.stores)
        for seed in a.seeds:
            reads |= {location_key(str(seed.file)), location_key(seed.index)}
        return Resources(
            reads=frozenset(reads),
            adds=store_keys(resolver, resolver.caches_in(a.stores)),
            writes=frozenset({location_key(str(a.path))}),
        )

    def observe(self, task: Task[ExtractAction], ctx: Context) -> Facts[_Seen | absent.Standing]:
        a = task.action
        if a.state == "absent":
            return absent.look(a.path, keeps="file")
        assert a.index is not None  # the schema requires it unless absent
        return judged_first(ctx, a.index, a.trust, lambda index: self._observe(a, ctx, index))

    def _observe(self, a: ExtractAction, ctx: Context, index: Index | None) -> Facts[_Seen]:
        """The target against the index (``index``: read already, under trust)."""
        assert a.index is not None
        wanted = files.Wanted.resolve(a.mode, a.owner, a.group)
        pinned_index = index is None or index.file_digest() == a.pin
        if a.pin is not None and not ctx.verify and pinned_index:
            pinned = _pinned(a, ctx, a.pin, wanted)
            if pinned is not None:
                return pinned
        if index is None:
            index, _ = ctx.read_index(a.index)
        digest = index.file_digest()
        if a.pin is not None and digest != a.pin:
            raise DesyncError(f"index {a.index} has digest {digest}, the task pins {a.pin}")
        with (
            files.directory_if_any(a.path) as dir_fd,
            files.looked_at(dir_fd, a.path) as (fd, st),
        ):
            replace = files.replace_reason(st, wanted, a.in_place)
            in_place = a.in_place and replace is None and fd is not None
            content, right, plan, holds = self._content(a, ctx, index, digest, st, fd, in_place)
            if content in ("recorded", "converged"):
                if not wanted.changes(st):
                    replace = None  # nothing to write, nothing to set: converged
                elif replace is not None:
                    content = "replaced"
            fields: dict[str, object] = {"index": digest, "target": _target_fields(st)}
            seeds: tuple[Seed, ...] = ()
            notes: list[str] = []
            if content in ("absent", "differs", "outdated", "replaced"):
                found = self._seeds(a, ctx, index, st, None if in_place else fd)
                fields["seeds"] = found.facts
                notes = found.notes
                if plan is None or found.seeds:  # the plan without seeds was the in-place check
                    plan, seeds = self._sourced(a, ctx, index, found, in_place, fd, notes)
        seen = _Seen(
            index,
            digest,
            st,
            content,
            replace,
            right,
            holds,
            wanted,
            seeds,
            plan,
            tuple(notes),
        )
        return Facts(fields, seen)

    def _seeds(
        self,
        a: ExtractAction,
        ctx: Context,
        index: Index,
        st: os.stat_result | None,
        fd: int | None,
    ) -> seeding.TaskSeeds:
        """The task's seeds: the target (open as ``fd``; None when it is not to be one),
        then the declared ones."""
        looked = None
        if fd is not None and st is not None and _is_file(st):
            looked = seeding.LookedAt(fd, st, seeding.matching_record(ctx, a.path, fd, st))
        return seeding.task_seeds(ctx, a, index, st, looked)

    def _sourced(
        self,
        a: ExtractAction,
        ctx: Context,
        index: Index,
        found: seeding.TaskSeeds,
        in_place: bool,
        fd: int | None,
        notes: list[str],
    ) -> tuple[AssemblyPlan, tuple[Seed, ...]]:
        """The assembler's plan with the seed chunks it takes read as apply reads them
        (the task's ``invalid_seeds`` policy applied, a note for each seed it dropped or
        chunked again) and the seeds it settled on: apply starts from them."""
        policy = InvalidSeeds(a.invalid_seeds)
        checked = plan_with_valid_seeds(
            index,
            a.path,
            seeds=found.seeds,
            invalid_seeds=policy,
            trusted=found.believed,
            in_place=in_place,
            concurrency=ctx.concurrency,
            progress=ctx.progress,
            target_fd=fd,
        )
        notes += [_seed_note(file, e, policy) for file, e in checked.problems]
        seeds = seeding.named(checked.seeds, a.path)
        return dataclasses.replace(checked.plan, seeds=seeds), seeds

    def _content(
        self,
        a: ExtractAction,
        ctx: Context,
        index: Index,
        digest: str,
        st: os.stat_result | None,
        fd: int | None,
        in_place: bool,
    ) -> tuple[str, int, AssemblyPlan | None, str | None]:
        """What the target (``st``, open as ``fd`` unless a symlink not followed)
        holds: absent, recorded or outdated (fast path: as we left it, from this index
        or another), converged or differs (read and hashed)."""
        if st is None:
            return "absent", 0, None, None
        if stat.S_ISDIR(st.st_mode):
            raise DesyncError(f"cannot extract to {a.path}: is a directory")
        if fd is None or not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            return "differs", 0, None, None  # nothing to read there
        if not ctx.verify and stat.S_ISREG(st.st_mode):
            record = ctx.state.file_record(a.path, fd)
            if record is not None and record.unchanged(st):
                if record.index_digest == digest:
                    return "recorded", len(index), None, None
                if not in_place:  # it holds another index's content: no need to read it
                    return "outdated", 0, None, record.index_digest
        # hash the target against the index; with in_place this is the real plan too
        check = plan_extract(
            index,
            a.path,
            in_place=True,
            concurrency=ctx.concurrency,
            progress=ctx.progress,
            target_fd=fd,
        )
        right = check.by_source()[Source.IN_PLACE].chunks
        size_ok = st.st_size == index.length or stat.S_ISBLK(st.st_mode)
        if right == len(index) and size_ok:
            return "converged", right, None, None
        return "differs", right, check if in_place else None, None

    def plan(
        self, task: Task[ExtractAction], facts: Facts[_Seen | absent.Standing], ctx: Context
    ) -> Action[ExtractAction, _Seen | absent.Standing]:
        a = task.action
        seen = facts.data
        if isinstance(seen, absent.Standing):  # state: absent
            return absent.plan(task, facts, seen, a.path)
        target = str(a.path)
        changes = seen.wanted.changes(seen.st)
        if seen.plan is None and not changes:
            why = "converged (recorded)" if seen.content == "recorded" else "converged"
            return Action(task, Verb.NOOP, why, target, facts, detail=seen)
        assert seen.index is not None  # only a converged file is planned without it
        diff = _diff(target, seen, seen.index, changes)
        if seen.plan is None:
            reason = ", ".join(f"{k} {now} -> {want}" for k, now, want in changes)
            return Action(task, Verb.UPDATE, reason, target, facts, diff=diff, detail=seen)
        travel = self._travel(a, ctx, seen.plan)
        assert a.index is not None  # the schema requires it unless absent
        refuse_missing(travel.missing, a.index)
        if seen.content == "absent":
            verb, reason = Verb.CREATE, "absent"
        elif seen.content == "replaced":
            wants = ", ".join(f"{k} {now} -> {want}" for k, now, want in changes)
            verb, reason = Verb.UPDATE, f"{wants or 'attributes set'} on a file {seen.replace}"
            reason += ": a new file replaces it"
        elif seen.content == "outdated":
            verb, reason = Verb.UPDATE, f"a new index (the file holds {seen.holds})"
        else:
            verb = Verb.UPDATE
            reason = f"content differs ({seen.in_place} of {len(seen.index)} chunks right)"
        return Action(
            task,
            verb,
            reason,
            target,
            facts,
            travel,
            diff=diff,
            effects=Effects(files={target: seen.index}),
            notes=seen.notes,
            detail=seen,
        )

    def _travel(self, a: ExtractAction, ctx: Context, plan: AssemblyPlan) -> Travel:
        by = plan.by_source()
        sizes = {}
        for seg in plan.segments:
            if seg.source is Source.STORE:
                for j in range(seg.first, seg.first + seg.count):
                    c = plan.index.chunk(j)
                    sizes[c.id] = c.size
        stores, missing = fetch_amounts(ctx, a.stores, sizes, plan.index)
        return Travel(
            total=Amount(len(plan.index), plan.index.length),
            seeds=tuple(
                SeedAmount(s.label, str(s.path), t.chunks, t.bytes)
                for s, t in zip(plan.seeds, plan.by_seed(), strict=True)
            ),
            null=_amount(by[Source.NULL]),
            self_seed=_amount(by[Source.SELF]),
            in_place=_amount(by[Source.IN_PLACE]),
            stores=stores,
            missing=missing,
        )

    def apply(
        self,
        action: Action[ExtractAction, _Seen | absent.Standing],
        ctx: Context,
        progress: Progress,
    ) -> TaskResult:
        a = action.task.action
        seen = action.detail
        if isinstance(seen, absent.Standing):  # state: absent
            return absent.apply(action, seen, a.path, lambda: ctx.state.forget_file(a.path))
        warnings: list[str] = []
        digest = seen.digest
        if not action.verb.changes:
            if seen.content != "recorded" and _is_file(seen.st):
                with (
                    files.directory_of(a.path) as dir_fd,
                    files.planned(dir_fd, a.path.name, seen.st) as fd,
                ):
                    if fd is not None:  # else it changed since: the next run looks again
                        _record(ctx, a, seen, fd)
            return TaskResult(action.task, Status.OK, action.reason)
        if seen.plan is None:
            self._set_attributes(a, ctx, seen, warnings)
            return TaskResult(action.task, Status.CHANGED, action.reason, warnings=tuple(warnings))
        stats = self._extract(a, ctx, seen, digest, progress, warnings)
        done = "chunked again" if a.invalid_seeds == "regenerate" else "left out"
        problems = stats.get("seed-problems") or []
        assert isinstance(problems, list)
        for problem in problems:  # plan trusted a record that lied
            warnings.append(f"{problem}; the seed was {done} and the extraction planned again")
        msg = (
            f"extracted{why_words(action)}:"
            f" {fetched_words(ctx, a.stores, _count(stats, 'bytes-from-store'))},"
            f" {human_bytes(_from_seeds(stats))} from seeds"
        )
        return TaskResult(action.task, Status.CHANGED, msg, stats=stats, warnings=tuple(warnings))

    def _set_attributes(
        self, a: ExtractAction, ctx: Context, seen: _Seen, warnings: list[str]
    ) -> None:
        """Only attributes differ: set them on the target opened as it was planned on."""
        with (
            files.directory_of(a.path) as dir_fd,
            files.planned(dir_fd, a.path.name, seen.st) as fd,
        ):
            if fd is None:
                raise DesyncError(f"{a.path} changed since it was looked at; run again")
            seen.wanted.set(fd, a.path)  # refused if no longer ours: run again
            if _is_file(seen.st):
                with after_change(warnings, a.path):
                    _record(ctx, a, seen, fd)

    def _extract(
        self,
        a: ExtractAction,
        ctx: Context,
        seen: _Seen,
        digest: str,
        progress: Progress,
        warnings: list[str],
    ) -> dict[str, object]:
        assert seen.index is not None
        index = seen.index
        stats: dict[str, object] = {}
        in_place = a.in_place and seen.replace is None
        with (
            files.directory_of(a.path, create=True) as dir_fd,
            contextlib.ExitStack() as stack,
        ):
            if a.backup and _is_file(seen.st):
                stats["backup"] = str(files.backup(dir_fd, a.path, copy=in_place))
            wanted = seen.wanted
            seeds = list(seen.seeds)
            if not in_place:
                old = stack.enter_context(files.planned(dir_fd, a.path.name, seen.st))
                wanted = wanted.for_new_file(None if old is None else os.fstat(old))
                seeds = seeding.through(seeds, a.path, old)
            elif seen.st is None:  # made here: as a new file
                wanted = wanted.for_new_file(None)
            marked: list[FileRecord | None] = []

            def settle(fd: int) -> None:
                """The complete file's owner, mode and record, before it gets its name."""
                wanted.set(fd, a.path)
                marked.append(ctx.state.mark_file(fd, digest))

            result = extract(
                index,
                a.path,
                ctx.resolver.route(a.stores, index.digest),
                seeds=seeds,
                in_place=in_place,
                invalid_seeds=InvalidSeeds(a.invalid_seeds),
                concurrency=ctx.concurrency,
                progress=progress,
                mode=0o600 if wanted.mode is None else wanted.mode,
                settle=settle,
                dir_fd=dir_fd,
            )
        if _is_file(result.written):
            with after_change(warnings, a.path):
                ctx.state.name_file(a.path, result.written, digest, marked[-1])
                ctx.state.keep_index(a.path, index)
        stats.update((k, v) for k, v in result.stats().items() if k != "plan")
        return stats


def _pinned(a: ExtractAction, ctx: Context, pin: str, wanted: files.Wanted) -> Facts[_Seen] | None:
    """Converged without reading the index: the target's matching record names the
    pinned digest and its attributes are as wanted (None: look the usual way)."""
    with (
        files.directory_if_any(a.path) as dir_fd,
        files.looked_at(dir_fd, a.path) as (fd, st),
    ):
        if fd is None or st is None or not _is_file(st) or wanted.changes(st):
            return None
        record = seeding.matching_record(ctx, a.path, fd, st)
        if record is None or record.index_digest != pin:
            return None
    fields = {"index": pin, "target": _target_fields(st)}
    seen = _Seen(None, pin, st, "recorded", None, 0, None, wanted, (), None, ())
    return Facts(fields, seen)


def _record(ctx: Context, a: ExtractAction, seen: _Seen, fd: int) -> None:
    """Record the target (open as ``fd``) as holding the planned index, and keep a
    copy of that index: the target is then a seed of the next version as it is."""
    ctx.state.put_file_record(a.path, seen.digest, fd)
    if seen.index is not None:
        ctx.state.keep_index(a.path, seen.index)


def _seed_note(file: Path, problem: SeedInvalid, policy: InvalidSeeds) -> str:
    """One sentence for a seed the plan found not holding what its index says."""
    done = "chunked again" if policy is InvalidSeeds.REGENERATE else "left out"
    return (
        f"seed {file} does not hold what its index {problem.label} says,"
        f" so it is {done}: {problem.why}"
    )


def _from_seeds(stats: dict[str, object]) -> int:
    """Bytes apply took from seeds, copied or cloned."""
    return _count(stats, "bytes-copied-from-seeds") + _count(stats, "bytes-cloned-from-seeds")


def _count(stats: dict[str, object], key: str) -> int:
    """A count of ``ExtractResult.stats``."""
    value = stats[key]
    assert isinstance(value, int)
    return value


def _is_file(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISREG(st.st_mode)


def _target_fields(st: os.stat_result | None) -> dict[str, object]:
    if st is None:
        return {"exists": False}
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ino": st.st_ino,
        "mode": st.st_mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _amount(tally: Tally) -> Amount:
    return Amount(tally.chunks, tally.bytes)


def _diff(target: str, seen: _Seen, index: Index, changes: list[tuple[str, str, str]]) -> Diff:
    digest = seen.digest
    before = files.attributes(seen.st)
    after = dict(before) if seen.st is not None else files.new_file_owner()
    for key, _, want in changes:
        after[key] = want
    if seen.content == "absent":
        before = {"content": "absent"}
        after["content"] = f"index {digest}"
    elif seen.content == "outdated":
        before["content"] = f"index {seen.holds}"
        after["content"] = f"index {digest}"
    elif seen.content == "differs":
        before["content"] = f"{seen.in_place} of {len(index)} chunks of {digest}"
        after["content"] = f"index {digest}"
    if seen.st is not None:
        before["size"] = str(seen.st.st_size)
    after["size"] = str(index.length)
    return Diff(target, before, after)


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[ExtractAction, _Seen | absent.Standing, _Seen | absent.Standing] = ExtractKind()
