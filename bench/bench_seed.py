#!/usr/bin/env python3
"""Seeded-extract benchmark of desync-decl against casync on this machine (run by hand).

For each input v1 of ``--size`` bytes (``rand`` and ``real``, the cached
inputs of bench_blob.py) it makes v2: v1 with 5% of its 64 KiB blocks
(64 KiB-aligned, picked by ``random.Random(7)``) overwritten with random
bytes, cached beside v1. Untimed, ``casync make`` puts the chunks of v1 and
of v2 into one store and writes ``v1.caibx`` beside v1 and the index of v2.
Then it times rebuilding v2 from that store with v1 as the seed, ``--runs``
times per tool, interleaved: ``casync extract --seed=v1`` (casync chunks the
seed itself on every run) and ``desync-decl extract --seed v1.caibx`` (the
seed's index, with its blob beside it: desync's syntax). Every output must
equal v2, and the bytes we fetch from the store must equal the bytes of the
chunks of v2 that v1 lacks.

Unless ``--no-xfs``, both tools then extract v2 once more onto a fresh XFS
loop image (reflink=1, needs root) holding a copy of v1, to show how much disk
space the output takes beyond what it shares with the seed.

The tables go to stdout and to ``bench/results-seed.md``; ``--snapshot``
freezes the desync_decl code measured while others edit the tree.

    python bench/bench_seed.py                      # 1 GiB inputs, 3 runs
    python bench/bench_seed.py --size 64M --runs 1  # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import benchlib as bl

BLOCK = 64 * 1024  # v2 overwrites whole blocks of this size, aligned to it
CHANGED_SHARE = 0.05  # of v1's blocks
V2_SEED = 7  # random.Random seed that picks the blocks and their new bytes
XFS_MIN_IMAGE = 3 * bl.GiB
RESULTS_MD = bl.REPO / "bench" / "results-seed.md"
TITLE = "desync-decl vs casync, seeded extract"
EXTRACT = "seeded extract"
EXTRACT_XFS = "seeded extract, XFS"
# casync's own figures for this seeded extract, measured earlier on this machine
# (1 GiB, 5% unaligned 64 KiB blocks, v2's chunks in a store of their own)
CASYNC_EARLIER_MB_S = {"rand": 77, "real": 60}
CASYNC_STATS = {  # casync -v summary lines
    "store_chunks": r"Chunk requests fulfilled from local store: (\d+)",
    "store_bytes": r"Bytes used from local store: (\S+)",
    "seed_bytes": r"Bytes used from local seed: (\S+)",
    "cloned": r"Bytes cloned through reflinks: (\S+)",
}


# -------------------------------------------------------------------- inputs


def changed_blocks(size: int) -> list[int]:
    """Indexes of the 64 KiB blocks v2 overwrites (5% of the whole blocks), ascending."""
    nblocks = size // BLOCK
    return sorted(random.Random(V2_SEED).sample(range(nblocks), round(nblocks * CHANGED_SHARE)))


def ensure_v2(v1: Path) -> Path:
    """``<v1>-v2``: a copy of v1 with the changed blocks overwritten by random bytes (cached)."""
    path = v1.with_name(f"{v1.name}-v2")
    if not path.exists():
        bl.log(f"creating {path} ...")
        tmp = path.with_name(f"{path.name}.tmp")
        shutil.copyfile(v1, tmp)
        rng = random.Random(V2_SEED + 1)
        with tmp.open("r+b") as f:
            for block in changed_blocks(v1.stat().st_size):
                f.seek(block * BLOCK)
                f.write(rng.randbytes(BLOCK))
        tmp.rename(path)
    if path.stat().st_size != v1.stat().st_size:
        raise bl.BenchError(f"{path} does not have the size of {v1}: remove it to remake it")
    return path


@dataclass(frozen=True)
class Files:
    """One data set's inputs and the store and indexes made from them."""

    dataset: str
    v1: Path
    v2: Path
    store: Path
    v1_index: Path  # beside v1, named as desync expects for ``--seed``
    v2_index: Path

    @classmethod
    def of(cls, workdir: Path, dataset: str, v1: Path, v2: Path) -> Files:
        """The paths under ``workdir`` (the same disk as the inputs)."""
        return cls(
            dataset,
            v1,
            v2,
            workdir / f"seed.{dataset}.store",
            v1.with_name(f"{v1.name}.caibx"),
            workdir / f"seed.{dataset}.v2.caibx",
        )

    def out(self, tool: str, run: int | str, where: Path | None = None) -> Path:
        """A new output path per run (casync would seed from an existing output)."""
        return (where or self.store.parent) / f"seed.{self.dataset}.{tool}.out{run}"


