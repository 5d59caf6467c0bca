"""Carrying out an assembly plan on an open target file.

The plan's segments become units of work, run by ``workers`` forked processes
(fork-safe stores) or threads, each writing with ``pwrite`` at final offsets:

* store chunks: fetched once (verified by the store), size-checked, written at
  every offset where they occur (the self seed's repeats come for free), those
  end to end in one ``pwritev`` (``gather``);
* seed ranges: moved into the target (clone / kernel copy / read-write, see
  ``transfer``), then read back from the target and hashed chunk by chunk: a
  seed that does not hold what its index says raises ``SeedInvalid`` and
  nothing unverified is ever left in a finished target;
* self copies of chunks already in place: read from the target, hashed, written;
* null runs: nothing on a blank target (the file is sparse), holes punched otherwise.

Clonable seed ranges are cloned up front in the calling process (metadata
only, fast); their verification is spread over the workers like the rest.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from desync_decl.assemble.gather import Gather, pwrite_all
from desync_decl.assemble.plan import AssemblyPlan, Segment, Source
from desync_decl.assemble.transfer import can_clone, copy_range, transfer
from desync_decl.errors import DesyncError
from desync_decl.forked import Report, can_fork, run_forked
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.fsutil import preallocate, punch_hole, start_writeback
from desync_decl.parallel import batches, cpu_workers, ordered_map
from desync_decl.progress import BYTES, Progress
from desync_decl.stores.base import Store, plain_of

# Start disk writes early, so the final fsync has little left to wait for: after every
# 8 MiB a worker wrote (was 64 MiB: the fsync that ends a 256 MiB extraction took
# 31-45 ms, with 8 MiB 1-7 ms; smaller steps cost more calls than they saved).
WRITEBACK_EVERY = 8 * 1024 * 1024
# With forked workers the parent has nothing to do but wait: it makes what they wrote
# durable as they go, every 16 MiB (ext4 on a loop device, 256 MiB from a warm local
# store, 8 runs each: median 0.35 s without, 0.30 s with; on the host's ext4 0.28 s
# either way). Early writeback alone does not do it: the final fsync still had to
# push everything through to the device under the filesystem.
SYNC_EVERY = 16 * 1024 * 1024
SEED_PIECE = 8 * 1024 * 1024  # seed ranges are split into units of about this many bytes
SHARE = 1024 * 1024  # workers take consecutive work in batches of about this many bytes
_ZEROS = bytes(1 << 16)


class SeedInvalid(DesyncError):
    """A seed does not hold what its index says (or cannot be read)."""

    def __init__(self, seed: int, label: str, why: str) -> None:
        super().__init__(f"seed index for {label} doesn't match its data: {why}")
        self.seed, self.label, self.why = seed, label, why


# Failures of the target's filesystem while copying; any other failure is the seed's.
_TARGET_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


@contextlib.contextmanager
def seed_errors(plan: AssemblyPlan, seed: int) -> Iterator[None]:
    """Report a failed read of a seed (gone, truncated, unreadable) as an invalid
    seed, so the user's --skip/--regenerate-invalid-seeds choice applies to it."""
    try:
        yield
    except OSError as e:
        if e.errno in _TARGET_ERRORS:
            raise
        s = plan.seeds[seed]
        raise SeedInvalid(seed, s.label, f"cannot read {s.path}: {e.strerror or e}") from None


@dataclass(frozen=True)
class Outcome:
    bytes_cloned: int  # seed bytes shared with the seed file rather than copied
    blocksize: int  # the target's block size: what clones align to
    bytes_zeroed: int  # null runs written over earlier data (on a blank target: none)


class _StoreRun(NamedTuple):
    """Consecutive target chunks fetched from the store, named by their positions in the
    index (``first`` .. ``first + chunks``): about ``SHARE`` bytes each, so a large image
    is one small object per MiB of work, not one per chunk with a list of offsets (a
    4 GiB random image: ~20 MiB). Repeats of these chunks elsewhere in the target are
    in ``_Builder.repeats``."""

    first: int
    chunks: int  # how many (``count`` would hide tuple.count)
    offset: int  # where chunk ``first`` starts in the target
    length: int


class _SeedWork(NamedTuple):
    """Target chunks ``first`` .. ``first + chunks`` from a seed: a piece of a segment."""

    seed: int
    source_offset: int
    offset: int
    first: int
    chunks: int
    length: int
    placed: bool  # already cloned into the target: only verify


class _SelfWork(NamedTuple):
    source_offset: int
    offset: int
    size: int
    id: ChunkID


class _NullWork(NamedTuple):
    offset: int
    length: int


_Work = _StoreRun | _SeedWork | _SelfWork | _NullWork


