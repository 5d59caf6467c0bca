#!/usr/bin/env python3
"""Memory benchmark: peak RSS of ``make`` and ``extract`` per input size, ours and casync's.

Issue 18 asks for at most 40 MiB at any size. Inputs: ``random.Random(42)`` data of
each ``--sizes`` size, and sparse images of each ``--sparse`` size holding 32 MiB of
data in 32 extents (``bench_sparse.ensure_image``: the shape of a VM image, whose
index grows with its size while its data does not). Each tool makes the input into a
fresh local store, then extracts the index from that store to a new file; GNU time
reports each process's peak RSS (its own address space, not this script's). Peak RSS
does not depend on what else the machine runs, so one run per cell is the default;
``--runs`` takes the largest of several.

casync runs only where the input is at most ``--casync-max`` (it reads and chunks
every byte of a hole: a 64 GiB image takes it minutes). Stores, indexes and outputs
are removed after each size; the inputs are cached in the work dir.

    python bench/bench_memory.py                                  # 256M 1G 4G, 64G sparse
    python bench/bench_memory.py --sizes 1G --sparse '' --runs 3 --write
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import bench_sparse
import benchlib as bl

RESULTS_MD = bl.REPO / "bench" / "results-memory.md"
LIMIT_MIB = 40.0  # issue 18, item 5
SPARSE_DATA = 32 * bl.MiB
SPARSE_EXTENTS = 32
OPS = ("make", "extract")


def commands(tool: str, op: str, store: Path, index: Path, path: Path) -> list[str]:
    """``op`` of ``tool``: make ``path`` into ``store`` and ``index``, or extract to ``path``."""
    if op == "make":
        return bench_sparse.make_cmd(tool, store, index, path)
    if tool == "ours":
        return [*bl.ours_cmd(), "extract", "-s", str(store), str(index), str(path)]
    return ["casync", "extract", f"--store={store}", str(index), str(path)]


def peak_mib(cmd: Sequence[str], workdir: Path) -> float:
    """Peak RSS (MiB) of ``cmd``, which must succeed, from GNU time."""
    usage = workdir / "memory.time"
    done = subprocess.run(
        [*bl.time_prefix(usage), *cmd], cwd=workdir, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise bl.BenchError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return bl.read_usage(usage)[1] / 1024


def measure(src: Path, tool: str, runs: int, workdir: Path) -> dict[str, float]:
    """The largest peak RSS per op over ``runs`` make + extract rounds of ``src``."""
    peaks = dict.fromkeys(OPS, 0.0)
    for _ in range(runs):
        store, index, out = workdir / f"store-{tool}", workdir / f"{tool}.caibx", workdir / "out"
        try:
            for op, path in (("make", src), ("extract", out)):
                peak = peak_mib(commands(tool, op, store, index, path), workdir)
                peaks[op] = max(peaks[op], peak)
        finally:
            shutil.rmtree(store, ignore_errors=True)
            for path in (index, out):
                path.unlink(missing_ok=True)
    return peaks


def inputs(args: argparse.Namespace) -> list[tuple[str, Path, int]]:
    """(label, path, size) of every input, made (and cached) in the work dir."""
    found = [
        (f"random {bl.size_label(size)}", bl.ensure_input(args.workdir, "rand", size), size)
        for size in args.sizes
    ]
    for size in args.sparse:
        image = bench_sparse.ensure_image(args.workdir, size, SPARSE_DATA, SPARSE_EXTENTS)
        label = f"sparse {bl.size_label(size)} ({bl.size_label(SPARSE_DATA)} data)"
        found.append((label, image, size))
    return found


def table(rows: list[tuple[str, str, float, float | None]]) -> str:
    lines = [
        "| input | verb | ours peak RSS (MiB) | casync peak RSS (MiB) |",
        "|---|---|---:|---:|",
    ]
    for label, op, ours, casync in rows:
        mark = " **over**" if ours > LIMIT_MIB else ""
        theirs = f"{casync:.1f}" if casync is not None else "not run"
        lines.append(f"| {label} | {op} | {ours:.1f}{mark} | {theirs} |")
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[int]:
    return [bl.parse_size(s) for s in text.split(",") if s.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=parse_sizes, default="256M,1G,4G", help="random inputs")
    p.add_argument("--sparse", type=parse_sizes, default="64G", help="sparse images")
    p.add_argument("--runs", type=int, default=1, help="rounds per cell; the largest peak")
    p.add_argument(
        "--casync-max", type=bl.parse_size, default=bl.parse_size("4G"), help="largest for casync"
    )
    p.add_argument("--no-casync", action="store_true")
    p.add_argument("--workdir", type=Path, default=bl.DEFAULT_WORKDIR / "memory")
    p.add_argument("--write", action="store_true", help=f"write the table to {RESULTS_MD.name}")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, float, float | None]] = []
    for label, src, size in inputs(args):
        ours = measure(src, "ours", args.runs, args.workdir)
        theirs = None
        if not args.no_casync and size <= args.casync_max:
            theirs = measure(src, "casync", args.runs, args.workdir)
        for op in OPS:
            rows.append((label, op, ours[op], theirs[op] if theirs else None))
            casync = f"{theirs[op]:.1f} MiB" if theirs else "not run"
            bl.log(f"{label} {op}: ours {ours[op]:.1f} MiB, casync {casync}")
    text = table(rows)
    if not args.write:
        sys.stdout.write(text)
        return 0
    command = " ".join(["python bench/bench_memory.py", *(argv or sys.argv[1:])])
    head = "# Peak RSS of make and extract per input size\n\n"
    note = f"`{command}` at {bl.git_revision()}: GNU time's maximum resident set size, "
    note += f"the largest of {args.runs} run(s) per cell.\n\n"
    bl.write_report(head + note + text, RESULTS_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
