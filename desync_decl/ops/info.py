"""``info``: what an index holds and, given stores, seeds and a cache, how much of it
they hold.

desync's numbers, counted as its ``info`` counts them: every number is over distinct
chunk ids (a chunk repeated in the index counts once, with its size where it first
occurs); a chunk is *in a seed* when a seed's index lists it (the seed's data is not
read), *in the cache* when the cache has it, and the sizes of chunks in neither are
what an extraction would fetch. A chunks-info file (``inspect-chunks`` output) gives
their compressed sizes: reported only when the file knows every one of them, since a
partial sum would understate what travels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from desync_decl.assemble.plan import AssemblyPlan, plan_assembly
from desync_decl.assemble.seeds import Seed
from desync_decl.errors import DesyncError, file_error
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.parallel import ordered_map
from desync_decl.stores.base import Store


@dataclass(frozen=True)
class ChunkInfo:
    """One entry of a chunks-info file (desync's ``ChunkAdditionalInfo``)."""

    uncompressed_size: int
    compressed_size: int  # 0: not known (the store held no compressed form of it)


def chunk_info_rows(
    index: Index, stored_size: Callable[[ChunkID], int | None] | None = None
) -> list[dict[str, object]]:
    """``inspect-chunks``' JSON: each chunk of the index in order, with its compressed
    size when ``stored_size`` knows one (desync leaves the key out otherwise)."""
    rows = []
    for c in index:
        row: dict[str, object] = {"id": c.id.hex(), "uncompressed_size": c.size}
        stored = stored_size(c.id) if stored_size is not None else None
        if stored:
            row["compressed_size"] = stored
        rows.append(row)
    return rows


def read_chunks_info(path: str | Path) -> dict[ChunkID, ChunkInfo]:
    """A chunks-info file as ``inspect-chunks`` writes it (desync's format); one line
    naming the file and the entry for anything else."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise file_error(path, e, "read") from None
    except UnicodeDecodeError:
        raise DesyncError(f"chunks info {path}: not a JSON file") from None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DesyncError(f"chunks info {path}:{e.lineno}:{e.colno}: {e.msg}") from None
    if not isinstance(rows, list):
        raise DesyncError(f"chunks info {path}: expected a JSON list of chunks")
    found: dict[ChunkID, ChunkInfo] = {}
    for n, row in enumerate(rows):
        found.update([_chunk_info(row, f"chunks info {path}: entry {n}")])
    return found


def _chunk_info(row: object, where: str) -> tuple[ChunkID, ChunkInfo]:
    if not isinstance(row, dict):
        raise DesyncError(f"{where}: expected an object")
    cid, plain, stored = row.get("id"), row.get("uncompressed_size"), row.get("compressed_size", 0)
    if not isinstance(cid, str) or len(cid) != 64:
        raise DesyncError(f"{where}: 'id' must be a chunk id of 64 hex digits")
    try:
        raw = bytes.fromhex(cid)
    except ValueError:
        raise DesyncError(f"{where}: 'id' must be a chunk id of 64 hex digits") from None
    for key, value in (("uncompressed_size", plain), ("compressed_size", stored)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DesyncError(f"{where}: '{key}' must be a size in bytes")
    assert isinstance(plain, int) and isinstance(stored, int)
    return ChunkID(raw), ChunkInfo(plain, stored)


@dataclass(frozen=True)
class IndexInfo:
    size: int
    total: int
    unique: int
    in_store: int  # distinct chunks any store holds (0 without stores)
    in_seed: int  # distinct chunks a seed's index lists
    in_cache: int  # distinct chunks the cache holds
    not_in_seed_nor_cache: int
    size_not_in_seed: int  # bytes of the distinct chunks no seed lists
    size_not_in_seed_nor_cache: int
    size_not_in_seed_nor_cache_compressed: int  # 0 unless the chunks info knows all of them
    chunk_size_min: int
    chunk_size_avg: int
    chunk_size_max: int
    digest: str
    index_digest: str
    flags: int
    per_store: tuple[tuple[str, int], ...]  # (store, distinct chunks it holds), in -s order
    plan: AssemblyPlan | None  # where an extract would take each range from; None without seeds

    def desync_json(self) -> dict[str, object]:
        """Exactly desync's ``info`` JSON: its keys, in its order."""
        return {
            "total": self.total,
            "unique": self.unique,
            "in-store": self.in_store,
            "in-seed": self.in_seed,
            "in-cache": self.in_cache,
            "not-in-seed-nor-cache": self.not_in_seed_nor_cache,
            "size": self.size,
            "dedup-size-not-in-seed": self.size_not_in_seed,
            "dedup-size-not-in-seed-nor-cache": self.size_not_in_seed_nor_cache,
            "dedup-size-not-in-seed-nor-cache-compressed": (
                self.size_not_in_seed_nor_cache_compressed
            ),
            "chunk-size-min": self.chunk_size_min,
            "chunk-size-avg": self.chunk_size_avg,
            "chunk-size-max": self.chunk_size_max,
        }

    def as_json(self) -> dict[str, object]:
        """desync's keys, then what desync-decl adds: the digests and flags, what each
        store holds and lacks, and (with seeds) the plan an extract would follow."""
        out = self.desync_json()
        out.update(
            {
                "digest": self.digest,
                "index-digest": self.index_digest,
                "feature-flags": f"0x{self.flags:016x}",
                "stores": [
                    {"store": name, "present": n, "missing": self.unique - n}
                    for name, n in self.per_store
                ],
            }
        )
        if self.plan is not None:
            out["plan"] = self.plan.to_json(segments=False)
        return out


def info(
    index: Index,
    *,
    stores: Sequence[Store] = (),
    seeds: Sequence[Seed] = (),
    cache: Store | None = None,
    chunks_info: Mapping[ChunkID, ChunkInfo] | None = None,
    concurrency: int = 10,
) -> IndexInfo:
    """Count what ``stores``, ``seeds`` and ``cache`` hold of ``index``; a failing
    store raises instead of counting as absent (desync counts it absent, which hides
    an outage as missing chunks). With seeds, also the plan an extract would follow
    (the same planner, same numbers)."""
    first_size: dict[ChunkID, int] = {}
    for c in index:
        first_size.setdefault(c.id, c.size)
    in_seeds: set[ChunkID] = set()
    for seed in seeds:
        in_seeds |= seed.index.unique_ids()

    def presence(id: ChunkID) -> tuple[list[bool], bool]:
        cached = cache is not None and cache.has_chunk(id)
        return [s.has_chunk(id) for s in stores], cached

    in_store = in_cache = in_seed = 0
    per_store = [0] * len(stores)
    size_not_in_seed = size_missing = 0
    missing = 0
    compressed = _CompressedSum(chunks_info)
    found = ordered_map(presence, iter(first_size), workers=concurrency)
    for (cid, size), (held, cached) in zip(first_size.items(), found, strict=True):
        in_store += any(held)
        for k, present in enumerate(held):
            per_store[k] += present
        in_cache += cached
        if cid in in_seeds:
            in_seed += 1
            continue
        size_not_in_seed += size
        if not cached:
            missing += 1
            size_missing += size
            compressed.add(cid, size)
    return IndexInfo(
        size=index.length,
        total=len(index),
        unique=len(first_size),
        in_store=in_store,
        in_seed=in_seed,
        in_cache=in_cache,
        not_in_seed_nor_cache=missing,
        size_not_in_seed=size_not_in_seed,
        size_not_in_seed_nor_cache=size_missing,
        size_not_in_seed_nor_cache_compressed=compressed.total(),
        chunk_size_min=index.sizes.min,
        chunk_size_avg=index.sizes.avg,
        chunk_size_max=index.sizes.max,
        digest=index.digest.value,
        index_digest=index.file_digest(),
        flags=index.flags,
        per_store=tuple((str(s), n) for s, n in zip(stores, per_store, strict=True)),
        plan=plan_assembly(index, seeds) if seeds else None,
    )


class _CompressedSum:
    """The compressed bytes of the chunks to fetch, as desync sums them: it stops (and
    reports 0) at the first chunk the chunks info lacks or knows no compressed size
    of; until then, a chunk whose size the file states otherwise than the index is an
    error (the file describes other data)."""

    def __init__(self, chunks_info: Mapping[ChunkID, ChunkInfo] | None) -> None:
        self.chunks_info = chunks_info
        self.sum = 0

    def add(self, cid: ChunkID, size: int) -> None:
        if self.chunks_info is None:
            return
        known = self.chunks_info.get(cid)
        if known is None or known.compressed_size == 0:
            self.chunks_info = None
        if known is not None and known.uncompressed_size != size:
            raise DesyncError(
                f"the chunks info file has an unexpected size for the chunk {cid.hex()}:"
                f" {known.uncompressed_size} instead of {size}"
            )
        self.sum += known.compressed_size if known is not None else 0

    def total(self) -> int:
        return self.sum if self.chunks_info is not None else 0
