"""Entry point: global flags, one sub-command per verb, one-line errors.

Every expected failure is a ``DesyncError`` and ends as
``desync-decl: error: <what, where>`` with exit status 1; a traceback only
with ``--debug``. Both are escaped (``Console``): a message may quote a store.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple, NoReturn

from desync_decl import __version__
from desync_decl.cli import go_flags
from desync_decl.cli.console import Console
from desync_decl.cli.logs import logging_to
from desync_decl.cli.opened import close_opened
from desync_decl.errors import DesyncError
from desync_decl.escaping import escape_line


class Verb(NamedTuple):
    """A verb's line in ``--help`` and where its arguments are defined.

    ``arguments`` is ``module:function`` in ``desync_decl.cli``: the function adds
    the verb's arguments to its sub-parser and sets ``func``, what runs it.
    """

    arguments: str
    summary: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Import the verb's module (only now: its imports are the verb's start-up
        cost) and let it define the verb's arguments."""
        module, function = self.arguments.split(":")
        add: Callable[[argparse.ArgumentParser], None] = getattr(
            importlib.import_module(f"desync_decl.cli.{module}"), function
        )
        add(parser)


# Every verb, in --help's order. Only the module of the verb being run is
# imported: `--help` imports none, and each verb pays for its own imports only.
VERBS = {
    "make": Verb("make:arguments", "chunk a file, store its chunks, write its index"),
    "extract": Verb("extract:arguments", "rebuild a file from its index, seeds and chunk stores"),
    "chop": Verb("chop:arguments", "store the chunks of a file that an index describes"),
    "cache": Verb("cache:arguments", "copy the chunks of indexes from stores into another store"),
    "cat": Verb("cat:arguments", "stream a blob's bytes to stdout or a file"),
    "mount-index": Verb(
        "mount:arguments",
        "FUSE-mount a blob index as a read-only file, a .caidx as its tree (until unmounted)",
    ),
    "prune": Verb("prune:arguments", "delete chunks that none of the indexes reference"),
    "verify": Verb("verify:store_arguments", "check that every chunk in a store matches its id"),
    "verify-index": Verb("verify:index_arguments", "check that a file matches an index"),
    "sign-index": Verb("sign:arguments", "sign an index: its SSH signature beside it as INDEX.sig"),
    "info": Verb("info:arguments", "show what an index holds (and what the stores have)"),
    "list-chunks": Verb("chunks:list_arguments", "print each chunk id of an index, in order"),
    "inspect-chunks": Verb(
        "chunks:inspect_arguments", "chunk ids with their plain and stored sizes (JSON)"
    ),
    "chunk": Verb("chunks:chunk_arguments", "print the chunk boundaries of a file; stores nothing"),
    "config": Verb(
        "config:arguments", "print the configuration in effect as JSON (secrets masked)"
    ),
    "validate": Verb(
        "manifest_verbs:validate_arguments",
        "check manifests: every problem as FILE:LINE:COL: message",
    ),
    "schema": Verb("manifest_verbs:schema_arguments", "print the manifest JSON Schema"),
    "plan": Verb(
        "reconcile_verbs:plan_arguments",
        "show what apply would change and what would travel; change nothing",
    ),
    "apply": Verb(
        "reconcile_verbs:apply_arguments", "converge the machine to a manifest (idempotent)"
    ),
    "pull": Verb(
        "pull:arguments", "serve a chunk store over stdin/stdout (casync protocol; run by ssh)"
    ),
    "chunk-server": Verb(
        "servers:chunk_server_arguments", "serve chunk stores over HTTP(S) (desync protocol)"
    ),
    "index-server": Verb(
        "servers:index_server_arguments", "serve an index store over HTTP(S) (desync protocol)"
    ),
    "tar": Verb(
        "tar_verbs:tar_arguments", "archive a directory as a catar, or chunk it into a caidx"
    ),
    "untar": Verb(
        "tar_verbs:untar_arguments", "extract a catar or caidx into a directory (or a tar)"
    ),
    "mtree": Verb("tar_verbs:mtree_arguments", "list a catar, caidx or directory in mtree format"),
}
_GLOBAL_VALUE_FLAGS = ("--digest", "--config")
_GLOBAL_FLAGS = (*_GLOBAL_VALUE_FLAGS, "--debug", "--version", "--help")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit status 1, like every other error; boolean
    flags read as desync (Go) reads them (``go_flags``: ``-t=false``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {escape_line(message)}\n")

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads only type the namespace
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = sys.argv[1:] if args is None else args
        return super().parse_known_args(go_flags.for_argparse(self, words), namespace)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``verb``'s sub-command and its arguments only; for ``None``
    or an unknown verb, every verb's sub-command without arguments (enough for
    ``--help``'s list and for naming the choices of a wrong verb)."""
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
    if verb in VERBS:
        VERBS[verb].add_arguments(sub.add_parser(verb, help=VERBS[verb].summary))
    else:
        for name, known in VERBS.items():
            sub.add_parser(name, help=known.summary)
    return parser


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb of a command line: the first word that is not a global flag or its
    value. A flag may be abbreviated as argparse allows (``--conf FILE``)."""
    words = iter(argv)
    for word in words:
        if _takes_a_value(word):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _takes_a_value(word: str) -> bool:
    """Whether ``word`` is a global value flag, or argparse's unambiguous abbreviation
    of one, without its value attached (``--config=FILE`` carries its own)."""
    if not word.startswith("--") or "=" in word or len(word) < 3:
        return False
    meant = [flag for flag in _GLOBAL_FLAGS if flag.startswith(word)]
    return len(meant) == 1 and meant[0] in _GLOBAL_VALUE_FLAGS


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
    import ctypes  # here, not at the top: --help and usage errors need no libc

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 16 << 20)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run one command line; its exit status. Without ``argv`` this is the program
    itself (``desync-decl``, ``python -m desync_decl``): the process ends next."""
    program = argv is None
    if program:
        gc.disable()  # while the verb's modules load (_loaded_modules_kept)
    console = console or Console()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(verb_of(argv)).parse_args(argv)
    if program:
        _loaded_modules_kept()
    _keep_chunk_buffers_off_mmap()
    with logging_to(console.err, debug=args.debug):
        status = _run(args, console)
    if program:
        _spare_the_last_collection()
    return status


def _loaded_modules_kept() -> None:
    """What loading the verb's modules allocated goes to the collector's permanent
    generation, and the collector is on again (it was off while they loaded).

    Loading allocates tens of thousands of objects that live until the process ends
    (classes, functions, dataclasses' generated methods): collected as they came,
    they cost ~3 ms of a local extract's start-up (14 young collections and an older
    one), and every later full collection would walk them again. What loading leaves
    unreachable is a few hundred objects (224 for an extract), kept. Only in the
    program: a caller of ``main(argv)`` keeps its collector as it was.
    """
    gc.freeze()
    gc.enable()


def _spare_the_last_collection() -> None:
    """Put every object in the collector's permanent generation: the interpreter's
    last collection at exit then skips them all. With a verb's modules loaded that
    collection took ~10 ms of every command (measured: 13 ms from the end of main to
    the end of the process, 4 ms with this). Only when the process ends next: frozen
    cycles are never collected.
    """
    gc.freeze()


def _run(args: argparse.Namespace, console: Console) -> int:
    """The verb, and its failure as one line."""
    try:
        try:
            return int(args.func(args, console))
        finally:
            close_opened(args)
            _warn_about_keys(args, console)
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


def _warn_about_keys(args: argparse.Namespace, console: Console) -> None:
    """After the verb (before its error, if it failed): an encryption key set but not
    used, a config entry for encryption that matched no store (``Config.key_warnings``
    over the chunk stores the verb opened through the config it loaded, if any)."""
    config = args.__dict__.get("_config")
    if config is not None:
        for warning in config.key_warnings():
            console.note(f"desync-decl: {warning}")


def _failed(console: Console, message: str, traced: BaseException | None = None) -> int:
    """The error line, after the traceback of ``traced`` (``--debug``): its lines are
    escaped like everything else, and the exception's own words (which may quote a
    store) are one line, as in the error line."""
    if traced is not None:
        import traceback  # --debug only

        *stack, last = traceback.format_exception(traced)
        console.err.write("".join(stack))
        console.note(last.rstrip("\n"))
    console.error(message)
    return 1
