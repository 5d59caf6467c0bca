"""``extract``: rebuild a blob from its index, seeds and chunk stores.

The assembler plans where every range comes from (``assemble.plan``) and
carries that plan out (``assemble.execute``). Here: the target file and the
attempts. Without ``in_place`` the output is written to a temp file beside the
target and renamed at the end: a failed or killed extraction leaves the old
target untouched. With ``in_place`` the target is written directly and data
already in place is kept; a rerun after an interruption converges. A file this
makes is readable by its owner only until its data is complete, and gets its
attributes on its fd (``settle``), never by a path someone could swap; the
target's directory is opened walking from ``/`` (``fsutil.open_directory``) and the
target relative to it: a symlink planted at the target, or as one of its
directories, where others can write is not followed (``fsutil.open_in``).

A large index is planned and written a window of ``WINDOW_CHUNKS`` chunks at a time
(``Windowed``: a held ``Index`` sliced, or a file read back window by window), each
window's plan at its offsets in the same file, so memory does not grow with the
index. A chunk repeated in two windows is fetched for each (the self seed looks
within a window), as is a seed run that crosses a window's edge split in two; an
index of one window is planned whole, as it always was. The result adds the
windows' plans up (``PlanTotals``).

A seed that turns out not to hold what its index says fails the extraction,
or (as the user chose) is dropped or re-indexed, and the plan is made again
(all windows, from the first: stats and the file are the last attempt's). In place,
each window's seed chunks are checked before that window is written: a seed found
invalid in a later window fails an extraction whose earlier windows are written
already (with verified bytes only; a rerun converges, as after an interruption).
``plan_with_valid_seeds`` does the same before anything is written: it reads
the seed chunks a plan takes, so a plan states what ``extract`` will do.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from desync_decl.assemble.execute import Outcome, SeedInvalid, execute
from desync_decl.assemble.inplace import chunks_in_place
from desync_decl.assemble.plan import (
    AssemblyPlan,
    PlanTotals,
    SeedFinder,
    Source,
    plan_assembly,
    seed_finders,
)
from desync_decl.assemble.seeds import Seed
from desync_decl.assemble.validate import validate_seeds
from desync_decl.errors import DesyncError
from desync_decl.formats.index import WINDOW_CHUNKS, Index, Windowed
from desync_decl.fsutil import AtomicFile, current_umask, open_in, open_parent, walk_error
from desync_decl.ops.seeding import reindex
from desync_decl.progress import BYTES, NO_PROGRESS, Progress
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, Store, StoreError


class InvalidSeeds(enum.Enum):
    """What to do with a seed that does not match its index (desync's flags)."""

    FAIL = "fail"
    SKIP = "skip"  # --skip-invalid-seeds
    REGENERATE = "regenerate"  # --regenerate-invalid-seeds


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    plan: PlanTotals  # what the final attempt did, all windows added up
    outcome: Outcome  # what the final attempt's writing did: clones, zeroed nulls, block size
    seeds_given: int  # seeds the extraction started with, before any was dropped
    attempts: int
    seed_problems: tuple[str, ...]  # seeds dropped or re-indexed, and why
    written: os.stat_result  # the file written, once complete (not whatever has its name now)

    def stats(self) -> dict[str, object]:
        """desync's ``--print-stats`` keys (counted as its ``AssembleFile`` counts
        them), then what desync-decl adds.

        desync's seed bytes are every byte a seed put in the target: file seeds, the
        self seed (a chunk written again from where it already is in the target) and
        the null seed where it wrote zeros (not on a new target, left sparse). Its
        ``seeds`` is the null seed plus every seed it was given, also one dropped as
        invalid later; for an index without chunks it stops before counting seeds or
        asking the block size, and reports 0 for both."""
        src = self.plan.by_source()
        from_seeds = src[Source.SEED]
        copied = from_seeds.bytes - self.outcome.bytes_cloned
        copied += src[Source.SELF].bytes + self.outcome.bytes_zeroed
        empty = self.plan.chunks == 0
        return {
            "chunks-from-seeds": from_seeds.chunks + src[Source.NULL].chunks,
            "chunks-from-store": src[Source.STORE].chunks,
            "chunks-in-place": src[Source.IN_PLACE].chunks,
            "bytes-copied-from-seeds": copied,
            "bytes-cloned-from-seeds": self.outcome.bytes_cloned,
            "blocksize": 0 if empty else self.outcome.blocksize,
            "bytes-total": self.plan.length,
            "chunks-total": self.plan.chunks,
            "seeds": 0 if empty else self.seeds_given + 1,
            "bytes-from-store": src[Source.STORE].bytes,
            "attempts": self.attempts,
            "seed-problems": list(self.seed_problems),
            "plan": self.plan.to_json(),
        }


def extract(
    index: Windowed,
    path: str | os.PathLike,
    store: Store,
    *,
    seeds: Sequence[Seed] = (),
    in_place: bool = False,
    invalid_seeds: InvalidSeeds = InvalidSeeds.FAIL,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
    mode: int = 0o644,
    settle: Callable[[int], None] | None = None,
    dir_fd: int | None = None,
    window: int = WINDOW_CHUNKS,
) -> ExtractResult:
    """Rebuild ``index``'s blob at ``path``, ``window`` chunks at a time.

    A file this creates gets ``mode`` less the umask once complete, or instead
    whatever ``settle(fd)`` sets then (owner, mode, xattrs), before it is renamed
    into place; in place, ``settle`` is called before the final fsync. ``dir_fd``:
    the target's directory, already open (else opened here).
    """
    target = Path(path)
    _check_seeds_against_target(target, seeds, in_place)
    seeds, given = list(seeds), len(seeds)
    problems: list[str] = []
    with _open_target(target, dir_fd, index.length, in_place, mode) as out:
        for attempt in range(1, len(seeds) + 2):
            run = _Attempt(out, store, concurrency, _shown(progress, index, window, out))
            try:
                totals, outcome = run(index.windows(window), seeds)
            except (SeedInvalid, ChunkMissing, ChunkInvalid, StoreError) as e:
                bad = _seed_at_fault(e, run.plan, out, concurrency, progress)
                if bad is None:
                    raise
                seeds = _without_invalid(seeds, bad, invalid_seeds, concurrency, progress)
                problems.append(str(bad))
                out.written(index.length)
                continue
            written = out.commit(settle)
            return ExtractResult(target, totals, outcome, given, attempt, tuple(problems), written)
    raise AssertionError("unreachable: every attempt drops or re-indexes a seed")


class _Attempt:
    """One attempt at the whole index: each window planned against what the target
    holds now, its seed chunks checked first when writing in place, and written."""

    def __init__(self, out: _Target, store: Store, concurrency: int, progress: Progress) -> None:
        self.out, self.store, self.concurrency, self.progress = out, store, concurrency, progress
        self.plan: AssemblyPlan | None = None  # the window being written: what fails is its

    def __call__(self, windows: Iterator[Index], seeds: list[Seed]) -> tuple[PlanTotals, Outcome]:
        finders = seed_finders(seeds)
        totals: PlanTotals | None = None
        outcome: Outcome | None = None
        for window in windows:
            plan = self.plan = _plan(
                window, seeds, finders, self.out, self.concurrency, self.progress
            )
            if self.out.atomic is None:  # the user's file: no unverified seed byte may land in it
                validate_seeds(plan, workers=self.concurrency, progress=self.progress)
            done = execute(
                plan,
                self.out.fd,
                self.store,
                target_dir=f"/proc/self/fd/{self.out.dir_fd}",  # that directory, not a path to it
                blank=self.out.blank,
                workers=self.concurrency,
                progress=self.progress,
            )
            totals = plan.totals() if totals is None else totals + plan.totals()
            outcome = done if outcome is None else _added(outcome, done)
            del window, plan  # not held while the next is read: one window at a time
            self.plan = None
        assert totals is not None and outcome is not None, "an index has one window at least"
        return totals, outcome


def _added(a: Outcome, b: Outcome) -> Outcome:
    return Outcome(a.bytes_cloned + b.bytes_cloned, b.blocksize, a.bytes_zeroed + b.bytes_zeroed)


def _shown(progress: Progress, index: Windowed, window: int, out: _Target) -> Progress:
    """An attempt's progress: over the whole index when it goes in windows (the
    stages each window starts again, with their totals over the whole index)."""
    if len(index) <= window:
        return progress
    return _Overall(
        progress, {"assemble": index.length, "check in place": min(out.size, index.length)}
    )


class _Overall:
    """Progress of an index written in windows: a stage each window starts again
    (``totals``) is shown as one over the whole index, resumed where the last window
    left it; any other (seed checks) as each window starts it."""

    def __init__(self, progress: Progress, totals: dict[str, int]) -> None:
        self._progress, self._totals = progress, totals
        self._done: dict[str, int] = {}
        self._stage = ""
        self._lock = threading.Lock()  # workers advance at once

    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        with self._lock:
            self._stage = stage
            done = self._done.get(stage, 0)
        if stage not in self._totals:
            self._progress.start(stage, total, unit)
            return
        self._progress.start(stage, self._totals[stage], unit)
        if done:
            self._progress.advance(done)

    def advance(self, n: int) -> None:
        with self._lock:
            self._done[self._stage] = self._done.get(self._stage, 0) + n
        self._progress.advance(n)

    def finish(self) -> None:
        self._progress.finish()


def plan_extract(
    index: Index,
    path: str | os.PathLike,
    *,
    seeds: Sequence[Seed] = (),
    in_place: bool = False,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
    target_fd: int | None = None,
) -> AssemblyPlan:
    """The plan ``extract`` would carry out now; writes nothing (``--dry-run``).
    In place, the target is read from ``target_fd`` when given (the file the caller
    looked at), else opened as ``extract`` would."""
    target = Path(path)
    _check_seeds_against_target(target, seeds, in_place)
    in_place_map = _planned_in_place(index, target, in_place, target_fd, concurrency, progress)
    return plan_assembly(index, seeds, in_place=in_place_map)


@dataclass(frozen=True)
class CheckedPlan:
    plan: AssemblyPlan  # made with ``seeds``
    seeds: tuple[Seed, ...]  # the seeds left after invalid ones were dropped or re-indexed
    problems: tuple[tuple[Path, SeedInvalid], ...]  # each seed file dropped or re-indexed, and why


def plan_with_valid_seeds(
    index: Index,
    path: str | os.PathLike,
    *,
    seeds: Sequence[Seed] = (),
    invalid_seeds: InvalidSeeds = InvalidSeeds.FAIL,
    trusted: Callable[[Seed], bool] = lambda seed: False,
    in_place: bool = False,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
    target_fd: int | None = None,
) -> CheckedPlan:
    """``plan_extract`` with every seed chunk the plan takes read and hashed, as
    ``extract`` reads them: a seed that does not hold what its index says is dropped
    or re-indexed (``invalid_seeds``; FAIL raises ``SeedInvalid``) and the plan made
    again, so the plan is what ``extract`` with the returned seeds carries out. A seed
    ``trusted`` says is right (a record vouches for it) is not read."""
    target = Path(path)
    _check_seeds_against_target(target, seeds, in_place)
    in_place_map = _planned_in_place(index, target, in_place, target_fd, concurrency, progress)
    left = list(seeds)
    problems: list[tuple[Path, SeedInvalid]] = []
    for _ in range(len(left) + 1):
        plan = plan_assembly(index, left, in_place=in_place_map)
        skip = {k for k, seed in enumerate(left) if trusted(seed)}
        try:
            validate_seeds(plan, workers=concurrency, progress=progress, trusted=skip)
        except SeedInvalid as e:
            problems.append((left[e.seed].path, e))
            left = _without_invalid(left, e, invalid_seeds, concurrency, progress)
            continue
        return CheckedPlan(plan, tuple(left), tuple(problems))
    raise DesyncError(f"the seeds of {target} kept changing while they were read; run again")


def _planned_in_place(
    index: Index,
    target: Path,
    in_place: bool,
    target_fd: int | None,
    concurrency: int,
    progress: Progress,
) -> list[bool] | None:
    """In place: which chunks the target holds, read from ``target_fd`` when given
    (the file the caller looked at), else opened as ``extract`` would."""
    if not in_place:
        return None
    if target_fd is not None:
        size = _existing_size(target_fd)
        return _in_place_map(index, target_fd, size, concurrency, progress)
    fd = _open_existing(target)
    if fd is None:
        return None
    try:
        return _in_place_map(index, fd, _existing_size(fd), concurrency, progress)
    finally:
        os.close(fd)


class _Target:
    """The file being written: a temp file renamed at the end, or the target itself
    (``made``: the mode for a file made here, still private), in the directory
    ``dir_fd``."""

    def __init__(
        self,
        fd: int,
        dir_fd: int,
        blank: bool,
        size: int,
        atomic: AtomicFile | None,
        made: int | None = None,
    ) -> None:
        self.fd, self.dir_fd, self.blank, self.size = fd, dir_fd, blank, size
        self.atomic, self.made = atomic, made

    def written(self, length: int) -> None:
        """A failed attempt wrote some of it. A temp file is emptied and sized again:
        blank once more, the next attempt leaves its null runs as holes (nothing in it
        is reused; desync's next attempt also starts on a blank file, as it checks
        seeds before writing). The target itself now holds data up to ``length``."""
        if self.atomic is not None:
            os.ftruncate(self.fd, 0)
            os.ftruncate(self.fd, length)
            return
        self.blank, self.size = False, length

    def commit(self, settle: Callable[[int], None] | None) -> os.stat_result:
        if self.atomic is not None:
            return self.atomic.commit(settle)
        if settle is not None:
            settle(self.fd)
        elif self.made is not None:
            os.fchmod(self.fd, self.made)
        os.fsync(self.fd)
        return os.fstat(self.fd)


@contextlib.contextmanager
def _open_target(
    target: Path, dir_fd: int | None, length: int, in_place: bool, mode: int
) -> Iterator[_Target]:
    """The file to write, in the directory ``dir_fd`` (else the target's directory,
    opened here)."""
    with contextlib.ExitStack() as opened:
        if dir_fd is None:
            dir_fd = _open_directory(target)
            opened.callback(os.close, dir_fd)
        kind = _kind(dir_fd, target.name)
        if stat.S_ISDIR(kind):
            raise DesyncError(f"cannot extract to {target}: is a directory")
        if not in_place and stat.S_ISBLK(kind):
            raise DesyncError(f"{target} is a block device: extract into it with --in-place")
        try:
            if in_place:
                fd, made = _open_in_place(dir_fd, target.name, mode)
                opened.callback(os.close, fd)
                size = _existing_size(fd)
                _set_length(fd, target, length)
                yield _Target(fd, dir_fd, size == 0, size, None, made)
                return
            with AtomicFile(target, mode, dir_fd=dir_fd) as atomic:
                os.ftruncate(atomic.fd, length)
                yield _Target(atomic.fd, dir_fd, True, 0, atomic)
        except OSError as e:
            raise DesyncError(f"cannot write {target}: {e.strerror}") from None


def _open_directory(target: Path) -> int:
    """The target's directory (``fsutil.open_parent``); a one-line error naming a
    symlink refused on the way."""
    try:
        return open_parent(target)
    except OSError as e:
        raise walk_error(target, e, "write") from None


def _open_existing(target: Path) -> int | None:
    """The target opened to read as ``extract`` would open it (None when absent)."""
    try:
        dir_fd = open_parent(target)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DesyncError(f"cannot read {target}: {e.strerror}") from None
    try:
        return open_in(dir_fd, target.name, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DesyncError(f"cannot read {target}: {e.strerror}") from None
    finally:
        os.close(dir_fd)


def _kind(dir_fd: int, name: str) -> int:
    """The file type of ``name`` in ``dir_fd`` (0 when absent), for messages only:
    what is opened is checked again when it is."""
    try:
        return stat.S_IFMT(os.stat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return 0


def _open_in_place(dir_fd: int, name: str, mode: int) -> tuple[int, int | None]:
    """The target ``name`` in ``dir_fd`` opened to write in place, and the mode to
    give it if made here (it is made with its owner's bits only, until complete)."""
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, mode & 0o600, dir_fd=dir_fd)
    except FileExistsError:
        return open_in(dir_fd, name, os.O_RDWR), None
    return fd, mode & ~current_umask()


def _existing_size(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def _set_length(fd: int, target: Path, length: int) -> None:
    if not stat.S_ISBLK(os.fstat(fd).st_mode):
        os.ftruncate(fd, length)
    elif os.lseek(fd, 0, os.SEEK_END) < length:
        raise DesyncError(f"{target}: the device is smaller than the index ({length} bytes)")


def _plan(
    index: Index,
    seeds: list[Seed],
    finders: list[SeedFinder],
    out: _Target,
    concurrency: int,
    progress: Progress,
) -> AssemblyPlan:
    """Plan against what the target holds now (in place: hashed again every attempt)."""
    in_place_map = None
    if out.atomic is None:
        in_place_map = _in_place_map(index, out.fd, out.size, concurrency, progress)
    return plan_assembly(index, seeds, in_place=in_place_map, finders=finders)


def _in_place_map(
    index: Index, fd: int, size: int, concurrency: int, progress: Progress
) -> list[bool] | None:
    """Which chunks a target of ``size`` bytes holds; None for an empty one (blank)."""
    if size == 0:
        return None
    return chunks_in_place(index, fd, size, workers=concurrency, progress=progress)


def _seed_at_fault(
    error: DesyncError,
    plan: AssemblyPlan | None,
    out: _Target,
    concurrency: int,
    progress: Progress,
) -> SeedInvalid | None:
    """The invalid seed behind a failed attempt, if there is one.

    Store reads and seed copies run side by side, so a chunk the store lacks can
    end the attempt before the seed copies show that a seed does not hold what its
    index says. desync checks the seeds first: a seed re-indexed (or dropped) makes
    a new plan, and the chunks the store lacked may then come from the seed. So a
    store failure is put down to a seed when the plan's seed chunks, read again,
    show one invalid; else it stands (None). ``plan``: the window that failed."""
    if isinstance(error, SeedInvalid):
        return error
    if (
        plan is None
        or out.atomic is None
        or not any(s.source is Source.SEED for s in plan.segments)
    ):
        return None  # in place the seeds were checked before anything was written
    try:
        validate_seeds(plan, workers=concurrency, progress=progress)
    except SeedInvalid as e:
        return e
    return None


def _without_invalid(
    seeds: list[Seed],
    error: SeedInvalid,
    policy: InvalidSeeds,
    concurrency: int,
    progress: Progress,
) -> list[Seed]:
    """The seed list for the next attempt: the bad seed dropped or re-indexed (the
    error raised again when the policy is FAIL)."""
    if policy is InvalidSeeds.FAIL:
        raise error
    bad = seeds[error.seed]
    rest = seeds[: error.seed] + seeds[error.seed + 1 :]
    if policy is InvalidSeeds.SKIP:
        return rest
    try:
        fresh = reindex(bad.path, bad.index, bad.label, concurrency, progress)
    except DesyncError:  # unreadable: nothing to re-index, so it is dropped
        return rest
    if fresh.index.ids == bad.index.ids and fresh.index.ends == bad.index.ends:
        raise DesyncError(f"{error}; re-indexing found the same chunks (did {bad.path} change?)")
    return [*seeds[: error.seed], fresh, *seeds[error.seed + 1 :]]


def _check_seeds_against_target(target: Path, seeds: Sequence[Seed], in_place: bool) -> None:
    """With --in-place the target is rewritten while read: it cannot also be a seed."""
    if not in_place or not target.exists():
        return
    for seed in seeds:
        with contextlib.suppress(OSError):
            if seed.path.samefile(target):
                raise DesyncError(
                    f"seed {seed.label} is the target itself; --in-place already reuses its data"
                )
