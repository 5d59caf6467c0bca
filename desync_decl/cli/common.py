"""Argument helpers shared by the verbs: index arguments, store flags, chunk sizes,
signing keys and trust."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from desync_decl.cli.console import Console
from desync_decl.cli.opened import opened
from desync_decl.errors import DesyncError, UsageError
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import ChunkID, Digest, parse_id
from desync_decl.formats.index import Index
from desync_decl.stores.base import Store, WriteStore
from desync_decl.units import parse_size

if TYPE_CHECKING:  # the signing package's crypto is loaded only when a flag asks for it
    from desync_decl.signing import Signer, SigningKey, Trust
    from desync_decl.stores.config import Config
    from desync_decl.stores.location import Opener
    from desync_decl.stores.store_lock import Patience


def opener(args: argparse.Namespace, digest: Digest | None = None) -> Opener:
    """What opens this command's stores: config file (read once), digest, store flags.
    (Imported here: a verb that reaches no store, such as untar of a catar, loads none.)"""
    from desync_decl.stores.location import Opener

    return Opener(
        digest=digest or digest_arg(args),
        config=config(args),
        overrides=store_overrides(args),
    )


def config(args: argparse.Namespace) -> Config:
    """The command's config file, read once; ``main`` asks it after the verb which
    chunk stores were opened and what to say about their keys (``key_warnings``)."""
    loaded = getattr(args, "_config", None)
    if loaded is None:
        from desync_decl.stores.config import Config

        loaded = args._config = Config.load(getattr(args, "config", None))
    return loaded


def warn_about_keys(args: argparse.Namespace, console: Console) -> None:
    """Say now what ``main`` says after the verb about the keys of the chunk stores
    opened so far (``Config.key_warnings``): for a server or a mount, which run until
    stopped. Each warning is said once."""
    for warning in config(args).key_warnings():
        console.warn(warning)


def read_index(args: argparse.Namespace, arg: str) -> Index:
    """An index from a path, an index-store URL, or stdin for ``-``."""
    if arg == "-":
        return index_format.decode(sys.stdin.buffer.read(), "<stdin>")
    return opener(args).read_index(arg)


def write_index(
    args: argparse.Namespace,
    arg: str,
    index: Index,
    console: Console,
    key: SigningKey | None = None,
) -> None:
    """Write atomically (temp file + fsync + rename) or to an index store; ``-`` is stdout.
    With ``key`` (``signing_key``: never with ``-``), its signature ``<arg>.sig`` too."""
    if arg == "-":
        assert key is None, "signing_key refuses --sign-key with -"
        console.binary().write(index.encode())
        console.binary().flush()
        return
    if key is None:
        opener(args, index.digest).write_index(arg, index)
        return
    from desync_decl.ops.signing import write_signed_index

    write_signed_index(opener(args, index.digest), arg, index, key)


SIGN_KEY_HELP = (
    "sign the index written: an SSH signature (ssh-keygen -Y sign's format, namespace"
    " desync-decl) of its exact bytes, written beside it as INDEX.sig (a file, or in the"
    " same index store). KEY: an Ed25519, ECDSA or RSA private key file (no passphrase),"
    " or a .pub whose key ssh-agent holds (SSH_AUTH_SOCK). Refused with - (stdout): a"
    " signature needs a place beside the index; sign the file later with sign-index"
)


def add_sign_key_arg(p: argparse.ArgumentParser, help: str = SIGN_KEY_HELP) -> None:
    p.add_argument("--sign-key", metavar="KEY", help=help)


def signing_key(args: argparse.Namespace, index_arg: str) -> SigningKey | None:
    """The ``--sign-key`` key, loaded before any work (a key that cannot be used fails
    the command before it chunks anything); None without the flag. The index must
    go to a file or an index store: ``-`` (stdout) has no place for its signature."""
    if not getattr(args, "sign_key", None):
        return None
    if index_arg == "-":
        raise UsageError(
            "--sign-key writes INDEX.sig beside the index: give the index a file or URL, not -"
        )
    from desync_decl.signing import load_signing_key

    return load_signing_key(args.sign_key)


def add_trust_args(p: argparse.ArgumentParser) -> None:
    """``--allowed-signers``, ``--signer``, ``--revoked-keys``: the verbs that read an
    index refuse one that no allowed signer signed (``read_checked_index``)."""
    g = p.add_argument_group(
        "trust (refuse an index no allowed signer signed)",
        "With --allowed-signers the index must have a valid signature INDEX.sig beside it"
        " (a file's, or in the same index store; made by make/tar --sign-key, sign-index or"
        " ssh-keygen -Y sign -n desync-decl), checked before any store is opened or chunk"
        " fetched. An index read from stdin (-) is refused: it has no signature beside it."
        " Seeds and their indexes are not subject to trust: what they give is checked"
        " chunk by chunk against the signed index.",
    )
    g.add_argument(
        "--allowed-signers",
        metavar="FILE",
        help="OpenSSH allowed_signers file (principals, namespaces=, valid-after=,"
        " valid-before=, cert-authority), as ssh-keygen -Y verify -f reads it",
    )
    g.add_argument(
        "--signer",
        action="append",
        default=[],
        metavar="PRINCIPAL",
        help="accept only a signature for this principal of the file (repeatable: any of"
        " them; default: any principal). Needs --allowed-signers",
    )
    g.add_argument(
        "--revoked-keys",
        metavar="FILE",
        help="refuse signatures by the keys this KRL or public-key list revokes (as"
        " ssh-keygen -Y verify -r). Needs --allowed-signers",
    )


def trust_of(args: argparse.Namespace) -> Trust | None:
    """The trust the command line asks for (its files read once), None without
    ``--allowed-signers``; ``--signer``/``--revoked-keys`` alone are a usage error."""
    allowed = getattr(args, "allowed_signers", None)
    if allowed is None:
        alone = [
            flag
            for flag, value in (
                ("--signer", getattr(args, "signer", None)),
                ("--revoked-keys", getattr(args, "revoked_keys", None)),
            )
            if value
        ]
        if alone:
            raise UsageError(f"{' and '.join(alone)} needs --allowed-signers")
        return None
    trust: Trust | None = getattr(args, "_trust", None)
    if trust is None:
        from desync_decl.signing import load_trust

        trust = args._trust = load_trust(allowed, args.signer, args.revoked_keys)
    return trust


def read_checked_index(args: argparse.Namespace, arg: str) -> tuple[Index, Signer | None]:
    """``read_index`` under the command line's trust: with ``--allowed-signers`` the
    index comes with its signer, or the command ends here (``SignatureRefused``, one
    line) before any store is opened; without it, the index and None."""
    trust = trust_of(args)
    if trust is None:
        return read_index(args, arg), None
    if arg == "-":
        raise UsageError(
            "an index from stdin (-) has no signature beside it: with --allowed-signers"
            " give the index's file or URL"
        )
    from desync_decl.ops.signing import read_trusted_index

    signed, signer = read_trusted_index(opener(args), arg, trust)
    return signed.index, signer


def add_store_args(p: argparse.ArgumentParser, *, required: bool, many: bool) -> None:
    p.add_argument(
        "-s",
        "--store",
        action="append",
        default=[],
        required=required,
        metavar="STORE",
        help="chunk store location"
        + (" (repeat or comma-separate: tried in order; a|b = failover group)" if many else ""),
    )
    add_store_options(p)


def add_store_options(p: argparse.ArgumentParser) -> None:
    """TLS and retry flags, for a verb that reaches a store or an index store."""
    g = p.add_argument_group("store options (override the config file's store-options)")
    g.add_argument("--client-cert", metavar="FILE", help="TLS client certificate (PEM)")
    g.add_argument("--client-key", metavar="FILE", help="TLS client key (PEM)")
    g.add_argument("--ca-cert", metavar="FILE", help="CA bundle replacing the system's (PEM)")
    g.add_argument(
        "-t",
        "--trust-insecure",
        action="store_const",
        const=True,
        default=None,
        help="accept any server certificate",
    )
    g.add_argument(
        "-e", "--error-retry", type=int_at_least(0), metavar="N", help="attempts (default 3)"
    )
    g.add_argument(
        "-b",
        "--error-retry-base-interval",
        type=parse_duration,
        metavar="DURATION",
        help="wait k x this before attempt k+1 (default 500ms)",
    )


def add_reloadable_store_args(p: argparse.ArgumentParser) -> None:
    """Stores of a long-running command (server, mount): -s/-c, or a store file that
    is re-read on SIGHUP."""
    add_store_args(p, required=False, many=True)
    add_cache_args(p)
    add_concurrency_arg(p)
    p.add_argument(
        "--store-file",
        metavar="FILE",
        help='JSON {"stores": [...], "cache": "..."} instead of -s/-c; re-read on SIGHUP',
    )


def add_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--cache", metavar="STORE", help="store used as a read-through cache")
    p.add_argument(
        "-r",
        "--cache-repair",
        action="store_true",
        default=True,
        help="replace invalid chunks found in the cache (default; -r=false keeps them)",
    )
    p.add_argument(
        "--cache-max-size",
        type=_size,
        metavar="SIZE",
        help="keep a local cache under SIZE (e.g. 20G): least recently used chunks are evicted",
    )


def store_overrides(args: argparse.Namespace) -> dict[str, object]:
    """StoreOptions fields the command line set (-n always applies, as in desync)."""
    names = (
        "client_cert",
        "client_key",
        "ca_cert",
        "trust_insecure",
        "error_retry",
        "error_retry_base_interval",
        "skip_verify",
    )
    out: dict[str, object] = {
        n: getattr(args, n) for n in names if getattr(args, n, None) is not None
    }
    if getattr(args, "concurrency", None) is not None:
        out["n"] = args.concurrency
    return out


def add_concurrency_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-n", "--concurrency", type=int_at_least(1), default=10, help="worker threads (default 10)"
    )


def add_chunk_size_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-m",
        "--chunk-size",
        default="16:64:256",
        metavar="MIN:AVG:MAX",
        help="chunk sizes in KiB (suffix B/K/M for other units; default 16:64:256)",
    )


def chunk_sizes(args: argparse.Namespace) -> ChunkSizes:
    return ChunkSizes.parse(args.chunk_size)


def store_locations(values: list[str]) -> list[str]:
    """desync's list flags: repeatable and comma-separated."""
    return [loc for v in values for loc in v.split(",") if loc]


