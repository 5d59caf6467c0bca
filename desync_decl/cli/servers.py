"""``chunk-server`` and ``index-server``: desync's HTTP(S) stores in front of any store.

Both bind every ``-l`` address first (one that cannot bind: error, exit 1),
print where they listen on stderr, then serve until SIGINT or SIGTERM (exit 0).
The chunk-server's ``--store-file`` is re-read on SIGHUP; a file that does not
give a usable stack, whatever is wrong with it, is reported in one line and
the old stack keeps serving.

The value clients must send in ``Authorization`` comes from
``--authorization``, ``--authorization-file`` or ``$DESYNC_HTTP_AUTH``: a
secret on the command line is visible to every user in ``ps``, one in a file
(or the environment) is not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import ssl
from collections.abc import Callable, Iterator
from typing import TextIO

from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.cli.opened import close_opened
from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import MAX_PLAIN_SIZE
from desync_decl.formats.digest import Digest
from desync_decl.server import listen, storefile, tls
from desync_decl.server.chunks import ChunkService
from desync_decl.server.indexes import DEFAULT_MAX_INDEX_SIZE, IndexService
from desync_decl.server.messages import Request, Response
from desync_decl.stores.base import Store, WriteStore
from desync_decl.stores.converters import StorageFormat
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.single_flight import single_flight
from desync_decl.stores.swap import StoreStack
from desync_decl.units import parse_size


def chunk_server_arguments(p: argparse.ArgumentParser) -> None:
    common.add_reloadable_store_args(p)
    _add_server_args(p)
    p.add_argument(
        "-u", "--uncompressed", action="store_true", help="serve chunks uncompressed (no .cacnk)"
    )
    p.add_argument(
        "--skip-verify-read",
        action="store_true",
        default=True,
        help="do not hash chunks read from the stores: clients verify them (default true)",
    )
    p.add_argument(
        "--skip-verify-write",
        action="store_true",
        help="store uploads without decompressing and hashing them (faster; default false:"
        " every upload is verified)",
    )
    p.add_argument(
        "--max-chunk-size",
        type=_size,
        default=MAX_PLAIN_SIZE,
        metavar="SIZE",
        help="refuse uploads of larger chunks (default 128M, casync's limit)",
    )
    g = p.add_argument_group(
        "encryption of the chunks on the wire (any of these flags turns it on; the key"
        " is $DESYNC_ENCRYPTION_KEY unless --encryption-key gives it)"
    )
    g.add_argument("--encryption", action="store_true", help="serve encrypted chunks")
    g.add_argument("--encryption-key", metavar="HEX", help="256-bit key (64 hex digits)")
    g.add_argument("--encryption-algorithm", metavar="ALG", help="xchacha20-poly1305|aes-256-gcm")
    p.set_defaults(func=run_chunk_server)


def index_server_arguments(p: argparse.ArgumentParser) -> None:
    common.add_store_args(p, required=True, many=False)
    _add_server_args(p)
    p.add_argument(
        "--max-index-size",
        type=_size,
        default=DEFAULT_MAX_INDEX_SIZE,
        metavar="SIZE",
        help="refuse larger index uploads (default 1G)",
    )
    p.set_defaults(func=run_index_server)


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-l",
        "--listen",
        action="append",
        metavar="ADDR:PORT",
        help="address to listen on (repeatable; default :http, every interface)",
    )
    p.add_argument(
        "-w", "--writable", "--writeable", action="store_true", help="accept uploads (PUT)"
    )
    p.add_argument("--cert", metavar="FILE", help="TLS certificate (PEM); serve HTTPS")
    p.add_argument("--key", metavar="FILE", help="key of --cert (PEM)")
    p.add_argument(
        "--mutual-tls", action="store_true", help="require client certificates (needs --client-ca)"
    )
    p.add_argument("--client-ca", metavar="FILE", help="CA that signs the accepted client certs")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--authorization",
        metavar="VALUE",
        default=os.environ.get("DESYNC_HTTP_AUTH") or None,
        help="required Authorization header value (default $DESYNC_HTTP_AUTH; visible in ps:"
        " prefer --authorization-file or the environment)",
    )
    secret.add_argument(
        "--authorization-file",
        metavar="FILE",
        help="read the required Authorization header value from the first line of FILE",
    )
    p.add_argument("--log", metavar="FILE", help="append a line per request to FILE (- = stdout)")


def run_chunk_server(args: argparse.Namespace, console: Console) -> int:
    if args.store_file and (args.store or args.cache):
        raise DesyncError("--store-file cannot be combined with -s or -c")
    context = _tls_context(args)
    authorization = _authorization(args)
    digest = common.digest_arg(args)
    wire = _wire_format(args)
    if wire.cipher is not None and not args.encryption_key:  # the wire's key is the variable
        common.config(args).record_env_key_use("chunk-server's encryption on the wire")
    args.skip_verify = True if args.skip_verify_read else None  # clients verify every chunk
    upstream = _upstream_opener(args, digest)
    if args.store_file:
        spec = storefile.load(args.store_file)
        stack = StoreStack(upstream(spec.stores, spec.cache))
    else:
        stack = StoreStack(upstream(args.store, args.cache))
    common.warn_about_keys(args, console)  # it serves until stopped: not at the end
    service = ChunkService(
        stack,
        wire=wire,
        digest=digest,
        writable=args.writable,
        authorization=authorization,
        max_chunk_size=args.max_chunk_size,
        skip_verify_write=args.skip_verify_write,
        report=lambda message: console.warn(f"chunk-server: {message}"),
    )
    mode = "writable" if args.writable else "read-only"
    reload = _reloader(args.store_file, stack, upstream, console) if args.store_file else None
    try:
        return _serve(
            args, console, service, context, f"chunk-server ({mode}, {stack.current})", reload
        )
    finally:
        stack.close()


def _wire_format(args: argparse.Namespace) -> StorageFormat:
    """How chunks travel between this server and its clients.

    Any of the encryption flags turns encryption on (desync: ``--encryption-key`` and
    ``--encryption-algorithm`` imply ``--encryption``); the key is then the flag's or
    $DESYNC_ENCRYPTION_KEY's. That variable alone never turns it on: it may be set for
    an encrypted store elsewhere in the config, and must not change what is served."""
    options = StoreOptions(
        uncompressed=args.uncompressed,
        encryption=args.encryption,
        encryption_key=args.encryption_key,
        encryption_algorithm=args.encryption_algorithm,
    ).with_encryption_implied()
    if options.encryption and not (args.encryption_key or os.environ.get("DESYNC_ENCRYPTION_KEY")):
        raise DesyncError(
            "chunk-server: no encryption key configured: give --encryption-key or set"
            " $DESYNC_ENCRYPTION_KEY"
        )
    return options.checked("chunk-server").storage_format()


def _upstream_opener(
    args: argparse.Namespace, digest: Digest
) -> Callable[[list[str], str | None], Store]:
    """What opens the stack a chunk-server answers from, from ``-s``/``-c`` or a store file."""
    common.config(args)  # read here, so every stack's namespace shares it (warn_about_keys)

    def upstream(stores: list[str], cache: str | None) -> Store:
        if args.writable and (len(common.store_locations(stores)) != 1 or cache):
            raise DesyncError("a writable chunk-server needs exactly one store (-s) and no cache")
        # A namespace of its own, so the stores opened are owned (and closed) by the
        # server's stack, not by the command's list of stores to close at exit.
        given = {k: v for k, v in vars(args).items() if k != "_opened"}
        view = argparse.Namespace(**{**given, "store": stores, "cache": cache})
        try:
            store = common.open_stores(view, digest)
        except BaseException:
            close_opened(view)  # those opened before the one that failed
            raise
        if args.writable and not isinstance(store, WriteStore):
            store.close()
            raise DesyncError(f"store {store} cannot be written to")
        return single_flight(store)

    return upstream


def _reloader(
    path: str,
    stack: StoreStack[Store],
    upstream: Callable[[list[str], str | None], Store],
    console: Console,
) -> Callable[[], None]:
    """SIGHUP: a new stack from the store file, swapped in whole; the old one on any error."""

    def reload() -> None:
        try:
            spec = storefile.load(path)
            store = upstream(spec.stores, spec.cache)
        except Exception as e:  # whatever is wrong with the file, the server keeps serving
            why = str(e) if isinstance(e, DesyncError) else f"store file {path}: {e}"
            console.warn(f"chunk-server: keeping the current stores: {why}")
            return
        stack.swap(store)
        console.note(f"chunk-server: reloaded {path}: serving {store}")

    return reload


def run_index_server(args: argparse.Namespace, console: Console) -> int:
    context = _tls_context(args)
    authorization = _authorization(args)
    locations = common.store_locations(args.store)
    if len(locations) != 1:
        raise DesyncError("index-server serves exactly one index store (-s)")
    location = locations[0]
    if "://" not in location and not os.path.isdir(location):
        raise DesyncError(f"index store {location} is not a directory")
    store = common.opener(args).index_store(location)
    service = IndexService(
        store,
        writable=args.writable,
        authorization=authorization,
        max_size=args.max_index_size,
        report=lambda message: console.warn(f"index-server: {message}"),
    )
    mode = "writable" if args.writable else "read-only"
    try:
        return _serve(args, console, service, context, f"index-server ({mode}, {store})", None)
    finally:
        store.close()


def _serve(
    args: argparse.Namespace,
    console: Console,
    app: Callable[[Request], Response],
    context: ssl.SSLContext | None,
    what: str,
    reload: Callable[[], None] | None,
) -> int:
    """Listen, then wait for signals: SIGHUP reloads (when given), SIGINT/SIGTERM stop."""
    signals = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if reload else set())
    # Blocked before the listener threads start, so they inherit the mask and
    # every signal reaches the sigwait below, in this thread.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    with _access_log(args.log, console) as log:
        listeners: list[listen.Listener] = []
        try:
            addresses = [a for value in args.listen or [":http"] for a in value.split(",") if a]
            listeners = listen.listen(addresses, app, tls=context, log=log, report=console.warn)
            for listener in listeners:
                console.note(f"{what}: listening on {listener.url}")
            while signal.sigwait(signals) == signal.SIGHUP:
                assert reload is not None  # SIGHUP is among the signals only with a reload
                reload()
        finally:
            for listener in listeners:
                listener.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return 0


def _authorization(args: argparse.Namespace) -> str | None:
    """The value clients must send, from the command line, the environment or a file."""
    if not args.authorization_file:
        return args.authorization
    path = args.authorization_file
    try:
        with open(path, "rb") as f:
            first = f.readline(64 * 1024)
    except OSError as e:
        raise DesyncError(f"cannot read authorization file {path}: {e.strerror}") from None
    # UTF-8 as sent on the wire; other bytes are kept as they are (surrogateescape)
    value = first.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    if not value:
        raise DesyncError(f"authorization file {path}: its first line is empty")
    return value


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if bool(args.cert) != bool(args.key):
        raise DesyncError("--cert and --key must be given together")
    if args.mutual_tls and not (args.cert and args.client_ca):
        raise DesyncError("--mutual-tls needs --cert, --key and --client-ca")
    if args.client_ca and not args.mutual_tls:
        raise DesyncError("--client-ca is only used with --mutual-tls")
    if not args.cert:
        return None
    return tls.server_context(args.cert, args.key, args.client_ca if args.mutual_tls else None)


@contextlib.contextmanager
def _access_log(target: str | None, console: Console) -> Iterator[listen.AccessLog | None]:
    if target is None:
        yield None
        return
    if target == "-":
        yield listen.AccessLog(console.out)
        return
    try:
        stream: TextIO = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as e:
        raise DesyncError(f"cannot open log file {target}: {e.strerror}") from None
    try:
        yield listen.AccessLog(stream)
    finally:
        stream.close()


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