def leftovers(workdir: Path) -> list[Path]:
    """Stores, indexes, outputs and XFS image this benchmark leaves in ``workdir``."""
    patterns = ["seed.*.store", "seed.*.caibx", "seed.*.out*", ".seed.*.out*", "seed.xfs.*"]
    patterns += [f"{dataset}-*.caibx" for dataset in bl.DATASETS]
    return sorted({p for pattern in patterns for p in workdir.glob(pattern)})


@dataclass(frozen=True)
class Missing:
    """The chunks of v2 that v1 lacks: what a seeded extract must take from the store."""

    chunks: int  # of v2, in index order
    unique: int  # distinct ids of v2
    missing: int  # distinct ids of v2 not in v1
    missing_bytes: int  # their plain bytes, each id counted once
    missing_uses: int  # places in v2 that use one of them
    missing_uses_bytes: int

    @classmethod
    def between(cls, v1_index: Path, v2_index: Path) -> Missing:
        """Decode both indexes and take the set difference of the chunk ids."""
        from desync_decl.formats.index import decode  # the tree's decoder; only reads files

        old = decode(v1_index.read_bytes(), str(v1_index)).unique_ids()
        new = decode(v2_index.read_bytes(), str(v2_index))
        lacking = [chunk for chunk in new if chunk.id not in old]
        sizes = {chunk.id: chunk.size for chunk in lacking}
        return cls(
            len(new),
            len(new.unique_ids()),
            len(sizes),
            sum(sizes.values()),
            len(lacking),
            sum(chunk.size for chunk in lacking),
        )


# --------------------------------------------------------------- the tools


def seeded_extract_cmd(tool: str, files: Files, seed: Path, out: Path) -> list[str]:
    """Rebuild v2 into ``out`` from the store with ``seed`` (a copy of v1) as the seed."""
    if tool == "ours":
        seed_index = seed.with_name(f"{seed.name}.caibx")
        opts = ["extract", "-s", str(files.store), "--seed", str(seed_index), "--print-stats"]
        return [*bl.ours_cmd(), *opts, str(files.v2_index), str(out)]
    # -v prints the statistics (bench_casync.sh measured with it too)
    opts = ["-v", "extract", f"--store={files.store}", f"--seed={seed}"]
    return ["casync", *opts, str(files.v2_index), str(out)]


@dataclass(frozen=True)
class Fetched:
    """Where one extract says its bytes came from."""

    store_bytes: int | None  # exact (ours); None when only casync's rounded figure is known
    store: str  # table text: bytes (chunks) taken from the store
    seed: str  # table text: bytes taken from the seed, of which cloned

    @classmethod
    def from_ours(cls, stats_file: Path) -> Fetched:
        """From our ``--print-stats`` JSON."""
        try:
            stats = json.loads(stats_file.read_text())
        except (OSError, ValueError) as e:
            return cls(None, f"no stats ({e})", "?")
        copied = stats.get("bytes-copied-from-seeds", 0)
        cloned = stats.get("bytes-cloned-from-seeds", 0)
        store = stats.get("bytes-from-store")
        return cls(
            store,
            f"{store} B ({stats.get('chunks-from-store', '?')} chunks)",
            f"{copied + cloned} B ({cloned} B cloned)",
        )

    @classmethod
    def from_casync(cls, log_file: Path) -> Fetched:
        """From the summary ``casync -v`` prints (sizes rounded, binary units)."""
        text = log_file.read_text(errors="replace")
        found = {key: re.search(pattern, text) for key, pattern in CASYNC_STATS.items()}
        got = {key: m.group(1) if m else "?" for key, m in found.items()}
        return cls(
            None,
            f"{got['store_bytes']} ({got['store_chunks']} chunks)",
            f"{got['seed_bytes']} ({got['cloned']} cloned)",
        )


# --------------------------------------------------------------- benchmarks


