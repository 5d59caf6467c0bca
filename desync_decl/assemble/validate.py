"""Checking seeds against their indexes before anything is written.

Needed when the target is written in place: a seed that lies must be found
before its bytes land in the user's file (desync's rule). With a temp file
target, the executor's read-back check suffices, as nothing is visible
until the rename. A plan runs it too, so that what it says comes from seeds is
what will (``ops.extract.plan_with_valid_seeds``).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from typing import NamedTuple

from desync_decl.assemble.execute import SeedInvalid, seed_errors
from desync_decl.assemble.plan import AssemblyPlan, Source
from desync_decl.formats.digest import ChunkID
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress


class _SeedChunk(NamedTuple):
    seed: int
    offset: int  # in the seed file
    size: int
    id: ChunkID


def validate_seeds(
    plan: AssemblyPlan,
    *,
    workers: int,
    progress: Progress = NO_PROGRESS,
    trusted: Collection[int] = (),
) -> None:
    """Read and hash every seed chunk the plan uses; ``SeedInvalid`` for the first bad
    one. Seeds whose positions are in ``trusted`` are not read (the caller has
    evidence they hold what their index says)."""
    chunks = [c for c in _seed_chunks(plan) if c.seed not in trusted]
    if not chunks:
        return
    digest = plan.index.digest
    fds: dict[int, int] = {}
    try:
        for c in chunks:
            if c.seed not in fds:
                seed = plan.seeds[c.seed]
                try:
                    fds[c.seed] = os.open(seed.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise SeedInvalid(c.seed, seed.label, f"cannot open: {e.strerror}") from None

        def check(c: _SeedChunk) -> None:
            with seed_errors(plan, c.seed):
                data = os.pread(fds[c.seed], c.size, c.offset)
            if digest.hash(data) != c.id:
                raise SeedInvalid(
                    c.seed,
                    plan.seeds[c.seed].label,
                    f"bytes {c.offset}..{c.offset + c.size} are not chunk {c.id.hex()}",
                )
            progress.advance(c.size)

        progress.start("validate seeds", sum(c.size for c in chunks))
        for _ in batched_map(check, chunks, workers=workers, weight=lambda c: c.size):
            pass
        progress.finish()
    finally:
        for fd in fds.values():
            os.close(fd)


def _seed_chunks(plan: AssemblyPlan) -> Iterator[_SeedChunk]:
    index = plan.index
    for seg in plan.segments:
        if seg.source is not Source.SEED:
            continue
        assert seg.seed is not None and seg.source_offset is not None
        offset = seg.source_offset
        for j in range(seg.first, seg.first + seg.count):
            chunk = index.chunk(j)
            yield _SeedChunk(seg.seed, offset, chunk.size, chunk.id)
            offset += chunk.size