def open_stores(args: argparse.Namespace, digest: Digest, *, with_cache: bool = True) -> Store:
    """The ``-s`` stores as one store (a router when there are several), behind the
    ``-c`` cache when one is given and ``with_cache``."""
    stores = open_store_list(args, digest)
    cache = getattr(args, "cache", None) if with_cache else None
    if len(stores) == 1 and not cache:
        return stores[0]  # as it is: the wrappers' modules are not loaded
    from desync_decl.stores.compose import Cache, single_or_router
    from desync_decl.stores.lru import SizeLimited

    store = single_or_router(stores)
    if cache:
        cache_store = open_writable_store(args, digest, cache)
        if getattr(args, "cache_max_size", None):
            cache_store = SizeLimited(cache_store, args.cache_max_size)
        return Cache(store, cache_store, repair=args.cache_repair)
    return store


def open_store_list(args: argparse.Namespace, digest: Digest) -> list[Store]:
    """Each ``-s`` store on its own (``info`` counts per store)."""
    locations = store_locations(args.store)
    if not locations:
        raise DesyncError("no store given (-s)")
    make = opener(args, digest)
    return [opened(args, make.chunk_store(loc)) for loc in locations]


def open_single_store(args: argparse.Namespace, digest: Digest) -> Store:
    """The one ``-s`` store, to read."""
    return opened(args, opener(args, digest).chunk_store(_single_location(args)))


