"""``validate FILE...`` and ``schema``: check manifests, print the manifest JSON Schema."""

from __future__ import annotations

import argparse

from desync_decl.cli.console import Console
from desync_decl.manifest import ManifestError, load_manifest, schema_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check manifests: every problem as FILE:LINE:COL: message",
        description="Check manifests against the schema and for unknown names, cycles, "
        "duplicates and bad sizes. Prints 'FILE: ok', or every problem on stderr and exits 1. "
        "${env:NAME} references are expanded, so the variables must be set; they may stand only "
        "in the fields the schema marks (credentials, paths, locations, tuning options), and no "
        "message shows their values.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="manifests to check")
    p.set_defaults(func=run_validate)
    p = sub.add_parser("schema", help="print the manifest JSON Schema")
    p.set_defaults(func=run_schema)


def run_validate(args: argparse.Namespace, console: Console) -> int:
    failed = False
    for file in args.files:
        try:
            load_manifest(file)
        except ManifestError as e:
            failed = True
            for problem in e.problems:
                console.note(str(problem))
        else:
            console.print(f"{file}: ok")
    return 1 if failed else 0


def run_schema(args: argparse.Namespace, console: Console) -> int:
    console.out.write(schema_text())
    return 0
