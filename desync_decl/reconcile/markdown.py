"""The plan as Markdown, for a pull-request comment (``plan --markdown``).

A reviewer reads, on GitHub or GitLab: the context (the manifest's path, the git
commit it is at, the selection), the summary, and a table with a row per task
(its action, why and who signed each index it reads or writes, the mode, owner and
pin it changes, what travels) and a totals row of the plain bytes and the network
bytes of the whole plan (``traffic.py``). Chunk ids a prune would delete are folded away below it.

Everything shown may be someone else's text: task names and paths come from the
pull request, errors from servers. Each piece is redacted first (escaping could
split a value read from ``${env:…}``, so it would no longer be found) and then
escaped for where it stands:

- in a table cell or a line of text (``_text``): line breaks become spaces and a
  backslash goes before each character that Markdown or GitHub would act on (a cell
  separator, emphasis, code, links, HTML, math, strikethrough, entities), so the
  text renders as written and cannot end its cell or start another row;
- in a code span outside the table (``_code``): a fence longer than any run of
  backticks in it; code in a cell is escaped as cell text and set in ``<code>``
  (``_cell_code``);
- in HTML (a deletion's ``<summary>``): HTML-escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from desync_decl.manifest import ExtractAction, UntarAction
from desync_decl.manifest.sensitive import Redactor
from desync_decl.reconcile.model import AnyAction, EntryState, PlanEntry, Verb, chunks, human_bytes
from desync_decl.reconcile.plan import Plan
from desync_decl.reconcile.report import (
    change_lines,
    display,
    lock_lines,
    notified_by,
    signature_lines,
    summary_line,
    travel_lines,
)
from desync_decl.reconcile.traffic import Traffic, fetched, uploaded

MARKDOWN_IDS = 200  # chunk ids listed per deletion (the JSON plan lists all)
TRAVEL_IDS = 3  # chunk ids named in a row's "what travels"
_ICONS = {  # GitHub and GitLab render these short codes in comments
    Verb.CREATE: ":heavy_plus_sign:",
    Verb.UPDATE: ":arrows_counterclockwise:",
    Verb.DELETE: ":wastebasket:",
    Verb.NOOP: ":white_check_mark:",
}
_HEADER = (
    "| | Task | Kind | Target | Why | Changes | What travels |",
    "|---|---|---|---|---|---|---|",
)
_ATTRIBUTES = ("mode", "owner", "group")  # a diff's keys shown as they change
_DIGEST = re.compile(r"\b(sha512-256|sha256):([0-9a-f]{12})[0-9a-f]{52}\b")
# What Markdown (CommonMark and GitHub's extensions) acts on inside a line: the
# escape itself, code, emphasis, links, images and footnotes (none without an
# unescaped "]"), HTML and autolinks, cell separators, strikethrough, math,
# entities. An underscore inside a word is inert.
_ACTIVE = re.compile(r"[\\`*\]<|~$&]|(?<![^\W_])_|_(?![^\W_])")
_LINE_BREAKS = re.compile(r"[\r\n]+")
# What makes a line (a list item's text, a quote's) a block of another kind when it
# starts it: a heading, a quote, a list, a thematic break, a setext underline.
_BLOCK_START = re.compile(r"^(?:[#>+=-]|[0-9]+[.)])")


def plan_markdown(plan: Plan, *, commit: str | None = None) -> str:
    """The comment; ``commit`` is the short hash of the commit the manifest is at
    (None: not in a git repository, or no git to ask)."""
    redactor = plan.manifest.redactor
    name = display(str(plan.manifest.path), redactor)
    out = [f"### desync-decl plan: {_code(name, redactor)}", ""]
    out += [_context(plan, name, commit, redactor), ""]
    out += [f"**{summary_line(plan)}**", ""]
    out += [f"> {_text(line, redactor)}" for line in lock_lines(plan)]
    out += [""] if plan.locks else []
    out += _HEADER
    out += [_row(e, redactor) for e in plan.entries]
    out.append(f"| | **Total** | | | | | {_totals(plan.entries)} |")
    for e in plan.entries:
        a = e.action
        if a is not None and a.travel.delete is not None and a.verb.changes:
            out += ["", *_deletion(a, redactor)]
        if a is not None and a.travel.changes and a.verb.changes:
            out += ["", *_entry_changes(a, redactor)]
    if plan.handlers:
        out += ["", "Handlers that would run after the apply:", ""]
        out += [
            f"- {_text(n.handler.name, redactor)}: {_text(notified_by(n), redactor)}"
            for n in plan.handlers
        ]
    notes = [(e.task.name, n) for e in plan.entries if e.action for n in e.action.notes]
    if notes:
        out += ["", "Notes:", ""]
        out += [f"- {_text(t, redactor)}: {_text(n, redactor)}" for t, n in notes]
    return redactor.text("\n".join(out) + "\n")  # the lines that are not cells, too


def _context(plan: Plan, name: str, commit: str | None, redactor: Redactor) -> str:
    """``Manifest `m.yaml` at commit `1a2b3c4`, tags `install`, verify``."""
    parts = [f"Manifest {_code(name, redactor)}"]
    if commit is not None:
        parts[0] += f" at commit {_code(commit, redactor)}"
    for label, tags in (("tags", plan.tags), ("skip-tags", plan.skip_tags)):
        if tags:
            parts.append(f"{label} {_code(','.join(tags), redactor)}")
    if plan.verify:
        parts.append("verify (every target and store read again)")
    return ", ".join(parts)


def _row(e: PlanEntry, redactor: Redactor) -> str:
    a = e.action
    if a is None:
        mark = ":x: error" if e.state is EntryState.ERROR else ":fast_forward: skipped"
        name, message = _text(e.task.name, redactor), _text(e.message, redactor)
        return f"| {mark} | {name} | {e.task.kind} | | {message} | | |"
    target = _cell_code(display(a.target, redactor), redactor) if a.target else ""
    travels = (
        travel_lines(a.travel, redactor, ids=TRAVEL_IDS, changes=False) if a.verb.changes else []
    )
    return (
        f"| {_ICONS[a.verb]} {a.verb.value} | {_text(e.task.name, redactor)} | {e.task.kind}"
        f" | {target} | {_lines([a.reason, *signature_lines(a, redactor)], redactor)}"
        f" | {_lines(_changes(a), redactor)}"
        f" | {_lines(travels, redactor)} |"
    )


def _changes(a: AnyAction) -> list[str]:
    """``mode 0644 → 0600``, ``owner app``, ``pin sha512-256:4e0a0b1f5c2d… → …``: the
    attributes and the content (index) a change sets; a value alone when new."""
    d = a.diff
    if d is None or not a.verb.changes:
        return []
    out = []
    for key in (*_ATTRIBUTES, "content", "index"):
        before, after = d.before.get(key), d.after.get(key)
        if after is None or before == after:
            continue
        label = _content_label(a, after) if key == "content" else key
        after = _short(after.removeprefix("index "))
        if before is None or before == "absent":
            out.append(f"{label} {after}")
        else:
            out.append(f"{label} {_short(before.removeprefix('index '))} → {after}")
    return out


def _content_label(a: AnyAction, after: str) -> str:
    """``pin`` for the index a pinned task converges to, ``index`` for another's."""
    if not after.startswith("index "):
        return "content"
    pinned = isinstance(a.task.action, ExtractAction | UntarAction) and a.task.action.pin
    return "pin" if pinned else "index"


