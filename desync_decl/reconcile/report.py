"""Renderers: plans as text and JSON; apply results as lines, a recap and JSON (the
Markdown plan, in ``markdown.py``, builds on the text's lines).

They only format what ``plan`` and ``apply`` return (ansible's callback
plugins, which never decide anything). The JSON plan is the saved-plan
format (``schemas/plan.schema.json``, ``"version": 1``).

Whatever they print passes the manifest's ``Redactor``: a value read from
``${env:…}`` shows as the reference (``${env:TOKEN}``), wherever it appears (a
target, a store's URL, an error a server sent back), and a saved plan's facts
digest is keyed with those values instead of holding them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from desync_decl import __version__
from desync_decl.manifest.sensitive import Redactor
from desync_decl.reconcile.handlers import OUTPUT_LIMIT, HandlerResult, HandlerStatus, Notified
from desync_decl.reconcile.model import (
    AnyAction,
    Diff,
    EntryState,
    PlanEntry,
    Status,
    StoreAmount,
    TaskResult,
    Travel,
    Verb,
    chunks,
    facts_digest,
    human_bytes,
)
from desync_decl.reconcile.plan import PLAN_VERSION, Plan
from desync_decl.reconcile.traffic import fetched

SHOWN_IDS = 10  # chunk ids listed in text output (JSON lists all)
_OBSERVED = (
    "reason",
    "target",
    "message",
    "facts",
    "travel",
    "diff",
    "notes",
    "warnings",
    "signatures",
)  # redacted
_WRITES_INDEX = ("make", "tar")  # kinds whose result names the index digest
HANDLER_LINES = 20  # last lines of a handler's output in text (JSON has all that is kept)
_MARKS = {Verb.CREATE: "+", Verb.UPDATE: "~", Verb.DELETE: "-", Verb.NOOP: "="}


def display(path: str, redactor: Redactor) -> str:
    """A path relative to the working directory when it is below it; one holding a
    value read from ``${env:…}`` as written (made relative, it would show part of it)."""
    shown = redactor.text(path)
    if shown != path or "://" in path or not os.path.isabs(path):
        return shown
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def summary(entries: Iterable[PlanEntry]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for e in entries:
        counts[e.action.verb.value if e.action is not None else e.state.value] += 1
    keys = [v.value for v in Verb] + [EntryState.ERROR.value, EntryState.SKIPPED.value]
    return {k: counts[k] for k in keys}


def summary_line(plan: Plan) -> str:
    n = summary(plan.entries)
    line = (
        f"{n['create']} to create, {n['update']} to update, {n['delete']} to delete,"
        f" {n['no-op']} unchanged"
    )
    extra = [f"{n[k]} {k}" for k in ("error", "skipped") if n[k]]
    return line + (f" ({', '.join(extra)})" if extra else "")


# --- JSON --------------------------------------------------------------------------


def plan_json(plan: Plan) -> dict[str, object]:
    counts = summary(plan.entries)
    redactor = plan.manifest.redactor
    return {
        "version": PLAN_VERSION,
        "tool": f"desync-decl {__version__}",
        "manifest": {"path": str(plan.manifest.path), "digest": plan.manifest_digest},
        "verify": plan.verify,
        "selection": {"tags": list(plan.tags), "skip-tags": list(plan.skip_tags)},
        "summary": {**counts, "changes": plan.changes},
        "tasks": [_entry_json(e, redactor) for e in plan.entries],
        "locks": [redactor.data(h.to_json()) for h in plan.locks],
        "handlers": [
            {"name": n.handler.name, "notified-by": list(n.by), "earlier": n.earlier}
            for n in plan.handlers
        ],
    }


def _entry_json(e: PlanEntry, redactor: Redactor) -> dict[str, object]:
    """A task's entry with what was observed redacted. Task names and tags cannot
    hold ``${env:…}`` and name the tasks ``apply --plan`` checks: left as written,
    as is the facts digest (keyed, ours)."""
    a = e.action
    digest = facts_digest(a.facts.digest_fields, redactor.key) if a is not None else None
    out: dict[str, object] = {
        "name": e.task.name,
        "index": e.task.index,
        "kind": e.task.kind,
        "tags": list(e.task.tags),
        "state": e.state.value,
        "action": a.verb.value if a is not None else None,
        "reason": a.reason if a is not None else None,
        "target": a.target if a is not None else None,
        "message": e.message or None,
        "depends-on": list(e.depends_on),
        "deferred-by": a.deferred[0] if a is not None and a.deferred else None,
        "facts-digest": digest,
        "facts": dict(a.facts.digest_fields) if a is not None else None,
        "travel": a.travel.to_json() if a is not None else {},
        "diff": a.diff.to_json() if a is not None and a.diff is not None else None,
        "notes": list(a.notes) if a is not None else [],
        "warnings": list(a.warnings) if a is not None else [],
        "signatures": signatures_json(a),
    }
    return {k: redactor.data(v) if k in _OBSERVED else v for k, v in out.items()}


def signatures_json(a: AnyAction | None) -> list[dict[str, object]]:
    """The signed indexes an action read or writes (``SignedBy``), as JSON."""
    return [s.to_json() for s in a.facts.signatures] if a is not None else []


def signature_lines(a: AnyAction | None, redactor: Redactor) -> list[str]:
    """``index rel/app.caibx signed by ci (ED25519 SHA256:…)``: one line per signed
    index an action read under trust or writes."""
    if a is None:
        return []
    return [f"index {display(s.index, redactor)} {s.words()}" for s in a.facts.signatures]


def results_json(
    results: Sequence[TaskResult],
    *,
    check: bool,
    redactor: Redactor,
    handlers: Sequence[HandlerResult] = (),
) -> dict[str, object]:
    """``apply --json``: each task's outcome, with its plan's target and what that plan
    moves by source (``travel``, as ``plan --json`` has it: under ``--check`` what would
    travel; the Ansible modules report bytes per source from it), and the recap."""
    doc = {
        "version": PLAN_VERSION,
        "check": check,
        "tasks": [
            {
                "name": r.task.name,
                "kind": r.task.kind,
                "status": r.status.value,
                "msg": r.msg,
                "action": r.action.verb.value if r.action is not None else None,
                "target": r.action.target if r.action is not None else None,
                "travel": r.action.travel.to_json() if r.action is not None else {},
                "seconds": r.seconds,
                "stats": dict(r.stats),
                "diff": r.diff.to_json() if r.diff is not None else None,
                "warnings": list(r.warnings),
                "signatures": signatures_json(r.action),
            }
            for r in results
        ],
        "recap": recap(results),
        "handlers": [
            {
                "name": h.handler.name,
                "command": list(h.handler.command),
                "status": h.status.value,
                "msg": h.msg,
                "notified-by": list(h.by),
                "earlier": h.earlier,
                "exit": h.exit,
                "output": h.output,
                "output-dropped": h.dropped,
                "seconds": h.seconds,
            }
            for h in handlers
        ],
    }
    return redactor.data(doc)


# --- text ----------------------------------------------------------------------------


def plan_text(plan: Plan, *, diff: bool = False) -> list[str]:
    redactor = plan.manifest.redactor
    verify = " (verify)" if plan.verify else ""
    lines = [f"plan for {display(str(plan.manifest.path), redactor)}{verify}"]
    lines += [f"  note: {line}" for line in lock_lines(plan)]
    for e in plan.entries:
        head = f"[{e.task.name}] {e.task.kind}"
        if e.action is None:
            mark = "!" if e.state is EntryState.ERROR else "."
            lines.append(f"  {mark} {e.state.value:<7} {head}: {e.message}")
            continue
        a = e.action
        target = f" {display(a.target, redactor)}" if a.target else ""
        lines.append(f"  {_MARKS[a.verb]} {a.verb.value:<7} {head}{target}: {a.reason}")
        lines += [f"            {line}" for line in signature_lines(a, redactor)]
        if a.verb.changes:
            lines += [f"            {line}" for line in travel_lines(a.travel, redactor)]
            if diff and a.diff is not None:
                lines += [f"          {line}" for line in diff_lines(a.diff, redactor)]
        lines += [f"            note: {note}" for note in a.notes]
        lines += [f"            warning: {warning}" for warning in a.warnings]
    lines += [f"  * {'run':<7} [{n.handler.name}] handler: {notified_by(n)}" for n in plan.handlers]
    lines.append(f"Plan: {summary_line(plan)}.")
    return [redactor.text(line) for line in lines]


def lock_lines(plan: Plan) -> list[str]:
    """One line per lock of the plan's tasks that another run holds now."""
    redactor = plan.manifest.redactor
    return [
        f"{display(h.what, redactor)} is locked by {h}: an apply is running, and another"
        " apply would wait for it"
        for h in plan.locks
    ]


