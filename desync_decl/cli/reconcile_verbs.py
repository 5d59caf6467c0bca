"""``plan MANIFEST`` and ``apply MANIFEST``: the declarative verbs.

``plan`` prints what each task would do and what would travel (text, ``--json``
or ``--markdown``), ``--out FILE`` saves it as JSON for ``apply --plan``. The
Markdown names the git commit the manifest is at, when it is in a repository.
``apply`` converges the machine: one line per task (ok, changed, failed,
skipped), then the handlers notified by tasks that changed (``handlers.py``),
and a recap; ``--check`` only reports.

Neither shows a value the manifest read from ``${env:…}``: the renderers redact
them, and so do these verbs for the errors that end a run. A saved plan is
written 0600, as a new file renamed into place.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError, UsageError
from desync_decl.fsutil import open_parent, walk_error, write_atomic
from desync_decl.manifest import ManifestError, load_manifest
from desync_decl.manifest.sensitive import Redactor
from desync_decl.progress import no_progress_for
from desync_decl.reconcile import (
    ApplyOptions,
    SavedPlan,
    Status,
    apply_manifest,
    open_context,
    plan_manifest,
    report,
)
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.handlers import HandlerStatus, run_handlers
from desync_decl.reconcile.markdown import plan_markdown
from desync_decl.reconcile.model import TaskResult
from desync_decl.reconcile.plan import os_message

GIT_SECONDS = 10.0  # for `git rev-parse`: a hung git costs the comment its commit, no more
_SHORT_HASH = re.compile(r"[0-9a-f]{4,64}")


def plan_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Observe every selected task and print its action (create, update, "
        "delete, no-op) and what would travel: bytes from each seed and store, chunks to "
        "upload or delete. Nothing is written."
    )
    p.add_argument("manifest", help="manifest file (YAML)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="the plan as JSON (version 1)")
    form.add_argument("--markdown", action="store_true", help="the plan as a Markdown comment")
    p.add_argument("--out", metavar="FILE", help="also save the plan (JSON) for apply --plan")
    p.add_argument(
        "--diff",
        action="store_true",
        help="show before and after of each change (untar: per entry, what differs)",
    )
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing would change, 2 when something would, 1 on errors",
    )
    _add_run_args(p)
    p.set_defaults(func=run_plan)


def apply_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run the selected tasks: each ends ok, changed, failed or skipped; the "
        "handlers notified by tasks that changed run next, and a recap follows. Exit status 1 "
        "if any task or handler failed."
    )
    p.add_argument("manifest", help="manifest file (YAML)")
    p.add_argument(
        "-j",
        "--jobs",
        type=common.int_at_least(1),
        default=1,
        metavar="N",
        help="tasks run at once (default 1); tasks touching the same file or store wait",
    )
    p.add_argument("--check", action="store_true", help="report what would change; change nothing")
    p.add_argument("--diff", action="store_true", help="show before and after of each change")
    p.add_argument("--plan", metavar="FILE", help="apply a plan saved by plan --out, or refuse it")
    p.add_argument(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        help="give up waiting for another run's lock after this long (default: wait)",
    )
    p.add_argument("--json", action="store_true", help="results as JSON on stdout")
    _add_run_args(p)
    p.set_defaults(func=run_apply)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-t",
        "--tags",
        action="append",
        default=[],
        metavar="TAGS",
        help="only tasks with these tags",
    )
    p.add_argument(
        "--skip-tags", action="append", default=[], metavar="TAGS", help="no task with these tags"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="ignore fast-path records: re-read every target and store (drift detection)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="fast-path records and locks; default $DESYNC_DECL_STATE_DIR if set, else"
        " /var/lib/desync-decl for root, for other users $XDG_STATE_HOME/desync-decl,"
        " else ~/.local/state/desync-decl",
    )
    p.add_argument(
        "-n",
        "--concurrency",
        type=common.int_at_least(1),
        help="worker threads per task (default: the manifest's, else 8)",
    )


def _context(args: argparse.Namespace, console: Console) -> Context:
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as e:
        for problem in e.problems[:-1]:
            console.error(str(problem))
        raise DesyncError(str(e.problems[-1]) if e.problems else str(e)) from None
    return open_context(
        manifest,
        config=common.config(args),  # read once; main then warns about unused keys
        state_dir=Path(args.state_dir) if args.state_dir else None,
        verify=args.verify,
        concurrency=args.concurrency,
        digest=common.digest_arg(args),
    )


@contextlib.contextmanager
def _redacted_errors(redactor: Redactor) -> Iterator[None]:
    """An error ending the run leaves without the values read from ``${env:…}``
    (a store's error may quote its URL, or a header the server echoed)."""
    try:
        yield
    except DesyncError as e:
        shown = redactor.text(str(e))
        if shown == str(e):
            raise
        raise DesyncError(shown) from None
    except OSError as e:
        shown = redactor.text(os_message(e))
        if shown == os_message(e):
            raise
        raise DesyncError(shown) from None


def _tags(values: list[str]) -> list[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def run_plan(args: argparse.Namespace, console: Console) -> int:
    ctx = _context(args, console)
    with _redacted_errors(ctx.manifest.redactor):
        try:
            plan = plan_manifest(
                ctx,
                tags=_tags(args.tags),
                skip_tags=_tags(args.skip_tags),
                progress_for=console.task_progress(),
            )
        finally:
            ctx.resolver.close()
    doc = report.plan_json(plan)
    if args.out:
        _save_plan(Path(args.out), doc)
    if args.json:
        console.json(doc)
    elif args.markdown:
        commit = git_commit(Path(os.path.abspath(args.manifest)).parent)
        console.out.write(plan_markdown(plan, commit=commit))
    else:
        for line in report.plan_text(plan, diff=args.diff):
            console.print(line)
    if plan.errors:
        return 1
    return 2 if args.detailed_exitcode and plan.changes else 0


def git_commit(directory: Path) -> str | None:
    """``git rev-parse --short HEAD`` in ``directory``: the commit a manifest there is
    at. None when it is not in a repository (or one without commits, or one git will
    not read: another user's), when git is not installed, fails or hangs: the
    comment is then made without it."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and _SHORT_HASH.fullmatch(commit) else None


def _save_plan(out: Path, doc: dict) -> None:
    """Write the plan to ``out`` (0600: a plan tells what a machine holds and where its
    stores are), in its directory opened without following a symlink planted where
    others can write (``fsutil.open_parent``)."""
    data = (json.dumps(doc, indent=2) + "\n").encode()
    try:
        dir_fd = open_parent(out)
        try:
            write_atomic(out, data, 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise walk_error(out, e, "write") from None


def run_apply(args: argparse.Namespace, console: Console) -> int:
    if args.plan and (args.tags or args.skip_tags or args.check or args.verify):
        raise UsageError(
            "--plan applies the saved selection: no --tags, --skip-tags, --check or --verify"
        )
    ctx = _context(args, console)
    redactor = ctx.manifest.redactor
    saved = SavedPlan.load(args.plan, redactor) if args.plan else None
    results: list[TaskResult] = []

    def on_result(result: TaskResult) -> None:
        results.append(result)
        if not args.json:
            for line in report.result_lines(result, redactor):
                console.print(line)

    options = ApplyOptions(
        jobs=args.jobs,
        check=args.check,
        diff=args.diff,
        lock_timeout=args.lock_timeout,
        saved=saved,
        on_result=on_result,
        on_wait=lambda task, message: console.note(redactor.text(f"[{task.name}] {message}")),
        progress_for=no_progress_for if args.json else console.task_progress(),
    )
    if args.check and not args.json:
        console.print("check mode: what would change is reported, nothing is changed")
    with _redacted_errors(redactor):
        try:
            ordered = apply_manifest(
                ctx, options, tags=_tags(args.tags), skip_tags=_tags(args.skip_tags)
            )
        finally:
            ctx.resolver.close()
        handled = run_handlers(ctx, ordered, check=args.check)
    if args.json:
        doc = report.results_json(ordered, check=args.check, redactor=redactor, handlers=handled)
        console.json(doc)
    else:
        for h in handled:
            for line in report.handler_lines(h, redactor):
                console.print(line)
        console.print(report.recap_line(ordered, handled))
    failed = any(r.status is Status.FAILED for r in ordered)
    return 1 if failed or any(h.status is HandlerStatus.FAILED for h in handled) else 0
