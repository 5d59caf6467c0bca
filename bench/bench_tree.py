#!/usr/bin/env python3
"""Directory-tree benchmark of desync-decl against casync on this machine (run by hand).

A copy of ``--source`` (default /usr/share, copied once with ``cp -a`` into the
work dir and cached there, so the input does not change between invocations)
is archived and extracted by both tools with the same feature flags
(desync's default set, which casync writes with the ``--with`` list below):

* ``tar``: directory -> .catar (``casync make --with=... X.catar DIR``)
* ``tar -i``: directory -> .caidx + a new local store per run
  (``casync make --with=... --store=S X.caidx DIR``)
* ``untar``: .catar -> a new directory per run (``casync extract X.catar DIR``)
* ``untar -i``: .caidx + store -> a new directory per run
  (``casync extract --store=S X.caidx DIR``)

``--runs`` runs per cell, both tools interleaved (alternating which goes
first), each after a ``sync``. Checked as it goes: our .catar and .caidx are
byte-identical to casync's, and every extracted tree has the source's mtree
listing (types, modes, owners, nanosecond mtimes, content digests) and
``diff -r`` finds no difference. Stores and extracted trees are removed only
at the end (ext4 here creates files slowly for about a minute after many
deletions). The tables go to stdout and to ``bench/results-tree.md``;
``--snapshot`` freezes the desync_decl code measured while others edit the tree.

    python bench/bench_tree.py --snapshot           # /usr/share, 3 runs
    python bench/bench_tree.py --runs 1 --only untar
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import benchlib as bl

from desync_decl.formats.catar import features

OPERATIONS = ("tar", "tar -i", "untar", "untar -i")
# desync's TarFeatureFlags (our default) as casync's --with names
FEATURES = [n for n, bit in features.NAMES.items() if features.DESYNC_TAR & bit]
CASYNC_WITH = [f"--with={f}" for f in FEATURES]
RESULTS_MD = bl.REPO / "bench" / "results-tree.md"
UPDATE_HEADING = "Rolling a model directory v1 -> v2: local writes"  # bench_tree_update.py's
TITLE = "desync-decl vs casync, directory trees"
DATASET = "tree"
DEFAULT_SOURCE = Path("/usr/share")
# ext4 without a journal (as here) skips inodes freed in the last 60 s when it makes new
# ones, and in the last 360 s while their inode-table block is dirty again (new files in the
# same groups): after trees of 50,000 files are removed, making files is slow for minutes.
WHO_SYNCS = (
    "desync-decl's `tar` fsyncs the .catar and syncs the store before writing the .caidx,"
    " its `untar` syncs nothing; casync syncs nothing"
)


# -------------------------------------------------------------------- input


@dataclass(frozen=True)
class Tree:
    """The cached copy of the source tree and what it holds."""

    path: Path
    entries: dict[str, int]  # by type
    file_bytes: int  # sum of the regular files' sizes

    @classmethod
    def ensure(cls, workdir: Path, source: Path) -> Tree:
        """``workdir/tree-<name>``: a ``cp -a`` copy of ``source``, made once."""
        path = workdir / f"tree-{source.name or 'root'}"
        if not path.exists():
            bl.log(f"copying {source} to {path} ...")
            tmp = path.with_name(path.name + ".tmp")
            bl.remove(tmp)
            subprocess.run(["cp", "-a", str(source), str(tmp)], check=True)
            tmp.rename(path)
        entries: dict[str, int] = {}
        file_bytes = 0
        for top, dirs, files in os.walk(path):
            entries["dir"] = entries.get("dir", 0) + 1
            for name in dirs + files:
                st = os.lstat(os.path.join(top, name))
                if stat.S_ISDIR(st.st_mode):
                    continue
                kind = "file" if stat.S_ISREG(st.st_mode) else "symlink"
                if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                    kind = "other"
                entries[kind] = entries.get(kind, 0) + 1
                file_bytes += st.st_size if kind == "file" else 0
        return cls(path, entries, file_bytes)

    def describe(self) -> str:
        counts = ", ".join(f"{n} {kind}s" for kind, n in sorted(self.entries.items()))
        return (
            f"{sum(self.entries.values())} entries ({counts}), {self.file_bytes} bytes in"
            " regular files"
        )


# --------------------------------------------------------------- the tools


def tool_cmd(op: str, tool: str, archive: Path, tree: Path, store: Path) -> list[str]:
    """Command line of ``op`` for ``tool``: ``tree`` is the source (tar) or target (untar)."""
    index = op.endswith("-i")
    if tool == "ours":
        store_args = ["-i", "-s", str(store)] if index else []
        return [*bl.ours_cmd(), op.split()[0], *store_args, str(archive), str(tree)]
    verb = "make" if op.startswith("tar") else "extract"
    with_args = CASYNC_WITH if verb == "make" else []
    store_args = [f"--store={store}"] if index else []
    return ["casync", verb, *with_args, *store_args, str(archive), str(tree)]


def paths(workdir: Path, tool: str, index: bool, run: int | str) -> tuple[Path, Path, Path]:
    """(archive, store, extracted tree) of one tool and run."""
    stem = workdir / f"{DATASET}.{tool}"
    archive = Path(f"{stem}{'.caidx' if index else '.catar'}")
    return archive, Path(f"{stem}.store{run}"), Path(f"{stem}.{'i' if index else ''}out{run}")


def leftovers(workdir: Path) -> list[Path]:
    """Archives, stores, extracted trees, mtree listings the benchmark leaves in ``workdir``."""
    found: set[Path] = set()
    for tool in bl.TOOLS:
        found.update(workdir.glob(f"{DATASET}.{tool}.*"))
        found.update(workdir.glob(f".{DATASET}.{tool}.*"))  # temp files of an interrupted run
    return sorted(p for p in found if not p.name.endswith((".log", ".time")))


# --------------------------------------------------------------- benchmarks


class Bench(bl.BenchBase):
    """Runs the measurements and collects results and correctness problems."""

    def __init__(self, workdir: Path, runs: int, tree: Tree) -> None:
        super().__init__(workdir, runs)
        self.tree = tree
        self.listing = workdir / f"{DATASET}.ours.source.mtree"
        self.archives_compared = 0
        self.trees_checked = 0
        self.made: dict[tuple[bool, str], tuple[Path, Path]] = {}  # (index, tool): archive, store

    def prepare(self) -> None:
        """The source's mtree listing, which every extracted tree must reproduce."""
        mtree = [*bl.ours_cmd(), "mtree", str(self.tree.path)]
        with self.listing.open("wb") as f:
            subprocess.run(mtree, stdout=f, check=True)

    def run_tar(self, index: bool) -> None:
        """Time ``tar`` (or ``tar -i``, into a new store per run) for both tools."""
        op = "tar -i" if index else "tar"
        cells = {tool: self.cell(op, DATASET, tool, self.tree.file_bytes) for tool in bl.TOOLS}
        for run in range(1, self.runs + 1):
            for tool in bl.tool_order(run):
                archive, store, _ = paths(self.workdir, tool, index, run)
                bl.remove(archive)
                cmd = tool_cmd(op, tool, archive, self.tree.path, store)
                sample = bl.timed_run(cmd, self.workdir / f"{DATASET}.{tool}.{op[-1]}tar.log")
                cells[tool].samples.append(sample)
                bl.log_sample(op, DATASET, tool, run, sample, self.tree.file_bytes)
                self.made[index, tool] = archive, store
            self.compare_archives(op, index, run)
        if index:
            self.note_stores()

    def compare_archives(self, op: str, index: bool, run: int) -> None:
        """Our archive (or index) must be byte-identical to casync's."""
        ours, theirs = (self.made[index, tool][0] for tool in bl.TOOLS)
        self.archives_compared += 1
        if ours.read_bytes() != theirs.read_bytes():
            self.problem(f"{op} run {run}: {ours} differs from {theirs}")

    def note_stores(self) -> None:
        """Chunk count and bytes of each tool's (last) store."""
        for tool in bl.TOOLS:
            files = [f for f in self.made[True, tool][1].rglob("*.cacnk") if f.is_file()]
            size = sum(f.stat().st_size for f in files)
            self.notes.append(f"store of {tool}: {len(files)} chunk files, {size} bytes")

    def ensure_archive(self, index: bool, tool: str) -> tuple[Path, Path]:
        """The archive (and store) ``untar`` reads; made untimed when ``tar`` did not run."""
        if (index, tool) not in self.made:
            archive, store, _ = paths(self.workdir, tool, index, 0)
            bl.remove(archive)
            bl.remove(store)
            bl.log(f"(untimed) {'tar -i' if index else 'tar'} {tool}")
            op = "tar -i" if index else "tar"
            bl.timed_run(
                tool_cmd(op, tool, archive, self.tree.path, store), self.workdir / "setup.log"
            )
            self.made[index, tool] = archive, store
        return self.made[index, tool]

    def run_untar(self, index: bool) -> None:
        """Time ``untar`` (or ``untar -i``) into a new directory per run for both tools."""
        op = "untar -i" if index else "untar"
        cells = {tool: self.cell(op, DATASET, tool, self.tree.file_bytes) for tool in bl.TOOLS}
        inputs = {tool: self.ensure_archive(index, tool) for tool in bl.TOOLS}
        for run in range(1, self.runs + 1):
            for tool in bl.tool_order(run):
                archive, store = inputs[tool]
                out = paths(self.workdir, tool, index, run)[2]
                bl.remove(out)
                cmd = tool_cmd(op, tool, archive, out, store)
                sample = bl.timed_run(cmd, self.workdir / f"{DATASET}.{tool}.{op[-1]}untar.log")
                cells[tool].samples.append(sample)
                bl.log_sample(op, DATASET, tool, run, sample, self.tree.file_bytes)
                self.check_tree(f"{op} {tool} run {run}", out)

    def check_tree(self, what: str, out: Path) -> None:
        """``out`` must list as the source does (our mtree) and ``diff -r`` equal to it."""
        self.trees_checked += 1
        mtree = subprocess.run(
            [*bl.ours_cmd(), "mtree", str(out)], capture_output=True, check=True
        ).stdout
        if mtree != self.listing.read_bytes():
            self.problem(f"{what}: the mtree listing of {out} differs from the source's")
        diff = subprocess.run(
            ["diff", "-r", "--no-dereference", str(self.tree.path), str(out)],
            capture_output=True,
            text=True,
        )
        if diff.returncode != 0:
            self.problem(f"{what}: diff -r: {bl.table_text(diff.stdout + diff.stderr)}")