def travel_lines(
    t: Travel, redactor: Redactor, *, ids: int = SHOWN_IDS, changes: bool = True
) -> list[str]:
    """What travels, in words: one line per kind of movement (and with ``changes``, one
    per entry an untar changes)."""
    lines = []
    if t.seeds or t.null or t.self_seed or t.in_place or (t.stores and t.upload is None):
        lines.append(_extract_line(t, redactor))
    if any(s.remote and s.stored_bytes is not None for s in t.stores):
        lines.append(_network_line(t))
    if t.upload is not None:
        u = t.upload
        lines.append(f"upload {chunks(u.chunks)} ({human_bytes(u.bytes)}) to store '{u.name}'")
        if t.stores:  # a cache task: copied from these
            lines[-1] += ", read from " + ", ".join(_source_part(s) for s in t.stores)
        if u.remote and u.stored_bytes is not None and u.chunks:
            lines.append(_upload_network_line(u))
    if t.checked is not None:
        lines.append(f"checked {chunks(t.checked.chunks)}")
    if t.entries is not None:
        lines.append(_entries_line(t.entries))
        if changes:
            lines += [redactor.text(line) for line in change_lines(t.changes)]
    if t.delete is not None:
        d = t.delete
        shown = ", ".join(d.ids[:ids]) + (
            f", … ({len(d.ids) - ids} more)" if len(d.ids) > ids else ""
        )
        lines.append(f"delete {chunks(len(d.ids))} from store '{d.name}': {shown}")
    return lines


