"""``info INDEX``: index statistics.

As desync prints them: JSON by default (``-f json``), its keys only, so a script
written for desync reads ours; ``-f plain`` is desync's lines followed by what
desync-decl adds (each store's counts, the plan an extract would follow with the
seeds). ``--json`` is desync's JSON plus those additions (digests, flags, ``stores``,
``plan``, ``signature``).

With ``--allowed-signers`` the index is shown only if its signature is accepted, with
its signer (in ``-f json`` too: the flag is ours, so is the key). Without it nothing
is said of a signature: looking for one would load the signing package's crypto
(60-130 ms of every ``info``) and, for an index store, cost a request that may fail
where the index itself was readable.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.cli.seeding import add_seed_args, print_plan, seed_specs
from desync_decl.ops.info import IndexInfo, info, read_chunks_info
from desync_decl.ops.seeding import open_seeds

if TYPE_CHECKING:
    from desync_decl.signing import Signer

# desync's plain lines, in its order
_PLAIN = (
    ("Blob size", "size"),
    ("Size of deduplicated chunks not in seed", "dedup-size-not-in-seed"),
    ("Size of deduplicated chunks not in seed nor cache", "dedup-size-not-in-seed-nor-cache"),
    ("Total chunks", "total"),
    ("Unique chunks", "unique"),
    ("Chunks in store", "in-store"),
    ("Chunks in seed", "in-seed"),
    ("Chunks in cache", "in-cache"),
    ("Chunks not in seed nor cache", "not-in-seed-nor-cache"),
    ("Compressed chunks not in seed nor cache", "dedup-size-not-in-seed-nor-cache-compressed"),
    ("Chunk size min", "chunk-size-min"),
    ("Chunk size avg", "chunk-size-avg"),
    ("Chunk size max", "chunk-size-max"),
)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    common.add_store_args(p, required=False, many=True)
    common.add_concurrency_arg(p)
    common.add_cache_args(p)
    add_seed_args(p)
    p.add_argument(
        "--chunks-info",
        metavar="FILE",
        help="inspect-chunks output: the compressed size of the chunks not in seeds nor cache",
    )
    p.add_argument(
        "-f",
        "--format",
        choices=["json", "plain"],
        default="json",
        help="output format, as desync's (default json)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="desync's JSON plus digests, flags, each store's counts and the seeds' plan"
        ' (and with --allowed-signers the signer: "signature": {"principal", "key"})',
    )
    common.add_trust_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    index, signer = common.read_checked_index(args, args.index)
    chunks_info = read_chunks_info(args.chunks_info) if args.chunks_info else None
    stores = common.open_store_list(args, index.digest) if args.store else []
    cache = None
    if args.cache:
        cache = common.opener(args, index.digest).chunk_store(args.cache)
    seeds = open_seeds(seed_specs(args, console), index, concurrency=args.concurrency)
    result = info(
        index,
        stores=stores,
        seeds=seeds,
        cache=cache,
        chunks_info=chunks_info,
        concurrency=args.concurrency,
    )
    if args.json:
        console.json(_with_signer(result.as_json(), signer))
    elif args.format == "json":
        console.json(_with_signer(result.desync_json(), signer))
    else:
        _print_plain(result, console, signer)
    return 0


def _with_signer(data: dict[str, object], signer: Signer | None) -> dict[str, object]:
    """The JSON with ``"signature": {"principal", "key"}`` when trust accepted the index."""
    if signer is None:
        return data
    return {**data, "signature": {"principal": signer.principal, "key": signer.key}}


def _print_plain(result: IndexInfo, console: Console, signer: Signer | None) -> None:
    data = result.desync_json()
    for label, key in _PLAIN:
        console.print(f"{label}: {data[key]}")
    if signer is not None:
        console.print(f"Signed by: {signer}")
    for name, present in result.per_store:
        console.print(f"  {name}: {present} present, {result.unique - present} missing")
    if result.plan is not None:
        console.print("Extraction plan:")
        print_plan(result.plan, console)
