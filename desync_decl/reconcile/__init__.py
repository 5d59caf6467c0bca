"""The declarative layer: observe -> plan -> apply for every task of a manifest.

``plan_manifest`` returns a ``Plan`` (what each selected task would do and
what would travel) without writing anything; ``apply_manifest`` converges the
machine and returns one ``TaskResult`` per task. Kinds live in ``kinds/``,
renderers in ``report.py``; the CLI verbs only parse, call these and render.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from desync_decl.formats.digest import Digest
from desync_decl.manifest import Manifest
from desync_decl.progress import NO_PROGRESS, Progress, ProgressFor, no_progress_for
from desync_decl.reconcile.apply import ApplyOptions, apply_tasks
from desync_decl.reconcile.context import Context, Overlay
from desync_decl.reconcile.graph import select
from desync_decl.reconcile.handlers import notified
from desync_decl.reconcile.lock import holders
from desync_decl.reconcile.model import Status, TaskResult
from desync_decl.reconcile.plan import (
    Plan,
    SavedPlan,
    manifest_digest,
    plan_tasks,
    task_resources,
)
from desync_decl.reconcile.resolve import Resolver
from desync_decl.reconcile.state import StateStore, default_state_dir
from desync_decl.stores.config import Config

__all__ = [
    "ApplyOptions",
    "Context",
    "Plan",
    "SavedPlan",
    "Status",
    "TaskResult",
    "apply_manifest",
    "open_context",
    "plan_manifest",
]


def open_context(
    manifest: Manifest,
    *,
    config: Config | None = None,
    state_dir: Path | None = None,
    xattrs: bool = True,
    verify: bool = False,
    concurrency: int | None = None,
    digest: Digest = Digest.SHA512_256,
    progress: Progress = NO_PROGRESS,
) -> Context:
    """Everything a run needs; close it with ``ctx.resolver.close()``."""
    config = config if config is not None else Config()
    return Context(
        manifest=manifest,
        resolver=Resolver(manifest, config),
        state=StateStore(state_dir or default_state_dir(), xattrs=xattrs),
        config=config,
        verify=verify,
        concurrency=concurrency or manifest.defaults.concurrency,
        digest=digest,
        progress=progress,
    )


def plan_manifest(
    ctx: Context,
    *,
    tags: Sequence[str] = (),
    skip_tags: Sequence[str] = (),
    progress_for: ProgressFor = no_progress_for,
) -> Plan:
    """What the selected tasks would do, and which of their locks a running apply
    holds (plan takes no lock: it peeks, and its numbers may change under that apply)."""
    tasks = select(ctx.manifest.tasks, tags, skip_tags)
    simulated = dataclasses.replace(ctx, simulated=True, overlay=Overlay())
    keys = [key for r in task_resources(ctx, tasks) for key in r.locks()]
    entries = plan_tasks(simulated, tasks, progress_for)
    return Plan(
        manifest=ctx.manifest,
        manifest_digest=manifest_digest(ctx.manifest),
        entries=tuple(entries),
        verify=ctx.verify,
        tags=tuple(tags),
        skip_tags=tuple(skip_tags),
        locks=tuple(holders(ctx.state.directory, keys)),
        handlers=tuple(notified(ctx, [e.task for e in entries if e.changes])),
    )


def apply_manifest(
    ctx: Context,
    options: ApplyOptions,
    *,
    tags: Sequence[str] = (),
    skip_tags: Sequence[str] = (),
) -> list[TaskResult]:
    """Apply the selected tasks (a saved plan's selection when ``options.saved``)."""
    if options.saved is not None:
        tags, skip_tags = options.saved.tags, options.saved.skip_tags
    return apply_tasks(ctx, select(ctx.manifest.tasks, tags, skip_tags), options)
