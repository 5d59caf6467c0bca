"""Seed flags shared by ``extract`` and ``info``, and the assembly plan as text."""

from __future__ import annotations

import argparse
from pathlib import Path

from desync_decl.assemble.plan import AssemblyPlan, PlanTotals, Source
from desync_decl.assemble.seeds import INDEX_SUFFIX, SeedSpec, parse_seed_arg, seeds_in_dir
from desync_decl.cli.console import Console

_SOURCE_LABELS = {
    Source.STORE: "from stores",
    Source.SEED: "from seeds",
    Source.NULL: "null (holes)",
    Source.SELF: "self seed",
    Source.IN_PLACE: "in place",
}


def add_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="INDEX",
        help="seed: X.caibx (its blob X beside it) or INDEX:BLOB; repeatable",
    )
    p.add_argument(
        "--seed-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="use every *.caibx under DIR whose blob exists as a seed; repeatable",
    )
    p.add_argument(
        "--seed-file",
        action="append",
        default=[],
        metavar="FILE",
        help="seed without an index (any file or block device): chunked on the fly; repeatable",
    )


def seed_specs(args: argparse.Namespace, console: Console) -> list[SeedSpec]:
    """Seeds in desync's order: --seed, then --seed-dir finds, then --seed-file.

    A --seed-dir never offers the index being extracted, nor the output itself."""
    specs = []
    for arg in args.seed:
        specs.append(parse_seed_arg(arg))
        if not arg.endswith(INDEX_SUFFIX) and arg.count(":") > 1:
            console.warn(f"seed {arg!r}: ignoring what follows INDEX:BLOB")
    exclude = Path(args.index) if args.index != "-" else None
    output = Path(args.output).resolve() if getattr(args, "output", None) else None
    for directory in args.seed_dir:
        found = seeds_in_dir(directory, exclude=exclude)
        specs.extend(s for s in found if output is None or s.file.resolve() != output)
    specs.extend(SeedSpec(file=Path(f), index=None) for f in args.seed_file)
    return specs


def print_plan(
    planned: AssemblyPlan | PlanTotals, console: Console, *, to_err: bool = False
) -> None:
    """Bytes and chunks per source, each seed on its own line."""
    emit = console.note if to_err else console.print
    plan = planned.totals() if isinstance(planned, AssemblyPlan) else planned
    by_source = plan.by_source()
    total = plan.length or 1
    for source, label in _SOURCE_LABELS.items():
        t = by_source[source]
        emit(f"{label:<14} {t.chunks:>9} chunks {t.bytes:>16} bytes {100 * t.bytes / total:6.1f}%")
        if source is Source.SEED:
            for seed, st in zip(plan.seeds, plan.by_seed(), strict=True):
                emit(f"  {seed.label}: {st.chunks} chunks, {st.bytes} bytes")
    emit(f"{'total':<14} {plan.chunks:>9} chunks {plan.length:>16} bytes")
