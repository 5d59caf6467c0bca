#!/usr/bin/env python3
"""Blob-mode benchmark of desync-decl against casync on this machine (run by hand).

For two inputs of ``--size`` bytes (``rand``: ``random.Random(42)`` bytes;
``real``: a tar stream of /usr), and for each tool, this times ``make`` into a
fresh local store and ``extract`` of that index into a fresh file, ``--runs``
times each, and reports medians of wall time, CPU time (user + sys) and peak
RSS of the command. It also times our C chunker alone on ``rand`` and
checks as it goes that every extract reproduces its input and that our
``.caibx`` is byte-identical to casync's.

Both tools run in the same invocation, their runs interleaved (alternating
which goes first), so that drift in the machine's speed affects both alike.
Every ``make`` writes a new store directory and every ``extract`` a removed
output file, each after a ``sync``; inputs are read once beforehand (hashed),
so they are in the page cache. The tables go to stdout and to
``bench/results.md``. ``--snapshot`` freezes the desync_decl code measured
while others edit the tree.

    python bench/bench_blob.py                      # 1 GiB inputs, 3 runs
    python bench/bench_blob.py --size 64M --runs 1  # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
RAND_PIECE = 16 * MiB
RAND_SEED = 42
REAL_TAR = ["tar", "--sort=name", "-cf", "-", "-C", "/", "usr/bin", "usr/lib", "usr/share"]
DATASETS = ("rand", "real")
TOOLS = ("ours", "casync")
OPERATIONS = ("make", "extract", "chunker")
TIME = "/usr/bin/time"  # GNU time: -f FORMAT -o FILE
STORE_POLICY = {
    False: "a new store directory per run; all stores are removed only at the end (ext4 here"
    " creates files slowly for about a minute after many deletions).",
    True: "the store is removed right before each run (`--rm-between-runs`).",
}
DISTURBED_CPU_SHARE = 0.1  # of all CPUs' time during a run, used by other work
SETTLE_MARK = "stores-removed.stamp"  # its mtime: when this script last removed stores
REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "bench" / "results.md"

CHUNKER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from desync_decl.chunker import iter_chunks
    t = time.perf_counter()
    with open(sys.argv[1], "rb", buffering=0) as f:
        n = sum(1 for _ in iter_chunks(f))
    print(n, time.perf_counter() - t)
    """
)


# ----------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Sample:
    """One timed run of a command."""

    wall: float  # seconds
    cpu: float  # user + sys seconds of the command (and its children)
    rss_kib: int  # peak resident set size of the command
    other_cpu: float  # busy CPU seconds of the whole machine minus ``cpu``
    sync_after: float  # seconds a ``sync`` took right after the command


@dataclass
class Result:
    """All runs of one (operation, data set, tool) cell."""

    operation: str
    dataset: str
    tool: str
    nbytes: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def wall(self) -> float:
        """Median wall seconds."""
        return statistics.median(s.wall for s in self.samples)

    @property
    def durable(self) -> float:
        """Median seconds until the output is on disk: the run plus the ``sync`` after it."""
        return statistics.median(s.wall + s.sync_after for s in self.samples)

    @property
    def cpu(self) -> float:
        """Median user + sys seconds."""
        return statistics.median(s.cpu for s in self.samples)

    @property
    def rss_mib(self) -> float:
        """Median peak RSS in MiB."""
        return statistics.median(s.rss_kib for s in self.samples) / 1024

    @property
    def mb_per_s(self) -> float:
        """Input megabytes (10^6) per median wall second."""
        return self.nbytes / 1e6 / self.wall


class BenchError(RuntimeError):
    """A benchmarked command failed or produced a wrong result."""


