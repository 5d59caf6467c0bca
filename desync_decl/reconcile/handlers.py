"""Handlers: commands run once after an apply for the tasks that changed and named them.

As in Ansible, a task's ``notify`` names handlers of the manifest; each one
notified by at least one task that changed runs once, after every task of the
apply, in the order the manifest defines them ("restart the service after its
image changed"). They run whatever else failed: the change they follow has
happened, and the next apply, finding that task converged, would not notify
again. For the same reason a notification is first written to the state folder
(``remember``) and dropped only when its handler succeeds: a handler that fails,
times out, or never ran because the apply was killed runs on the next apply.

A kept notification is keyed by the handler's name and what the notifying task
writes (its target), not by where the manifest lies: a GitOps checkout of the
next commit to another folder finds it, and two manifests sharing a state folder
find only those of the targets they manage. Each notification carries an id of
its own, and the records are changed only under the state folder's handler lock:
a handler that succeeded removes the notifications it saw when it started, never
one another apply added while it ran (that apply runs the handler itself).

A command is an argv list run without a shell, in the manifest's folder, with
no stdin, in a session of its own so that a timeout kills everything it
started. It inherits the environment (PATH, what the service needs), but the
credentials the stores read in it (``Redactor.of_credentials``) never show in its
output, which is kept up to ``OUTPUT_LIMIT`` bytes, the last ones: renderers
escape it like any text from elsewhere. ``--check`` reports which handlers would run and runs none.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.manifest.model import HandlerDef, Task, TaskAction
from desync_decl.manifest.sensitive import Redactor
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds import kind_for
from desync_decl.reconcile.lock import locked
from desync_decl.reconcile.model import Status, TaskResult

OUTPUT_LIMIT = 64 * 1024  # bytes of a handler's output kept: the last ones
POLL_SECONDS = 0.1
HANDLERS_LOCK = "handlers:notifications"  # a lock key of the state folder (``lock.py``)


class HandlerStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    WOULD_RUN = "would run"  # --check


@dataclass(frozen=True)
class HandlerResult:
    handler: HandlerDef
    status: HandlerStatus
    msg: str
    by: tuple[str, ...]  # the names of the tasks that notified it
    earlier: bool = False  # notified by an earlier apply whose handler did not succeed
    exit: int | None = None  # the exit status; negative: killed by that signal
    output: str = ""  # the last OUTPUT_LIMIT bytes, decoded (unescaped)
    dropped: int = 0  # bytes of output before those
    seconds: float = 0.0


def remember(ctx: Context, result: TaskResult) -> None:
    """Record the notifications of a task that changed, before any handler runs, so a
    run killed now still runs them next time. Best effort: the run's own results
    notify the handlers of this apply anyway."""
    if result.status is not Status.CHANGED or not result.task.notify:
        return
    with contextlib.suppress(DesyncError), _records_locked(ctx):
        for name in result.task.notify:
            key = _key(name, _target(ctx, result.task))
            entries = [*_entries(ctx, key), {"by": result.task.name, "id": uuid.uuid4().hex}]
            ctx.state.put(key, {"notified": entries})


@dataclass(frozen=True)
class Notified:
    """A handler that is to run, and which tasks asked for it."""

    handler: HandlerDef
    by: tuple[str, ...]  # task names
    earlier: bool  # only an earlier apply asked (its notification was kept)


def notified(ctx: Context, changed: Iterable[Task[TaskAction]]) -> list[Notified]:
    """The handlers the ``changed`` tasks notify, and those a kept notification of an
    earlier apply asks for, in the manifest's order (``plan`` shows them too)."""
    now: dict[str, list[str]] = {}
    for task in changed:
        for name in task.notify:
            now.setdefault(name, []).append(task.name)
    out = []
    for name, handler in ctx.manifest.handlers.items():
        earlier = name not in now
        kept = [e["by"] for key in _keys(ctx, name) for e in _entries(ctx, key)]
        by = tuple(sorted(set(kept)) if earlier else now[name])
        if by:
            out.append(Notified(handler, by, earlier))
    return out


def run_handlers(
    ctx: Context, results: Iterable[TaskResult], *, check: bool
) -> list[HandlerResult]:
    """Run (or with ``check`` report) every handler notified by a task that changed in
    ``results`` or by an earlier apply whose handler did not succeed."""
    out = []
    for n in notified(ctx, [r.task for r in results if r.status is Status.CHANGED]):
        if check:
            out.append(HandlerResult(n.handler, HandlerStatus.WOULD_RUN, "", n.by, n.earlier))
            continue
        keys = _keys(ctx, n.handler.name)
        with _running(ctx, n.handler.name):
            with _records_locked(ctx):  # what it handles: the notifications kept as it starts
                seen = {key: {e["id"] for e in _entries(ctx, key)} for key in keys}
            if n.earlier and not any(seen.values()):
                continue  # the apply that kept the notification ran it while we waited
            result = _run(n.handler, n.by, earlier=n.earlier, cwd=ctx.manifest.base_dir)
            if result.status is HandlerStatus.OK:
                _forget(ctx, seen)
        out.append(result)
    return out


