"""What a run under faults or a crash may end as, and the checks that decide it.

A run either succeeds with the right bytes (``ok``) or fails with one clear line
(``clean_error``: exit 1, one ``desync-decl: error: ...`` line, no traceback,
nothing half-written). Anything else is a finding: ``unclear_error`` (a
traceback, several lines, another exit status), ``wrong_output`` (a wrong or
half-written file under its final name), ``corrupt_store`` (``verify`` finds a
bad chunk), ``data_lost`` (something that was there before is gone).

``Tally`` counts verdicts into the rows RELIABILITY.md shows (an unclear error
counts as wrong output there, and is quoted in the notes).
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from desync_decl.cli.console import Console
from desync_decl.cli.main import main

PREFIX = "desync-decl: error: "
COUNTS = ("runs", "ok", "clean_errors", "wrong_output", "corrupt_store", "data_lost")
# worst first: a run with several problems is counted under the worst one
OUTCOMES = ("data_lost", "corrupt_store", "wrong_output", "unclear_error", "clean_error", "ok")


@dataclass
class CliRun:
    code: int
    out: str
    err: str


def run_cli(*argv: object) -> CliRun:
    """The CLI in this process (as the ``cli`` fixture runs it); an exception that
    escapes ``main`` is a run that ended with a traceback (exit status -1)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main([str(a) for a in argv], Console(out=out, err=err, binary_out=io.BytesIO()))
    except SystemExit as e:
        code = int(e.code or 0)
    except Exception:
        return CliRun(-1, out.getvalue(), err.getvalue() + traceback.format_exc())
    return CliRun(code, out.getvalue(), err.getvalue())


def error_problem(code: int, err: str) -> str | None:
    """Why a failed run's stderr is not one clear error line (None if it is)."""
    lines = err.splitlines()
    if "Traceback" in err:
        return f"traceback: {lines[-1] if lines else ''}"
    if code != 1:
        return f"exit status {code}: {err.strip()[:200]}"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr: {err.strip()[:200]}"
    if not lines[0].startswith(PREFIX) or len(lines[0]) < len(PREFIX) + 10:
        return f"not a clear error line: {lines[0][:200]}"
    return None


@dataclass
class Verdict:
    outcome: str
    detail: str = ""  # the error line, or what was wrong
    injected: collections.Counter[str] = field(default_factory=collections.Counter)
    leftovers: int = 0  # temp files left beside final names (harmless, but counted)

    def __post_init__(self) -> None:
        assert self.outcome in OUTCOMES, self.outcome

    @property
    def acceptable(self) -> bool:
        return self.outcome in ("ok", "clean_error")


def judge(run: CliRun, problems: Mapping[str, str | None]) -> tuple[str, str]:
    """The outcome of ``run`` given the checks' findings (outcome -> what, or None)."""
    for outcome in OUTCOMES[:3]:
        if problems.get(outcome):
            return outcome, str(problems[outcome])
    if run.code == 0:
        return "ok", ""
    why = error_problem(run.code, run.err)
    if why is not None:
        return "unclear_error", why
    return "clean_error", run.err.strip()


@contextlib.contextmanager
def environment(changes: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``changes`` for the duration (restored after)."""
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def store_problem(location: str | Path) -> str | None:
    """What ``desync-decl verify`` finds wrong with a store (None when it is clean)."""
    run = run_cli("verify", "-s", location)
    if run.code == 0:
        return None
    return f"verify -s {location}: exit {run.code}: {run.err.strip()[:300]}"


def temp_files(folder: Path) -> list[Path]:
    """Temporary files (ours start with a dot) anywhere under ``folder``."""
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob(".*") if p.is_file()]


def report_row(area: str, fault: str, target: str, notes: str = "", **counts: int) -> dict:
    """One row of RELIABILITY.md: what was tried, its ``COUNTS`` (0 unless given), notes."""
    unknown = set(counts) - set(COUNTS)
    if unknown:
        raise ValueError(f"not a count of a row: {', '.join(sorted(unknown))}")
    return {
        "area": area,
        "fault": fault,
        "target": target,
        **{k: counts.get(k, 0) for k in COUNTS},
        "notes": notes,
    }


class Tally:
    """Verdicts counted per (area, fault, target): the rows of RELIABILITY.md."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], dict] = {}

    def add(self, area: str, fault: str, target: str, verdict: Verdict) -> None:
        row = self._rows.setdefault(
            (area, fault, target),
            {
                **report_row(area, fault, target),
                "_unclear": [],
                "_injected": collections.Counter(),
                "_leftovers": 0,
                "_seconds": 0.0,
                "_notes": [],
            },
        )
        row["runs"] += 1
        if verdict.outcome == "unclear_error":  # a traceback or a muddled error: wrong
            row["_unclear"].append(verdict.detail)
        key = {"clean_error": "clean_errors", "unclear_error": "wrong_output"}
        row[key.get(verdict.outcome, verdict.outcome)] += 1
        row["_injected"].update(verdict.injected)
        row["_leftovers"] += verdict.leftovers

    def add_time(self, area: str, fault: str, target: str, seconds: float) -> None:
        self._rows[(area, fault, target)]["_seconds"] += seconds

    def note(self, area: str, fault: str, target: str, text: str) -> None:
        self._rows[(area, fault, target)]["_notes"].append(text)

    def rows(self) -> list[dict]:
        """Rows with the fixed keys and a ``notes`` string (injections, unclear errors)."""
        out = []
        for row in self._rows.values():
            notes = list(row["_notes"])
            if row["_injected"]:
                injected = ", ".join(f"{k} x{n}" for k, n in sorted(row["_injected"].items()))
                notes.append(f"injected {injected}")
            if row["_unclear"]:
                unclear = row["_unclear"]
                notes.append(f"{len(unclear)} unclear errors (counted wrong), e.g. {unclear[0]}")
            if row["_leftovers"]:
                notes.append(f"{row['_leftovers']} temp files left behind (not under final names)")
            notes.append(f"{row['_seconds']:.1f} s")
            public = {k: v for k, v in row.items() if not k.startswith("_")}
            out.append({**public, "notes": "; ".join(notes)})
        return out
