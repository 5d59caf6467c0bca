"""``validate FILE...`` and ``schema``: check manifests, print the manifest JSON Schema."""

from __future__ import annotations

import argparse

from desync_decl.cli.console import Console
from desync_decl.manifest import ManifestError, load_manifest, schema_text


def validate_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Check manifests against the schema and for unknown names, cycles, "
        "duplicates and bad sizes. Prints 'FILE: ok', or every problem on stderr and exits 1. "
        "${env:NAME} references are expanded, so the variables must be set; they may stand only "
        "in the fields the schema marks (credentials, paths, locations, tuning options), and no "
        "message shows their values."
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="manifests to check")
    p.set_defaults(func=run_validate)


def schema_arguments(p: argparse.ArgumentParser) -> None:
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
