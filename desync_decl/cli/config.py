"""``config``: show the configuration in effect (and what it means for one store).

Secrets (``config.SECRET_KEYS``: encryption keys, HTTP auth headers and cookies, S3
keys, registry secrets, passwords in URL keys) are shown as ``(sensitive value)``
unless ``--show-secrets``: the output ends up in terminals, scrollback, CI logs and
bug reports. ``-w`` writes them as they are, to a file only its owner can read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.fsutil import write_atomic
from desync_decl.stores.config import SECRET_KEYS, Config, default_path, masked


def arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Print the configuration in effect as JSON. Secrets (encryption keys,"
        " http-auth, http-cookie, S3 access and secret keys, OCI secrets, passwords in"
        " URLs) are shown as (sensitive value) unless --show-secrets."
    )
    p.add_argument(
        "-w",
        "--write",
        action="store_true",
        help="write it, secrets included, to the config file (mode 0600)",
    )
    p.add_argument(
        "--store",
        metavar="LOCATION",
        help="print the options this store would be opened with instead",
    )
    p.add_argument(
        "--show-secrets",
        action="store_true",
        help="print secrets as they are instead of (sensitive value)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    config = Config.load(args.config)
    if args.store:
        options = common.opener(args).options(args.store)
        shown = {k.replace("_", "-"): v for k, v in dataclasses.asdict(options).items()}
        secrets = frozenset() if args.show_secrets else SECRET_KEYS["store-options"]
        console.json(masked(shown, secrets))
        return 0
    if args.write:
        path = config.path or default_path()
        try:
            os.makedirs(path.parent, mode=0o755, exist_ok=True)
            write_atomic(path, json.dumps(config.as_json(), indent=2).encode() + b"\n", 0o600)
        except OSError as e:
            raise DesyncError(f"cannot write {path}: {e.strerror}") from None
        return 0
    console.json(config.as_json() if args.show_secrets else config.shown())
    return 0
