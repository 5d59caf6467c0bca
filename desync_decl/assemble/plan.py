"""The assembly plan: which byte ranges of the target come from where, computed
without writing anything.

``extract`` executes exactly this plan, ``extract --dry-run`` and ``info
--seed`` print it, and the declarative ``plan`` reports its totals as the bytes
that will travel. Walking the target index from the first chunk, each position
takes, in this order:

1. **in place**: the target already holds the chunk there (``--in-place``);
2. the longest run of following chunks that one seed holds in the same order,
   the **null seed** (chunks of zeros: left as holes) or a **file seed**; the
   run covering more bytes wins, an earlier seed on ties (desync's rule);
3. **self**: the chunk occurs earlier in the target, so it is written again
   from there instead of being fetched twice;
4. **store**: fetched (each distinct chunk once).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from desync_decl.assemble.seeds import Seed
from desync_decl.formats.digest import ID_SIZE, ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.repeats import find_repeats

MAX_CANDIDATES = 16  # positions of one chunk tried per seed: bounds the work on repetitive data


class Source(enum.Enum):
    IN_PLACE = "in-place"
    NULL = "null"
    SEED = "seed"
    SELF = "self"
    STORE = "store"


@dataclass(frozen=True)
class Segment:
    """A run of consecutive target chunks taken from one source."""

    source: Source
    first: int  # position of the first chunk in the target index
    count: int  # number of chunks
    offset: int  # byte offset in the target
    length: int  # bytes
    seed: int | None = None  # which of ``AssemblyPlan.seeds`` (SEED)
    source_offset: int | None = None  # where the bytes are in the seed (SEED) or target (SELF)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "source": self.source.value,
            "offset": self.offset,
            "length": self.length,
            "first-chunk": self.first,
            "chunks": self.count,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        if self.source_offset is not None:
            out["source-offset"] = self.source_offset
        return out


@dataclass(frozen=True)
class Tally:
    chunks: int = 0
    bytes: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.chunks + other.chunks, self.bytes + other.bytes)


@dataclass(frozen=True)
class PlanTotals:
    """What a plan adds up to: chunks and bytes per source and per seed. Plans of an
    index's windows add up to the whole's (``+``): what ``extract`` reports when it
    worked in windows, without holding every window's segments."""

    seeds: tuple[Seed, ...]
    length: int  # bytes planned
    chunks: int
    sources: dict[Source, Tally]  # every kind present
    per_seed: tuple[Tally, ...]  # one per seed

    def by_source(self) -> dict[Source, Tally]:
        return dict(self.sources)

    def by_seed(self) -> list[Tally]:
        return list(self.per_seed)

    def __add__(self, other: PlanTotals) -> PlanTotals:
        return PlanTotals(
            self.seeds,
            self.length + other.length,
            self.chunks + other.chunks,
            {src: t + other.sources[src] for src, t in self.sources.items()},
            tuple(a + b for a, b in zip(self.per_seed, other.per_seed, strict=True)),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "bytes-total": self.length,
            "chunks-total": self.chunks,
            "sources": {
                src.value: {"chunks": t.chunks, "bytes": t.bytes} for src, t in self.sources.items()
            },
            "seeds": [
                {"file": str(seed.path), "name": seed.label, "chunks": t.chunks, "bytes": t.bytes}
                for seed, t in zip(self.seeds, self.per_seed, strict=True)
            ],
        }


@dataclass(frozen=True)
class AssemblyPlan:
    index: Index
    seeds: tuple[Seed, ...]
    segments: tuple[Segment, ...]

    def by_source(self) -> dict[Source, Tally]:
        """Chunks and bytes of the target per kind of source (every kind present)."""
        totals = dict.fromkeys(Source, Tally())
        for s in self.segments:
            totals[s.source] += Tally(s.count, s.length)
        return totals

    def by_seed(self) -> list[Tally]:
        """Chunks and bytes of the target taken from each file seed."""
        totals = [Tally()] * len(self.seeds)
        for s in self.segments:
            if s.seed is not None:
                totals[s.seed] += Tally(s.count, s.length)
        return totals

    def totals(self) -> PlanTotals:
        """The plan's sums (of a window: of its bytes and chunks only)."""
        length = self.index.length - self.index.origin
        sources, per_seed = self.by_source(), tuple(self.by_seed())
        return PlanTotals(self.seeds, length, len(self.index), sources, per_seed)

    def to_json(self, *, segments: bool = True) -> dict[str, object]:
        """The plan as data: totals per source and per seed, then (optionally) every segment."""
        out = self.totals().to_json()
        if segments:
            out["segments"] = [s.to_json() for s in self.segments]
        return out


def null_chunk_id(index: Index) -> ChunkID:
    """The id of ``max`` zero bytes: what the chunker cuts all through a run of zeros."""
    return _zeros_id(index.digest, index.sizes.max)


@functools.lru_cache(maxsize=16)
def _zeros_id(digest: Digest, size: int) -> ChunkID:
    """Hashed a block at a time: a 104-byte index may claim 128 MiB chunks, and
    allocating them would let it take that much memory from every plan."""
    hasher, block = digest.hasher(), bytes(1 << 20)
    whole, rest = divmod(size, len(block))
    for _ in range(whole):
        hasher.update(block)
    hasher.update(block[:rest])
    return ChunkID(hasher.digest())


