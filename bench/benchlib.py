"""What the by-hand benchmarks (bench_blob.py, bench_seed.py, bench_fleet.py) share.

Timing a command (``/usr/bin/time`` for CPU and peak RSS, a ``sync`` before
and after) or several started at once, the cached inputs, medians per result
cell, interleaving the two tools, the tables, the machine description, the
work-dir lock, the ext4 settle wait and the ``--snapshot`` copy of the package.
"""

from __future__ import annotations

import argparse
import compileall
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
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
RAND_PIECE = 16 * MiB
RAND_SEED = 42
REAL_TAR = ["tar", "--sort=name", "-cf", "-", "-C", "/", "usr/bin", "usr/lib", "usr/share"]
DATASETS = ("rand", "real")
TOOLS = ("ours", "casync")
TIME = "/usr/bin/time"  # GNU time: -f FORMAT -o FILE
DISTURBED_CPU_SHARE = 0.1  # of all CPUs' time during a run, used by other work
SETTLE_MARK = "stores-removed.stamp"  # its mtime: when a benchmark last removed stores
REPO = Path(__file__).resolve().parent.parent
BLOB_SYNCS = (
    "desync-decl syncs the store before writing the index and fsyncs the extract output,"
    " casync does neither"
)
DEFAULT_WORKDIR = Path("/var/tmp/desync-decl-bench")
# what --settle is for, and how long it waits by default
EXT4_SETTLE = (
    "ext4 without a journal skips inodes freed in the last 60 s, or 360 s while their"
    " inode-table block is dirty again"
)
SETTLE_S = 400.0


# ----------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Sample:
    """One timed run of a command."""

    wall: float  # seconds
    cpu: float  # user + sys seconds of the command (and its children)
    rss_kib: int  # peak resident set size of the command
    other_cpu: float  # busy CPU seconds of the whole machine minus ``cpu``
    sync_after: float  # seconds a ``sync`` took right after the command
    sync_cpu: float  # busy CPU seconds of the whole machine during that ``sync``


@dataclass
class Result:
    """All runs of one (operation, data set, tool) cell."""

    operation: str
    dataset: str
    tool: str
    nbytes: int
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None  # why the command failed (the cell then has no further runs)

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
    def machine_cpu(self) -> float:
        """Median busy CPU seconds of the whole machine from the start until the output is
        on disk: the command's own, the kernel threads' meanwhile (and any other work's),
        and the ``sync`` after. A tool that leaves its writes to the kernel has the
        flusher threads do the writeback work a tool that syncs does in its own time."""
        return statistics.median(s.cpu + s.other_cpu + s.sync_cpu for s in self.samples)

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


def timed_run(cmd: Sequence[str], log: Path, *, stdout: Path | None = None) -> Sample:
    """Run ``cmd`` after a ``sync``, stdout/stderr to ``log``; fail on non-zero exit.

    With ``stdout``, the command's stdout goes to that file instead and only
    its stderr to ``log``.

    A second, separately timed ``sync`` afterwards shows how much written data
    the command left unflushed (casync never syncs; we flush before finishing).

    CPU time and peak RSS come from ``/usr/bin/time``, not from ``os.wait4`` on
    a child of this process: Linux carries the pre-exec address space's high
    water mark into the child's ``ru_maxrss``, so a child forked from this
    (much larger) Python process would report at least our own RSS.
    """
    usage = log.with_suffix(".time")
    os.sync()
    with contextlib.ExitStack() as files:
        err = files.enter_context(log.open("wb"))
        out = files.enter_context(stdout.open("wb")) if stdout else err
        busy_before = machine_busy_seconds()
        start = time.perf_counter()
        proc = subprocess.run(
            [*time_prefix(usage), *cmd],
            stdout=out,
            stderr=err if stdout else subprocess.STDOUT,
            cwd=log.parent,  # the work dir: never the repo, which would shadow a snapshot
        )
        wall = time.perf_counter() - start
        busy = machine_busy_seconds() - busy_before
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    sync_after, sync_cpu = synced()
    cpu, rss_kib = read_usage(usage)
    return Sample(wall, cpu, rss_kib, max(0.0, busy - cpu), sync_after, sync_cpu)


def synced() -> tuple[float, float]:
    """``sync``: the seconds it took and the machine's busy CPU seconds meanwhile."""
    busy_before = machine_busy_seconds()
    start = time.perf_counter()
    os.sync()
    return time.perf_counter() - start, machine_busy_seconds() - busy_before


