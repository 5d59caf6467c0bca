#!/usr/bin/env python3
"""Sparse-image benchmark: ``make`` of a mostly-hole disk image, desync-decl vs casync (by hand).

The input is a sparse file of ``--size`` bytes holding ``--data`` bytes of
``random.Random(42)`` data in ``--extents`` equal extents (a multiple of 4 KiB
each) at random places aligned to their length, the rest holes: a freshly made VM or
filesystem image. It is made once and cached in the work dir; the benchmark
checks that the filesystem really left the holes (its allocated blocks).

Both tools ``make`` it into a fresh local store, ``--runs`` times, interleaved
(alternating which goes first), each run after a ``sync``, timed with GNU time
(wall, CPU = user + sys, peak RSS). casync reads and chunks every byte of the
holes; desync-decl derives the cuts in a hole and hashes the zero chunk once per
size. Every run's index must be byte-identical to casync's, and both stores must
hold the same chunk files. desync-decl's ``chop`` of the same image with that index
is timed too (casync has no ``chop``). ``--no-casync`` times desync-decl alone, for
sizes where a casync run takes minutes (64 GiB: 16 times the 4 GiB run).

Tables go to stdout and to ``bench/results-sparse.md``, as the section of this
size and data; ``--snapshot`` freezes the desync_decl code measured.

    python bench/bench_sparse.py                               # 4 GiB, 32 MiB of data, 3 runs
    python bench/bench_sparse.py --size 64G --no-casync --runs 5
    sudo bench/on_fresh_fs.sh 8 python bench/bench_sparse.py --extents 4096 --settle 0
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import benchlib as bl

RESULTS_MD = bl.REPO / "bench" / "results-sparse.md"
RESULTS_HEAD = """# desync-decl vs casync, make of a sparse image