# ------------------------------------------------------------------ reports


def correctness(bench: Bench) -> str:
    """What was checked and what did not match."""
    checked = (
        f"Correctness: {bench.archives_compared} pairs of .catar/.caidx compared byte for byte"
        f" (ours vs casync); {bench.trees_checked} extracted trees compared with the source"
        " (our mtree listing: type, mode, uid/gid, mtime in ns, SHA-512/256 of the content;"
        " and `diff -r --no-dereference`)"
    )
    if not bench.problems:
        return checked + ": all identical."
    return checked + ". MISMATCHES:\n\n" + "\n".join(f"* {p}" for p in bench.problems)


def report(bench: Bench, args: argparse.Namespace, command: str) -> str:
    """The full Markdown report."""
    with_list = " ".join(CASYNC_WITH)
    parts = [
        *bl.report_head(f"{TITLE} ({args.source})", bench, args, command),
        f"* Input: `cp -a {args.source}` into the work dir (cached): {bench.tree.describe()}.",
        "* Feature flags: desync's default set (our `tar` default); casync gets"
        f" `{with_list}`, which writes the same bytes. ours: `desync-decl tar [-i -s S] X DIR`,"
        " `desync-decl untar [-i -s S] X DIR`; casync: `casync make --with=... [--store=S] X"
        " DIR`, `casync extract [--store=S] X DIR`. Both run as root (owners restored).",
        f"* Timing started at least {args.settle:.0f} s after this work dir's last removal of"
        " trees and stores (`--settle`: this ext4 has no journal and skips recently freed"
        " inodes when it makes new ones, for up to 6 minutes); removals by other processes on"
        " the same file system are not controlled and slow both tools' file creation alike.",
        bl.interleaved_note(
            "The source and the archives are warm in the page cache. `tar -i`: a new store per"
            " run; `untar`: from the last `tar` run's .catar, `untar -i` from the last `tar -i`"
            " run's .caidx and store (each tool its own), into a new directory per run. Stores"
            " and extracted trees are removed only at the end."
        ),
        *bl.measured_part(
            bench, "bytes of regular files in the tree", correctness(bench), WHO_SYNCS
        ),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = bl.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="tree to copy and archive"
    )
    parser.add_argument(
        "--only", choices=OPERATIONS, action="append", help="run only this operation (repeatable)"
    )
    return bl.check_args(parser, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write bench/results-tree.md."""
    return bl.main_locked(parse_args(argv), run)


def run(args: argparse.Namespace) -> int:
    """The benchmark proper, with the work dir locked."""
    ops = args.only or list(OPERATIONS)
    tree = Tree.ensure(args.workdir, args.source.resolve())
    bench = Bench(args.workdir, args.runs, tree)
    clean = lambda: bl.remove_leftovers(args.workdir, leftovers(args.workdir))  # noqa: E731
    with bl.session(args, bench, clean, WHO_SYNCS):
        bench.notes.append(f"input {tree.path}: {tree.describe()}")
        bench.prepare()
        for op in OPERATIONS:
            if op in ops:
                (bench.run_tar if op.startswith("tar") else bench.run_untar)(op.endswith("-i"))
    # the v1 -> v2 section bench_tree_update.py keeps in the same file stays
    update = bl.kept_section(RESULTS_MD, UPDATE_HEADING)
    text = report(bench, args, bl.command_line())
    bl.write_report(text.rstrip("\n") + "\n\n" + update if update else text, RESULTS_MD)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
