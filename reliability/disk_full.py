"""Writing verbs on a full filesystem: one clear line, nothing half-written left, an old
target untouched.

``small_tmpfs(folder)`` mounts a 1 MiB tmpfs (root only); ``Inputs.make(root)``
makes a 3 MB blob with its index and store, and a 2.4 MB tree with its caidx and
store; ``full_disk_trial(inputs, name, mnt, work)`` runs one case on the mount
and returns ``clean_error`` when everything holds, another outcome with what
went wrong otherwise (``ok`` would mean the disk was not full).

Cases: ``make`` and ``chop`` into a store there, ``cache`` into a store there,
``make`` of an index over an old one on a disk filled to the last byte,
``extract`` over an old target, ``untar`` into a directory there.
"""

from __future__ import annotations

import contextlib
import errno
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reliability.verdicts import Verdict, error_problem, run_cli, store_problem, temp_files

CASES = (
    "make",
    "chop",
    "cache",
    "make over an old index",
    "extract over an old target",
    "tar over an old archive",
    "untar",
)
OLD = b"the previous version, which must survive\n" * 200


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A real filesystem of ``size`` at ``folder`` (mounting needs root)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path) -> None:
    """Take every byte left on ``folder``'s filesystem."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise


@dataclass
class Inputs:
    blob: Path
    index: Path
    store: Path
    tree: Path
    caidx: Path
    tree_store: Path

    @classmethod
    def make(cls, root: Path) -> Inputs:
        blob = root / "blob"
        blob.write_bytes(random.Random(21).randbytes(3_000_000))
        tree = root / "tree"
        for i in range(8):
            (tree / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
            (tree / f"d{i % 2}" / f"f{i}").write_bytes(random.Random(i).randbytes(300_000))
        made = cls(blob, root / "blob.caibx", root / "store", tree, root / "t.caidx", root / "ts")
        for argv in (
            ("make", "-s", made.store, made.index, blob),
            ("tar", "-i", "-s", made.tree_store, made.caidx, tree),
        ):
            run = run_cli(*argv)
            assert run.code == 0, run.err
        return made


def full_disk_trial(inputs: Inputs, name: str, mnt: Path, work: Path) -> Verdict:
    """One case on the (empty) mount ``mnt``; ``work`` is a folder elsewhere."""
    store, index = mnt / "store", work / "new.caibx"
    argv: tuple[object, ...]
    if name == "make":
        argv = ("make", "-s", store, index, inputs.blob)
    elif name == "chop":
        store.mkdir()  # chop stores into a store that exists (as desync)
        argv = ("chop", "-s", store, inputs.index, inputs.blob)
    elif name == "cache":
        argv = ("cache", "-s", inputs.store, "-c", store, inputs.index)
    elif name == "make over an old index":
        index = mnt / "blob.caibx"
        index.write_bytes(OLD)
        fill(mnt)
        argv = ("make", "-s", work / "store", index, inputs.blob)
    elif name == "extract over an old target":
        (mnt / "blob.img").write_bytes(OLD)
        argv = ("extract", "-s", inputs.store, inputs.index, mnt / "blob.img")
    elif name == "tar over an old archive":
        (mnt / "tree.catar").write_bytes(OLD)
        argv = ("tar", mnt / "tree.catar", inputs.tree)
    elif name == "untar":
        argv = ("untar", "-i", "-s", inputs.tree_store, inputs.caidx, mnt / "tree")
    else:
        raise ValueError(f"unknown case {name!r} (known: {', '.join(CASES)})")
    run = run_cli(*argv)
    problems = _left_behind(inputs, name, mnt, work, index)
    if run.code == 0:
        return Verdict("ok", "the command succeeded: the disk was not full")
    why = error_problem(run.code, run.err)
    if why is None and "No space left on device" not in run.err:
        why = f"the error does not say the disk is full: {run.err.strip()}"
    for outcome in ("corrupt_store", "wrong_output"):
        if problems.get(outcome):
            return Verdict(outcome, str(problems[outcome]))
    if why is not None:
        return Verdict("unclear_error", why)
    return Verdict("clean_error", run.err.strip())


def _left_behind(inputs: Inputs, name: str, mnt: Path, work: Path, index: Path) -> dict:
    temps = temp_files(mnt) + temp_files(work)
    wrong = f"temp files left: {[p.name for p in temps]}" if temps else None
    if name in ("make", "chop", "cache"):
        if index.exists():
            wrong = wrong or "an index was written"
        return {"wrong_output": wrong, "corrupt_store": store_problem(mnt / "store")}
    if name == "make over an old index":
        return {"wrong_output": wrong or (None if index.read_bytes() == OLD else "old index lost")}
    if name in ("extract over an old target", "tar over an old archive"):
        target = mnt / ("blob.img" if name.startswith("extract") else "tree.catar")
        kept = target.read_bytes() == OLD
        return {"wrong_output": wrong or (None if kept else "the old target was changed")}
    target = mnt / "tree"
    half = [
        p.name
        for p in target.rglob("*")
        if p.is_file() and p.read_bytes() != (inputs.tree / p.relative_to(target)).read_bytes()
    ]
    return {"wrong_output": wrong or (f"half-written files: {half}" if half else None)}