class Bench(bl.BenchBase):
    """Runs the measurements; a failing command marks its cell and the others go on."""

    def __init__(self, workdir: Path, runs: int, *, settle_runs: float = 0.0) -> None:
        super().__init__(workdir, runs)
        self.settle_runs = settle_runs
        self.casync_ended: float | None = None  # time.monotonic() after its last run
        self.fetched: dict[tuple[str, str, str], Fetched] = {}  # of the cell's last run
        self.missing: dict[str, Missing] = {}
        self.store_bytes_seen: dict[tuple[str, str], list[int | None]] = {}  # ours, per run
        self.outputs_checked = 0
        self.failures: list[str] = []
        self.space_rows: list[str] = []  # of the XFS space table

    def prepare(self, files: Files) -> None:
        """Untimed: the store of v1 and v2 chunks and both indexes, made by casync."""
        bl.remove(files.store)
        for src, index in ((files.v1, files.v1_index), (files.v2, files.v2_index)):
            bl.remove(index)
            bl.log(f"(untimed) casync make {index.name}")
            cmd = ["casync", "make", f"--store={files.store}", str(index), str(src)]
            bl.timed_run(cmd, self.workdir / "seed-setup.log")
        missing = self.missing[files.dataset] = Missing.between(files.v1_index, files.v2_index)
        chunk_files = [f for f in files.store.rglob("*.cacnk") if f.is_file()]
        self.notes.append(
            f"{files.dataset} store (chunks of v1 and v2): {len(chunk_files)} chunk files,"
            f" {sum(f.stat().st_size for f in chunk_files)} bytes; v2: {missing.chunks} chunks"
            f" ({missing.unique} distinct), {missing.missing} distinct ids not in v1 with"
            f" {missing.missing_bytes} bytes ({missing.missing_uses} places in v2,"
            f" {missing.missing_uses_bytes} bytes)"
        )

    def attempt(
        self, cell: bl.Result, cmd: list[str], log_file: Path, stats: Path
    ) -> bl.Sample | None:
        """One run of ``cmd``; on failure mark ``cell`` failed (no more runs) and go on."""
        try:
            return bl.timed_run(cmd, log_file, stdout=stats if cell.tool == "ours" else None)
        except bl.BenchError as e:
            head, _, tail = str(e).partition("\n")
            lines = [line for line in tail.splitlines() if line.strip()]
            status = head.rsplit(" exited ", 1)[-1].rstrip(":")
            cell.error = f"exit status {status}: {lines[-1] if lines else '(no output)'}"
            bl.log(f"FAILED: {cell.operation} {cell.dataset} {cell.tool}: {e}")
            self.failures.append(f"{cell.operation} {cell.dataset} {cell.tool}: {e}")
            return None

    def extract(
        self, cell: bl.Result, files: Files, seed: Path, out: Path, digest: str
    ) -> bl.Sample | None:
        """Extract v2 into ``out`` (left in place), read its statistics, check it against v2.

        Returns the run's measurements, or None when the command failed.
        """
        stem = f"{files.dataset}.{cell.tool}.seed"
        log_file = self.workdir / f"{stem}.log"
        stats = self.workdir / f"{stem}.json"
        cmd = seeded_extract_cmd(cell.tool, files, seed, out)
        self.settle()
        sample = self.attempt(cell, cmd, log_file, stats)
        if cell.tool == "casync":
            self.casync_ended = time.monotonic()
        if sample is None:
            return None
        if cell.tool == "ours":
            fetched = Fetched.from_ours(stats)
            self.check_store_bytes(cell, fetched)
        else:
            fetched = Fetched.from_casync(log_file)
        self.fetched[cell.operation, cell.dataset, cell.tool] = fetched
        self.outputs_checked += 1
        if bl.sha256_file(out) != digest:
            self.problem(f"{cell.operation} {cell.dataset} {cell.tool}: output differs from v2")
        return sample

    def settle(self) -> None:
        """With ``settle_runs``: wait that long after casync's last run before the next run.

        casync indexes its seed into a directory and a symlink per chunk under
        $TMPDIR (/var/tmp, this ext4) and deletes them at the end; on this ext4,
        creating files within about a minute of many deletions is slower, so
        back to back, each run pays for the casync run before it.
        """
        if not self.settle_runs or self.casync_ended is None:
            return
        left = self.settle_runs - (time.monotonic() - self.casync_ended)
        if left > 0:
            bl.log(f"waiting {left:.0f} s after casync's last run (--settle-runs)")
            time.sleep(left)

    def check_store_bytes(self, cell: bl.Result, fetched: Fetched) -> None:
        """Our bytes from the store must be exactly the bytes of the chunks v1 lacks."""
        expected = self.missing[cell.dataset].missing_bytes
        self.store_bytes_seen.setdefault((cell.operation, cell.dataset), []).append(
            fetched.store_bytes
        )
        verdict = "OK" if fetched.store_bytes == expected else "MISMATCH"
        bl.log(
            f"{verdict}: {cell.operation} {cell.dataset}: ours took {fetched.store_bytes}"
            f" bytes from the store, v2's chunks that v1 lacks have {expected}"
        )
        if verdict != "OK":
            self.problem(
                f"{cell.operation} {cell.dataset}: ours took {fetched.store_bytes} bytes from"
                f" the store, not the {expected} bytes of the chunks v2 has and v1 lacks"
            )

    def run_extract(self, files: Files, digest: str) -> None:
        """Time the seeded extract for both tools, interleaved, after an untimed warm-up."""
        nbytes = files.v2.stat().st_size
        cells = {tool: self.cell(EXTRACT, files.dataset, tool, nbytes) for tool in bl.TOOLS}
        for tool in bl.TOOLS:  # untimed warm-up: the first extract after make is often slower
            out = files.out(tool, "-warmup")
            self.extract(cells[tool], files, files.v1, out, digest)
            bl.remove(out)
        for run in range(1, self.runs + 1):
            for tool in bl.tool_order(run):
                if cells[tool].error:
                    continue
                out = files.out(tool, run)
                sample = self.extract(cells[tool], files, files.v1, out, digest)
                if sample:
                    cells[tool].samples.append(sample)
                    bl.log_sample("seeded", files.dataset, tool, run, sample, nbytes)
                # Removed before the next run's `sync`; 1 GiB outputs left around also
                # crowd the page cache (reclaim).
                bl.remove(out)

    def run_xfs(self, files: Files, digest: str, changed: int) -> None:
        """Extract once per tool onto XFS next to a copy of v1; note the space the output used.

        Each tool gets a file system of its own: XFS frees a removed file's blocks
        in the background, so an output removed just before would still be
        freed while the next extract runs, and distort its measurement.
        """
        nbytes = files.v2.stat().st_size
        for tool in bl.TOOLS:
            cell = self.cell(EXTRACT_XFS, files.dataset, tool, nbytes)
            with xfs_mount(self.workdir, max(XFS_MIN_IMAGE, 3 * nbytes)) as mnt:
                seed = mnt / files.v1.name
                shutil.copyfile(files.v1, seed)
                shutil.copyfile(files.v1_index, mnt / files.v1_index.name)
                os.sync()
                before = used_bytes(mnt)
                sample = self.extract(cell, files, seed, files.out(tool, "", mnt), digest)
                extra = used_bytes(mnt) - before  # after the `sync` that ends timed_run
            if sample is None:
                self.space_rows.append(
                    f"| {files.dataset} | {tool} | FAILED: {bl.table_text(cell.error or '')}"
                    " | - | - | - | - | - |"
                )
                continue
            cell.samples.append(sample)
            bl.log_sample("xfs", files.dataset, tool, 1, sample, nbytes)
            fetched = self.fetched[EXTRACT_XFS, files.dataset, tool]
            self.space_rows.append(
                f"| {files.dataset} | {tool} | {extra} | {extra / nbytes:.1%} | {changed}"
                f" | {extra / changed:.2f} | {fetched.store} | {fetched.seed} |"
            )