One section per image size and data amount; a run replaces the section of its
size and keeps the others. Made with `python bench/bench_sparse.py --snapshot ...`.
"""
WHO_SYNCS = "desync-decl syncs the store before writing the index, casync does not"
BLOCK = 4096  # extents are aligned to it, so the filesystem can leave whole blocks out
CHOP = "chop"
MAKE = "make"


# -------------------------------------------------------------------- inputs


def extent_offsets(size: int, data: int, extents: int) -> list[int]:
    """Start offsets of the data extents: ascending, never overlapping (places picked
    among the image's extent-sized slots), aligned since the extent length is."""
    length = data // extents
    rng = random.Random(bl.RAND_SEED)
    return sorted(length * s for s in rng.sample(range(size // length), extents))


def ensure_image(workdir: Path, size: int, data: int, extents: int) -> Path:
    """The cached sparse image, made once: random extents written, the rest left holes."""
    path = workdir / f"sparse-{bl.size_label(size)}-{bl.size_label(data)}-x{extents}"
    if not path.exists():
        bl.log(f"creating {path} ...")
        tmp = path.with_suffix(".tmp")
        rng = random.Random(bl.RAND_SEED)
        length = data // extents
        with tmp.open("wb") as f:
            for start in extent_offsets(size, data, extents):
                f.seek(start)
                f.write(rng.randbytes(length))
            f.truncate(size)
        tmp.rename(path)
    allocated = path.stat().st_blocks * 512
    if allocated > 2 * data:
        raise bl.BenchError(f"{path} holds {allocated} bytes on disk: the holes were filled")
    return path


def warm(src: Path, args: argparse.Namespace) -> None:
    """Read the image's data into the page cache (the holes have nothing to cache)."""
    length = args.data // args.extents
    fd = os.open(src, os.O_RDONLY)
    try:
        for start in extent_offsets(args.size, args.data, args.extents):
            os.pread(fd, length, start)
    finally:
        os.close(fd)


# -------------------------------------------------------------------- tools


def make_cmd(tool: str, store: Path, index: Path, src: Path) -> list[str]:
    """Command line of ``make`` for ``tool``."""
    if tool == "ours":
        return [*bl.ours_cmd(), "make", "-s", str(store), str(index), str(src)]
    return ["casync", "make", f"--store={store}", str(index), str(src)]


def store_names(store: Path) -> set[str]:
    """Names of the chunk files in a local store."""
    return {p.name for p in store.rglob("*.cacnk")}


class Bench(bl.BenchBase):
    """Times make (both tools) and our chop; checks indexes and stores."""

    def __init__(self, workdir: Path, runs: int, tools: Sequence[str]) -> None:
        super().__init__(workdir, runs)
        self.tools = tools
        self.indexes_compared = 0

    def order(self, run: int) -> list[str]:
        """The tools of this run in the order they go (alternating, as bench_blob)."""
        return [t for t in bl.tool_order(run) if t in self.tools]

    def run_make(self, src: Path, label: str) -> Path:
        """Time ``make`` into a new store per run; compare indexes and stores. Our last index."""
        nbytes = src.stat().st_size
        cells = {tool: self.cell(MAKE, label, tool, nbytes) for tool in self.tools}
        for run in range(1, self.runs + 1):
            made = {}
            for tool in self.order(run):
                store = self.workdir / f"sparse.{tool}.store{run}"
                index = self.workdir / f"sparse.{tool}.caibx"
                bl.remove(store)
                bl.remove(index)
                sample = bl.timed_run(
                    make_cmd(tool, store, index, src), self.workdir / f"sparse.{tool}.make.log"
                )
                cells[tool].samples.append(sample)
                bl.log_sample(MAKE, label, tool, run, sample, nbytes)
                made[tool] = (store, index)
            if len(made) == 2:
                self.compare(made, run)
        ours_store = self.workdir / f"sparse.ours.store{self.runs}"
        self.notes.append(
            f"make: {len(store_names(ours_store))} chunk files in our store,"
            f" index of {(self.workdir / 'sparse.ours.caibx').stat().st_size} bytes"
        )
        return self.workdir / "sparse.ours.caibx"

    def compare(self, made: dict[str, tuple[Path, Path]], run: int) -> None:
        """Our index must be casync's, byte for byte, and the stores hold the same chunks."""
        (ours_store, ours), (theirs_store, theirs) = made["ours"], made["casync"]
        self.indexes_compared += 1
        if ours.read_bytes() != theirs.read_bytes():
            self.problem(f"make run {run}: {ours} differs from {theirs}")
        if store_names(ours_store) != store_names(theirs_store):
            self.problem(f"make run {run}: {ours_store} and {theirs_store} hold other chunks")

    def run_chop(self, src: Path, label: str, index: Path) -> None:
        """Time our ``chop`` of the image with our index into a new store per run."""
        nbytes = src.stat().st_size
        cell = self.cell(CHOP, label, "ours", nbytes)
        made = store_names(self.workdir / f"sparse.ours.store{self.runs}")
        for run in range(1, self.runs + 1):
            store = self.workdir / f"sparse.chop.store{run}"
            bl.remove(store)
            store.mkdir()
            cmd = [*bl.ours_cmd(), "chop", "-s", str(store), str(index), str(src)]
            sample = bl.timed_run(cmd, self.workdir / "sparse.chop.log")
            cell.samples.append(sample)
            bl.log_sample(CHOP, label, "ours", run, sample, nbytes)
            if store_names(store) != made:
                self.problem(f"chop run {run}: {store} holds other chunks than make's store")


def leftovers(workdir: Path) -> list[Path]:
    """Stores, indexes and logs' outputs a run leaves in ``workdir``."""
    return sorted({*workdir.glob("sparse.*.store*"), *workdir.glob("sparse.*.caibx")})


# -------------------------------------------------------------------- report


def label_of(args: argparse.Namespace) -> str:
    """The data-set column: size, data and extents."""
    return (
        f"{bl.size_label(args.size)} image, {bl.size_label(args.data)} data"
        f" in {args.extents} extents"
    )


def report(bench: Bench, args: argparse.Namespace) -> str:
    """The section of results-sparse.md for this run."""
    head = bl.report_head(label_of(args), bench, args, bl.command_line())
    checked = (
        f"Correctness: {bench.indexes_compared} pairs of .caibx compared byte for byte (ours vs"
        " casync), and the chunk files of the stores (make vs make, chop vs make)"
    )
    correctness = checked + (
        ": all identical."
        if not bench.problems
        else ". MISMATCHES:\n\n" + "\n".join(f"* {p}" for p in bench.problems)
    )
    parts = [
        *head[1:],
        bl.interleaved_note(
            "The image is warm in the page cache (its data blocks; holes have none). Each run"
            " makes a new store directory; all are removed at the end. chop: ours only, with"
            " our last make's index, into a new store per run."
        ),
        *bl.measured_part(
            bench,
            "image bytes (holes included)",
            correctness,
            WHO_SYNCS,
        ),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = bl.base_parser(
        __doc__.split("\n\n")[0],
        size=4 * bl.GiB,
    )
    parser.add_argument(
        "--data", type=bl.parse_size, default=32 * bl.MiB, help="bytes of data (default 32M)"
    )
    parser.add_argument(
        "--extents", type=int, default=64, help="data extents, equal in size (default 64)"
    )
    parser.add_argument("--no-casync", action="store_true", help="time desync-decl alone")
    args = bl.check_args(parser, parser.parse_args(argv))
    if args.extents < 1 or args.data % (args.extents * BLOCK) or args.data * 2 > args.size:
        parser.error("--data must be a multiple of 4 KiB per extent and at most half of --size")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write bench/results-sparse.md."""
    return bl.main_locked(parse_args(argv), run)


def run(args: argparse.Namespace) -> int:
    """The benchmark proper, with the work dir locked."""
    tools = ["ours"] if args.no_casync else list(bl.TOOLS)
    bench = Bench(args.workdir, args.runs, tools)
    src = ensure_image(args.workdir, args.size, args.data, args.extents)
    warm(src, args)
    bench.notes.append(
        f"image: {src.stat().st_size} bytes, {src.stat().st_blocks * 512} of them allocated"
    )
    label = label_of(args)
    with bl.session(
        args,
        bench,
        lambda: bl.remove_leftovers(args.workdir, leftovers(args.workdir)),
        WHO_SYNCS,
    ):
        index = bench.run_make(src, label)
        bench.run_chop(src, label, index)
    text = report(bench, args)
    bl.write_section(RESULTS_MD, RESULTS_HEAD, label, text)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