def time_prefix(usage: Path) -> list[str]:
    """GNU time in front of a command: its user + sys seconds and peak RSS go to ``usage``."""
    return [TIME, "-f", "%U %S %M", "-o", str(usage)]


def read_usage(usage: Path) -> tuple[float, int]:
    """(user + sys seconds, peak RSS KiB) that ``time_prefix`` wrote to ``usage``."""
    user, system, rss_kib = usage.read_text().split()[-3:]
    return float(user) + float(system), int(rss_kib)


@dataclass(frozen=True)
class Usage:
    """What one of several commands started together used (``timed_together``)."""

    wall: float  # seconds from the common start until this command ended
    cpu: float  # user + sys seconds of the command (and its children)
    rss_kib: int  # its peak resident set size


def timed_together(
    cmds: Sequence[Sequence[str]], logs: Sequence[Path], stdouts: Sequence[Path] | None = None
) -> tuple[Sample, list[Usage]]:
    """Start every command at once after a ``sync``, wait for all; fail if any failed.

    Command i writes its stderr (and its stdout, unless ``stdouts`` gives it a
    file of its own) to ``logs[i]``; each runs under GNU time, as ``timed_run``
    explains. The ``Sample`` is the group's: wall until the last command ended,
    CPU summed over the commands, the largest peak RSS, the other CPU time of the
    machine meanwhile, the ``sync`` after. The ``Usage`` list is per command.
    """
    usages = [log.with_suffix(".time") for log in logs]
    ended = [0.0] * len(cmds)
    os.sync()
    with contextlib.ExitStack() as files:
        procs = []
        busy_before = machine_busy_seconds()
        start = time.perf_counter()
        for i, cmd in enumerate(cmds):
            err = files.enter_context(logs[i].open("wb"))
            out = files.enter_context(stdouts[i].open("wb")) if stdouts else err
            procs.append(
                subprocess.Popen(
                    [*time_prefix(usages[i]), *cmd],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err if stdouts else subprocess.STDOUT,
                    cwd=logs[i].parent,
                )
            )

        def wait(i: int) -> None:
            procs[i].wait()
            ended[i] = time.perf_counter() - start

        waiters = [threading.Thread(target=wait, args=(i,)) for i in range(len(procs))]
        for waiter in waiters:
            waiter.start()
        for waiter in waiters:
            waiter.join()
        wall = max(ended, default=0.0)
        busy = machine_busy_seconds() - busy_before
    failed = [i for i, proc in enumerate(procs) if proc.returncode != 0]
    if failed:
        i = failed[0]
        tail = logs[i].read_text(errors="replace")[-2000:]
        raise BenchError(
            f"{len(failed)} of {len(cmds)} commands failed; {shlex.join(cmds[i])} exited"
            f" {procs[i].returncode}:\n{tail}"
        )
    sync_after, sync_cpu = synced()
    each = [Usage(ended[i], *read_usage(usages[i])) for i in range(len(cmds))]
    cpu = sum(u.cpu for u in each)
    rss = max((u.rss_kib for u in each), default=0)
    return Sample(wall, cpu, rss, max(0.0, busy - cpu), sync_after, sync_cpu), each


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


class BenchBase:
    """Result cells in table order, correctness problems and notes of one benchmark."""

    def __init__(self, workdir: Path, runs: int) -> None:
        self.workdir = workdir
        self.runs = runs
        self.results: list[Result] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.version = git_revision()  # of desync-decl, as measured
        self.since_removal: float | None = None  # s from the last removal of stores to timing

    def cell(self, operation: str, dataset: str, tool: str, nbytes: int) -> Result:
        """A new result cell, registered in table order."""
        result = Result(operation, dataset, tool, nbytes)
        self.results.append(result)
        return result

    def problem(self, text: str) -> None:
        """Record (and show at once) a correctness mismatch."""
        log(f"MISMATCH: {text}")
        self.problems.append(text)

    def note_load(self, when: str) -> None:
        """The load average now."""
        load1, load5, load15 = os.getloadavg()
        self.notes.append(f"Load average at the {when}: {load1:.2f} {load5:.2f} {load15:.2f}")

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
                if r.samples
            )
        )
        self.note_load("end")

    def note_sync_after(self, who_syncs: str = BLOB_SYNCS) -> None:
        """How long the ``sync`` right after each command took (median per cell).

        ``who_syncs`` says which of the measured commands flush their output.
        """
        self.notes.append(
            "`sync` right after the command, median s (unflushed writes the command left"
            f" behind; {who_syncs}): "
            + "; ".join(
                f"{r.operation} {r.dataset} {r.tool} "
                f"{statistics.median(s.sync_after for s in r.samples):.2f}"
                for r in self.results
                if r.samples
            )
        )


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