def used_bytes(mount: Path) -> int:
    """Bytes in use on the file system mounted at ``mount`` (statvfs)."""
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def run_checked(cmd: Sequence[str]) -> None:
    """Run a set-up command; raise BenchError with its stderr when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise bl.BenchError(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")


def xfs_paths(workdir: Path) -> tuple[Path, Path]:
    """The XFS image file and its mount point."""
    return workdir / "seed.xfs.img", workdir / "seed.xfs.mnt"


def unmount(mount: Path) -> None:
    """Unmount ``mount`` if it is mounted (retrying while busy) and remove the empty dir."""
    for attempt in range(5):
        if not os.path.ismount(mount):
            break
        proc = subprocess.run(["umount", str(mount)], capture_output=True, text=True)
        if proc.returncode != 0:
            if attempt == 4:
                raise bl.BenchError(f"umount {mount}: {proc.stderr.strip()}")
            time.sleep(1)
    if mount.is_dir():
        mount.rmdir()


@contextlib.contextmanager
def xfs_mount(workdir: Path, size: int) -> Iterator[Path]:
    """A fresh XFS (reflink=1) of ``size`` bytes on a loop image, mounted; always unmounted."""
    image, mount = xfs_paths(workdir)
    unmount(mount)
    bl.remove(image)
    run_checked(["truncate", "-s", str(size), str(image)])
    try:
        run_checked(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)])
        mount.mkdir()
        run_checked(["mount", "-o", "loop", str(image), str(mount)])
        yield mount
    finally:
        unmount(mount)
        bl.remove(image)


def xfs_unavailable() -> str | None:
    """Why the XFS part cannot run here, if it cannot."""
    if os.geteuid() != 0:
        return "needs root (mkfs, loop mount)"
    if not shutil.which("mkfs.xfs"):
        return "mkfs.xfs not found (apt-get install -y --no-install-recommends xfsprogs)"
    return None


# ------------------------------------------------------------------ reports


def fetched_column(bench: Bench, which: str) -> bl.Column:
    """A table column from the statistics of each cell's last run."""

    def text(r: bl.Result) -> str:
        fetched = bench.fetched.get((r.operation, r.dataset, r.tool))
        return getattr(fetched, which) if fetched else "-"

    return ("bytes from store (chunks)" if which == "store" else "from seed (cloned)", text)