def plan_assembly(
    index: Index,
    seeds: Sequence[Seed] = (),
    *,
    in_place: Sequence[bool] | None = None,
    finders: Sequence[SeedFinder] | None = None,
) -> AssemblyPlan:
    """Decide the source of every target chunk; ``in_place[i]`` says the target
    already holds chunk ``i`` at its offset. Reads and writes nothing. ``finders``:
    ``seed_finders(seeds)`` made once for every window of an index planned in turn."""
    walk = _Walk(index, in_place)
    if finders is None:
        finders = seed_finders(seeds)
    null_id = null_chunk_id(index)
    first, repeated = find_repeats(index.ids, ID_SIZE)
    # by the position of a repeated id's first occurrence: the target offset of its first
    # store/in-place copy (only ids that repeat are kept: a random image has none)
    first_at: dict[int, int] = {}
    segments = _Segments(walk)
    i = 0
    while i < walk.n:
        if walk.in_place[i]:
            if repeated[i]:
                first_at.setdefault(first[i], walk.start(i))
            segments.extend(Source.IN_PLACE, i)
            i += 1
            continue
        best = None
        if walk.id(i) == null_id:
            best = walk.segment(Source.NULL, i, walk.run_of(null_id, i))
        for k, finder in enumerate(finders):
            run = finder.longest_run(walk, i)
            if run is not None and (best is None or run.length > best.length):
                best = walk.segment(Source.SEED, i, run.chunks, k, finder.start(run.seed_first))
        if best is not None:
            segments.add(best)
            i += best.count
            continue
        if repeated[i] and first[i] in first_at:
            segments.add(walk.segment(Source.SELF, i, 1, source_offset=first_at[first[i]]))
        else:
            if repeated[i]:
                first_at[first[i]] = walk.start(i)
            segments.extend(Source.STORE, i)
        i += 1
    return AssemblyPlan(index, tuple(seeds), segments.done())


class _Segments:
    """The plan's segments in order; consecutive chunks from the store, or in place,
    are one segment, made when its run ends (a segment per chunk, merged as it
    came, was two thirds of the planning time)."""

    def __init__(self, walk: _Walk) -> None:
        self.walk = walk
        self.segments: list[Segment] = []
        self.run: tuple[Source, int] | None = None  # the open run's source and first chunk
        self.run_count = 0

    def extend(self, source: Source, i: int) -> None:
        """Chunk ``i`` comes from ``source``: continue the open run or start one."""
        if self.run is not None and self.run[0] is source and self.run[1] + self.run_count == i:
            self.run_count += 1
            return
        self._close_run()
        self.run, self.run_count = (source, i), 1

    def add(self, segment: Segment) -> None:
        self._close_run()
        self.segments.append(segment)

    def done(self) -> tuple[Segment, ...]:
        self._close_run()
        return tuple(self.segments)

    def _close_run(self) -> None:
        if self.run is not None:
            self.segments.append(self.walk.segment(self.run[0], self.run[1], self.run_count))
            self.run = None


class _Walk:
    """The target index for the planner's loops: its compact table as it is (an id is
    sliced out when asked for), so planning a large image holds ~9 bytes per chunk
    beside the index, not a list of id objects (~120 bytes per chunk)."""

    def __init__(self, index: Index, in_place: Sequence[bool] | None) -> None:
        self.n = len(index)
        self.id, self.start, self.ends = index.id, index.start, index.ends  # chunk i: start..end
        self.in_place: Sequence[bool] | bytes = in_place if in_place is not None else bytes(self.n)
        if len(self.in_place) != self.n:
            raise ValueError("in_place must have one entry per chunk")

    def size(self, i: int) -> int:
        return self.ends[i] - self.start(i)

    def bytes_of(self, i: int, count: int) -> int:
        return self.ends[i + count - 1] - self.start(i) if count else 0

    def run_of(self, cid: ChunkID, i: int) -> int:
        """How many chunks from ``i`` on are ``cid`` and not in place."""
        j = i
        while j < self.n and self.id(j) == cid and not self.in_place[j]:
            j += 1
        return j - i

    def segment(
        self,
        source: Source,
        i: int,
        count: int,
        seed: int | None = None,
        source_offset: int | None = None,
    ) -> Segment:
        return Segment(
            source, i, count, self.start(i), self.bytes_of(i, count), seed, source_offset
        )


class _Run(NamedTuple):
    chunks: int  # how many (``count`` would hide tuple.count)
    length: int  # bytes
    seed_first: int  # position of the run's first chunk in the seed's index


def seed_finders(seeds: Sequence[Seed]) -> list[SeedFinder]:
    """What ``plan_assembly`` looks seed runs up in, one per seed, in order."""
    return [SeedFinder(seed.index) for seed in seeds]


class SeedFinder:
    """Where each chunk of one seed sits, to find the longest run matching the target."""

    def __init__(self, index: Index) -> None:
        self.n = len(index)
        self.ids = [index.id(i) for i in range(self.n)]
        self.starts = [0, *index.ends]
        self.positions: dict[ChunkID, list[int]] = {}
        for i, cid in enumerate(self.ids):
            found = self.positions.setdefault(cid, [])
            if len(found) < MAX_CANDIDATES:
                found.append(i)

    def start(self, i: int) -> int:
        return self.starts[i]

    def longest_run(self, walk: _Walk, i: int) -> _Run | None:
        """The longest run from target chunk ``i``; the first candidate wins ties.
        Chunks in place end a run."""
        best: _Run | None = None
        for p in self.positions.get(walk.id(i), ()):
            k = 0
            while (
                i + k < walk.n
                and p + k < self.n
                and self.ids[p + k] == walk.id(i + k)
                and self.starts[p + k + 1] - self.starts[p + k] == walk.size(i + k)
                and not walk.in_place[i + k]
            ):
                k += 1
            if k and (best is None or walk.bytes_of(i, k) > best.length):
                best = _Run(k, walk.bytes_of(i, k), p)
        return best
