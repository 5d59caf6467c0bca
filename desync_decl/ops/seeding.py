"""Turning seeds as users name them into seeds with an index, chunking files that have none."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from desync_decl.assemble.seeds import Seed, SeedSpec
from desync_decl.errors import DesyncError, file_error
from desync_decl.formats import index as index_format
from desync_decl.formats.index import Index, Windowed
from desync_decl.progress import NO_PROGRESS, Progress


def open_seeds(
    specs: Sequence[SeedSpec],
    target: Windowed,
    *,
    concurrency: int = 10,
    progress: Progress = NO_PROGRESS,
) -> list[Seed]:
    """Each seed with its index: read from its index file, or made by chunking the
    file with the target index's chunk sizes and digest (a seed without an index,
    e.g. the other partition of an A/B update, desync issue #178)."""
    seeds = []
    for spec in specs:
        if spec.index is not None:
            index = _read_index(spec.index)
            if index.digest is not target.digest:
                raise DesyncError(
                    f"seed index {spec.index} uses {index.digest.value} chunk ids, the index"
                    f" being extracted {target.digest.value}: no chunk could ever match"
                )
            seeds.append(Seed(spec.file, index, str(spec.index)))
        else:
            seeds.append(reindex(spec.file, target, str(spec.file), concurrency, progress))
    return seeds


def reindex(
    file: Path, like: Windowed, label: str, concurrency: int, progress: Progress = NO_PROGRESS
) -> Seed:
    """A seed whose index is made now from the file's bytes, chunked like ``like``.

    ``make`` (and with it the chunker's C extension) is imported here: every
    ``extract`` imports this module, few reindex a seed (~1.4 ms of start-up)."""
    from desync_decl.ops.make import make

    result = make(
        file, sizes=like.sizes, digest=like.digest, concurrency=concurrency, progress=progress
    )
    return Seed(file, result.index, label)


def _read_index(path: Path) -> Index:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise file_error(path, e, "read") from None
    if not data:
        raise DesyncError(f"seed index {path} is empty")
    return index_format.decode(data, str(path))
