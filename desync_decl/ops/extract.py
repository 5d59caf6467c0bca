"""``extract``: rebuild a blob from its index and chunk stores.

Workers fetch each distinct chunk once (verified by the store), check its size
against the index and ``os.pwrite`` it at every offset where it occurs. The
output is written to a temp file beside the target and renamed at the end: a
failed or killed extraction leaves the old target untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.fsutil import AtomicFile, preallocate, start_writeback
from desync_decl.parallel import batched_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import Store

WRITEBACK_EVERY = 64 * 1024 * 1024  # start disk writes early: the final fsync then waits less


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
            data = store.get_chunk(p.id).plain(p.size)
            if len(data) != p.size:
                raise DesyncError(
                    f"chunk {p.id.hex()} from {store} has {len(data)} bytes,"
                    f" the index says {p.size}"
                )
            for offset in p.offsets:
                _pwrite_all(out.fd, data, offset)
            progress.advance(p.size * len(p.offsets))
            return p.size * len(p.offsets)

        progress.start("extract", index.length)
        unflushed = 0
        for written in batched_map(
            fetch_and_write, plan, workers=concurrency, weight=lambda p: p.size
        ):
            unflushed += written
            if unflushed >= WRITEBACK_EVERY:
                start_writeback(out.fd)
                unflushed = 0
        progress.finish()
        try:
            out.commit()
        except OSError as e:
            raise DesyncError(f"cannot write {target}: {e.strerror}") from None
    fetched = sum(p.size for p in plan)
    return ExtractResult(target, index.length, len(index), len(plan), fetched)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
