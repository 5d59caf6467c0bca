"""``info INDEX``: index statistics.

As desync prints them: JSON by default (``-f json``), its keys only, so a script
written for desync reads ours; ``-f plain`` is desync's lines followed by what
desync-decl adds (each store's counts, the plan an extract would follow with the
seeds). ``--json`` is desync's JSON plus those additions (digests, flags, ``stores``,
``plan``, ``signature``).

With ``--allowed-signers`` the index is shown only if its signature is accepted, with
its signer (in ``-f json`` too: the flag is ours, so is the key). Without, ``--json``
and ``-f plain`` say whether a signature lies beside a local index file (a stat); an
index store's is not looked for: that would cost a request, one that may fail where
the index itself was readable.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.cli.seeding import add_seed_args, print_plan, seed_specs
from desync_decl.ops.info import IndexInfo, info, read_chunks_info
from desync_decl.ops.seeding import open_seeds
from desync_decl.stores.index_store import signature_name
from desync_decl.stores.url import url_scheme

if TYPE_CHECKING:
    from desync_decl.signing import Signer

_UNKNOWN = object()  # whether a signature exists was not looked for (stdin, an index store)

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
        help="desync's JSON plus digests, flags, each store's counts, the seeds' plan and"
        ' the signature: {"verified": true, "principal", "key"} with --allowed-signers;'
        ' without, {"verified": false} or null for a local index with or without INDEX.sig',
    )
    common.add_trust_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    index, signer = common.read_checked_index(args, args.index)
    signature = _signature(args.index, signer)
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
        console.json(_with_signature(result.as_json(), signature))
    elif args.format == "json":  # desync's keys, and ours only for our flag
        console.json(_with_signature(result.desync_json(), signature if signer else _UNKNOWN))
    else:
        _print_plain(result, console, signature)
    return 0


def _signature(location: str, signer: Signer | None) -> Any:
    """What is known of the index's signature: who signed it when trust accepted it;
    else whether a local index file has one (``{"verified": false}``, or None); else
    ``_UNKNOWN``."""
    if signer is not None:
        return {"verified": True, "principal": signer.principal, "key": signer.key}
    if location == "-" or url_scheme(location) is not None:
        return _UNKNOWN
    return {"verified": False} if os.path.isfile(signature_name(location)) else None


def _with_signature(data: dict[str, object], signature: Any) -> dict[str, object]:
    return data if signature is _UNKNOWN else {**data, "signature": signature}


def _print_plain(result: IndexInfo, console: Console, signature: Any) -> None:
    data = result.desync_json()
    for label, key in _PLAIN:
        console.print(f"{label}: {data[key]}")
    for name, present in result.per_store:
        console.print(f"  {name}: {present} present, {result.unique - present} missing")
    if signature is None:
        console.print("Signature: none")
    elif signature is not _UNKNOWN and signature["verified"]:
        console.print(f"Signature: verified, by {signature['principal']} ({signature['key']})")
    elif signature is not _UNKNOWN:
        console.print("Signature: present, not verified (no --allowed-signers)")
    if result.plan is not None:
        console.print("Extraction plan:")
        print_plan(result.plan, console)
