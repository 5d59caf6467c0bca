"""Hostile input: the fuzz targets under atheris for a time budget, and the hypothesis
fuzz tests (``tests/test_fuzz_*.py``), as rows for RELIABILITY.md.

One atheris process per target (``fuzz/harness.py``), two at a time, each for
the budget's seconds with a 1 GiB RSS limit and a 10 s limit per input; any
exception a target lets through, a timeout or passing the RSS limit counts as
wrong output and is quoted in the notes. Without atheris (``pip install
atheris``; prebuilt wheels for CPython on x86-64 Linux) the rows say so.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reliability.verdicts import report_row

ROOT = Path(__file__).resolve().parents[1]
SECONDS = {"quick": 15, "full": 120}
PARALLEL = 2
TARGETS = {  # name -> (what is fuzzed, largest input)
    "index": ("index parser (formats/index.py)", 1 << 16),
    "chunk": ("chunk decoder (formats/chunkfile.py)", 1 << 16),
    "encrypted_chunk": ("encrypted chunk formats (stores/converters.py)", 1 << 16),
    "catar": ("catar decoder (formats/catar/)", 1 << 19),
    "manifest": ("manifest loader (manifest/)", 1 << 14),
}


def run(budget: str) -> list[dict]:
    seconds = SECONDS[budget]
    rows = _hypothesis_rows()
    if importlib.util.find_spec("atheris") is None:
        for what, _ in TARGETS.values():
            rows.append(_row(what, f"atheris, {seconds} s", 0, 0, 0, 0, "atheris not installed"))
        return rows
    with ThreadPoolExecutor(PARALLEL) as pool:
        rows += list(pool.map(lambda name: _atheris(name, seconds), TARGETS))
    return rows


def _row(target: str, fault: str, runs: int, ok: int, clean: int, wrong: int, notes: str) -> dict:
    counts = {"runs": runs, "ok": ok, "clean_errors": clean, "wrong_output": wrong}
    return report_row("hostile input", fault, target, notes, **counts)


def _atheris(name: str, seconds: int) -> dict:
    what, max_len = TARGETS[name]
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    findings = work / "findings.jsonl"
    try:
        run = subprocess.run(
            [
                sys.executable, "-m", "reliability.fuzz.harness", name, str(findings),
                f"-max_total_time={seconds}", "-rss_limit_mb=1024", "-timeout=10",
                f"-max_len={max_len}", "-print_final_stats=1", "-close_fd_mask=1",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120,
            env={**_env(), "TMPDIR": str(work)},
        )  # fmt: skip
        counts_file = findings.with_suffix(".counts.json")
        counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
        found = (
            [json.loads(line) for line in findings.read_text().splitlines()]
            if (findings.exists())
            else []
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats = dict(re.findall(r"^stat::(\w+):\s+(\d+)", run.stderr, re.M))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", run.stderr)
    runs = int(stats.get("number_of_executed_units", 0))
    notes = [f"{runs / seconds:,.0f} inputs/s"]
    if cov:
        notes.append(f"coverage {cov[-1][0]} edges, {cov[-1][1]} features")
    peak = counts.get("peak_rss_mib") or stats.get("peak_rss_mb", "?")  # see harness.py
    notes.append(f"peak RSS {peak} MiB")
    wrong = int(counts.get("findings", 0))
    notes += [f"FINDING {f['error']} at {f['where']}" for f in found]
    if run.returncode != 0:  # libFuzzer stopped early: timeout, out of memory, a crash
        wrong += 1
        reason = re.findall(r"ERROR: libFuzzer: ([^\n]+)", run.stderr) or [run.stderr[-300:]]
        notes.append(f"FINDING libFuzzer stopped (exit {run.returncode}): {reason[0]}")
    return _row(
        what,
        f"atheris coverage-guided, {seconds} s",
        runs,
        int(counts.get("accepted", 0)),
        int(counts.get("refused", 0)),
        wrong,
        "; ".join(notes),
    )


def _hypothesis_rows() -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
             *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_fuzz_*.py"))],
            cwd=ROOT, capture_output=True, text=True, env=_env(),
        )  # fmt: skip
        cases = ET.parse(report).getroot().iter("testcase") if report.exists() else []
        by_file: dict[str, list[bool]] = {}
        for case in cases:
            failed = case.find("failure") is not None or case.find("error") is not None
            by_file.setdefault(case.get("classname", "?"), []).append(not failed)
    rows = []
    for module, results in sorted(by_file.items()):
        rows.append(
            _row(
                module.rsplit(".", 1)[-1].removeprefix("test_fuzz_") + " (hypothesis)",
                "mutated real vectors and own outputs, bombs, hostile sizes",
                len(results),
                sum(results),
                0,
                len(results) - sum(results),
                f"{module.replace('.', '/')}.py: tests passed, each runs up to 400 examples",
            )
        )
    return rows


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "CI"}


if __name__ == "__main__":
    for row in run(sys.argv[1] if len(sys.argv) > 1 else "quick"):
        print(json.dumps(row))
