"""``extract INDEX OUTPUT``: rebuild a blob from seeds and chunk stores."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.cli.seeding import add_seed_args, print_plan, seed_specs
from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index, Windowed
from desync_decl.ops.extract import InvalidSeeds, extract, plan_extract
from desync_decl.ops.seeding import open_seeds
from desync_decl.stores.index_file import open_index
from desync_decl.stores.url import url_scheme


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file (- for stdin)")
    p.add_argument("output", help="file to write (replaced atomically unless --in-place)")
    common.add_store_args(p, required=False, many=True)
    common.add_concurrency_arg(p)
    common.add_cache_args(p)
    add_seed_args(p)
    p.add_argument(
        "-k",
        "--in-place",
        action="store_true",
        help="write into the existing output, keeping the data already right (block devices)",
    )
    invalid = p.add_mutually_exclusive_group()
    invalid.add_argument(
        "--skip-invalid-seeds",
        dest="invalid_seeds",
        action="store_const",
        const=InvalidSeeds.SKIP,
        default=InvalidSeeds.FAIL,
        help="drop a seed whose data does not match its index, instead of failing",
    )
    invalid.add_argument(
        "--regenerate-invalid-seeds",
        dest="invalid_seeds",
        action="store_const",
        const=InvalidSeeds.REGENERATE,
        help="re-index a seed whose data does not match its index, instead of failing",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print where every range would come from; write nothing",
    )
    p.add_argument("--print-stats", action="store_true", help="statistics as JSON on stdout")
    p.add_argument("--json", dest="print_stats", action="store_true", help="same as --print-stats")
    common.add_trust_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.index != "-" and os.path.abspath(args.index) == os.path.abspath(args.output):
        raise DesyncError(f"{args.output}: the output would overwrite the index")
    index = _index(args)
    progress = console.progress()
    seeds = open_seeds(
        seed_specs(args, console), index, concurrency=args.concurrency, progress=progress
    )
    if isinstance(index, Index) and args.dry_run:
        plan = plan_extract(
            index, args.output, seeds=seeds, in_place=args.in_place, concurrency=args.concurrency
        )
        if args.print_stats:
            console.json(plan.to_json())
        else:
            print_plan(plan, console)
        return 0
    if not args.store:
        raise DesyncError("no store given (-s)")
    result = extract(
        index,
        args.output,
        common.open_stores(args, index.digest),
        seeds=seeds,
        in_place=args.in_place,
        invalid_seeds=args.invalid_seeds,
        concurrency=args.concurrency,
        progress=progress,
    )
    for problem in result.seed_problems:
        console.warn(problem)
    if args.print_stats:
        console.json(result.stats())
    elif console.interactive():
        print_plan(result.plan, console, to_err=True)
    return 0


def _index(args: argparse.Namespace) -> Windowed:
    """A local index file checked in one pass (with ``--allowed-signers``, its
    signature too) and, when larger than a window, read back a window at a time
    (memory that does not grow with it); any other (stdin, a URL, or a dry run, which
    prints the whole plan) held whole, as ``read_checked_index`` reads it."""
    if args.dry_run or args.index == "-" or url_scheme(args.index) is not None:
        return common.read_checked_index(args, args.index)[0]
    return open_index(Path(args.index), trust=common.trust_of(args))