def _extract_line(t: Travel, redactor: Redactor) -> str:
    total = t.total.bytes if t.total is not None else 0
    parts = [f"{human_bytes(s.bytes)} from seed {display(s.file, redactor)}" for s in t.seeds]
    for label, amount in (
        ("null (holes)", t.null),
        ("self", t.self_seed),
        ("in place", t.in_place),
    ):
        if amount is not None and amount.bytes:
            parts.append(f"{human_bytes(amount.bytes)} {label}")
    if t.upload is None:
        parts += [_store_part(s) for s in t.stores] or ["nothing from stores"]
    return f"{human_bytes(total)}: " + ", ".join(parts)


def _network_line(t: Travel) -> str:
    """What reading from remote stores transfers: their chunks as they hold them."""
    wire = fetched(t)
    if wire.estimated:
        return (
            f"network: about {human_bytes(wire.network)}, plain bytes where a store gives no size"
        )
    return f"network: {human_bytes(wire.network)}"


def _upload_network_line(u: StoreAmount) -> str:
    """What an upload transfers: an estimate, said as one and how it was made."""
    wire = human_bytes(u.stored_bytes or 0)
    if u.stored_sample:
        return f"network: about {wire}, estimated by compressing {chunks(u.stored_sample)}"
    return f"network: about {wire}, the plain bytes: chunks are compressed as they are stored"


def _entries_line(entries: Mapping[str, int]) -> str:
    """``entries: 2 to create, 1 to update (64.0 MiB written), 3 metadata only,
    40 unchanged (190.2 MiB kept), 1 extra kept``: in the words apply reports."""
    parts = [
        f"{entries[key]} {label}"
        for key, label in (
            ("create", "to create"),
            ("update", "to update"),
            ("metadata", "metadata only"),
            ("delete", "to delete"),
            ("unchanged", "unchanged"),
            ("kept", "extra kept" if entries.get("kept") == 1 else "extras kept"),
        )
        if entries.get(key)
    ]
    line = "entries: " + (", ".join(parts) or "none")
    sizes = [
        f"{human_bytes(entries[key])} {label}"
        for key, label in (
            ("write-bytes", "to write"),
            ("keep-bytes", "kept"),
            ("delete-bytes", "to delete"),
        )
        if entries.get(key)
    ]
    return line + (f"; file bytes: {', '.join(sizes)}" if sizes else "")


SHOWN_CHANGES = 40  # entries a plan's text lists (its JSON lists all)


def change_lines(
    changes: Sequence[tuple[str, str, str, int, tuple[tuple[str, int], ...]]],
) -> list[str]:
    """``  update   shards/s1.bin (file, 64.0 MiB: 57.6 MiB in place, 6.4 MiB from
    stores)``, one per changed entry, the first ``SHOWN_CHANGES``."""
    out = []
    for path, change, kind, size, sources in changes[:SHOWN_CHANGES]:
        what = f"{kind}, {human_bytes(size)}" if kind == "file" or size else kind
        if sources:
            what += ": " + ", ".join(
                f"{human_bytes(n)} {'from stores' if label == 'stores' else label}"
                for label, n in sources
            )
        out.append(f"  {change:<8} {path} ({what})")
    if len(changes) > SHOWN_CHANGES:
        out.append(f"  … {len(changes) - SHOWN_CHANGES} more (plan --json lists them all)")
    return out