def timed_run(cmd: Sequence[str], log: Path) -> Sample:
    """Run ``cmd`` after a ``sync``, stdout/stderr to ``log``; fail on non-zero exit.

    A second, separately timed ``sync`` afterwards shows how much written data
    the command left unflushed (casync never syncs; we flush before finishing).

    CPU time and peak RSS come from ``/usr/bin/time``, not from ``os.wait4`` on
    a child of this process: Linux carries the pre-exec address space's high
    water mark into the child's ``ru_maxrss``, so a child forked from this
    (much larger) Python process would report at least our own RSS.
    """
    usage = log.with_suffix(".time")
    os.sync()
    with log.open("wb") as out:
        busy_before = machine_busy_seconds()
        start = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%U %S %M", "-o", str(usage), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,  # the work dir: never the repo, which would shadow a snapshot
        )
        wall = time.perf_counter() - start
        busy = machine_busy_seconds() - busy_before
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    start = time.perf_counter()
    os.sync()
    sync_after = time.perf_counter() - start
    user, system, rss_kib = usage.read_text().split()[-3:]
    cpu = float(user) + float(system)
    return Sample(wall, cpu, int(rss_kib), max(0.0, busy - cpu), sync_after)


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of all CPUs since boot (``/proc/stat``), for interference checks.

    The difference over a run, minus the command's own CPU time, is what other
    processes and kernel threads (including writeback of the command's own
    writes) used meanwhile.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file (also pulls it into the page cache)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# -------------------------------------------------------------------- inputs


def size_label(size: int) -> str:
    """``1GiB``, ``64MiB`` or a byte count, for file names and headings."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB")):
        if size % unit == 0:
            return f"{size // unit}{name}"
    return f"{size}B"


def make_rand(path: Path, size: int) -> None:
    """Write ``size`` bytes of one ``random.Random(42)`` stream, 16 MiB at a time."""
    rng = random.Random(RAND_SEED)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        left = size
        while left:
            piece = min(RAND_PIECE, left)
            f.write(rng.randbytes(piece))
            left -= piece
    tmp.rename(path)


def make_real(path: Path, size: int) -> None:
    """Write the first ``size`` bytes of a sorted tar of /usr/{bin,lib,share}."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        tar = subprocess.Popen(REAL_TAR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert tar.stdout is not None
        left = size
        while left:
            block = tar.stdout.read(min(MiB, left))
            if not block:
                break
            f.write(block)
            left -= len(block)
        tar.stdout.close()
        if left == 0:
            tar.kill()
        tar.wait()
    tmp.rename(path)


def ensure_input(workdir: Path, dataset: str, size: int) -> Path:
    """Create the cached input once; say so when ``real`` came out short."""
    path = workdir / f"{dataset}-{size_label(size)}"
    if not path.exists():
        log(f"creating {path} ...")
        (make_rand if dataset == "rand" else make_real)(path, size)
    actual = path.stat().st_size
    if actual < size:
        log(f"NOTE: {path} is only {actual} bytes (< {size}); using what there is")
    return path


# --------------------------------------------------------------- the tools


def ours_cmd() -> list[str]:
    """How to start desync-decl."""
    exe = shutil.which("desync-decl")
    return [exe] if exe else [sys.executable, "-m", "desync_decl"]


def make_cmd(tool: str, store: Path, index: Path, src: Path) -> list[str]:
    """Command line of ``make`` for ``tool``."""
    if tool == "ours":
        return [*ours_cmd(), "make", "-s", str(store), str(index), str(src)]
    return ["casync", "make", f"--store={store}", str(index), str(src)]


def extract_cmd(tool: str, store: Path, index: Path, out: Path) -> list[str]:
    """Command line of ``extract`` for ``tool``."""
    if tool == "ours":
        return [*ours_cmd(), "extract", "-s", str(store), str(index), str(out)]
    return ["casync", "extract", f"--store={store}", str(index), str(out)]


@dataclass(frozen=True)
class Paths:
    """Where one tool's store, index and output for one data set live."""

    store: Path
    index: Path
    out: Path

    @classmethod
    def of(cls, workdir: Path, dataset: str, tool: str, run: int) -> Paths:
        """Paths under ``workdir`` (the same disk as the inputs); one store per ``run``."""
        stem = workdir / f"{dataset}.{tool}"
        return cls(Path(f"{stem}.store{run}"), Path(f"{stem}.caibx"), Path(f"{stem}.out{run}"))


def leftovers(workdir: Path) -> list[Path]:
    """Stores, indexes, outputs and temp files a benchmark leaves in ``workdir``."""
    found: set[Path] = set()
    for dataset in DATASETS:
        for tool in TOOLS:
            stem = f"{dataset}.{tool}"
            for pattern in (f"{stem}.store*", f"{stem}.caibx", f"{stem}.out*", f".{stem}.out*"):
                found.update(workdir.glob(pattern))
    return sorted(found)


# --------------------------------------------------------------- benchmarks