def earlier_casync(bench: Bench, label: str) -> str:
    """This run's casync throughput next to casync's earlier figures on this machine."""
    now = {
        r.dataset: f"{r.mb_per_s:.0f}"
        for r in bench.results
        if r.operation == EXTRACT and r.tool == "casync" and r.samples
    }
    return (
        "casync's earlier figures for this seeded extract on this machine (measured"
        " before this run: 1 GiB, 5% of the data in unaligned 64 KiB blocks, v2's chunks"
        " in a store of their own): "
        + ", ".join(
            f"{CASYNC_EARLIER_MB_S[d]} MB/s {d} (this run, {label}: {now.get(d, '-')})"
            for d in CASYNC_EARLIER_MB_S
        )
        + "."
    )


def store_check_lines(bench: Bench) -> list[str]:
    """One OK/MISMATCH line per (operation, data set): our bytes from store vs expected."""
    lines = []
    for (operation, dataset), seen in bench.store_bytes_seen.items():
        expected = bench.missing[dataset].missing_bytes
        verdict = "OK" if all(b == expected for b in seen) else "MISMATCH"
        lines.append(
            f"* {verdict}: {operation} {dataset}: ours took"
            f" {'/'.join(str(b) for b in seen)} bytes from the store (each run, any warm-up"
            f" included); the chunks v2 has and v1 lacks: {expected} bytes"
        )
    return lines or ["* not checked: our seeded extract did not run successfully"]


def correctness(bench: Bench) -> str:
    """What was checked, what did not match, and which commands failed."""
    text = (
        f"Correctness: {bench.outputs_checked} extract outputs compared with v2 (SHA-256)"
        + (": all identical." if not bench.problems else ". MISMATCHES:\n\n")
        + "\n".join(f"* {p}" for p in bench.problems)
        + "\n\nBytes from the store (ours) against the chunks of v2 that v1 lacks:\n\n"
        + "\n".join(store_check_lines(bench))
    )
    if bench.failures:
        text += "\n\nFAILED commands:\n\n" + "\n\n".join(
            "```\n" + f[-3000:] + "\n```" for f in bench.failures
        )
    return text


def space_table(bench: Bench) -> list[str]:
    """The XFS table: disk space the output used beyond the seed."""
    if not bench.space_rows:
        return []
    return [
        "Disk space on XFS (reflink=1 loop image, the store stays on ext4): one extract per tool"
        " into a fresh file system that holds a copy of v1 (the seed); extra = statvfs used after"
        " minus before, each after a `sync`; overwritten = the bytes v2 changed:",
        "",
        "| data | tool | extra space B | of v2's size | overwritten B | extra/overwritten"
        " | bytes from store (chunks) | from seed (cloned) |",
        "|---|---|---|---|---|---|---|---|",
        *bench.space_rows,
        "",
    ]


