"""Run every reliability scenario and write RELIABILITY.md at the repository root.

    python reliability/run_all.py [--budget quick|full] [--only NAME ...] [--out FILE]

Every ``reliability/scenarios_*.py`` module is imported and its
``run(budget) -> list[dict]`` called; each row says what was tried (area,
fault, target), how often (runs) and how it ended (ok, clean errors, wrong
output, corrupt store, data lost). A module that raises is a row too. The
report adds the load figures (rows carrying ``load``), the machine, the
date, the command and the git commit.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from reliability.verdicts import COUNTS, report_row  # noqa: E402 (after the path is set)

ORDER = ["faults", "crash", "fuzz", "security", "load"]  # the rest after these, by name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", choices=["quick", "full"], default="quick")
    p.add_argument("--only", nargs="*", help="scenario module names (e.g. fuzz load)")
    p.add_argument("--out", default=str(ROOT / "RELIABILITY.md"))
    args = p.parse_args(argv)
    started = time.monotonic()
    results = []
    for name in scenario_names():
        if args.only and name not in args.only:
            continue
        began = time.monotonic()
        print(f"[run_all] {name} ({args.budget}) ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"reliability.scenarios_{name}")
            rows = module.run(args.budget)
        except Exception as e:  # a broken scenario is reported, the others still run
            rows = [failed_row(name, e)]
        results.append((name, rows, time.monotonic() - began))
        print(f"[run_all] {name}: {len(rows)} rows in {time.monotonic() - began:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
    command = "python reliability/run_all.py --budget " + args.budget
    if args.only:
        command += " --only " + " ".join(args.only)
    text = render(results, args.budget, command, time.monotonic() - started)
    Path(args.out).write_text(text)
    print(f"[run_all] wrote {args.out} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    bad = sum(r.get(k, 0) for _, rows, _ in results for r in rows for k in COUNTS[3:])
    return 1 if bad else 0


def scenario_names() -> list[str]:
    found = sorted(
        p.stem.removeprefix("scenarios_") for p in Path(__file__).parent.glob("scenarios_*.py")
    )
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def failed_row(name: str, error: Exception) -> dict:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return report_row(
        name,
        "(scenario failed to run)",
        f"scenarios_{name}.py",
        f"{type(error).__name__}: {error}{where}",
        wrong_output=1,
    )


# --- the report ---------------------------------------------------------------------------


def render(
    results: list[tuple[str, list[dict], float]], budget: str, command: str, took: float
) -> str:
    rows = [r for _, rs, _ in results for r in rs]
    totals = {k: sum(int(r.get(k, 0)) for r in rows) for k in COUNTS}
    out = [
        "# Reliability",
        "",
        "What was tried against desync-decl: faults on the wire, crashes, hostile input,",
        "attacks on the servers and load, each with how often and how it ended. Regenerate",
        "with the command below; nothing in this file is written by hand.",
        "",
        f"- **Command:** `{command}` ({budget} budget, {took / 60:.1f} min)",
        f"- **Date:** {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Commit:** {git_commit()}",
        f"- **Machine:** {machine()}",
        f"- **Scenarios:** {', '.join(f'{n} ({t:.0f} s)' for n, _, t in results)}",
        "",
        f"**Totals:** {totals['runs']:,} runs, {totals['ok']:,} ok, {totals['clean_errors']:,} "
        f"clean errors, **{totals['wrong_output']} wrong outputs, {totals['corrupt_store']} "
        f"corrupt stores, {totals['data_lost']} data lost**.",
        "",
        "Outcome columns: *ok* = the operation succeeded with correct bytes; *clean error* =",
        "it failed with a one-line documented error and left nothing wrong behind; *wrong* =",
        "anything else (a wrong file, a crash, a traceback, a finding); *corrupt store* = a",
        "chunk under its final name that does not hash to it; *data lost* = a target or store",
        "that lost data it had.",
        "",
    ]
    for name, rs, _ in results:
        out += [f"## {name}", "", *table(rs), ""]
    load = [r["load"] for r in rows if "load" in r]
    if load:
        out += load_section(load[0])
    missing = [n for n in ("faults", "crash") if n not in {name for name, _, _ in results}]
    if missing:
        out += [
            "## Not yet run",
            "",
            *(
                f"- `reliability/scenarios_{n}.py` was not there when this report was made: "
                "re-run the command once it is."
                for n in missing
            ),
            "",
        ]
    return "\n".join(out)


def table(rows: list[dict]) -> list[str]:
    head = ["area", "fault", "target", "runs", "ok", "clean errors", "wrong", "corrupt store"]
    head += ["data lost", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.get("area", ""), r.get("fault", ""), r.get("target", "")]
        cells += [f"{int(r.get(k, 0)):,}" for k in COUNTS]
        cells.append(r.get("notes", ""))
        lines.append(
            "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return lines


def load_section(f: dict) -> list[str]:
    rss = f["rss_mib"]
    samples = ", ".join(f"{v:.0f}" for v in rss[:: max(1, len(rss) // 12)])
    return [
        "## Load figures",
        "",
        f"`desync-decl chunk-server` over a local store of {f['chunks']} real chunks (random data,",
        f"about 64 KiB each), {f['connections']} connections from wrk on loopback for "
        f"{f['seconds']:.0f} s, GETs of random existing chunk URLs; {f['cpus']} CPUs shared by "
        "wrk and the server.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests/s | {f['requests_per_s']:,.0f} |",
        f"| throughput | {f['mb_per_s']:,.0f} MB/s |",
        f"| latency p50 / p90 / p99 / max | {f['p50_ms']:.1f} / {f['p90_ms']:.1f} / "
        f"{f['p99_ms']:.1f} / {f['max_ms']:.1f} ms |",
        f"| errors (connect, read, write, timeout, non-2xx) | {f['errors']} "
        f"({', '.join(f'{k} {v}' for k, v in f['error_kinds'].items())}) |",
        f"| requests | {f['requests']:,} |",
        f"| server RSS (VmRSS, every second) | {min(rss):.1f} to {max(rss):.1f} MiB; "
        f"after warm-up {f['rss_growth_mib']:+.1f} MiB |",
        f"| RSS samples (MiB) | {samples} |",
        *([f"| note | {f['quiet']} |"] if f.get("quiet") else []),
        "",
    ]


def git_commit() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "desync_decl", "reliability")
    return f"`{commit}`" + (
        " (with uncommitted changes in desync_decl/ or reliability/)" if dirty else ""
    )


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


if __name__ == "__main__":
    sys.exit(main())
