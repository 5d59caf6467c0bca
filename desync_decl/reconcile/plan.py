"""Planning a manifest: observe and plan each selected task, in manifest order.

Nothing is written. A task that uses what an earlier task produces is planned
against that task's planned effects (``Overlay``), so an extract of the index
a make is about to write gets exact numbers from the index the make would
write. A task that cannot be planned yet (its input comes from a task whose
effects are not known in advance) says so and waits for that task at apply
time; a task depending on one whose plan failed is skipped, as apply would.

A plan saved with ``plan --out`` is JSON (``report.plan_json``, schema in
``schemas/plan.schema.json``); ``SavedPlan`` reads it back for ``apply --plan``.
It holds no value read from ``${env:…}``: its facts are redacted, and their
digest is keyed with those values (``Redactor.key``), so a changed value still
refuses the plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.manifest import Manifest, Task, TaskAction
from desync_decl.manifest.sensitive import NO_SECRETS, Redactor
from desync_decl.progress import ProgressFor, no_progress_for
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.graph import dependencies
from desync_decl.reconcile.handlers import Notified
from desync_decl.reconcile.kinds import Resources, kind_for
from desync_decl.reconcile.lock import Holder
from desync_decl.reconcile.model import Action, EntryState, Facts, PlanEntry, Verb, facts_digest
from desync_decl.stores.store_lock import COLLISION_WAIT, blockers, keeper_of
from desync_decl.stores.tally import observing

PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    manifest: Manifest
    manifest_digest: str
    entries: tuple[PlanEntry, ...]
    verify: bool = False
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()
    locks: tuple[Holder, ...] = ()  # locks of these tasks another run holds now
    handlers: tuple[Notified, ...] = ()  # would run after the apply

    @property
    def changes(self) -> bool:
        """Whether apply would change anything: a task, or a handler it would run
        (one notified by an earlier apply whose handler failed runs even when every
        task is converged)."""
        return any(e.changes for e in self.entries) or bool(self.handlers)

    @property
    def errors(self) -> bool:
        return any(e.state is EntryState.ERROR for e in self.entries)


def manifest_digest(manifest: Manifest) -> str:
    """The manifest file's content address: a saved plan is for exactly this text."""
    try:
        data = Path(manifest.path).read_bytes()
    except OSError as e:
        raise DesyncError(f"cannot read {manifest.path}: {e.strerror}") from None
    return "sha256:" + hashlib.sha256(data).hexdigest()


def task_resources(ctx: Context, tasks: Sequence[Task[TaskAction]]) -> list[Resources]:
    return [kind_for(t.kind).resources(t, ctx.resolver) for t in tasks]


def plan_tasks(
    ctx: Context, tasks: Sequence[Task[TaskAction]], progress_for: ProgressFor = no_progress_for
) -> list[PlanEntry]:
    """Observe and plan ``tasks`` in order; ``ctx`` should be ``simulated``. Each task
    reports its progress (reading files, checking chunks) on its own meter."""
    deps = dependencies(task_resources(ctx, tasks))
    entries: list[PlanEntry] = []
    for i, task in enumerate(tasks):
        after = tuple(tasks[j].name for j in deps.after[i])
        meter = progress_for(task.name)
        try:
            meter.start("plan", 0)
            mine = dataclasses.replace(ctx, progress=meter)
            entries.append(_plan_one(mine, task, after, [entries[j] for j in deps.needs[i]]))
        finally:
            meter.close()
    return entries


def _plan_one(
    ctx: Context, task: Task[TaskAction], after: tuple[str, ...], earlier: list[PlanEntry]
) -> PlanEntry:
    blocked = [e.task.name for e in earlier if e.state is not EntryState.PLANNED]
    if blocked:
        why = f"depends on task '{blocked[0]}', which cannot be planned"
        return PlanEntry(task, EntryState.SKIPPED, message=why, depends_on=after)
    waiting = [e.task.name for e in earlier if e.action is not None and e.action.deferred]
    if waiting:
        reason = f"depends on task '{waiting[0]}': planned when that has run"
        action = Action(
            task, Verb.UPDATE, reason, "", Facts({}, None), deferred=(waiting[0],), detail=None
        )
        return PlanEntry(task, EntryState.PLANNED, action, depends_on=after)
    kind = kind_for(task.kind)
    try:
        with observing() as tally:  # failover switches while asking where chunks are
            facts = kind.observe(task, ctx)
            action = kind.plan(task, facts, ctx)
        action = dataclasses.replace(action, warnings=tally.warnings(ctx.resolver.name_of))
    except DesyncError as e:
        return PlanEntry(task, EntryState.ERROR, message=str(e), depends_on=after)
    except OSError as e:
        return PlanEntry(task, EntryState.ERROR, message=os_message(e), depends_on=after)
    if action.verb.changes:
        ctx.overlay.add(task.name, action.effects)
        if notes := store_lock_notes(ctx, action):
            action = dataclasses.replace(action, notes=(*action.notes, *notes))
    return PlanEntry(task, EntryState.PLANNED, action, depends_on=after)


