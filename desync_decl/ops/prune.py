"""``prune``: delete every chunk of a store that no given index references."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.stores.base import PruneStore


@dataclass(frozen=True)
class PruneResult:
    kept: int  # distinct chunk ids referenced by the indexes
    removed: int  # chunk files deleted


def keep_set(indexes: Iterable[Index]) -> set[ChunkID]:
    keep: set[ChunkID] = set()
    for index in indexes:
        keep |= index.unique_ids()
    return keep


def prune(store: PruneStore, keep: set[ChunkID]) -> PruneResult:
    """Refuses an empty keep-set: that would delete the whole store."""
    if not keep:
        raise DesyncError(f"refusing to prune {store}: the indexes reference no chunks")
    return PruneResult(len(keep), store.prune(keep))