def open_single_writable_store(
    args: argparse.Namespace, digest: Digest, *, make_missing: bool = True
) -> WriteStore:
    """The one ``-s`` store, to write to (a missing local store is created, unless
    not ``make_missing``: then it is an error)."""
    return open_writable_store(args, digest, _single_location(args), make_missing=make_missing)


def open_writable_store(
    args: argparse.Namespace, digest: Digest, location: str, *, make_missing: bool = True
) -> WriteStore:
    """The store at ``location``, to write to (a missing local store is created, unless
    not ``make_missing``: then it is an error)."""
    store = opener(args, digest).chunk_store(location, create=True, make_missing=make_missing)
    return opened(args, store)


def _single_location(args: argparse.Namespace) -> str:
    locations = store_locations(args.store)
    if len(locations) != 1:
        raise DesyncError("exactly one store (-s) is needed")
    return locations[0]


def parse_duration(text: str) -> float:
    """A Go-style duration (``500ms``, ``2s``, ``1m30s``) in seconds; a bare number is seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration (e.g. 500ms, 2s)")
    return sum(float(n) * units[u] for n, u in parts)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


non_negative_int = int_at_least(0)


def digest_arg(args: argparse.Namespace) -> Digest:
    return Digest.parse(args.digest)


def add_ignore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="INDEX",
        help="skip chunks of this index (repeatable)",
    )
    p.add_argument(
        "--ignore-chunks",
        action="append",
        default=[],
        metavar="FILE",
        help="skip chunk ids listed in this file, one per line",
    )


def ignored_ids(args: argparse.Namespace) -> set[ChunkID]:
    """Chunk ids of the --ignore indexes and --ignore-chunks files."""
    ids: set[ChunkID] = set()
    for name in store_locations(args.ignore):
        ids |= read_index(args, name).unique_ids()
    for name in store_locations(args.ignore_chunks):
        try:
            lines = Path(name).read_text().splitlines()
        except OSError as e:
            raise DesyncError(f"cannot read {name}: {e.strerror}") from None
        ids |= {parse_id(line, f"{name}:{n}") for n, line in enumerate(lines, 1) if line.strip()}
    return ids


def add_lock_timeout_arg(p: argparse.ArgumentParser) -> None:
    """``--lock-timeout`` of the verbs that take a store's lock (make, tar, chop, cache,
    prune): how long to wait while another process holds a conflicting one."""
    from desync_decl.stores.store_lock import COLLISION_WAIT  # those verbs take the lock

    p.add_argument(
        "--lock-timeout",
        type=parse_duration,
        default=COLLISION_WAIT,
        metavar="DURATION",
        help="wait this long while another process holds the store's lock: a prune, or"
        f" for prune a writer (default {COLLISION_WAIT:g}s; 0 gives up at once)",
    )


def lock_patience(args: argparse.Namespace, console: Console) -> Patience:
    """The store-lock wait ``--lock-timeout`` asks for, said once on stderr when it waits."""
    from desync_decl.stores.store_lock import Patience

    return Patience(args.lock_timeout, console.warn)
