#!/usr/bin/env python3
"""Start-up of desync-decl commands, as whole processes (run by hand).

Every command a user types is a fresh Python process, so start-up is part of
its wall time (casync's is a few ms). This times ``--help``, a verb's
``--help``, verbs doing trivial work on a 1 MiB blob and a no-op ``apply`` of
40 converged tasks, each ``--runs`` times, the commands interleaved, and prints
the medians next to ``python -c pass`` (the interpreter alone) as Markdown;
``bench/results-startup.md`` gets the same. The package is byte-compiled first,
as an installed one is. For where the time goes: ``python -X importtime -m
desync_decl VERB ...``.

    python bench/bench_startup.py            # 21 runs of each
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

RESULTS_MD = bl.REPO / "bench" / "results-startup.md"
TASKS = 40  # half make, half extract tasks in the apply manifest


def fixtures(work: Path) -> None:
    """A 1 MiB blob in a store, and a manifest of TASKS tasks applied once (so converged)."""
    (work / "blob").write_bytes(os.urandom(1 << 20))
    desync("make", "-s", "store", "blob.caibx", "blob", cwd=work)
    tasks = []
    for i in range(TASKS // 2):
        (work / f"src{i}").write_bytes(os.urandom(300_000))
        tasks += [
            f"  - name: make {i}",
            f"    make: {{source: src{i}, index: idx{i}.caibx, store: local}}",
            f"  - name: extract {i}",
            f"    extract: {{index: idx{i}.caibx, path: out{i}, stores: [local]}}",
        ]
    (work / "m.yaml").write_text(
        "\n".join(["version: 1", "stores:", "  local: {url: store}", "tasks:", *tasks]) + "\n"
    )
    desync("apply", "--state-dir", "state", "m.yaml", cwd=work)


def desync(*argv: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "desync_decl", *argv], cwd=cwd, check=True, capture_output=True
    )


COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "desync-decl --help": [sys.executable, "-m", "desync_decl", "--help"],
    "desync-decl info --help": [sys.executable, "-m", "desync_decl", "info", "--help"],
    "desync-decl info (1 MiB index)": [sys.executable, "-m", "desync_decl", "info", "blob.caibx"],
    "desync-decl extract (1 MiB)": [
        *[sys.executable, "-m", "desync_decl", "extract"],
        *["-s", "store", "blob.caibx", "copy"],
    ],
    f"desync-decl apply ({TASKS} converged tasks)": [
        *[sys.executable, "-m", "desync_decl", "apply"],
        *["--state-dir", "state", "m.yaml"],
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command (default 21)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        where = bl.compile_package(work)  # the desync_decl the commands (run there) import
        fixtures(work)
        for _ in range(args.runs):
            for name, cmd in COMMANDS.items():
                start = time.perf_counter()
                subprocess.run(cmd, cwd=work, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    rows = [
        f"| `{name}` | {statistics.median(t) * 1000:.0f} | {min(t) * 1000:.0f} |"
        for name, t in times.items()
    ]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join(
        [
            "# desync-decl start-up, whole processes",
            "",
            f"* Machine: {bl.machine_description()}; load average at the end: {load}",
            f"* desync-decl: {where} (byte-compiled); this tree: {bl.git_revision()}",
            f"* Command: `{bl.command_line()}`; the commands interleaved, {args.runs} runs each",
            "",
            "| command | median ms | min ms |",
            "|---|---|---|",
            *rows,
        ]
    )
    bl.write_report(text + "\n", RESULTS_MD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
