"""Applying a manifest: every selected task ends ok, changed, failed or skipped.

Tasks run on ``jobs`` threads; one that touches what an earlier task touches
(``graph.dependencies``) waits for it, and is skipped if that one failed and
wrote a file it uses. Other tasks go on whatever fails. Each task holds its locks (``lock.py``)
while it observes, plans and applies, so what it decides is still true when
it writes, even with another run going.

``--check`` plans (nothing is written, prune never runs) and reports what
would change. A task that changed and notifies handlers has that written down
at once (``handlers.remember``); ``handlers.run_handlers`` runs them after.
With a saved plan, the whole plan is first planned again and
refused if any task's facts changed; then each task is checked once more
under its lock just before it is applied.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.manifest import Task, TaskAction
from desync_decl.progress import ProgressFor, no_progress_for
from desync_decl.reconcile.context import Context, Overlay
from desync_decl.reconcile.graph import dependencies
from desync_decl.reconcile.handlers import remember
from desync_decl.reconcile.kinds import Resources, kind_for
from desync_decl.reconcile.lock import locked
from desync_decl.reconcile.model import EntryState, PlanEntry, Status, TaskResult
from desync_decl.reconcile.plan import SavedPlan, os_message, plan_tasks, task_resources
from desync_decl.stores.store_lock import COLLISION_WAIT, Patience
from desync_decl.stores.tally import observing


@dataclass(frozen=True)
class ApplyOptions:
    jobs: int = 1
    check: bool = False
    diff: bool = False
    lock_timeout: float | None = None  # seconds; None waits for ever
    saved: SavedPlan | None = None
    on_result: Callable[[TaskResult], None] = lambda result: None  # in completion order
    on_wait: Callable[[Task[TaskAction], str], None] = lambda task, message: None  # a lock is busy
    progress_for: ProgressFor = no_progress_for  # a meter per task, closed when it ends


def apply_tasks(
    ctx: Context, tasks: Sequence[Task[TaskAction]], options: ApplyOptions
) -> list[TaskResult]:
    """Results in manifest order (``on_result`` sees them as they finish)."""
    if options.check:
        simulated = dataclasses.replace(ctx, simulated=True, overlay=Overlay())
        entries = plan_tasks(simulated, tasks, options.progress_for)
        results = [check_result(e, options.diff) for e in entries]
        for r in results:
            options.on_result(r)
        return results
    if options.saved is not None:
        preflight(ctx, tasks, options.saved)
    return _Run(ctx, tasks, options).run()


def check_result(entry: PlanEntry, diff: bool) -> TaskResult:
    """What ``--check`` reports for a planned task."""
    task, action = entry.task, entry.action
    if not kind_for(task.kind).supports_check:
        return TaskResult(task, Status.SKIPPED, f"{task.kind}: check mode not supported")
    if entry.state is EntryState.ERROR:
        return TaskResult(task, Status.FAILED, entry.message)
    if entry.state is EntryState.SKIPPED or action is None:
        return TaskResult(task, Status.SKIPPED, entry.message)
    if not action.verb.changes:
        return TaskResult(task, Status.OK, action.reason, action, warnings=action.warnings)
    msg = f"would {action.verb.value}: {action.reason}"
    diffs = action.diff if diff else None
    return TaskResult(task, Status.CHANGED, msg, action, diffs, warnings=action.warnings)


def preflight(ctx: Context, tasks: Sequence[Task[TaskAction]], saved: SavedPlan) -> None:
    """Refuse a saved plan before anything is written if any of its facts changed."""
    saved.check_manifest(ctx.manifest)
    names = [t.name for t in tasks]
    if sorted(names) != sorted(saved.tasks):
        raise DesyncError(f"refusing plan {saved.path}: it was made for other tasks")
    fresh = dataclasses.replace(ctx, simulated=True, overlay=Overlay(), verify=saved.verify)
    problems = []
    for entry in plan_tasks(fresh, tasks):
        if entry.action is None:
            problems.append(f"'{entry.task.name}': {entry.message or 'cannot be planned'}")
        elif (why := saved.refusal(entry.action)) is not None:
            problems.append(f"'{entry.task.name}': {why}")
    if problems:
        raise DesyncError(f"refusing plan {saved.path}: " + "; ".join(problems))


class _Run:
    def __init__(
        self, ctx: Context, tasks: Sequence[Task[TaskAction]], options: ApplyOptions
    ) -> None:
        self.ctx = dataclasses.replace(ctx, simulated=False)
        if options.saved is not None:
            self.ctx = dataclasses.replace(self.ctx, verify=options.saved.verify)
        self.tasks, self.options = list(tasks), options
        self.resources: list[Resources] = task_resources(ctx, tasks)
        self.deps = dependencies(self.resources)
        self.results: dict[int, TaskResult] = {}
        self.broken: set[int] = set()  # failed, or skipped because a dependency broke

    def run(self) -> list[TaskResult]:
        pending = list(range(len(self.tasks)))
        running: dict[Future[TaskResult], int] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            while pending or running:
                for i in list(pending):
                    if all(j in self.results for j in self.deps.after[i]):
                        pending.remove(i)
                        blocked = [j for j in self.deps.needs[i] if j in self.broken]
                        if blocked:
                            name = self.tasks[blocked[0]].name
                            self._done(i, Status.SKIPPED, f"depends on task '{name}', which failed")
                        else:
                            running[pool.submit(self._task, i)] = i
                if not running:
                    continue  # skips above may have unblocked more
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    self._finish(i, future.result())
        return [self.results[i] for i in range(len(self.tasks))]

    def _done(self, i: int, status: Status, msg: str) -> None:
        self._finish(i, TaskResult(self.tasks[i], status, msg))

    def _finish(self, i: int, result: TaskResult) -> None:
        self.results[i] = result
        remember(self.ctx, result)  # before anything else can stop the run
        if result.status in (Status.FAILED, Status.SKIPPED):
            self.broken.add(i)
        self.options.on_result(result)

    def _task(self, i: int) -> TaskResult:
        """The task, with what its reads did: per-store counts in its stats, a
        warning per failover switch and cache repair (in plan or apply)."""
        with observing() as tally:
            result = self._task_observed(i)
        reads = tally.to_json(self.ctx.resolver.opened_name)
        stats = {**result.stats, "reads": reads} if reads["stores"] else result.stats
        warnings = (*result.warnings, *tally.warnings(self.ctx.resolver.name_of))
        return dataclasses.replace(result, stats=stats, warnings=warnings)

    def _task_observed(self, i: int) -> TaskResult:
        task = self.tasks[i]
        kind = kind_for(task.kind)
        meter = self.options.progress_for(task.name)
        tell = lambda message: self.options.on_wait(task, message)  # noqa: E731
        wait = self.options.lock_timeout
        patience = Patience(COLLISION_WAIT if wait is None else wait, tell)
        ctx = dataclasses.replace(self.ctx, progress=meter, lock_patience=patience)
        started = time.monotonic()
        action = None
        try:
            meter.start("lock", 0)
            with locked(
                ctx.state.directory,
                self.resources[i].locks(),
                timeout=self.options.lock_timeout,
                waiting=tell,
            ):
                meter.start("observe", 0)  # reading the index, the target, the stores
                action = kind.plan(task, kind.observe(task, ctx), ctx)
                saved = self.options.saved
                if saved is not None and (why := saved.refusal(action)) is not None:
                    raise DesyncError(f"refusing the saved plan for this task: {why}")
                meter.start("apply", 0)
                result = kind.apply(action, ctx, meter)
        except DesyncError as e:
            return TaskResult(task, Status.FAILED, str(e), action, seconds=_since(started))
        except OSError as e:
            return TaskResult(task, Status.FAILED, os_message(e), action, seconds=_since(started))
        finally:
            meter.close()
        if result.status is Status.CHANGED:
            ctx.overlay.add(task.name, action.effects)
        diff = action.diff if self.options.diff and result.status is Status.CHANGED else None
        return dataclasses.replace(result, action=action, diff=diff, seconds=_since(started))


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