def execute(
    plan: AssemblyPlan,
    fd: int,
    store: Store,
    *,
    target_dir: str | os.PathLike[str],
    blank: bool,
    workers: int,
    progress: Progress,
) -> Outcome:
    """Write every segment of ``plan`` into ``fd`` (already sized to the index).

    ``blank``: the target holds only zeros so far (a new file), so null runs
    need no writing and ranges about to be written can be preallocated.
    """
    seed_fds = _open_seeds(plan)
    try:
        clonable = {k: can_clone(f, fd, target_dir) for k, f in seed_fds.items()}
        progress.start("assemble", plan.index.length)
        builder = _Builder(plan, fd, seed_fds, clonable, blank, progress)
        units = builder.build()
        if blank:
            for offset, length in _merged(builder.write_ranges):
                preallocate(fd, length, offset)
        runner = _Runner(plan, fd, store, seed_fds, builder.repeats)
        _run(units, runner, fd, workers, store, progress)
        progress.finish()
        return Outcome(builder.cloned, builder.blocksize, builder.zeroed)
    finally:
        for f in seed_fds.values():
            os.close(f)


def _open_seeds(plan: AssemblyPlan) -> dict[int, int]:
    used = {s.seed for s in plan.segments if s.seed is not None}
    fds: dict[int, int] = {}
    try:
        for k in sorted(used):
            seed = plan.seeds[k]
            try:
                fds[k] = os.open(seed.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise SeedInvalid(k, seed.label, f"cannot open {seed.path}: {e.strerror}") from None
    except BaseException:
        for f in fds.values():
            os.close(f)
        raise
    return fds


class _Builder:
    """Turns segments into units of work; clones clonable seed ranges on the way."""

    def __init__(
        self,
        plan: AssemblyPlan,
        fd: int,
        seed_fds: dict[int, int],
        clonable: dict[int, bool],
        blank: bool,
        progress: Progress,
    ) -> None:
        self.plan, self.fd, self.seed_fds, self.clonable = plan, fd, seed_fds, clonable
        self.blank, self.progress = blank, progress
        self.blocksize = os.fstat(fd).st_blksize or 4096
        self.cloned = 0
        self.zeroed = 0  # bytes of null runs written (a target not blank)
        self.write_ranges: list[tuple[int, int]] = []  # ranges written by data, not clones
        # by the position of a chunk fetched from the store: where else it goes (its
        # repeats in the target, written from the same fetched bytes)
        self.repeats: dict[int, list[int]] = {}

    def build(self) -> list[_Work]:
        units: list[_Work] = []
        index = self.plan.index
        stored_firsts: list[int] = []  # the store segments' first and end chunk positions
        stored_ends: list[int] = []
        for seg in self.plan.segments:
            if seg.source is Source.STORE:
                self.write_ranges.append((seg.offset, seg.length))
                stored_firsts.append(seg.first)
                stored_ends.append(seg.first + seg.count)
                for first, count, offset, length in _pieces(index, seg, SHARE):
                    units.append(_StoreRun(first, count, offset, length))
            elif seg.source is Source.SELF:
                self.write_ranges.append((seg.offset, seg.length))
                assert seg.source_offset is not None
                j = bisect.bisect_right(index.ends, seg.source_offset)  # the chunk there
                k = bisect.bisect_right(stored_firsts, j) - 1
                if k >= 0 and j < stored_ends[k]:
                    self.repeats.setdefault(j, []).append(seg.offset)
                else:  # first held in place: copy it from there
                    units.append(
                        _SelfWork(seg.source_offset, seg.offset, seg.length, index.id(seg.first))
                    )
            elif seg.source is Source.SEED:
                units.extend(self._seed_units(seg))
            elif seg.source is Source.NULL and not self.blank:
                units.append(_NullWork(seg.offset, seg.length))
                self.zeroed += seg.length
            else:  # in place, or null on a blank target: nothing to write
                self.progress.advance(seg.length)
        return units

    def _seed_units(self, seg: Segment) -> Iterator[_SeedWork]:
        assert seg.seed is not None and seg.source_offset is not None
        placed = self.clonable[seg.seed]
        if placed:
            with seed_errors(self.plan, seg.seed):
                self.cloned += transfer(
                    self.seed_fds[seg.seed],
                    seg.source_offset,
                    self.fd,
                    seg.offset,
                    seg.length,
                    blocksize=self.blocksize,
                    clone=True,
                )
        else:
            self.write_ranges.append((seg.offset, seg.length))
        for first, count, offset, length in _pieces(self.plan.index, seg, SEED_PIECE):
            src = seg.source_offset + (offset - seg.offset)
            yield _SeedWork(seg.seed, src, offset, first, count, length, placed)


def _pieces(index: Index, seg: Segment, size: int) -> Iterator[tuple[int, int, int, int]]:
    """``seg``'s chunks in consecutive pieces of at least ``size`` bytes (the last may be
    less): ``(first chunk, chunks, offset, length)`` each."""
    first, offset, stop = seg.first, seg.offset, seg.first + seg.count
    ends = index.ends
    while first < stop:
        last = bisect.bisect_left(ends, offset + size, first, stop - 1)
        end = ends[last]
        yield first, last + 1 - first, offset, end - offset
        first, offset = last + 1, end


def _merged(ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Adjacent or overlapping (offset, length) ranges joined, in offset order."""
    current: tuple[int, int] | None = None
    for offset, length in sorted(ranges):
        if current is not None and offset <= current[0] + current[1]:
            end = max(current[0] + current[1], offset + length)
            current = (current[0], end - current[0])
            continue
        if current is not None:
            yield current
        current = (offset, length)
    if current is not None:
        yield current


class _Runner:
    """Executes one unit; the bytes of the target it accounts for."""

    def __init__(
        self,
        plan: AssemblyPlan,
        fd: int,
        store: Store,
        seed_fds: dict[int, int],
        repeats: dict[int, list[int]],
    ) -> None:
        self.plan, self.fd, self.store, self.seed_fds = plan, fd, store, seed_fds
        self.repeats = repeats
        self.digest = plan.index.digest

    def batch(self, units: list[_Work]) -> int:
        """Execute consecutive units: store chunks that follow each other in the target
        go out in one write (``gather``), flushed before any other unit runs."""
        gather = Gather(self.fd)
        done = 0
        for unit in units:
            if isinstance(unit, _StoreRun):
                done += self._store(unit, gather)
            else:
                gather.flush()
                done += self(unit)
        gather.flush()
        return done

    def _store(self, unit: _StoreRun, gather: Gather) -> int:
        index, repeats, store = self.plan.index, self.repeats, self.store
        ends, largest = index.ends, index.sizes.max
        done, start = 0, unit.offset
        for j in range(unit.first, unit.first + unit.chunks):
            size = ends[j] - start
            data = plain_of(store, index.id(j), size, largest)
            gather.write(data, start)
            done += size
            for offset in repeats.get(j, ()):
                gather.write(data, offset)
                done += size
            start += size
        return done

    def __call__(self, unit: _SeedWork | _SelfWork | _NullWork) -> int:
        if isinstance(unit, _SeedWork):
            return self._seed(unit)
        if isinstance(unit, _SelfWork):
            data = os.pread(self.fd, unit.size, unit.source_offset)
            if self.digest.hash(data) != unit.id:
                raise DesyncError(
                    f"target changed during extraction: bytes at {unit.source_offset} no longer"
                    f" hold chunk {unit.id.hex()}"
                )
            pwrite_all(self.fd, data, unit.offset)
            return unit.size
        if not punch_hole(self.fd, unit.offset, unit.length):
            for at in range(unit.offset, unit.offset + unit.length, len(_ZEROS)):
                pwrite_all(self.fd, _ZEROS[: unit.offset + unit.length - at], at)
        return unit.length

    def _seed(self, unit: _SeedWork) -> int:
        seed = self.plan.seeds[unit.seed]
        if not unit.placed:
            with seed_errors(self.plan, unit.seed):
                copy_range(
                    self.seed_fds[unit.seed], unit.source_offset, self.fd, unit.offset, unit.length
                )
        index = self.plan.index
        offset = unit.offset
        for j in range(unit.first, unit.first + unit.chunks):
            size, cid = index.ends[j] - offset, index.id(j)
            if self.digest.hash(os.pread(self.fd, size, offset)) != cid:
                at = unit.source_offset + offset - unit.offset
                raise SeedInvalid(
                    unit.seed, seed.label, f"bytes {at}..{at + size} are not chunk {cid.hex()}"
                )
            offset += size
        return unit.length


def _run(
    units: list[_Work], runner: _Runner, fd: int, workers: int, store: Store, progress: Progress
) -> None:
    workers = cpu_workers(workers)
    if can_fork(store, workers):
        shares = list(batches(units, _weight, SHARE))  # a few references per MiB of target

        def share(claims: Iterator[int], report: Report) -> None:
            def mine() -> Iterator[int]:
                for k in claims:
                    written = runner.batch(shares[k])
                    report(written)
                    yield written

            _writing(mine(), fd)

        run_forked(share, len(shares), workers, _Syncing(progress, fd))
        return

    def run_and_report(batch: list[_Work]) -> int:
        written = runner.batch(batch)
        progress.advance(written)
        return written

    _writing(ordered_map(run_and_report, batches(units, _weight, SHARE), workers=workers), fd)


class _Syncing:
    """The parent's progress while forked workers write: passed on, and the target
    ``fdatasync``-ed after every ``SYNC_EVERY`` bytes reported.

    A failure is raised, never swallowed: Linux reports a write-back error to one
    sync call per file description, so the final fsync would not see it again.
    """

    def __init__(self, progress: Progress, fd: int) -> None:
        self._progress, self._fd = progress, fd
        self._unsynced = 0

    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        self._progress.start(stage, total, unit)

    def advance(self, n: int) -> None:
        self._progress.advance(n)
        self._unsynced += n
        if self._unsynced >= SYNC_EVERY:
            self._unsynced = 0
            os.fdatasync(self._fd)

    def finish(self) -> None:
        self._progress.finish()


def _weight(unit: _Work) -> int:
    """Bytes a unit writes (a store chunk's repeats aside: a rough share is enough)."""
    return unit.size if isinstance(unit, _SelfWork) else unit.length


def _writing(written: Iterable[int], fd: int) -> None:
    """Consume byte counts of finished writes, starting writeback every WRITEBACK_EVERY."""
    unflushed = 0
    for n in written:
        unflushed += n
        if unflushed >= WRITEBACK_EVERY:
            start_writeback(fd)
            unflushed = 0