def _short(value: str) -> str:
    """Digests cut to 12 hex digits (the JSON plan has them whole)."""
    return _DIGEST.sub(r"\1:\2…", value)


def _totals(entries: Iterable[PlanEntry]) -> str:
    """The plan's plain and network bytes, fetched and uploaded (``traffic.py``)."""
    read, written = Traffic(), Traffic()
    for e in entries:
        if e.action is not None and e.action.verb.changes:
            read += fetched(e.action.travel)
            written += uploaded(e.action.travel)
    parts = []
    for label, t in (("from stores", read), ("uploads", written)):
        if t.plain:
            network = ("about " if t.estimated else "") + human_bytes(t.network)
            parts.append(f"{label}: {human_bytes(t.plain)}, network: {network}")
    return "<br>".join(parts) or "nothing travels"


def _deletion(a: AnyAction, redactor: Redactor) -> list[str]:
    d = a.travel.delete
    assert d is not None
    ids = list(d.ids[:MARKDOWN_IDS])
    more = (
        [f"… and {len(d.ids) - MARKDOWN_IDS} more (see the JSON plan)"]
        if len(d.ids) > MARKDOWN_IDS
        else []
    )
    return [
        f"<details><summary>{_html(a.task.name, redactor)}: {chunks(len(d.ids))} to delete"
        f" from <code>{_html(d.name, redactor)}</code></summary>",
        "",
        "```",
        *ids,
        *more,
        "```",
        "</details>",
    ]


def _entry_changes(a: AnyAction, redactor: Redactor) -> list[str]:
    """An untar's changed entries, one per line, in a folded block."""
    n = len(a.travel.changes)
    lines = [redactor.text(line.strip()) for line in change_lines(a.travel.changes)]
    fence = "`" * max([3, *(len(run) + 1 for line in lines for run in re.findall("`+", line))])
    what = "1 entry changes" if n == 1 else f"{n} entries change"
    return [
        f"<details><summary>{_html(a.task.name, redactor)}: {what}</summary>",
        "",
        fence,
        *lines,
        fence,
        "</details>",
    ]


def _lines(lines: list[str], redactor: Redactor) -> str:
    """Lines in one cell."""
    return "<br>".join(_text(line, redactor) for line in lines)


def _text(text: str, redactor: Redactor) -> str:
    """Text for a table cell or a line: one line, shown as written (the spaces around
    it dropped, as a cell drops them: after ``- `` four would start a code block)."""
    one_line = _LINE_BREAKS.sub(" ", redactor.text(text)).strip()
    escaped = _ACTIVE.sub(lambda m: "\\" + m.group(), one_line)
    return _BLOCK_START.sub(lambda m: f"{m.group()[:-1]}\\{m.group()[-1]}", escaped)


def _code(text: str, redactor: Redactor) -> str:
    """Text in a code span, outside a table: fenced by more backticks than it holds in
    a row (padded when it starts or ends with one)."""
    shown = _LINE_BREAKS.sub(" ", redactor.text(text))
    fence = "`" * (max((len(run) for run in re.findall("`+", shown)), default=0) + 1)
    if shown.startswith("`") or shown.endswith("`"):
        shown = f" {shown} "
    return f"{fence}{shown}{fence}"


def _cell_code(text: str, redactor: Redactor) -> str:
    """Text in code type, in a table cell. Not a code span: GitHub splits a row at each
    bar not escaped, in a code span too, and a backslash in the text just before a bar
    would escape the escape; so the text is escaped as any other, set in ``<code>``."""
    return f"<code>{_text(text, redactor)}</code>"


def _html(text: str, redactor: Redactor) -> str:
    """Text inside an HTML element, on the element's line."""
    return html.escape(_LINE_BREAKS.sub(" ", redactor.text(text)))
