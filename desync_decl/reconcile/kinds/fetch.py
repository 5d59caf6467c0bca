"""Where fetched chunks come from.

``fetch_amounts`` asks the task's composed stores themselves, the objects
apply reads through (``Resolver.stack``), where each distinct chunk that must
be fetched would be served from (``compose.locate``: caches first, a group's
active member, names in order) and adds them up per store: the plan's "bytes
from each cache and each store", with the bytes each store holds them in (what
a read transfers) where the store says so cheaply, else estimated as the plain
bytes. A failover group whose active member fails while this asks moves to the
next member here already, and stays there for the apply. The seeds of an
extract task are ``seeding.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.parallel import ordered_map
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.model import Amount, StoreAmount, chunks, human_bytes
from desync_decl.stores.compose import Location, NotLocated, locate
from desync_decl.stores.tally import current, observing


@dataclass(frozen=True)
class Missing(Amount):
    """Chunks no store holds, the stores a read would have asked for them, and the
    members of groups that failed before those were asked (name and what it said)."""

    asked: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()


def fetch_amounts(
    ctx: Context, names: Sequence[str], sizes: dict[ChunkID, int], index: Index
) -> tuple[tuple[StoreAmount, ...], Missing]:
    """Chunks and bytes per serving store for the chunks ``sizes`` lists, and
    what no store holds."""
    resolver = ctx.resolver
    stack = resolver.stack(names, index.digest)
    tally = current()  # the task's, made current on the worker threads too

    def where(id: ChunkID) -> Location | NotLocated:
        with observing(tally):  # none current: events go to a tally no one reads
            try:
                return locate(stack, id, ctx.planned_chunk)
            except NotLocated as e:
                return e

    wanted = sorted(sizes)
    totals: dict[tuple[str, str, str | None], _Sum] = {}
    missing, asked, failed = Amount(), dict[str, None](), dict[str, str]()
    ctx.progress.start("checking chunks", sum(sizes.values()))
    for id, found in zip(wanted, ordered_map(where, wanted, workers=ctx.concurrency), strict=True):
        ctx.progress.advance(sizes[id])
        if isinstance(found, NotLocated):
            missing += Amount(1, sizes[id])
            asked.update((resolver.name_of(s), None) for s in found.asked)
            failed.update((resolver.name_of(s), why) for s, why in found.failed)
            continue
        via = resolver.name_of(found.through[0]) if found.through else None
        key = (resolver.name_of(found.leaf), "cache" if found.cached else "store", via)
        totals.setdefault(key, _Sum()).add(sizes[id], found.stored)
    stores = tuple(
        StoreAmount(
            store,
            resolver.location(store),
            t.chunks,
            t.bytes,
            role,
            via,
            stored_bytes=t.stored,
            stored_estimated=t.estimated,
            remote=not resolver.is_local(store),
        )
        for (store, role, via), t in totals.items()
    )
    return stores, Missing(missing.chunks, missing.bytes, tuple(asked), tuple(failed.items()))


def refuse_missing(missing: Amount | None, what: str) -> None:
    """Fail the plan when chunks of ``what`` are in no store, naming the stores asked
    and any that failed before them, with what each said."""
    if missing is None or not missing.chunks:
        return
    known = missing if isinstance(missing, Missing) else Missing()
    names = ", ".join(f"'{name}'" for name in known.asked) or "none"
    failed = "".join(f"; before it, '{name}' failed: {why}" for name, why in known.failed)
    raise DesyncError(
        f"{chunks(missing.chunks)} of {what} are missing from every store a read would ask:"
        f" {names}{failed}"
    )


def fetched_words(ctx: Context, names: Sequence[str], fallback: int) -> str:
    """What the task's reads through ``names`` brought, in words: ``fetched`` counts
    remote stores only; a cache's own copy and a store in a local directory apart
    (``12.0 MiB fetched, 158.0 MiB from caches``). ``fallback``: the bytes the
    assembler took from stores, said as fetched when nothing was counted."""
    tally = current()
    served = tally.served() if tally is not None else {}
    if not served:
        return f"{human_bytes(fallback)} fetched"
    copies = set(ctx.resolver.caches_in(names))
    fetched = cached = local = 0
    for store, n in served.items():
        name = ctx.resolver.opened_name(store)
        if name is None:
            continue  # a seed or spool in front of the stores: not a store's bytes
        if name in copies:
            cached += n
        elif ctx.resolver.is_local(name):
            local += n
        else:
            fetched += n
    words = [f"{human_bytes(fetched)} fetched"]
    words += [f"{human_bytes(cached)} from caches"] if cached else []
    words += [f"{human_bytes(local)} from local stores"] if local else []
    return ", ".join(words)


class _Sum:
    """One store's share: chunks, plain bytes, stored bytes (plain where unknown)."""

    def __init__(self) -> None:
        self.chunks = self.bytes = self.stored = 0
        self.estimated = False

    def add(self, size: int, stored: int | None) -> None:
        self.chunks += 1
        self.bytes += size
        self.stored += size if stored is None else stored
        self.estimated |= stored is None
