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
        help="print the options this store would be opened with instead, the config key"
        " that matched (config-key), where its encryption key comes from"
        " (encryption-key-from: config file, $DESYNC_ENCRYPTION_KEY, ...) and the key's"
        " fingerprint (encryption-key-id, as in chunk names: never the key)",
    )
    p.add_argument(
        "--show-secrets",
        action="store_true",
        help="print secrets as they are instead of (sensitive value)",
    )
    p.set_defaults(func=run)


def _show_store(args: argparse.Namespace, console: Console, config: Config) -> None:
    """The options ``args.store`` would be opened with, which config key they came
    from, where the encryption key comes from and its fingerprint (never the key);
    each member of a failover group ``a|b`` on its own. What ``key_warnings`` would
    say about a run using it goes to stderr."""
    opener = common.opener(args)
    members = [m for m in args.store.split("|") if m]
    origins = []
    shown_all = []
    for location in members:
        options = opener.options(location)
        origin = config.origin(location, options, opener.overrides)
        origins.append(origin)
        shown = {k.replace("_", "-"): v for k, v in dataclasses.asdict(options).items()}
        secrets = frozenset() if args.show_secrets else SECRET_KEYS["store-options"]
        shown = masked(shown, secrets)
        shown["config-key"] = origin.config_key
        shown["encryption-key-from"] = origin.key_from
        shown["encryption-key-id"] = origin.key_id
        shown_all.append(shown)
    console.json(shown_all[0] if len(shown_all) == 1 else shown_all)
    for warning in config.key_warnings(origins):
        console.warn(warning)


def run(args: argparse.Namespace, console: Console) -> int:
    config = Config.load(args.config)
    if args.store:
        _show_store(args, console, config)
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
