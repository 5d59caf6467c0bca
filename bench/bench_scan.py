#!/usr/bin/env python3
"""The C chunker's scan alone, one core: this tree's ``ext/chunker.c`` vs a baseline revision's.

Both versions are compiled here from source, with the flags ``ext/build_chunker.py``
uses, into two throw-away cffi modules, so one process times them on the same
buffer in the same run: ``--runs`` rounds, each scanning ``--size`` bytes of
``random.Random(42)`` data (warm in memory) with each version in turn (alternating
which goes first), for each chunk-size setting. Only the ``ca_chunker_scan``
calls are timed (no Python loop per chunk, no I/O), in CPU seconds of the
scanning thread (``time.thread_time``: on a shared machine, time spent waiting
for a core does not count against either version); the versions must find the
same cuts. ``--baseline`` may be given several times. Prints medians and the
spread as Markdown and writes ``bench/results-scan.md``.

    python bench/bench_scan.py                      # vs main, 256 MiB, 7 rounds
    python bench/bench_scan.py --baseline main --baseline HEAD~3 --runs 11
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import benchlib as bl
from cffi import FFI

RESULTS_MD = bl.REPO / "bench" / "results-scan.md"
RESULTS_HEAD = """# The chunker's scan alone, one core

What the scan in `ext/chunker.c` does, measured against its predecessors: the cut
test is one multiply and compare on h + 1 (Lemire's divisibility test) instead of
fastmod's two multiplies, one bound check per four bytes (the lengths up to
min(available, max) are tested in rounds of four; max cuts after the loop), and the
two 256-entry tables (2 KiB) stay in L1.

