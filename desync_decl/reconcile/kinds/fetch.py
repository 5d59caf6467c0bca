"""Where fetched chunks come from.

``fetch_amounts`` asks, for each distinct chunk that must be fetched, which
store of the manifest would serve it (``Routes``: caches first, a group's
active member, names in order) and adds them up per store: the plan's
"bytes from each cache and each store". The seeds of an extract task are
``seeding.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.parallel import ordered_map
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.model import Amount, StoreAmount
from desync_decl.reconcile.resolve import Routes


def fetch_amounts(
    ctx: Context, names: Sequence[str], sizes: dict[ChunkID, int], index: Index
) -> tuple[tuple[StoreAmount, ...], Amount]:
    """Chunks and bytes per serving store for the chunks ``sizes`` lists, and
    what no store holds."""
    routes = Routes(ctx.resolver, names, ctx.has_for(index.digest))
    wanted = sorted(sizes)
    totals: dict[tuple[str, str, str | None], Amount] = {}
    missing = Amount()
    for id, server in zip(
        wanted, ordered_map(routes.server, wanted, workers=ctx.concurrency), strict=True
    ):
        amount = Amount(1, sizes[id])
        if server is None:
            missing += amount
        else:
            totals[server] = totals.get(server, Amount()) + amount
    stores = tuple(
        StoreAmount(store, ctx.resolver.location(store), t.chunks, t.bytes, role, via)
        for (store, role, via), t in totals.items()
    )
    return stores, missing
