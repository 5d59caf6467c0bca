"""``extract``: rebuild a blob from its index and chunk stores.

Workers fetch each distinct chunk once (verified by the store), check its size
against the index and ``os.pwrite`` it at every offset where it occurs. The
output is written to a temp file beside the target and renamed at the end: a
failed or killed extraction leaves the old target untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from desync_decl.errors import DesyncError
from desync_decl.forked import Report, Work, can_fork, run_forked
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.fsutil import AtomicFile, preallocate, start_writeback
from desync_decl.parallel import batched_map, cpu_workers
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import Store, plain_of

WRITEBACK_EVERY = 64 * 1024 * 1024  # start disk writes early: the final fsync then waits less
SHARE_RUN = 16  # forked workers take turns by runs of this many chunks (locality, balance)


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    bytes_total: int
    chunks_total: int
    chunks_from_store: int  # distinct chunks fetched
    bytes_from_store: int  # their uncompressed size


class _Placement(NamedTuple):
    id: ChunkID
    size: int
    offsets: list[int]  # every offset the chunk occupies in the output


def placements(index: Index) -> list[_Placement]:
    """Each distinct chunk with every offset it occupies, in order of first use."""
    by_id: dict[ChunkID, _Placement] = {}
    for start, size, id in index:
        p = by_id.get(id)
        if p is None:
            by_id[id] = _Placement(id, size, [start])
        else:
            p.offsets.append(start)
    return list(by_id.values())


def extract(
    index: Index,
    path: str | os.PathLike,
    store: Store,
    *,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
) -> ExtractResult:
    target = Path(path)
    if target.is_dir():
        raise DesyncError(f"cannot extract to {target}: is a directory")
    plan = placements(index)
    try:
        out = AtomicFile(target)
    except OSError as e:
        raise DesyncError(f"cannot write {target}: {e.strerror}") from None
    with out:
        try:
            os.ftruncate(out.fd, index.length)
            preallocate(out.fd, index.length)
        except OSError as e:
            raise DesyncError(
                f"cannot write {target} ({index.length} bytes): {e.strerror}"
            ) from None

        def fetch_and_write(p: _Placement) -> int:
            written = _place(out.fd, p, plain_of(store, p.id, p.size))
            progress.advance(written)
            return written

        progress.start("extract", index.length)
        workers = cpu_workers(concurrency)
        if can_fork(store, workers):
            run_forked(_share_of(plan, store, out.fd), workers, progress)
        else:
            _writing(batched_map(fetch_and_write, plan, workers=workers, weight=_size), out.fd)
        progress.finish()
        try:
            out.commit()
        except OSError as e:
            raise DesyncError(f"cannot write {target}: {e.strerror}") from None
    fetched = sum(p.size for p in plan)
    return ExtractResult(target, index.length, len(index), len(plan), fetched)


def _size(p: _Placement) -> int:
    return p.size


def _writing(written: Iterable[int], fd: int) -> None:
    """Consume byte counts of finished writes, starting writeback every WRITEBACK_EVERY."""
    unflushed = 0
    for n in written:
        unflushed += n
        if unflushed >= WRITEBACK_EVERY:
            start_writeback(fd)
            unflushed = 0


def _share_of(plan: list[_Placement], store: Store, fd: int) -> Work:
    """The work of forked worker ``i`` of ``n``: every n-th run of SHARE_RUN chunks."""

    def work(i: int, n: int, report: Report) -> None:
        def mine() -> Iterator[int]:
            for k in range(i * SHARE_RUN, len(plan), n * SHARE_RUN):
                written = sum(
                    _place(fd, p, plain_of(store, p.id, p.size)) for p in plan[k : k + SHARE_RUN]
                )
                report(written)
                yield written

        _writing(mine(), fd)

    return work


def _place(fd: int, p: _Placement, data: bytes | memoryview) -> int:
    """Write the chunk at every offset it occupies; the number of bytes written."""
    for offset in p.offsets:
        _pwrite_all(fd, data, offset)
    return p.size * len(p.offsets)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