def report(bench: Bench, args: argparse.Namespace, command: str) -> str:
    """The full Markdown report."""
    parts = [
        *bl.report_head(f"{TITLE} ({bl.size_label(args.size)} inputs)", bench, args, command),
        f"* v2 = v1 with {CHANGED_SHARE:.0%} of its {BLOCK // 1024} KiB blocks (aligned,"
        f" picked by random.Random({V2_SEED})) overwritten with random bytes. One store holds"
        " the chunks of v1 and v2 (`casync make`, untimed), so nothing is missing; the seed is"
        " v1 in the same directory.",
        "* casync: `casync -v extract --store=S --seed=v1 v2.caibx OUT` (it chunks the seed on"
        " every run, and indexes it in a temporary directory under $TMPDIR, /var/tmp here);"
        " ours: `desync-decl extract -s S --seed v1.caibx --print-stats v2.caibx OUT` (v1's"
        " index, made beforehand, with v1 beside it).",
        "* Both tools run interleaved (run 1 of each, then run 2, ...; odd runs start with ours,"
        " even runs with casync), each after a `sync`, into a new output file per run (removed"
        " after its check, before the next run's `sync`), after one untimed warm-up run per"
        " tool. Inputs and store are warm in the page cache. casync creates and deletes a"
        " directory and a symlink per seed chunk under $TMPDIR, which slows file creation on"
        " this ext4 for about a minute: "
        + (
            f"each run here started at least {args.settle:.0f} s after casync's previous one"
            " (`--settle-runs`)."
            if args.settle_runs
            else "runs here follow each other at once, as in bench_casync.sh (see `--settle-runs`)."
        ),
        bl.measure_note("bytes of v2"),
        "* Bytes from store and from seed: ours from `--print-stats` (exact), casync's from its"
        " `-v` summary (rounded, binary units); of the cell's last run.",
        "",
        *bl.tables(bench.results, [fetched_column(bench, "store"), fetched_column(bench, "seed")]),
        "",
        earlier_casync(bench, bl.size_label(args.size)),
        "",
        *space_table(bench),
        *bl.report_tail(bench, correctness(bench)),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = bl.base_parser(
        __doc__.split("\n\n")[0],
        "casync's seed index creates files under /var/tmp; ext4 skips recently deleted"
        " inodes for about a minute",
    )
    parser.add_argument("--only", choices=bl.DATASETS, help="run only this data set")
    parser.add_argument(
        "--settle-runs",
        action="store_true",
        help="also wait --settle seconds after each casync run before the next run of either"
        " tool (casync's seed index creates and deletes a directory and a symlink per chunk"
        " under /var/tmp)",
    )
    parser.add_argument("--no-xfs", action="store_true", help="skip the XFS disk-space part")
    return bl.check_args(parser, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write bench/results-seed.md."""
    return bl.main_locked(parse_args(argv), run)


def clean(workdir: Path) -> None:
    """Unmount a left-over XFS image, then remove what earlier runs left."""
    unmount(xfs_paths(workdir)[1])
    bl.remove_leftovers(workdir, leftovers(workdir))


def run(args: argparse.Namespace) -> int:
    """The benchmark proper, with the work dir locked."""
    bench = Bench(args.workdir, args.runs, settle_runs=args.settle if args.settle_runs else 0.0)
    no_xfs = "--no-xfs" if args.no_xfs else xfs_unavailable()
    with bl.session(args, bench, lambda: clean(args.workdir)):
        for dataset in [args.only] if args.only else bl.DATASETS:
            v1 = bl.ensure_input(args.workdir, dataset, args.size)
            v2 = ensure_v2(v1)
            changed = len(changed_blocks(v1.stat().st_size)) * BLOCK
            digest = bl.sha256_file(v2)
            bench.notes.append(
                f"input {dataset}: v1 {v1.stat().st_size} bytes, sha256 {bl.sha256_file(v1)};"
                f" v2 sha256 {digest}, {changed} bytes overwritten"
            )
            files = Files.of(args.workdir, dataset, v1, v2)
            bench.prepare(files)
            bench.run_extract(files, digest)
            if no_xfs:
                continue
            try:
                bench.run_xfs(files, digest, changed)
            except bl.BenchError as e:
                bl.log(f"XFS part failed: {e}")
                bench.notes.append(f"XFS part for {dataset} failed: {e}")
        if no_xfs:
            bench.notes.append(f"XFS part skipped: {no_xfs}")
    bl.write_report(report(bench, args, bl.command_line()), RESULTS_MD)
    return 1 if bench.problems or bench.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
