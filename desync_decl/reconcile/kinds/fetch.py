"""Where fetched chunks come from, and the seeds an extract task names.

``fetch_amounts`` asks, for each distinct chunk that must be fetched, which
store of the manifest would serve it (``Routes``: caches first, a group's
active member, names in order) and adds them up per store: the plan's
"bytes from each cache and each store". ``open_task_seeds`` turns a task's
seeds into the assembler's seeds, leaving out (with a note) the ones that do
not exist yet, as on a machine's first install.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from desync_decl.assemble.seeds import Seed, SeedSpec
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.manifest import Seed as ManifestSeed
from desync_decl.manifest.convert import is_url
from desync_decl.ops.seeding import open_seeds
from desync_decl.parallel import ordered_map
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import file_facts
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
    ctx.progress.start("checking chunks", sum(sizes.values()))
    for id, server in zip(
        wanted, ordered_map(routes.server, wanted, workers=ctx.concurrency), strict=True
    ):
        ctx.progress.advance(sizes[id])
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


def open_task_seeds(
    ctx: Context, seeds: Sequence[ManifestSeed], target: Index
) -> tuple[list[Seed], list[dict[str, object]], list[str]]:
    """The seeds that exist, their facts, and a note for each one left out."""
    opened: list[Seed] = []
    facts: list[dict[str, object]] = []
    notes: list[str] = []
    for seed in seeds:
        identity = file_facts(ctx, seed.file)
        if identity.get("exists") is False:
            notes.append(f"seed {seed.file}: no such file, not used")
            continue
        found = ctx.find_index(seed.index)
        if found is None:
            notes.append(f"seed {seed.file}: no index {seed.index}, not used")
            continue
        index, producer = found
        if producer is None and not is_url(seed.index):
            (one,) = open_seeds([SeedSpec(seed.file, Path(seed.index))], target)
        else:  # written by an earlier task, or in an index store
            if index.digest is not target.digest:
                raise DesyncError(
                    f"seed index {seed.index} uses {index.digest.value} chunk ids, the index"
                    f" being extracted {target.digest.value}: no chunk could ever match"
                )
            one = Seed(seed.file, index, seed.index)
        opened.append(one)
        facts.append({"file": identity, "index": index.file_digest()})
    return opened, facts, notes
