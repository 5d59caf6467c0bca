"""``config``: show the configuration in effect (and what it means for one store)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.config import Config, default_path
from desync_decl.errors import DesyncError
from desync_decl.fsutil import write_atomic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the configuration in effect as JSON")
    p.add_argument(
        "-w", "--write", action="store_true", help="write it to the config file (mode 0600)"
    )
    p.add_argument(
        "--store",
        metavar="LOCATION",
        help="print the options this store would be opened with instead",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    config = Config.load(args.config)
    if args.store:
        options = common.opener(args).options(args.store)
        shown = dataclasses.asdict(options)
        if shown.get("encryption_key"):
            shown["encryption_key"] = "(set)"  # never print a secret
        console.json({k.replace("_", "-"): v for k, v in shown.items()})
        return 0
    if args.write:
        path = config.path or default_path()
        try:
            os.makedirs(path.parent, mode=0o755, exist_ok=True)
            write_atomic(path, json.dumps(config.as_json(), indent=2).encode() + b"\n", 0o600)
        except OSError as e:
            raise DesyncError(f"cannot write {path}: {e.strerror}") from None
        return 0
    console.json(config.as_json())
    return 0
