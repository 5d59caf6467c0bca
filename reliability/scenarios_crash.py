"""Crashes and full disks for RELIABILITY.md.

SIGKILL (``crash_runs.kill_trial``) at delays drawn from a seeded RNG over the
length of an uninterrupted run (measured first), during make, extract,
extract -k, chop, prune, tar, tar -i, untar, untar -i and apply on a 32 MiB blob (a tree
of 120 files for tar and untar); each kill is followed by the checks and a
rerun that must converge. Then each writing verb on a full 1 MiB tmpfs
(``disk_full``; needs root to mount), where a clean error is the right outcome.

Budgets: ``quick`` kills each verb 5 times, ``full`` 40 times.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from reliability.crash_runs import CASES, CrashBench, CrashCase, delays, kills_through_runs
from reliability.disk_full import CASES as FULL_DISK_CASES
from reliability.disk_full import Inputs, full_disk_trial, small_tmpfs
from reliability.fault_runs import timed
from reliability.verdicts import Tally, report_row

KILLS = {"quick": 5, "full": 40}
FULL_DISK_RUNS = {"quick": 1, "full": 3}
TARGET = "local store, 32 MiB blob (tree: 120 files)"


def run(budget: str) -> list[dict]:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        root = Path(tmp)
        (root / "bench").mkdir()
        bench = CrashBench(root / "bench")
        for case in CASES:
            _kills(tally, bench, case, KILLS[budget])
        rows = tally.rows()
        rows += _full_disks(root, FULL_DISK_RUNS[budget])
    return rows


def _kills(tally: Tally, bench: CrashBench, case: CrashCase, n: int) -> None:
    fault = f"SIGKILL during {case.name}"
    chosen = delays(bench, case, n, random.Random(f"crash {case.name}"))
    killed = 0
    trials = kills_through_runs(bench, case, chosen)
    while True:
        done, seconds = timed(lambda: next(trials, None))
        if done is None:
            break
        verdict, was_running = done
        killed += was_running
        tally.add("crash", fault, TARGET, verdict)
        tally.add_time("crash", fault, TARGET, seconds)
    tally.note(
        "crash",
        fault,
        TARGET,
        f"{killed} of {n} killed mid-run (delays {min(chosen):.2f}-{max(chosen):.2f} s, the"
        f" rest had finished; start-up {bench.startup:.2f} s); each then rerun to the end",
    )


def _full_disks(root: Path, n: int) -> list[dict]:
    tally = Tally()
    fault = "disk full (1 MiB tmpfs)"
    if os.geteuid() != 0:
        return [
            report_row(
                "crash", fault, ", ".join(FULL_DISK_CASES), "not run: mounting a tmpfs needs root"
            )
        ]
    inputs = Inputs.make(root)
    for name in FULL_DISK_CASES:
        for i in range(n):
            work = root / f"full-{FULL_DISK_CASES.index(name)}-{i}"
            work.mkdir()
            with small_tmpfs(root / "small") as mnt:
                verdict, seconds = timed(
                    lambda c=name, w=work, m=mnt: full_disk_trial(inputs, c, m, w)
                )
            tally.add("crash", fault, name, verdict)
            tally.add_time("crash", fault, name, seconds)
    for name in FULL_DISK_CASES:
        tally.note("crash", fault, name, "a clean error is the right outcome here")
    return tally.rows()
