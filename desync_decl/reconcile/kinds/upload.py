"""What an upload (make, tar) will send: the chunks the store lacks, in plain bytes
and, estimated, in the bytes that cross the wire.

A store keeps chunks compressed (and maybe encrypted), so the plain bytes overstate
what an upload transfers (a 160 MiB plan that moved 139 MiB). Compressing every
chunk in the plan would cost what the upload costs; compressing an even sample of
them, read back from the source file at the index's offsets and encoded as the
store encodes, gives the ratio. A source that is not one file (a tar's tree) gives
its plain bytes, and the estimate says so.
"""

from __future__ import annotations

import os
from collections.abc import Set

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index, IndexChunk
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import size_of
from desync_decl.reconcile.model import StoreAmount
from desync_decl.stores.converters import Formatted, StorageFormat

SAMPLE = 32  # chunks compressed to estimate the ratio


def upload_amount(
    ctx: Context, name: str, index: Index, missing: Set[ChunkID], source: str | None = None
) -> StoreAmount:
    """The chunks of ``index`` that store ``name`` lacks: count, plain bytes, and
    the bytes the store will hold them in, estimated from a sample of ``source``
    (the file ``index`` describes; None: the plain bytes)."""
    plain = size_of([index], missing)
    sampled = _sample(index, missing) if source is not None else []
    ratio = None
    if source is not None and sampled:
        store = ctx.resolver.store(name, index.digest)
        ratio = _ratio(
            source, sampled, store.format if isinstance(store, Formatted) else StorageFormat()
        )
    return StoreAmount(
        name,
        ctx.resolver.location(name),
        len(missing),
        plain,
        stored_bytes=plain if ratio is None else round(plain * ratio),
        stored_estimated=True,
        remote=not ctx.resolver.is_local(name),
        stored_sample=0 if ratio is None else len(sampled),
    )


def _sample(index: Index, missing: Set[ChunkID]) -> list[IndexChunk]:
    """Up to ``SAMPLE`` distinct missing chunks, spread evenly over the index."""
    seen: set[ChunkID] = set()
    wanted = []
    for chunk in index:
        if chunk.id in missing and chunk.id not in seen:
            seen.add(chunk.id)
            wanted.append(chunk)
    step = max(1, len(wanted) // SAMPLE)
    return wanted[::step][:SAMPLE]


def _ratio(source: str, sample: list[IndexChunk], fmt: StorageFormat) -> float | None:
    """Stored bytes per plain byte over ``sample``, read from ``source``; None when
    the source cannot be read (the plan then says the plain bytes)."""
    plain = stored = 0
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for c in sample:
            data = os.pread(fd, c.size, c.start)
            plain += len(data)
            stored += len(fmt.encode(Chunk(c.id, plain=data)))
    except OSError:
        return None
    finally:
        os.close(fd)
    return stored / plain if plain else None