def store_lock_notes(ctx: Context, action: Action) -> list[str]:
    """One note per lock object another process holds now in a store this action
    writes to or prunes (another host's prune, a make elsewhere): apply would wait
    for it. The store's lock objects are only read; a store that cannot be asked
    gets no note (apply will say what is wrong)."""
    pruned = set(action.effects.removed)
    notes = []
    for name in sorted(set(action.effects.added) | pruned):
        try:
            keeper = keeper_of(ctx.resolver.store(name, ctx.digest))
            held = blockers(keeper.space, exclusive=name in pruned) if keeper else []
        except DesyncError:
            continue
        notes += [
            f"store '{name}' is locked by {who}; apply waits for that lock for"
            f" {COLLISION_WAIT:.0f} seconds, or as long as --lock-timeout says"
            for who in held
        ]
    return notes


def os_message(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{(e.strerror or str(e)).lower()}"


@dataclass(frozen=True)
class SavedTask:
    name: str
    action: str | None
    facts_digest: str | None
    deferred: bool
    facts: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SavedPlan:
    """A plan read back from ``plan --out`` for ``apply --plan``, checked with the
    ``redactor`` of the manifest it is applied to (its values from ``${env:…}``)."""

    path: Path
    manifest_digest: str
    verify: bool
    tags: tuple[str, ...]
    skip_tags: tuple[str, ...]
    tasks: dict[str, SavedTask]
    redactor: Redactor = NO_SECRETS

    @classmethod
    def load(cls, path: str | Path, redactor: Redactor = NO_SECRETS) -> SavedPlan:
        file = Path(path)
        try:
            doc = json.loads(file.read_text())
        except OSError as e:
            raise DesyncError(f"cannot read plan {file}: {e.strerror}") from None
        except ValueError as e:
            raise DesyncError(f"plan {file}: not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("version") != PLAN_VERSION:
            raise DesyncError(f"plan {file}: not a version {PLAN_VERSION} desync-decl plan")
        try:
            tasks = {
                t["name"]: SavedTask(
                    t["name"],
                    t["action"],
                    t.get("facts-digest"),
                    bool(t.get("deferred-by")),
                    t.get("facts") or {},
                )
                for t in doc["tasks"]
            }
            sel = doc.get("selection") or {}
            return cls(
                file,
                doc["manifest"]["digest"],
                bool(doc.get("verify")),
                tuple(sel.get("tags") or ()),
                tuple(sel.get("skip-tags") or ()),
                tasks,
                redactor,
            )
        except (KeyError, TypeError) as e:
            raise DesyncError(f"plan {file}: missing or malformed field {e}") from None

    def check_manifest(self, manifest: Manifest) -> None:
        if manifest_digest(manifest) != self.manifest_digest:
            raise DesyncError(
                f"refusing plan {self.path}: {manifest.path} changed since the plan was made"
            )

    def refusal(self, action: Action) -> str | None:
        """Why the saved plan does not hold for this freshly planned action (None: it holds)."""
        saved = self.tasks.get(action.task.name)
        if saved is None:
            return "the task is not in the saved plan"
        if saved.deferred:
            return None  # planned at apply time, as the saved plan said
        fields = action.facts.digest_fields
        if saved.facts_digest != facts_digest(fields, self.redactor.key):
            now = self.redactor.data(json.loads(json.dumps(dict(fields), default=str)))
            changed = _changed_fields(saved.facts, now)
            if changed:
                detail = f" ({', '.join(changed)})"
            else:
                detail = " (or a value read from ${env:…} did)" if self.redactor else ""
            return f"its facts changed since the plan was made{detail}"
        if saved.action != action.verb.value:
            return f"the plan said {saved.action}, it is now {action.verb.value}"
        return None


def _changed_fields(before: dict[str, object], after: dict[str, object]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
