"""SIGKILL at random points in a verb, then a rerun that must converge.

``CrashBench(root)`` makes the inputs once: two versions of a 32 MiB blob, their
index and a master store, a second blob for prune, and a tree of files with its catar,
caidx and store. A ``CrashCase`` names the command, prepares a fresh work folder for one
run, checks what a killed run may leave, and what the rerun must make.

``kill_trial(bench, case, delay)`` starts the command as a real process, sends
SIGKILL after ``delay`` seconds (it may have finished by then), checks that
nothing is half-written under a final name, that ``desync-decl verify`` finds
the store clean and that nothing that was there is gone, then runs the command
again to the end and checks that it converged (the same bytes as a run never
killed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from desync_decl.formats import index as index_format
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.local import LocalStore
from reliability.verdicts import Verdict, run_cli, store_problem, temp_files

MIB = 1 << 20
Problems = dict[str, str | None]


def desync(*argv: object) -> list[str]:
    return [sys.executable, "-m", "desync_decl", *map(str, argv)]


def run_to_end(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def files_of(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` that is not a temp file, by relative path."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def ids_in(store: Path) -> set[ChunkID]:
    return set(LocalStore(store).iter_chunk_ids()) if store.is_dir() else set()


class CrashBench:
    """Inputs made once; ``expected`` holds what uninterrupted runs make."""

    def __init__(self, root: Path, size: int = 32 * MIB) -> None:
        self.root = root
        rng = random.Random(5)
        self.v2 = root / "v2.img"
        data = bytearray(rng.randbytes(size))
        self.v2.write_bytes(data)
        for at in range(0, size, size // 16):  # the old version: a few regions differ
            data[at : at + 4096] = rng.randbytes(4096)
        self.v1 = root / "v1.img"
        self.v1.write_bytes(data)
        self.other = root / "other.img"
        self.other.write_bytes(rng.randbytes(size // 4))
        self.master = root / "master"
        self.index = root / "v2.caibx"
        self.other_index = root / "other.caibx"
        self._cli("make", "-s", self.master, self.index, self.v2)
        # small chunks: prune has a few thousand files to delete, a window to be killed in
        self._cli("make", "-m", "1:4:16", "-s", self.master, self.other_index, self.other)
        self.ids = index_format.decode(self.index.read_bytes()).unique_ids()
        self.tree = root / "tree"
        for i in range(120):
            path = self.tree / f"d{i % 7}" / f"f{i}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randrange(1, 400_000)))
        self.tree_store = root / "tree-store"
        self.caidx = root / "tree.caidx"
        self._cli("tar", "-i", "-s", self.tree_store, self.caidx, self.tree)
        self.catar = root / "tree.catar"
        self._cli("tar", self.catar, self.tree)
        self.runs = iter(range(1 << 30))
        # a verb's start-up: the interpreter, main and one verb module (--version loads all)
        self.startup = min(_seconds(desync("info", self.other_index)) for _ in range(3))

    def _cli(self, *argv: object) -> None:
        run = run_cli(*argv)
        assert run.code == 0, run.err

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"kill{next(self.runs)}-", dir=self.root))


@dataclass
class CrashCase:
    name: str  # the verb as the rows show it: "make", "extract -k", ...
    prepare: Callable[[CrashBench, Path], list[str]]  # fills the work folder, gives argv
    after_kill: Callable[[CrashBench, Path], Problems]  # what a killed run may leave
    converged: Callable[[CrashBench, Path], str | None]  # what the rerun must have made
    store: Callable[[CrashBench, Path], Path | None]  # the store to verify


def kill_trial(bench: CrashBench, case: CrashCase, delay: float) -> tuple[Verdict, float | None]:
    """One kill after ``delay`` seconds and the rerun; returns the verdict and, when
    the run had ended by itself before the kill, how long it took (None: killed)."""
    work = bench.workdir()
    try:
        argv = case.prepare(bench, work)
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ended: float | None = None
        try:
            process.wait(timeout=delay)
            ended = time.monotonic() - started
        except subprocess.TimeoutExpired:
            pass
        killed = ended is None
        if killed:
            process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=120)
        if not killed and process.returncode != 0:
            why = f"the run failed by itself: {err.decode()[-300:]}"
            return Verdict("unclear_error", why), ended
        problems = case.after_kill(bench, work)
        store = case.store(bench, work)
        if store is not None and store.is_dir():
            problems["corrupt_store"] = problems.get("corrupt_store") or store_problem(store)
        rerun = run_to_end(argv)
        leftovers = len(temp_files(work))  # still there after the rerun
        if rerun.returncode != 0:
            problems["wrong_output"] = problems.get("wrong_output") or (
                f"the rerun failed: {rerun.stderr.strip()[-300:]}"
            )
        else:
            problems["wrong_output"] = problems.get("wrong_output") or case.converged(bench, work)
        if store is not None and store.is_dir():
            problems["corrupt_store"] = problems.get("corrupt_store") or store_problem(store)
        for outcome in ("data_lost", "corrupt_store", "wrong_output"):
            if problems.get(outcome):
                return Verdict(outcome, str(problems[outcome]), leftovers=leftovers), ended
        return Verdict("ok", leftovers=leftovers), ended
    finally:
        shutil.rmtree(work, ignore_errors=True)


def duration(bench: CrashBench, case: CrashCase, runs: int = 2) -> float:
    """How long an uninterrupted run takes (the shortest of ``runs``, caches warm)."""
    times = []
    for _ in range(runs):
        work = bench.workdir()
        try:
            times.append(_seconds(case.prepare(bench, work)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return min(times)


def delays(bench: CrashBench, case: CrashCase, n: int, rng: random.Random) -> list[float]:
    """``n`` kill delays, uniform over an uninterrupted run after the interpreter's
    start-up (a kill during the imports tests nothing of ours)."""
    length = duration(bench, case)
    low = bench.startup if length > bench.startup + 0.02 else 0.02
    return [rng.uniform(low, length) for _ in range(n)]


def kills_through_runs(
    bench: CrashBench, case: CrashCase, delays: list[float], redraws: int = 2
) -> Iterator[tuple[Verdict, bool]]:
    """A ``kill_trial`` per delay, each with its verdict and whether the kill found the
    run still going. A run that ended before its kill (this one ran faster than the
    measured one: the machine's load moves run lengths) is tried again, up to
    ``redraws`` times, at a delay drawn within the length it just had, so the kills
    land inside runs however the load changes."""
    rng = random.Random(f"redraw {case.name}")
    for delay in delays:
        for _ in range(redraws + 1):
            verdict, ended = kill_trial(bench, case, delay)
            if ended is None or verdict.outcome != "ok":
                break
            delay = rng.uniform(min(bench.startup, ended / 2), ended)
        yield verdict, ended is None


def _seconds(argv: list[str]) -> float:
    start = time.monotonic()
    run = run_to_end(argv)
    assert run.returncode == 0, run.stderr
    return time.monotonic() - start


# --- the cases ------------------------------------------------------------------------


def _whole_or_absent(path: Path, expected: bytes, old: bytes | None = None) -> str | None:
    if not path.exists():
        return None if old is None else f"{path.name} is gone"
    data = path.read_bytes()
    if data == expected or (old is not None and data == old):
        return None
    return f"{path.name} is half-written ({len(data)} bytes)"


def _all_chunks(store: Path, ids: set[ChunkID]) -> str | None:
    missing = len(ids - ids_in(store))
    return f"{missing} chunks missing from the store" if missing else None


def _make(bench: CrashBench, work: Path) -> list[str]:
    return desync("make", "-s", work / "store", work / "out.caibx", bench.v2)


def _made(bench: CrashBench, work: Path) -> str | None:
    index = work / "out.caibx"
    if not index.exists() or index.read_bytes() != bench.index.read_bytes():
        return "the index is missing or wrong"
    return _all_chunks(work / "store", bench.ids)


def _extract(in_place: bool) -> Callable[[CrashBench, Path], list[str]]:
    def prepare(bench: CrashBench, work: Path) -> list[str]:
        shutil.copy(bench.v1, work / "target.img")
        flags = ["-k"] if in_place else []
        return desync("extract", *flags, "-s", bench.master, bench.index, work / "target.img")

    return prepare


def _extracted(bench: CrashBench, work: Path) -> str | None:
    if (work / "target.img").read_bytes() != bench.v2.read_bytes():
        return "the target does not hold the new version"
    return None


def _chop(bench: CrashBench, work: Path) -> list[str]:
    (work / "store").mkdir(exist_ok=True)  # chop stores into a store that exists (as desync)
    return desync("chop", "-s", work / "store", bench.index, bench.v2)


def _prune(bench: CrashBench, work: Path) -> list[str]:
    shutil.copytree(bench.master, work / "store", copy_function=os.link)  # prune unlinks
    return desync("prune", "-y", "--min-age", "0", "-s", work / "store", bench.index)


def _pruned_keeps(bench: CrashBench, work: Path) -> Problems:
    missing = len(bench.ids - ids_in(work / "store"))
    return {"data_lost": f"{missing} referenced chunks deleted" if missing else None}


def _tar(bench: CrashBench, work: Path) -> list[str]:
    return desync("tar", "-i", "-s", work / "store", work / "out.caidx", bench.tree)


def _tarred(bench: CrashBench, work: Path) -> str | None:
    index = work / "out.caidx"
    if not index.exists() or index.read_bytes() != bench.caidx.read_bytes():
        return "the caidx is missing or wrong"
    return _all_chunks(work / "store", index_format.decode(index.read_bytes()).unique_ids())


def _untar(bench: CrashBench, work: Path) -> list[str]:
    return desync("untar", "-i", "-s", bench.tree_store, bench.caidx, work / "target")


def _tar_plain(bench: CrashBench, work: Path) -> list[str]:
    return desync("tar", work / "out.catar", bench.tree)


def _tarred_plain(bench: CrashBench, work: Path) -> str | None:
    archive = work / "out.catar"
    if not archive.exists() or archive.read_bytes() != bench.catar.read_bytes():
        return "the catar is missing or wrong"
    return None


def _untar_plain(bench: CrashBench, work: Path) -> list[str]:
    return desync("untar", bench.catar, work / "target")


def _untarred_partly(bench: CrashBench, work: Path) -> Problems:
    source, target = files_of(bench.tree), files_of(work / "target")
    half = [name for name, data in target.items() if source.get(name) != data]
    return {"wrong_output": f"half-written files: {half[:3]}" if half else None}


def _untarred(bench: CrashBench, work: Path) -> str | None:
    return None if files_of(work / "target") == files_of(bench.tree) else "the tree differs"


MANIFEST = """\
version: 1
stores: {{s: {{url: store}}}}
tasks:
  - name: chunk the image
    make: {{source: {v2}, index: out.caibx, store: s}}
  - name: install it
    extract: {{index: out.caibx, path: out/v2.img, stores: [s]}}
"""


def _apply(bench: CrashBench, work: Path) -> list[str]:
    (work / "site.yaml").write_text(MANIFEST.format(v2=bench.v2))
    return desync("apply", work / "site.yaml", "--state-dir", work / "state")


def _applied_partly(bench: CrashBench, work: Path) -> Problems:
    wrong = _whole_or_absent(work / "out.caibx", bench.index.read_bytes())
    wrong = wrong or _whole_or_absent(work / "out" / "v2.img", bench.v2.read_bytes())
    return {"wrong_output": wrong}


def _applied(bench: CrashBench, work: Path) -> str | None:
    if (work / "out" / "v2.img").read_bytes() != bench.v2.read_bytes():
        return "the target does not hold the image"
    return _made(bench, work)


def _whole_file(name: str, expected: Callable[[CrashBench], Path]) -> Callable:
    """``name`` in the work folder is absent or the whole expected file."""

    def check(bench: CrashBench, work: Path) -> Problems:
        return {"wrong_output": _whole_or_absent(work / name, expected(bench).read_bytes())}

    return check


def _target_whole(bench: CrashBench, work: Path) -> Problems:
    target = work / "target.img"
    return {"wrong_output": _whole_or_absent(target, bench.v2.read_bytes(), bench.v1.read_bytes())}


def _nothing(bench: CrashBench, work: Path) -> Problems:
    return {}


def _none(bench: CrashBench, work: Path) -> None:
    return None  # no store involved


def _work_store(bench: CrashBench, work: Path) -> Path:
    return work / "store"


CASES = [
    CrashCase("make", _make, _whole_file("out.caibx", lambda b: b.index), _made, _work_store),
    CrashCase("extract", _extract(False), _target_whole, _extracted, lambda b, w: b.master),
    # in place, a killed run leaves a mix of old and new by design: the rerun finishes it
    CrashCase("extract -k", _extract(True), _nothing, _extracted, lambda b, w: b.master),
    CrashCase("chop", _chop, _nothing, lambda b, w: _all_chunks(w / "store", b.ids), _work_store),
    CrashCase(
        "prune",
        _prune,
        _pruned_keeps,
        lambda b, w: None if ids_in(w / "store") == b.ids else "unreferenced chunks left",
        _work_store,
    ),
    CrashCase("tar -i", _tar, _whole_file("out.caidx", lambda b: b.caidx), _tarred, _work_store),
    CrashCase("untar -i", _untar, _untarred_partly, _untarred, lambda b, w: b.tree_store),
    CrashCase("tar", _tar_plain, _whole_file("out.catar", lambda b: b.catar), _tarred_plain, _none),
    CrashCase("untar", _untar_plain, _untarred_partly, _untarred, _none),
    CrashCase("apply", _apply, _applied_partly, _applied, _work_store),
]
CASE_NAMES = [case.name for case in CASES]


def case(name: str) -> CrashCase:
    return CASES[CASE_NAMES.index(name)]
