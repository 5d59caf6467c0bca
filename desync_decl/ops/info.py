"""``info``: what an index holds and, given stores, how much of it they hold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from desync_decl.assemble.plan import AssemblyPlan, plan_assembly
from desync_decl.assemble.seeds import Seed
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.parallel import ordered_map
from desync_decl.stores.base import Store


@dataclass(frozen=True)
class IndexInfo:
    size: int
    total: int
    unique: int
    digest: str
    index_digest: str
    flags: int
    chunk_size_min: int
    chunk_size_avg: int
    chunk_size_max: int
    in_store: int | None  # distinct chunks the stores hold; None without stores
    per_store: tuple[tuple[str, int], ...]  # (store, distinct chunks it holds), in -s order
    plan: AssemblyPlan | None  # where an extract would take each range from; None without seeds

    def as_json(self) -> dict[str, object]:
        """desync's ``info`` keys (plus the digest and flags it does not print)."""
        out: dict[str, object] = {
            "total": self.total,
            "unique": self.unique,
            "size": self.size,
            "chunk-size-min": self.chunk_size_min,
            "chunk-size-avg": self.chunk_size_avg,
            "chunk-size-max": self.chunk_size_max,
            "digest": self.digest,
            "index-digest": self.index_digest,
            "feature-flags": f"0x{self.flags:016x}",
        }
        if self.in_store is not None:
            out["in-store"] = self.in_store
            out["stores"] = [
                {"store": name, "present": n, "missing": self.unique - n}
                for name, n in self.per_store
            ]
        if self.plan is not None:
            out["plan"] = self.plan.to_json(segments=False)
        return out


def info(
    index: Index,
    *,
    stores: Sequence[Store] = (),
    seeds: Sequence[Seed] = (),
    concurrency: int = 10,
) -> IndexInfo:
    """Counts over distinct ids, per store and for all together (what an extract
    could find); a failing store raises instead of counting as absent. With
    seeds, the plan an extract would follow (the same planner, same numbers)."""
    unique = index.unique_ids()
    in_store = None
    per_store = [0] * len(stores)

    def presence(id: ChunkID) -> list[bool]:
        return [s.has_chunk(id) for s in stores]

    if stores:
        in_store = 0
        for found in ordered_map(presence, iter(unique), workers=concurrency):
            in_store += any(found)
            for k, present in enumerate(found):
                per_store[k] += present
    return IndexInfo(
        size=index.length,
        total=len(index),
        unique=len(unique),
        digest=index.digest.value,
        index_digest=index.file_digest(),
        flags=index.flags,
        chunk_size_min=index.sizes.min,
        chunk_size_avg=index.sizes.avg,
        chunk_size_max=index.sizes.max,
        in_store=in_store,
        per_store=tuple((str(s), n) for s, n in zip(stores, per_store, strict=True)),
        plan=plan_assembly(index, seeds) if seeds else None,
    )