def _running(ctx: Context, name: str) -> contextlib.AbstractContextManager[None]:
    """One run of a handler at a time on this host: a second apply waits, and runs a
    handler only notified by an earlier apply only if that notification is still
    kept, so two applies never restart a service at once, nor twice for one change.
    (One this run's tasks notified runs anyway: its notification may not have been
    kept.)"""
    return locked(ctx.state.directory, {f"handler-run:{name}": True}, timeout=None)


def _forget(ctx: Context, handled: dict[str, set[str]]) -> None:
    """Drop the notifications a handler that succeeded handled (by record key, their
    ids), keeping any added since. Best effort: one left behind runs it once more."""
    with contextlib.suppress(DesyncError), _records_locked(ctx):
        for key, ids in handled.items():
            left = [e for e in _entries(ctx, key) if e["id"] not in ids]
            if left:
                ctx.state.put(key, {"notified": left})
            else:
                ctx.state.drop(key)


def _key(name: str, target: str) -> str:
    """The record of the handler ``name``'s notifications by tasks writing ``target``."""
    return f"handler\0{name}\0{target}"


def _keys(ctx: Context, name: str) -> list[str]:
    """The records that may hold notifications of the handler ``name``: one per target
    of the manifest's tasks notifying it (selected by the run or not)."""
    targets = {_target(ctx, t) for t in ctx.manifest.tasks if name in t.notify}
    return [_key(name, target) for target in sorted(targets)]


def _target(ctx: Context, task: Task[TaskAction]) -> str:
    """What ``task`` changes, as resource keys: stable across checkouts of the manifest
    (the task's name only for a task that writes nothing)."""
    resources = kind_for(task.kind).resources(task, ctx.resolver)
    written = sorted(resources.writes or resources.adds)
    return "\0".join(written) if written else f"task:{task.name}"


def _entries(ctx: Context, key: str) -> list[dict[str, str]]:
    """The notifications kept in the record ``key`` (``by``: a task name, ``id``)."""
    record = ctx.state.get(key) or {}
    entries = record.get("notified")
    if not isinstance(entries, list):
        return []
    return [
        {"by": e["by"], "id": e["id"]}
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("by"), str) and isinstance(e.get("id"), str)
    ]


def _records_locked(ctx: Context) -> contextlib.AbstractContextManager[None]:
    """The state folder's lock on handler records: every change to them is a
    read-modify-write another apply must not interleave with."""
    return locked(ctx.state.directory, {HANDLERS_LOCK: True}, timeout=None)


def _run(
    handler: HandlerDef, by: tuple[str, ...], *, earlier: bool, cwd: os.PathLike
) -> HandlerResult:
    started = time.monotonic()

    def done(status: HandlerStatus, msg: str, exit: int | None, out: _Output) -> HandlerResult:
        seconds = round(time.monotonic() - started, 3)
        text = bytes(out.kept).decode("utf-8", "replace")
        credentials = Redactor.of_credentials(os.environ)  # it inherits them: never shown
        text = credentials.text_cut(text) if out.dropped else credentials.text(text)
        return HandlerResult(handler, status, msg, by, earlier, exit, text, out.dropped, seconds)

    output = _Output()
    try:
        proc = subprocess.Popen(
            handler.command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        why = f"cannot run {handler.command[0]}: {(e.strerror or str(e)).lower()}"
        return done(HandlerStatus.FAILED, why, None, output)
    assert proc.stdout is not None
    with proc.stdout as pipe:
        finished = _collect(proc, pipe.fileno(), output, started + handler.timeout)
    if not finished:
        why = f"timed out after {handler.timeout:g}s: it and what it started were killed"
        return done(HandlerStatus.FAILED, why, None, output)
    code = proc.returncode
    if code == 0:
        return done(HandlerStatus.OK, "exit status 0", code, output)
    if code < 0:
        return done(HandlerStatus.FAILED, f"killed by signal {-code}", code, output)
    return done(HandlerStatus.FAILED, f"exit status {code}", code, output)


class _Output:
    """The last ``OUTPUT_LIMIT`` bytes read, and how many came before them."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self.kept += data
        excess = len(self.kept) - OUTPUT_LIMIT
        if excess > 0:
            del self.kept[:excess]
            self.dropped += excess


def _collect(proc: subprocess.Popen, fd: int, output: _Output, deadline: float) -> bool:
    """Read the command's output until it exits (True) or the deadline passes (False:
    its whole session is killed). Once it has exited, only what is already in the
    pipe is read: something it started in the background may hold the pipe open."""
    poller = select.poll()  # not select(): an fd above 1023 is fine
    poller.register(fd, select.POLLIN)
    reading = True

    def read(wait: float) -> None:
        nonlocal reading
        if poller.poll(int(wait * 1000)):
            data = os.read(fd, 65536)
            reading = bool(data)
            output.add(data)

    while proc.poll() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            _kill(proc)
            return False
        if reading:
            read(min(POLL_SECONDS, left))
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(POLL_SECONDS, left))
    while reading and time.monotonic() < deadline and poller.poll(0):
        read(0)
    return True


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is what it started
    proc.wait()