def _store_part(s: StoreAmount) -> str:
    name = f"cache '{s.via}'" if s.role == "cache" else f"store '{s.name}'"
    stored = ""
    if s.stored_bytes is not None:
        about = "about " if s.stored_estimated else ""
        stored = f", {about}{human_bytes(s.stored_bytes)} stored"
    return f"{human_bytes(s.bytes)} ({chunks(s.chunks)}{stored}) from {name}"


def _source_part(s: StoreAmount) -> str:
    """``store 'origin': 29 chunks, 1.9 MiB stored`` (where an upload reads from)."""
    name = f"cache '{s.via}'" if s.role == "cache" else f"store '{s.name}'"
    if s.stored_bytes is None:
        return f"{name}: {chunks(s.chunks)}"
    about = "about " if s.stored_estimated else ""
    return f"{name}: {chunks(s.chunks)}, {about}{human_bytes(s.stored_bytes)} stored"


def result_lines(r: TaskResult, redactor: Redactor) -> list[str]:
    lines = [f"{r.status.value}: [{r.task.name}] {r.task.kind}: {r.msg}"]
    digest = index_digest(r)
    if digest is not None:
        lines[0] += f"; index digest {digest}"
    lines += [f"  {line}" for line in signature_lines(r.action, redactor)]
    lines += [f"  warning: [{r.task.name}] {warning}" for warning in r.warnings]
    if r.diff is not None:
        lines += diff_lines(r.diff, redactor)
    return [redactor.text(line) for line in lines]


def index_digest(r: TaskResult) -> str | None:
    """The digest of the index a make or tar task left (``sha512-256:<hex>``, what an
    extract's ``pin`` takes): written now, or already current. None for other kinds and
    for what ``--check`` only forecasts."""
    if r.task.kind not in _WRITES_INDEX:
        return None
    written = r.stats.get("index-digest")
    if written is not None:
        return str(written)
    if r.status is Status.OK and r.action is not None:
        current = r.action.facts.digest_fields.get("index")
        return str(current) if current is not None else None
    return None


def diff_lines(d: Diff, redactor: Redactor) -> list[str]:
    target = display(d.target, redactor)
    lines = [f"  --- before: {target}", f"  +++ after:  {target}"]
    for key in dict.fromkeys([*d.before, *d.after]):
        before, after = d.before.get(key), d.after.get(key)
        if before == after:
            continue
        if before is not None:
            lines.append(f"  -{key}: {before}")
        if after is not None:
            lines.append(f"  +{key}: {after}")
    return lines


def recap(results: Iterable[TaskResult]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {s.value: counts[s] for s in Status}


def recap_line(results: Iterable[TaskResult], handlers: Sequence[HandlerResult] = ()) -> str:
    """``RECAP ok=1 changed=2 failed=0 skipped=0``, then ``handlers-ok=1`` and the like
    for the outcomes handlers had, if any ran."""
    line = "RECAP " + " ".join(f"{k}={v}" for k, v in recap(results).items())
    counts = Counter(h.status for h in handlers)
    for status in HandlerStatus:
        if counts[status]:
            line += f" handlers-{status.value.replace(' ', '-')}={counts[status]}"
    return line


def notified_by(n: Notified | HandlerResult) -> str:
    """``notified by install, image``; ``notified by an earlier apply: install``."""
    return ("notified by an earlier apply: " if n.earlier else "notified by ") + ", ".join(n.by)


def handler_lines(h: HandlerResult, redactor: Redactor) -> list[str]:
    """``ok: [restart app] handler: exit status 0; notified by install``, then the last
    lines of its output, each shown as one escaped line by the console."""
    by = notified_by(h)
    head = f"{h.status.value}: [{h.handler.name}] handler: "
    lines = [head + (by if h.status is HandlerStatus.WOULD_RUN else f"{h.msg}; {by}")]
    output = h.output.splitlines()
    untold = []
    if len(output) > HANDLER_LINES:
        untold.append(f"{len(output) - HANDLER_LINES} earlier lines are in apply --json")
    if h.dropped:
        untold.append(f"{h.dropped} bytes before the last {OUTPUT_LIMIT // 1024} KiB were not kept")
    if untold:
        lines.append("  | … " + "; ".join(untold))
    lines += [f"  | {line}" for line in output[-HANDLER_LINES:]]
    return [redactor.text(line) for line in lines]
