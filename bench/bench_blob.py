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
so they are in the page cache. Every command is a fresh process, as a user
runs it: start-up counts (casync's is a few ms). The tables go to stdout and to
``bench/results.md``, as the section of this input size and settle choice (the
other sections stay). ``--snapshot`` freezes the desync_decl code measured
while others edit the tree.

    python bench/bench_blob.py                      # 1 GiB inputs, 3 runs
    python bench/bench_blob.py --size 256M --settle 0  # 256 MiB, right after another run
    python bench/bench_blob.py --size 64M --runs 1  # quick check
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import benchlib as bl

OPERATIONS = ("make", "extract", "chunker")
STORE_POLICY = {
    False: "a new store directory per run; all stores are removed only at the end (ext4 here"
    " creates files slowly for about a minute after many deletions).",
    True: "the store is removed right before each run (`--rm-between-runs`).",
}
RESULTS_MD = bl.REPO / "bench" / "results.md"
RESULTS_HEAD = """# desync-decl vs casync, blob mode

One section per input size, with and without the ext4 settle wait; a run replaces
the section of its size and settle choice and keeps the others. The sections here
come from runs like `python bench/bench_blob.py --snapshot --size 256M --runs 5`
(add `--settle 0` right after another run for the unsettled figures).
"""

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


# --------------------------------------------------------------- the tools


def make_cmd(tool: str, store: Path, index: Path, src: Path) -> list[str]:
    """Command line of ``make`` for ``tool``."""
    if tool == "ours":
        return [*bl.ours_cmd(), "make", "-s", str(store), str(index), str(src)]
    return ["casync", "make", f"--store={store}", str(index), str(src)]


def extract_cmd(tool: str, store: Path, index: Path, out: Path) -> list[str]:
    """Command line of ``extract`` for ``tool``."""
    if tool == "ours":
        return [*bl.ours_cmd(), "extract", "-s", str(store), str(index), str(out)]
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
    for dataset in bl.DATASETS:
        for tool in bl.TOOLS:
            stem = f"{dataset}.{tool}"
            for pattern in (f"{stem}.store*", f"{stem}.caibx", f"{stem}.out*", f".{stem}.out*"):
                found.update(workdir.glob(pattern))
    return sorted(found)


# --------------------------------------------------------------- benchmarks


class Bench(bl.BenchBase):
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
        super().__init__(workdir, runs)
        self.rm_between_runs = rm_between_runs
        self.made: dict[tuple[str, str], Paths] = {}  # the store extract reads
        self.extracts_checked = 0
        self.indexes_compared = 0

    def paths(self, dataset: str, tool: str, run: int) -> Paths:
        """This run's paths; with ``rm_between_runs`` every run reuses one store path."""
        return Paths.of(self.workdir, dataset, tool, 0 if self.rm_between_runs else run)

    def run_make(self, dataset: str, src: Path) -> None:
        """Time ``make`` into a fresh store for both tools; compare the indexes."""
        nbytes = src.stat().st_size
        cells = {tool: self.cell("make", dataset, tool, nbytes) for tool in bl.TOOLS}
        for run in range(1, self.runs + 1):
            for tool in bl.tool_order(run):
                p = self.paths(dataset, tool, run)
                bl.remove(p.store)
                bl.remove(p.index)
                cmd = make_cmd(tool, p.store, p.index, src)
                sample = bl.timed_run(cmd, self.workdir / f"{dataset}.{tool}.make.log")
                cells[tool].samples.append(sample)
                bl.log_sample("make", dataset, tool, run, sample, nbytes)
                self.made[dataset, tool] = p
            self.compare_indexes(dataset, run)
        self.note_stores(dataset)

    def compare_indexes(self, dataset: str, run: int) -> None:
        """Our .caibx must be byte-identical to casync's."""
        ours, theirs = (self.made[dataset, tool].index for tool in bl.TOOLS)
        self.indexes_compared += 1
        if ours.read_bytes() != theirs.read_bytes():
            self.problem(f"make {dataset} run {run}: {ours} differs from {theirs}")

    def note_stores(self, dataset: str) -> None:
        """Record chunk count and bytes of each tool's (last) store."""
        for tool in bl.TOOLS:
            files = [f for f in self.made[dataset, tool].store.rglob("*.cacnk") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            self.notes.append(f"{dataset} store of {tool}: {len(files)} chunk files, {size} bytes")

    def ensure_store(self, dataset: str, tool: str, src: Path) -> Paths:
        """Store and index for ``extract``; made untimed when ``make`` did not run."""
        if (dataset, tool) not in self.made:
            p = self.paths(dataset, tool, 0)
            bl.remove(p.store)
            bl.remove(p.index)
            bl.log(f"(untimed) make {dataset} {tool}")
            bl.timed_run(make_cmd(tool, p.store, p.index, src), self.workdir / "setup.log")
            self.made[dataset, tool] = p
        return self.made[dataset, tool]

    def run_extract(self, dataset: str, src: Path, digest: str) -> None:
        """Time ``extract`` into a fresh file for both tools; check the output."""
        nbytes = src.stat().st_size
        cells = {tool: self.cell("extract", dataset, tool, nbytes) for tool in bl.TOOLS}
        paths = {tool: self.ensure_store(dataset, tool, src) for tool in bl.TOOLS}
        for tool in bl.TOOLS:  # untimed warm-up: the first extract after make is often slower
            p = paths[tool]
            bl.timed_run(extract_cmd(tool, p.store, p.index, p.out), self.workdir / "warmup.log")
        for run in range(1, self.runs + 1):
            for tool in bl.tool_order(run):
                # A new output name per run: casync would seed from an existing output.
                # Each output is removed after its check, so the `sync` before the
                # next run commits the deletion instead of that run's fsync.
                out = Path(f"{paths[tool].out}.{run}")
                cmd = extract_cmd(tool, paths[tool].store, paths[tool].index, out)
                sample = bl.timed_run(cmd, self.workdir / f"{dataset}.{tool}.extract.log")
                cells[tool].samples.append(sample)
                bl.log_sample("extract", dataset, tool, run, sample, nbytes)
                self.extracts_checked += 1
                if bl.sha256_file(out) != digest:
                    self.problem(f"extract {dataset} {tool} run {run}: output differs from input")
                bl.remove(out)  # 1 GiB outputs left around crowd the page cache (reclaim)

    def run_chunker(self, src: Path) -> None:
        """Time our C chunker alone over ``src`` (one thread, 4 MiB blocks)."""
        nbytes = src.stat().st_size
        cell = self.cell("chunker", "rand", "ours", nbytes)
        log_file = self.workdir / "chunker.log"
        for run in range(1, self.runs + 1):
            sample = bl.timed_run([sys.executable, "-c", CHUNKER_SCRIPT, str(src)], log_file)
            cell.samples.append(sample)
            bl.log_sample("chunker", "rand", "ours", run, sample, nbytes)
        count, inner = log_file.read_text().split()
        self.notes.append(
            f"chunker: {count} chunks in rand; last run's scan loop alone took {float(inner):.2f} s"
            f" = {nbytes / 1e9 / float(inner):.2f} GB/s (the table's wall includes"
            " Python start-up and imports)"
        )


# ------------------------------------------------------------------ reports


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


def heading(args: argparse.Namespace) -> str:
    """The results.md section this run replaces: one per input size and settle choice."""
    wait = "no settle wait (`--settle 0`)" if args.settle == 0 else "after the settle wait"
    return f"{bl.size_label(args.size)} inputs, {wait}"


def report(bench: Bench, args: argparse.Namespace, command: str) -> str:
    """The report of this run: a section of results.md."""
    head = bl.report_head(heading(args), bench, args, command)
    parts = [
        *head[1:],  # its heading is the section's
        f"* {bl.settle_note(args.settle, bench.since_removal)}",
        bl.interleaved_note(
            "Inputs are warm in the page cache. Make: "
            + STORE_POLICY[args.rm_between_runs]
            + " Extract: from the last make's store (warm) into a new output file per run"
            " (removed after its check, before the next run's `sync`), after one untimed"
            " warm-up extract per tool."
        ),
        bl.measure_note("input bytes"),
        "",
        *bl.tables(bench.results),
        "",
        *bl.report_tail(bench, correctness(bench)),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = bl.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=OPERATIONS, help="run only this operation")
    parser.add_argument(
        "--rm-between-runs",
        action="store_true",
        help="remove the store right before each make run, as bench_casync.sh does"
        " (default: one store per run, all removed at the end)",
    )
    return bl.check_args(parser, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write bench/results.md."""
    return bl.main_locked(parse_args(argv), run)


def run(args: argparse.Namespace) -> int:
    """The benchmark proper, with the work dir locked."""
    ops = [args.only] if args.only else list(OPERATIONS)
    bench = Bench(args.workdir, args.runs, rm_between_runs=args.rm_between_runs)
    with bl.session(
        args, bench, lambda: bl.remove_leftovers(args.workdir, leftovers(args.workdir))
    ):
        for dataset in bl.DATASETS:
            if dataset != "rand" and ops == ["chunker"]:
                continue
            src = bl.ensure_input(args.workdir, dataset, args.size)
            digest = bl.sha256_file(src)
            bench.notes.append(f"input {dataset}: {src.stat().st_size} bytes, sha256 {digest}")
            if "make" in ops:
                bench.run_make(dataset, src)
            if "extract" in ops:
                bench.run_extract(dataset, src, digest)
            if "chunker" in ops and dataset == "rand":
                bench.run_chunker(src)
    text = report(bench, args, bl.command_line())
    bl.write_section(RESULTS_MD, RESULTS_HEAD, heading(args), text)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