def ours_cmd() -> list[str]:
    """How to start desync-decl: the console script installed beside this interpreter,
    as an installed package is run. Not the first one on PATH: that can be a version
    manager's shim (pyenv's is a bash script that runs pyenv before Python: 55-80 ms of
    CPU per command here, measured with ``perf stat -r 15`` on a tiny extract, 145-167
    against 88-93 ms; casync's whole start-up is a few ms)."""
    beside = Path(sys.executable).parent / "desync-decl"
    if beside.is_file():
        return [str(beside)]
    exe = shutil.which("desync-decl")
    return [exe] if exe else [sys.executable, "-m", "desync_decl"]


# ------------------------------------------------------------------ reports

Column = tuple[str, Callable[[Result], str]]  # heading, cell text


def disturbed(sample: Sample) -> bool:
    """Whether other work took a noticeable share of the machine during this run."""
    return sample.other_cpu > DISTURBED_CPU_SHARE * sample.wall * (os.cpu_count() or 1)


def results_table(results: Sequence[Result], extra: Sequence[Column] = ()) -> str:
    """The main Markdown table, one row per (operation, data set, tool), plus ``extra`` columns.

    A cell whose command failed before any run succeeded shows its error instead.
    """
    heads = ["operation", "data", "tool", "wall s median (runs)", "MB/s", "CPU s", "peak RSS MiB"]
    heads += [head for head, _ in extra]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in results:
        cells = [r.operation, r.dataset, r.tool]
        if r.samples:
            runs = "/".join(f"{s.wall:.2f}" + ("*" if disturbed(s) else "") for s in r.samples)
            rate = f"{r.mb_per_s:.0f}"
            if r.operation == "chunker":
                rate += f" ({r.nbytes / 1e9 / r.wall:.2f} GB/s)"
            cells += [f"{r.wall:.2f} ({runs})", rate, f"{r.cpu:.2f}", f"{r.rss_mib:.1f}"]
        else:
            cells += [f"FAILED: {table_text(r.error or 'no runs')}", "-", "-", "-"]
        cells += [text(r) for _, text in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_text(text: str, limit: int = 300) -> str:
    """``text`` on one line, shortened, safe inside a Markdown table cell."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def ratio_table(results: Sequence[Result]) -> str:
    """ours/casync per (operation, data set): throughput = casync wall / our wall."""
    by_key = {(r.operation, r.dataset, r.tool): r for r in results if r.samples}
    lines = [
        "| operation | data | ours wall s | casync wall s | throughput ours/casync"
        " | until durable (+sync) ours/casync | CPU ours/casync"
        " | machine CPU until durable ours/casync | RSS ours/casync |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.tool != "ours" or not r.samples or (r.operation, r.dataset, "casync") not in by_key:
            continue
        c = by_key[(r.operation, r.dataset, "casync")]
        lines.append(
            f"| {r.operation} | {r.dataset} | {r.wall:.2f} | {c.wall:.2f} | {c.wall / r.wall:.2f}"
            f" | {c.durable / r.durable:.2f} | {r.cpu / c.cpu:.2f}"
            f" | {r.machine_cpu / c.machine_cpu:.2f} | {r.rss_mib / c.rss_mib:.1f} |"
        )
    if len(lines) == 2:
        lines.append("| (no cell where both tools ran) | | | | | | | | |")
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


def report_head(title: str, bench: BenchBase, args: argparse.Namespace, command: str) -> list[str]:
    """Title and the first bullets of a report: date, machine, version, command, work dir."""
    return [
        f"# {title}",
        "",
        f"* Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"* Machine: {machine_description()}",
        f"* desync-decl: {bench.version}",
        f"* Command: `{command}`",
        f"* Work dir: `{args.workdir}` (stores, indexes and outputs on the same disk as inputs)",
    ]


def interleaved_note(rest: str) -> str:
    """The bullet that says how the tools' runs alternate; ``rest`` follows in it."""
    return (
        "* Both tools run interleaved (run 1 of each, then run 2, ...; odd runs start with ours,"
        f" even runs with casync), each after a `sync`. {rest}"
    )


def measure_note(per: str) -> str:
    """The bullet that says how the table's figures were taken; MB/s counts ``per``."""
    return (
        f"* Median of the runs; MB/s = 10^6 {per} per median wall second;"
        " CPU = user + sys and RSS = peak resident set of the command, both from GNU"
        " `/usr/bin/time`."
    )


def tables(
    results: Sequence[Result],
    extra: Sequence[Column] = (),
    who_syncs: str = "desync-decl fsyncs what it writes before it exits, casync leaves that to"
    " the kernel",
) -> list[str]:
    """The results table (with ``extra`` columns), its legend and the ratio table.

    ``who_syncs`` says which of the measured commands flush their output.
    """
    return [
        results_table(results, extra),
        "",
        disturbed_legend(),
        "",
        "Ratios (throughput ours/casync = casync wall / our wall; above 1 means we are faster."
        f" 'Until durable' adds to each run the `sync` right after it: {who_syncs}."
        " 'Machine CPU until durable' is every CPU second the machine was busy from the"
        " command's start to the end of that `sync`: the command's own, the kernel's"
        " writeback threads' (what a tool that does not sync leaves to them) and any other"
        " work's, so read it with the Interference note below):",
        "",
        ratio_table(results),
    ]


def measured_part(bench: BenchBase, per: str, correctness: str, who_syncs: str) -> list[str]:
    """What follows a report's description: how figures were taken, the tables, notes
    and the correctness paragraph; MB/s counts ``per``."""
    return [
        measure_note(per),
        "",
        *tables(bench.results, who_syncs=who_syncs),
        "",
        *report_tail(bench, correctness),
    ]


def report_tail(bench: BenchBase, correctness: str) -> list[str]:
    """The notes and the correctness paragraph that end a report."""
    return ["Notes:", "", *(f"* {n}" for n in bench.notes), "", correctness]


def disturbed_legend() -> str:
    """The line explaining the table's ``*`` marks."""
    return (
        f"`*`: other work used more than {DISTURBED_CPU_SHARE:.0%} of the machine's CPU time"
        " during that run (see Interference below)."
    )


# ---------------------------------------------------------------------- main


def parse_size(text: str) -> int:
    """``1G``, ``64M``, ``64MiB``, ``512K`` (binary units) or a plain byte count."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    shift = {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]
    return int(match.group(1)) << shift


def base_parser(
    description: str, settle_what: str = EXT4_SETTLE, settle: float = SETTLE_S, size: int = GiB
) -> argparse.ArgumentParser:
    """The options every benchmark has: --size, --runs, --workdir, --snapshot, --settle.

    ``settle_what`` says what in this benchmark the ext4 settle wait (default
    ``settle`` seconds) protects; ``size`` is the default input size.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--size",
        type=parse_size,
        default=size,
        help=f"input size (default {size_label(size).removesuffix('iB')})",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell (default 3)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"inputs (cached), stores and outputs (default {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run desync-decl from a copy of the package taken at start (for a tree that is"
        " being edited while the benchmark runs)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=settle,
        help="before timing anything, wait until this many seconds have passed since an"
        f" earlier invocation removed its stores ({settle_what}; default {settle:.0f})",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject non-positive ``--runs`` and ``--size``."""
    if args.runs < 1 or args.size < 1:
        parser.error("--runs and --size must be positive")
    return args


def remove_leftovers(workdir: Path, paths: Iterable[Path]) -> None:
    """Remove stores, indexes and outputs; note the time when stores were among them."""
    paths = list(paths)
    stores = [p for p in paths if p.is_dir()]
    for path in paths:
        remove(path)
    if stores:
        os.sync()
        (workdir / SETTLE_MARK).touch()


def wait_settled(workdir: Path, settle: float) -> float | None:
    """Sleep until ``settle`` seconds have passed since stores were last removed here;
    how many seconds ago that was when the wait ended (None: no removal recorded)."""
    mark = workdir / SETTLE_MARK
    if not mark.exists():
        return None
    left = settle - (time.time() - mark.stat().st_mtime)
    if left > 0:
        log(f"stores were removed recently: waiting {left:.0f} s for ext4 to settle")
        time.sleep(left)
    return time.time() - mark.stat().st_mtime


def settle_note(settle: float, since_removal: float | None) -> str:
    """The bullet that says how long after the last removal of stores timing started."""
    when = (
        "with no earlier removal of stores recorded in this work dir"
        if since_removal is None
        else f"{since_removal:.0f} s after this work dir's stores were last removed"
    )
    return f"Timing started {when} (`--settle {settle:g}`; {EXT4_SETTLE})"


def compile_package(workdir: Path) -> str:
    """Byte-compile the desync_decl that the benchmarked commands import; where it is.

    An installed package is compiled (pip does it); without the .pyc files, and with
    PYTHONDONTWRITEBYTECODE set, every command would compile ~200 modules from
    source again (~0.1 s of each process's start-up). A fresh ``--snapshot`` has none.
    """
    where = subprocess.run(
        [sys.executable, "-c", "import desync_decl; print(desync_decl.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
    ).stdout.strip()
    package = Path(where).parent
    if not compileall.compile_dir(package, quiet=1):
        raise BenchError(f"cannot byte-compile {package}")
    return str(package)


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
    where = compile_package(workdir)
    if not where.startswith(str(dest)):
        raise BenchError(f"the snapshot is not used: desync_decl imports from {where}")
    return where


def note_version(bench: BenchBase, revision: str, snapshot: str | None) -> None:
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


def main_locked(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """Create and lock the work dir, then ``run(args)``; a BenchError exits 2."""
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive(args.workdir):
            return run(args)
    except BenchError as e:
        log(f"error: {e}")
        return 2


@contextlib.contextmanager
def session(
    args: argparse.Namespace,
    bench: BenchBase,
    clean: Callable[[], None],
    who_syncs: str = BLOB_SYNCS,
) -> Iterator[None]:
    """Around the measurements: ``clean()`` before (then the ext4 settle wait) and after.

    Also takes the ``--snapshot``, notes the load at the start, and after the
    measurements the interference, the ``sync`` times and the version measured.
    """
    clean()  # what an interrupted earlier invocation left
    since_removal = wait_settled(args.workdir, args.settle)
    snapshot = take_snapshot(args.workdir) if args.snapshot else None
    if snapshot is None:
        compile_package(args.workdir)
    bench.since_removal = since_removal
    bench.note_load("start")
    try:
        yield
        bench.note_interference()
        bench.note_sync_after(who_syncs)
    finally:
        clean()
    note_version(bench, bench.version, snapshot)


def command_line() -> str:
    """How this benchmark was started, for the report."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def write_report(text: str, path: Path) -> None:
    """Print the report and write it to ``path``."""
    print(text)
    path.write_text(text)
    log(f"written {path}")


def kept_section(path: Path, heading: str) -> str:
    """The section ``## heading`` of ``path`` (to the next ``## `` or the end), or "":
    what a report rewriting ``path`` carries over from another benchmark."""
    if not path.exists():
        return ""
    for part in re.split(r"^(?=## )", path.read_text(), flags=re.M):
        if part.startswith(f"## {heading}\n"):
            return part
    return ""


def put_section(path: Path, heading: str, text: str) -> None:
    """Print ``text`` (starting ``## heading``) and put it in ``path`` in place of the
    section of that name, or at the end; the rest of ``path`` stays as it is."""
    print(text)
    old = path.read_text() if path.exists() else ""
    found = kept_section(path, heading)
    new = old.replace(found, text) if found else old.rstrip("\n") + "\n\n" + text
    path.write_text(new.lstrip("\n"))
    log(f"written {path} (section: {heading})")


def write_section(path: Path, head: str, heading: str, text: str) -> None:
    """Print ``text`` and put it in ``path`` as the section ``## heading``, replacing the
    section of that name and keeping the others (in heading order) under ``head``."""
    print(text)
    sections: dict[str, str] = {}
    if path.exists():
        for part in re.split(r"^## ", path.read_text(), flags=re.M)[1:]:
            name, _, body = part.partition("\n")
            sections[name] = body
    sections[heading] = "\n" + text.lstrip("\n")
    body = "".join(f"## {name}\n{sections[name]}" for name in sorted(sections, key=_section_order))
    path.write_text(head.rstrip("\n") + "\n\n" + body)
    log(f"written {path} (section: {heading})")


def _section_order(heading: str) -> tuple[int, str]:
    """Sections by input size (the number of bytes their heading starts with), then name."""
    match = re.match(r"(\d+)([KMG]i)B", heading)
    size = int(match.group(1)) << {"Ki": 10, "Mi": 20, "Gi": 30}[match.group(2)] if match else 0
    return size, heading
