"""Entry point: global flags, one sub-command per verb, one-line errors.

Every expected failure is a ``DesyncError`` and ends as
``desync-decl: error: <what, where>`` with exit status 1; a traceback only
with ``--debug``. Both are escaped (``Console``): a message may quote a store.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence

from desync_decl import __version__
from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import DesyncError
from desync_decl.escaping import escape_line

# Each verb and the module (in desync_decl.cli) that registers it. Only the
# module of the verb being run is imported: start-up time is part of every
# command's wall time (all modules: ~130 ms; one: ~30 ms). --help loads all.
VERB_MODULES = {
    "make": "make",
    "extract": "extract",
    "chop": "chop",
    "cache": "cache",
    "cat": "cat",
    "mount-index": "mount",
    "prune": "prune",
    "verify": "verify",
    "verify-index": "verify",
    "info": "info",
    "list-chunks": "chunks",
    "inspect-chunks": "chunks",
    "chunk": "chunks",
    "config": "config",
    "validate": "manifest_verbs",
    "schema": "manifest_verbs",
    "plan": "reconcile_verbs",
    "apply": "reconcile_verbs",
    "pull": "pull",
    "chunk-server": "servers",
    "index-server": "servers",
    "tar": "tar_verbs",
    "untar": "tar_verbs",
    "mtree": "tar_verbs",
}
_GLOBAL_VALUE_FLAGS = ("--digest", "--config")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 1, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(1, f"{self.prog}: error: {escape_line(message)}\n")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``verb``'s sub-command only, or every verb (``None``)."""
    parser = _Parser(
        prog="desync-decl",
        description="casync/desync-compatible content-addressed distribution of big files",
    )
    parser.add_argument("--version", action="version", version=f"desync-decl {__version__}")
    parser.add_argument(
        "--digest",
        default="sha512-256",
        help="chunk digest for new indexes: sha512-256 (default) or sha256; "
        "existing indexes carry their own",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="desync config file (default ~/.config/desync/config.json; may be missing)",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=_Parser)
    wanted = [VERB_MODULES[verb]] if verb in VERB_MODULES else VERB_MODULES.values()
    for name in dict.fromkeys(wanted):
        importlib.import_module(f"desync_decl.cli.{name}").register(sub)
    return parser


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb of a command line: the first word that is not a global flag or its value."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_VALUE_FLAGS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _keep_chunk_buffers_off_mmap() -> None:
    """Chunk-sized buffers (up to a few hundred KiB) from the heap, not from mmap,
    and the heap kept when they are freed.

    glibc serves allocations above 128 KiB with a fresh mmap and munmap each
    time: reading a 320 KiB chunk file cost 45 us instead of 3.6 us, a chunk
    server answered 10k instead of 26k requests/s. A higher threshold keeps
    them on the reused heap. But glibc also hands a heap's free top above 128 KiB
    back to the kernel (madvise) at every free, and the next chunk faults the
    pages in again, zeroed: keeping up to 16 MiB cut an extraction's system time
    by a third. Peak memory is unchanged (only what was in use is kept).
    Linux/glibc only; elsewhere nothing changes.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 16 << 20)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    console = console or Console()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(verb_of(argv)).parse_args(argv)
    _keep_chunk_buffers_off_mmap()
    with _logging_to(console, debug=args.debug):
        return _run(args, console)


def _run(args: argparse.Namespace, console: Console) -> int:
    """The verb, and its failure as one line."""
    try:
        try:
            return int(args.func(args, console))
        finally:
            common.close_opened(args)
    except DesyncError as e:
        return _failed(console, str(e), e if args.debug else None)
    except KeyboardInterrupt:
        return _failed(console, "interrupted")
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `cat | head`): not an error
        return 0
    except OSError as e:
        where = f"{e.filename} " if e.filename else ""
        return _failed(console, f"{where}{e.strerror or e}", e if args.debug else None)


def _failed(console: Console, message: str, traced: BaseException | None = None) -> int:
    """The error line, after the traceback of ``traced`` (``--debug``): its lines are
    escaped like everything else, and the exception's own words (which may quote a
    store) are one line, as in the error line."""
    if traced is not None:
        *stack, last = traceback.format_exception(traced)
        console.err.write("".join(stack))
        console.note(last.rstrip("\n"))
    console.error(message)
    return 1


@contextlib.contextmanager
def _logging_to(console: Console, *, debug: bool) -> Iterator[None]:
    """Log records through the console while the verb runs: escaped like every other
    line (a warning may name what an archive or a store sent); with ``debug`` every
    record, with its logger's name."""
    root = logging.getLogger()
    level = root.level
    if debug:
        handler = console.log_handler(logging.DEBUG, "%(levelname)s:%(name)s:%(message)s")
        root.setLevel(logging.DEBUG)
    else:
        handler = console.log_handler(logging.WARNING, "%(message)s")
        # paramiko logs every failed SSH connection with a traceback from its own
        # thread; the same failure reaches the store as an exception, and one line
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        # "Connection pool is full, discarding connection": more threads than pooled
        # connections (apply -j N shares a store's pool); costs a reconnect, tells
        # the user nothing they can act on
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