Tried and dropped (same machine, shared, one C driver timing CPU seconds of the
scan, 256 MiB, default sizes; main's scan 1.93-2.03 GB/s in the same runs):

* computing the four hashes of a round from h directly (h4 = rol(h, 4) ^ terms of
  the four bytes), so the loop-carried chain is one rotate and xor per four bytes,
  testing them with one branch (commit 61d9952): 2.00-2.12 GB/s, below the byte by
  byte roll's 2.25-2.37 (see 61d9952 in the table);
* the same with eight hashes per round: 1.29-1.53 GB/s (wall clock, busy machine;
  main 1.30-2.04 in the same run);
* reading the four incoming and the four outgoing bytes as one 32-bit load each
  and shifting them out: 1.65-1.69 GB/s against 2.03-2.08 without;
* eight lengths per round instead of four, each tested at once: 2.28-2.37 GB/s,
  the same as four within the noise, so four (less code);
* the hash kept in a rotated frame through an unrolled round of 32 bytes
  (H = ror(h, j) after the j-th byte, so the chain carried from byte to byte is one
  xor and the rotations, constants, are off it), with the cut test as h * c >= -c
  (one operation less): 1.59-1.74 GB/s against 1.64-1.70 for main's scan, with or
  without BMI2's rorx (a C driver timing 9 rounds of 128 MiB on the 2.45 GHz EPYC
  VM of December 2026, where main's scan measures 1.78 GB/s with this script): the
  loop is bound by the ten or so operations issued per byte, not by the chain.
"""
CDEF = """
    typedef struct { ...; } ca_chunker;
    int ca_chunker_init(ca_chunker *c, uint64_t min, uint64_t avg, uint64_t max);
    size_t ca_chunker_scan(ca_chunker *c, const uint8_t *buf, size_t len,
                           uint64_t *cuts, size_t max_cuts);
"""
SETTINGS = {  # name: (min, avg, max)
    "default 16K:64K:256K": (16 << 10, 64 << 10, 256 << 10),
    "small 1K:4K:16K": (1 << 10, 4 << 10, 16 << 10),
}
CUTS = 1 << 16  # cut buffer per call: larger than the cuts of one scan at these sizes


def build(name: str, ext_dir: Path, tmp: Path) -> ModuleType:
    """Compile ``ext_dir/chunker.c`` into the cffi module ``name`` and import it."""
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        name,
        '#include "chunker.h"',
        sources=[str(ext_dir / "chunker.c")],
        include_dirs=[str(ext_dir)],
        extra_compile_args=["-O3", "-std=c99"],
    )
    so = ffi.compile(tmpdir=str(tmp / name), verbose=False)
    spec = importlib.util.spec_from_file_location(name, so)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkout_ext(revision: str, dest: Path) -> None:
    """The ``ext/`` directory of ``revision`` written into ``dest``."""
    dest.mkdir(parents=True)
    for name in ("chunker.c", "chunker.h", "buzhash_table.h"):
        text = subprocess.run(
            ["git", "-C", str(bl.REPO), "show", f"{revision}:ext/{name}"],
            capture_output=True,
            check=True,
        ).stdout
        (dest / name).write_bytes(text)


def scan_all(module: ModuleType, data: bytes, sizes: tuple[int, int, int]) -> tuple[float, int]:
    """CPU seconds spent inside ``ca_chunker_scan`` chunking all of ``data``, and the cut count."""
    ffi, lib = module.ffi, module.lib  # type: ignore[attr-defined]  # cffi module
    state = ffi.new("ca_chunker *")
    assert lib.ca_chunker_init(state, *sizes) == 0
    cuts = ffi.new("uint64_t[]", CUTS)
    buf = ffi.from_buffer("uint8_t[]", data)
    base, total = 0, 0
    start = time.thread_time()
    while True:
        n = lib.ca_chunker_scan(state, buf + base, len(data) - base, cuts, CUTS)
        if n == 0:
            break
        total += n
        base += cuts[n - 1]
        if n < CUTS:
            break
    return time.thread_time() - start, total


def main(argv: Sequence[str] | None = None) -> int:
    """Build both versions, time them interleaved, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline",
        action="append",
        help="git revision to compare with (default main; may be repeated)",
    )
    parser.add_argument("--size", type=bl.parse_size, default=256 << 20, help="bytes per scan")
    parser.add_argument("--runs", type=int, default=7, help="rounds (default 7)")
    args = parser.parse_args(argv)
    baselines = args.baseline or ["main"]
    rng = random.Random(bl.RAND_SEED)  # the stream of bench_blob's rand input, 16 MiB a time
    data = b"".join(
        rng.randbytes(min(bl.RAND_PIECE, args.size - at))
        for at in range(0, args.size, bl.RAND_PIECE)
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        versions = {}
        for i, revision in enumerate(baselines):
            checkout_ext(revision, tmp / f"base{i}_ext")
            versions[f"{revision}"] = build(f"_scan_base{i}", tmp / f"base{i}_ext", tmp)
        versions[f"this tree ({bl.git_revision()})"] = build("_scan_head", bl.REPO / "ext", tmp)
        rows = []
        for setting, sizes in SETTINGS.items():
            times: dict[str, list[float]] = {v: [] for v in versions}
            counts: dict[str, int] = {}
            for run in range(args.runs):
                order = list(versions) if run % 2 else list(versions)[::-1]  # alternate
                for name in order:
                    seconds, counts[name] = scan_all(versions[name], data, sizes)
                    times[name].append(seconds)
                    bl.log(f"{setting} {name} run {run + 1}: {args.size / 1e9 / seconds:.2f} GB/s")
            if len(set(counts.values())) != 1:
                bl.log(f"MISMATCH: cut counts differ: {counts}")
                return 1
            for name, ts in times.items():
                rates = [args.size / 1e9 / t for t in ts]
                runs = "/".join(f"{r:.2f}" for r in rates)
                rows.append(
                    f"| {setting} | {name} | {statistics.median(rates):.2f} ({runs})"
                    f" | {counts[name]} |"
                )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n".join(
        [
            RESULTS_HEAD,
            "## Measured",
            "",
            f"* Machine: {bl.machine_description()}; load average at the end: {load}",
            f"* Command: `{bl.command_line()}`",
            f"* {args.size} bytes of random data in memory, {args.runs} rounds per version,"
            " interleaved; GB/s = 10^9 bytes per CPU second of the scanning thread inside"
            " `ca_chunker_scan`.",
            "",
            "| sizes | version | GB/s median (runs) | cuts |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    bl.write_report(text, RESULTS_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