class Bench:
    """Runs the measurements and collects results and correctness problems.

    By default every ``make`` run writes a store of its own and all stores are
    removed only at the end. On this machine's ext4 (no journal), creating
    files within about a minute of deleting many others is several times
    slower for both tools (``find_inode_bit`` skips each recently deleted
    inode), which would make the timings depend on how long ago the previous
    store was removed. ``rm_between_runs`` restores the remove-then-make cycle
    of ``bench_casync.sh``.
    """

    def __init__(self, workdir: Path, runs: int, *, rm_between_runs: bool = False) -> None:
        self.workdir = workdir
        self.runs = runs
        self.rm_between_runs = rm_between_runs
        self.results: list[Result] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.made: dict[tuple[str, str], Paths] = {}  # the store extract reads
        self.extracts_checked = 0
        self.version = git_revision()  # of desync-decl, as measured
        self.indexes_compared = 0

    def cell(self, operation: str, dataset: str, tool: str, nbytes: int) -> Result:
        """A new result cell, registered in table order."""
        result = Result(operation, dataset, tool, nbytes)
        self.results.append(result)
        return result

    def problem(self, text: str) -> None:
        """Record (and show at once) a correctness mismatch."""
        log(f"MISMATCH: {text}")
        self.problems.append(text)

    def paths(self, dataset: str, tool: str, run: int) -> Paths:
        """This run's paths; with ``rm_between_runs`` every run reuses one store path."""
        return Paths.of(self.workdir, dataset, tool, 0 if self.rm_between_runs else run)

    def run_make(self, dataset: str, src: Path) -> None:
        """Time ``make`` into a fresh store for both tools; compare the indexes."""
        nbytes = src.stat().st_size
        cells = {tool: self.cell("make", dataset, tool, nbytes) for tool in TOOLS}
        for run in range(1, self.runs + 1):
            for tool in tool_order(run):
                p = self.paths(dataset, tool, run)
                remove(p.store)
                remove(p.index)
                cmd = make_cmd(tool, p.store, p.index, src)
                sample = timed_run(cmd, self.workdir / f"{dataset}.{tool}.make.log")
                cells[tool].samples.append(sample)
                log_sample("make", dataset, tool, run, sample, nbytes)
                self.made[dataset, tool] = p
            self.compare_indexes(dataset, run)
        self.note_stores(dataset)

    def compare_indexes(self, dataset: str, run: int) -> None:
        """Our .caibx must be byte-identical to casync's."""
        ours, theirs = (self.made[dataset, tool].index for tool in TOOLS)
        self.indexes_compared += 1
        if ours.read_bytes() != theirs.read_bytes():
            self.problem(f"make {dataset} run {run}: {ours} differs from {theirs}")

    def note_stores(self, dataset: str) -> None:
        """Record chunk count and bytes of each tool's (last) store."""
        for tool in TOOLS:
            files = [f for f in self.made[dataset, tool].store.rglob("*.cacnk") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            self.notes.append(f"{dataset} store of {tool}: {len(files)} chunk files, {size} bytes")

    def ensure_store(self, dataset: str, tool: str, src: Path) -> Paths:
        """Store and index for ``extract``; made untimed when ``make`` did not run."""
        if (dataset, tool) not in self.made:
            p = self.paths(dataset, tool, 0)
            remove(p.store)
            remove(p.index)
            log(f"(untimed) make {dataset} {tool}")
            timed_run(make_cmd(tool, p.store, p.index, src), self.workdir / "setup.log")
            self.made[dataset, tool] = p
        return self.made[dataset, tool]

    def run_extract(self, dataset: str, src: Path, digest: str) -> None:
        """Time ``extract`` into a fresh file for both tools; check the output."""
        nbytes = src.stat().st_size
        cells = {tool: self.cell("extract", dataset, tool, nbytes) for tool in TOOLS}
        paths = {tool: self.ensure_store(dataset, tool, src) for tool in TOOLS}
        for tool in TOOLS:  # untimed warm-up: the first extract after make is often slower
            p = paths[tool]
            timed_run(extract_cmd(tool, p.store, p.index, p.out), self.workdir / "warmup.log")
        for run in range(1, self.runs + 1):
            for tool in tool_order(run):
                # A new output name per run: casync would seed from an existing output.
                # Each output is removed after its check, so the `sync` before the
                # next run commits the deletion instead of that run's fsync.
                out = Path(f"{paths[tool].out}.{run}")
                cmd = extract_cmd(tool, paths[tool].store, paths[tool].index, out)
                sample = timed_run(cmd, self.workdir / f"{dataset}.{tool}.extract.log")
                cells[tool].samples.append(sample)
                log_sample("extract", dataset, tool, run, sample, nbytes)
                self.extracts_checked += 1
                if sha256_file(out) != digest:
                    self.problem(f"extract {dataset} {tool} run {run}: output differs from input")
                remove(out)  # 1 GiB outputs left around crowd the page cache (reclaim)

    def run_chunker(self, src: Path) -> None:
        """Time our C chunker alone over ``src`` (one thread, 4 MiB blocks)."""
        nbytes = src.stat().st_size
        cell = self.cell("chunker", "rand", "ours", nbytes)
        log_file = self.workdir / "chunker.log"
        for run in range(1, self.runs + 1):
            sample = timed_run([sys.executable, "-c", CHUNKER_SCRIPT, str(src)], log_file)
            cell.samples.append(sample)
            log_sample("chunker", "rand", "ours", run, sample, nbytes)
        count, inner = log_file.read_text().split()
        self.notes.append(
            f"chunker: {count} chunks in rand; last run's scan loop alone took {float(inner):.2f} s"
            f" = {nbytes / 1e9 / float(inner):.2f} GB/s (the table's wall includes"
            " Python start-up and imports)"
        )

    def note_interference(self) -> None:
        """Say how much CPU other work used during each cell's timed runs."""
        worst = max((s.other_cpu for r in self.results for s in r.samples), default=0.0)
        self.notes.append(
            "Interference: CPU seconds used outside the measured command during each run"
            " (other processes, kernel threads incl. writeback of the command's own writes;"
            f" {os.cpu_count()} CPUs): worst run {worst:.1f} s; "
            + "; ".join(
                f"{r.operation} {r.dataset} {r.tool} "
                + "/".join(f"{s.other_cpu:.1f}" for s in r.samples)
                for r in self.results
            )
        )
        load1, load5, load15 = os.getloadavg()
        self.notes.append(f"Load average at the end: {load1:.2f} {load5:.2f} {load15:.2f}")

    def note_sync_after(self) -> None:
        """How long the ``sync`` right after each command took (median per cell)."""
        self.notes.append(
            "`sync` right after the command, median s (unflushed writes the command left"
            " behind; desync-decl syncs the store before writing the index and fsyncs the"
            " extract output, casync does neither): "
            + "; ".join(
                f"{r.operation} {r.dataset} {r.tool} "
                f"{statistics.median(s.sync_after for s in r.samples):.2f}"
                for r in self.results
            )
        )


def tool_order(run: int) -> tuple[str, ...]:
    """Odd runs start with ours, even runs with casync, so neither always goes first."""
    return TOOLS if run % 2 else TOOLS[::-1]


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def log_sample(op: str, dataset: str, tool: str, run: int, s: Sample, nbytes: int) -> None:
    """One progress line per timed run."""
    log(
        f"{op:8} {dataset} {tool:6} run {run}: wall {s.wall:6.2f} s"
        f" ({nbytes / 1e6 / s.wall:6.0f} MB/s)  cpu {s.cpu:6.2f} s  rss {s.rss_kib / 1024:6.1f} MiB"
        f"  other cpu {s.other_cpu:5.1f} s  sync after {s.sync_after:5.2f} s"
    )


# ------------------------------------------------------------------ reports


def disturbed(sample: Sample) -> bool:
    """Whether other work took a noticeable share of the machine during this run."""
    return sample.other_cpu > DISTURBED_CPU_SHARE * sample.wall * (os.cpu_count() or 1)


def results_table(results: Sequence[Result]) -> str:
    """The main Markdown table, one row per (operation, data set, tool)."""
    lines = [
        "| operation | data | tool | wall s median (runs) | MB/s | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        runs = "/".join(f"{s.wall:.2f}" + ("*" if disturbed(s) else "") for s in r.samples)
        rate = f"{r.mb_per_s:.0f}"
        if r.operation == "chunker":
            rate += f" ({r.nbytes / 1e9 / r.wall:.2f} GB/s)"
        lines.append(
            f"| {r.operation} | {r.dataset} | {r.tool} | {r.wall:.2f} ({runs}) | {rate}"
            f" | {r.cpu:.2f} | {r.rss_mib:.1f} |"
        )
    return "\n".join(lines)


def ratio_table(results: Sequence[Result]) -> str:
    """ours/casync per (operation, data set): throughput = casync wall / our wall."""
    by_key = {(r.operation, r.dataset, r.tool): r for r in results}
    lines = [
        "| operation | data | ours wall s | casync wall s | throughput ours/casync"
        " | until durable (+sync) ours/casync | CPU ours/casync | RSS ours/casync |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.tool != "ours" or (r.operation, r.dataset, "casync") not in by_key:
            continue
        c = by_key[(r.operation, r.dataset, "casync")]
        lines.append(
            f"| {r.operation} | {r.dataset} | {r.wall:.2f} | {c.wall:.2f} | {c.wall / r.wall:.2f}"
            f" | {c.durable / r.durable:.2f} | {r.cpu / c.cpu:.2f} | {r.rss_mib / c.rss_mib:.1f} |"
        )
    return "\n".join(lines)


def machine_description() -> str:
    """nproc, CPU model, memory, kernel, Python and casync versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text()
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    casync = subprocess.run(["casync", "--version"], capture_output=True, text=True).stdout
    return ", ".join(
        [
            f"nproc {os.cpu_count()}",
            model.group(1) if model else "unknown CPU",
            f"{int(mem.group(1)) / MiB:.1f} GiB RAM" if mem else "unknown RAM",
            f"Linux {platform.release()}",
            f"Python {platform.python_version()}",
            casync.strip() or "casync (version unknown)",
        ]
    )


def git_revision() -> str:
    """The working tree's commit, marked when it has local changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "desync_decl", "ext"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(no git revision)"
    return rev + (" + uncommitted changes" if dirty else "")


def correctness(bench: Bench) -> str:
    """What was checked and what did not match."""
    checked = (
        f"Correctness: {bench.extracts_checked} extract outputs compared with their input"
        f" (SHA-256), {bench.indexes_compared} pairs of .caibx compared byte for byte (ours vs"
        " casync)"
    )
    if not bench.problems:
        return checked + ": all identical."
    return checked + ". MISMATCHES:\n\n" + "\n".join(f"* {p}" for p in bench.problems)


def report(bench: Bench, args: argparse.Namespace, command: str) -> str:
    """The full Markdown report."""
    parts = [
        f"# desync-decl vs casync, blob mode ({size_label(args.size)} inputs)",
        "",
        f"* Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"* Machine: {machine_description()}",
        f"* desync-decl: {bench.version}",
        f"* Command: `{command}`",
        f"* Work dir: `{args.workdir}` (stores, indexes and outputs on the same disk as inputs)",
        "* Both tools run interleaved (run 1 of each, then run 2, ...; odd runs start with ours,"
        " even runs with casync), each after a `sync`. Inputs are warm in the page cache."
        " Make: " + STORE_POLICY[args.rm_between_runs] + " Extract: from the last make's store"
        " (warm) into a new output file per run (removed after its check, before the next"
        " run's `sync`), after one untimed warm-up extract per tool.",
        "* Median of the runs; MB/s = 10^6 input bytes per median wall second;"
        " CPU = user + sys and RSS = peak resident set of the command, both from GNU"
        " `/usr/bin/time`.",
        "",
        results_table(bench.results),
        "",
        f"`*`: other work used more than {DISTURBED_CPU_SHARE:.0%} of the machine's CPU time"
        " during that run (see Interference below).",
        "",
        "Ratios (throughput ours/casync = casync wall / our wall; above 1 means we are faster."
        " 'Until durable' adds to each run the `sync` right after it: desync-decl fsyncs what"
        " it writes before it exits, casync leaves that to the kernel):",
        "",
        ratio_table(bench.results),
        "",
        "Notes:",
        "",
        *(f"* {n}" for n in bench.notes),
        "",
        correctness(bench),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- main


def parse_size(text: str) -> int:
    """``1G``, ``64M``, ``64MiB``, ``512K`` (binary units) or a plain byte count."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    shift = {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]
    return int(match.group(1)) << shift


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=GiB, help="input size (default 1G)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell (default 3)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp/desync-decl-bench"),
        help="inputs (cached), stores and outputs (default /var/tmp/desync-decl-bench)",
    )
    parser.add_argument("--only", choices=OPERATIONS, help="run only this operation")
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run desync-decl from a copy of the package taken at start (for a tree that is"
        " being edited while the benchmark runs)",
    )
    parser.add_argument(
        "--rm-between-runs",
        action="store_true",
        help="remove the store right before each make run, as bench_casync.sh does"
        " (default: one store per run, all removed at the end)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=70.0,
        help="before timing anything, wait until this many seconds have passed since an"
        " earlier invocation removed its stores (ext4 skips recently deleted inodes for"
        " about a minute; default 70)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.size < 1:
        parser.error("--runs and --size must be positive")
    return args


def remove_leftovers(workdir: Path) -> None:
    """Remove stores, indexes and outputs; note the time when stores were among them."""
    paths = leftovers(workdir)
    stores = [p for p in paths if p.is_dir()]
    for path in paths:
        remove(path)
    if stores:
        os.sync()
        (workdir / SETTLE_MARK).touch()


def wait_settled(workdir: Path, settle: float) -> None:
    """Sleep until ``settle`` seconds have passed since stores were last removed here."""
    mark = workdir / SETTLE_MARK
    left = settle - (time.time() - mark.stat().st_mtime) if mark.exists() else 0.0
    if left > 0:
        log(f"stores were removed recently: waiting {left:.0f} s for ext4 to settle")
        time.sleep(left)


def take_snapshot(workdir: Path) -> str:
    """Copy the desync_decl package (with its built extension) and put it on PYTHONPATH.

    Children then import this frozen copy, even through the ``desync-decl``
    script, so edits made to the tree during a long run do not mix versions.
    Returns where the children's ``desync_decl`` comes from.
    """
    dest = workdir / "snapshot"
    remove(dest)
    shutil.copytree(
        REPO / "desync_decl", dest / "desync_decl", ignore=shutil.ignore_patterns("__pycache__")
    )
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(dest), os.environ.get("PYTHONPATH", "")) if p
    )
    where = subprocess.run(
        [sys.executable, "-c", "import desync_decl; print(desync_decl.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
    ).stdout.strip()
    if not where.startswith(str(dest)):
        raise BenchError(f"the snapshot is not used: desync_decl imports from {where}")
    return str(Path(where).parent)


def note_version(bench: Bench, revision: str, snapshot: str | None) -> None:
    """Which desync-decl was measured; warn when the tree changed under a live run."""
    if snapshot:
        bench.version = f"{revision}, run from a snapshot in {snapshot}"
    elif git_revision() != revision or "uncommitted" in revision:
        bench.version = f"{git_revision()} at the end, {revision} at the start"
        bench.notes.append(
            "WARNING: desync-decl had local edits or changed during the run; rows may mix"
            " versions (see --snapshot)."
        )


@contextlib.contextmanager
def exclusive(workdir: Path) -> Iterator[None]:
    """Hold a lock on ``workdir``: two benchmarks there would wreck each other's timings."""
    with (workdir / "lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(f"another benchmark is running in {workdir}") from None
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write bench/results.md."""
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(args.workdir):
            return run(args)
    except BenchError as e:
        log(f"error: {e}")
        return 2


def run(args: argparse.Namespace) -> int:
    """The benchmark proper, with the work dir locked."""
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    ops = [args.only] if args.only else list(OPERATIONS)
    remove_leftovers(args.workdir)  # from an interrupted earlier invocation
    wait_settled(args.workdir, args.settle)
    bench = Bench(args.workdir, args.runs, rm_between_runs=args.rm_between_runs)
    revision = git_revision()
    snapshot = take_snapshot(args.workdir) if args.snapshot else None
    load1, load5, load15 = os.getloadavg()
    bench.notes.append(f"Load average at the start: {load1:.2f} {load5:.2f} {load15:.2f}")
    for dataset in DATASETS:
        if dataset != "rand" and ops == ["chunker"]:
            continue
        src = ensure_input(args.workdir, dataset, args.size)
        digest = sha256_file(src)
        bench.notes.append(f"input {dataset}: {src.stat().st_size} bytes, sha256 {digest}")
        if "make" in ops:
            bench.run_make(dataset, src)
        if "extract" in ops:
            bench.run_extract(dataset, src, digest)
        if "chunker" in ops and dataset == "rand":
            bench.run_chunker(src)
    bench.note_interference()
    bench.note_sync_after()
    remove_leftovers(args.workdir)
    note_version(bench, revision, snapshot)
    text = report(bench, args, command)
    print(text)
    RESULTS_MD.write_text(text)
    log(f"written {RESULTS_MD}")
    return 1 if bench.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
