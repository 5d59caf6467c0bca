"""``tar``, ``untar`` and ``mtree``: directory trees as catar archives or caidx indexes.

Flags follow desync's; ``--with``/``--without`` (casync's feature names) pick
what the archive stores, desync's fixed set by default. ``tar -i --sign-key`` signs
the caidx it writes; ``untar -i`` reads one under ``--allowed-signers`` (a plain catar
has no signature: either flag without ``-i`` is refused).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import struct
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from desync_decl.archive.patterns import Patterns
from desync_decl.archive.tree_walk import NotADirectory, open_tree
from desync_decl.cli import common
from desync_decl.cli.console import Console
from desync_decl.errors import UsageError, file_error
from desync_decl.formats.catar import features
from desync_decl.formats.index import CA_FORMAT_INDEX, Index
from desync_decl.fsutil import AtomicFile, open_directory, walk_error
from desync_decl.stores.url import url_scheme
from desync_decl.units import counted, human_bytes

if TYPE_CHECKING:  # each verb imports its operation when it runs: one module, three verbs
    from desync_decl.ops.tar import TarResult
    from desync_decl.ops.untar import UntarResult
    from desync_decl.stores.base import Store

_TIME_BITS = (
    features.WITH_NSEC_TIME | features.WITH_USEC_TIME | features.WITH_SEC_TIME
) | features.WITH_2SEC_TIME


def _index_args(p: argparse.ArgumentParser, help: str, *, reading: bool) -> None:
    """-i and the store flags: one writable store, or stores and a cache to read."""
    p.add_argument("-i", "--index", action="store_true", help=help)
    common.add_store_args(p, required=False, many=reading)
    if reading:
        common.add_cache_args(p)
    common.add_concurrency_arg(p)


def tar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", metavar="catar|index", help="archive or index to write (- = stdout)")
    p.add_argument("source", help="directory, or with --input-format tar a tar file (- = stdin)")
    _index_args(p, "write a caidx, chunks into -s", reading=False)
    common.add_lock_timeout_arg(p)
    common.add_sign_key_arg(p, common.SIGN_KEY_HELP + ". Needs -i: a plain catar is not signed")
    common.add_chunk_size_arg(p)
    p.add_argument("--input-format", choices=["disk", "tar"], default="disk", help="(disk)")
    p.add_argument("--no-time", action="store_true", help="store no timestamps")
    p.add_argument(
        "--tar-add-root", action="store_true", help="tar input: add a root if it has none"
    )
    p.add_argument(
        "-x", "--one-file-system", action="store_true", help="don't cross filesystem boundaries"
    )
    _feature_args(p)
    _pattern_args(p, "archive")
    p.set_defaults(func=run_tar)


def _pattern_args(p: argparse.ArgumentParser, verb: str) -> None:
    """rsync's filter flags (the rules: ``archive/patterns.py``), repeatable."""
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help=f"don't {verb} what matches (rsync rules: '*' stops at '/', '**' does not,"
        " a leading '/' anchors at the root, a trailing '/' matches directories only;"
        " repeatable)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep what matches even if an --exclude matches it (checked first; a"
        " directory excluded excludes all below it: --include '*/' --include '*.json'"
        " --exclude '*' keeps only JSON files)",
    )
    p.add_argument(
        "--exclude-from",
        action="append",
        default=[],
        metavar="FILE",
        help="--exclude each line of FILE (blank lines and lines starting with # skipped)",
    )
    p.add_argument(
        "--include-from", action="append", default=[], metavar="FILE", help="as --exclude-from"
    )


def patterns_of(args: argparse.Namespace) -> Patterns | None:
    """The include/exclude flags parsed (None when none given)."""
    include = [*args.include, *_lines_of(args.include_from)]
    exclude = [*args.exclude, *_lines_of(args.exclude_from)]
    return Patterns.given(include, exclude, "--include/--exclude")


def _lines_of(files: list[str]) -> list[str]:
    """The patterns of ``--exclude-from``/``--include-from`` files, as rsync reads them."""
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise file_error(path, e) from None
        out += [line for line in lines if line.strip() and not line.startswith(("#", ";"))]
    return out


def _feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--with",
        dest="with_",
        action="append",
        default=[],
        metavar="FEATURE",
        help="store this feature (casync's names and sets: best, unix, permissions, acl, ...);"
        " the first --with replaces desync's default set",
    )
    p.add_argument(
        "--without", action="append", default=[], metavar="FEATURE", help="do not store this"
    )


def archive_flags(args: argparse.Namespace) -> int:
    bits = features.parse_features(args.with_, args.without, features.DESYNC_TAR)
    if args.no_time:
        bits &= ~_TIME_BITS
    return features.archive_flags(
        bits,
        sha512_256=common.digest_arg(args).flag != 0,
        exclude_submounts=args.one_file_system,
    )


def run_tar(args: argparse.Namespace, console: Console) -> int:
    from desync_decl.ops.tar import TarInput, tar, tar_index

    if args.tar_add_root and args.input_format != "tar":
        raise UsageError("--tar-add-root works only with --input-format tar")
    if args.sign_key and not args.index:
        raise UsageError(
            "--sign-key signs a caidx index: it needs -i (a plain catar is not signed)"
        )
    key = common.signing_key(args, args.output)
    source = args.source
    if source == "-":
        if args.input_format != "tar":
            raise UsageError("- (stdin) as the source needs --input-format tar")
        source = sys.stdin.buffer
    what = TarInput(
        source,
        input_format=args.input_format,
        flags=archive_flags(args),
        one_file_system=args.one_file_system,
        add_root=args.tar_add_root,
        patterns=patterns_of(args),
    )
    if args.index:
        if not args.store:
            raise UsageError("-i requires a store (-s)")
        from desync_decl.stores.store_lock import writing

        store = common.open_single_writable_store(args, common.digest_arg(args))
        # the index is published under the store's lock (store_lock)
        with writing(store, common.lock_patience(args, console)):
            result = tar_index(
                what,
                store,
                sizes=common.chunk_sizes(args),
                concurrency=args.concurrency,
                progress=console.progress(),
            )
            assert result.index is not None
            common.write_index(args, args.output, result.index, console, key)
        if args.output != "-":
            console.print(result.index.file_digest())
        _summary(console, tar_summary(result, args.source))
        return 0
    with _output(args.output, console) as out:
        result = tar(what, out, progress=console.progress())
    _summary(console, tar_summary(result, args.source))
    return 0


def _summary(console: Console, line: str) -> None:
    """The line that ends a tar or an untar, for the person at the terminal: piped,
    the verbs are as quiet as casync's and desync's (scripts parse stdout or --json)."""
    if console.interactive():
        console.note(line)


def tar_summary(result: TarResult, source: str) -> str:
    """The line that ends a tar (stderr: stdout may be the archive or the index's
    digest): ``tar: 260.0 MiB archive of model/; 4171 chunks, 114 new (6.7 MiB) stored``."""
    line = f"tar: {human_bytes(result.size)} archive of {'stdin' if source == '-' else source}"
    if result.index is None:
        return line
    new = f"{result.chunks_stored} new ({human_bytes(result.bytes_stored)}) stored"
    return f"{line}; {counted(len(result.index), 'chunk')}, {new}"


@contextlib.contextmanager
def _output(path: str, console: Console) -> Iterator[BinaryIO]:
    """stdout for ``-``, else a file that appears under its name only when complete."""
    if path == "-":
        out = console.binary()
        yield out
        out.flush()
        return
    try:  # its directory reached through no symlink someone else planted
        dir_fd = open_directory(os.path.dirname(os.path.abspath(path)))
        try:
            atomic = AtomicFile(path, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise walk_error(path, e, "write") from None
    try:
        with atomic, os.fdopen(atomic.fd, "wb", closefd=False, buffering=1 << 20) as out:
            yield out
            out.flush()
            atomic.commit()
    except OSError as e:
        if e.filename is not None:
            raise
        raise file_error(path, e, "write") from None  # e.g. a full disk: name the output


def untar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", metavar="catar|index", help="archive, or index with -i (- = stdin)")
    p.add_argument("target", help="directory to extract into (- = stdout for gnu-tar)")
    _index_args(p, "the archive is a caidx (needs -s)", reading=True)
    common.add_trust_args(p)
    p.add_argument("--no-same-owner", action="store_true", help="don't restore owners, xattrs")
    p.add_argument(
        "--no-same-permissions", action="store_true", help="don't restore modes and ACLs"
    )
    p.add_argument("--output-format", choices=["disk", "gnu-tar"], default="disk", help="(disk)")
    p.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="DIR",
        help="with -i: a directory tree (e.g. the target's older version) whose chunks are"
        " used before the stores' (repeatable)",
    )
    p.add_argument(
        "--delete-extra",
        action="store_true",
        help="first delete what the archive does not hold and what is in the way of its"
        " entries (as the untar task's delete_extra). The archive is read twice: - as"
        " the archive only with -i or when stdin is a regular file; refused when a local"
        " store or cache lies in the target",
    )
    p.add_argument(
        "--atomic",
        action="store_true",
        help="build the new tree beside the target (unchanged files hard-linked) and switch"
        " it in with one rename (renameat2 RENAME_EXCHANGE): a reader or an interrupted"
        " untar sees the whole old tree or the whole new one, never a mix",
    )
    _pattern_args(p, "write or delete")
    p.set_defaults(func=run_untar)


def run_untar(args: argparse.Namespace, console: Console) -> int:
    from desync_decl.ops.untar import Clearing, untar, untar_to_tar

    if args.target == "-" and args.output_format != "gnu-tar":
        raise UsageError("- as the target needs --output-format gnu-tar")
    if args.delete_extra and args.output_format == "gnu-tar":
        raise UsageError("--delete-extra needs a directory as the target")
    if args.atomic and args.output_format == "gnu-tar":
        raise UsageError("--atomic needs a directory as the target")
    patterns = patterns_of(args)
    if patterns is not None and args.output_format == "gnu-tar":
        raise UsageError("--include/--exclude need a directory as the target")
    with _archive(args) as (archive, store):
        if args.output_format == "gnu-tar":
            with _output(args.target, console) as out:
                untar_to_tar(
                    archive,
                    out,
                    store=store,
                    seeds=common.store_locations(args.seed),
                    concurrency=args.concurrency,
                    source=args.archive,
                    progress=console.progress(),
                )
            return 0
        result = untar(
            archive,
            args.target,
            store=store,
            seeds=_seeds_with_target(args, archive),
            same_owner=not args.no_same_owner,
            same_permissions=not args.no_same_permissions,
            concurrency=args.concurrency,
            source=args.archive,
            clearing=Clearing.EXTRA if args.delete_extra else Clearing.NONE,
            kept=_local_stores(args),
            atomic=args.atomic,
            patterns=patterns,
            progress=console.progress(),
        )
    _summary(console, untar_summary(result))
    return 0


def _seeds_with_target(args: argparse.Namespace, archive: BinaryIO | Index) -> list[str]:
    """The ``--seed`` trees, behind the target itself where it is a directory already
    and the archive an index: what it holds is read there, not fetched (as rsync sends
    only what changed), and its files are compared entry by entry anyway."""
    seeds = common.store_locations(args.seed)
    if not isinstance(archive, Index):
        return seeds
    try:  # walked as the extraction will: a planted symlink is refused as its target
        fd = open_tree(args.target, "extract to")
    except NotADirectory:
        return seeds  # the extraction says what is wrong with it
    if fd is None:
        return seeds
    os.close(fd)
    if any(os.path.isdir(s) and os.path.samefile(s, args.target) for s in seeds):
        return seeds
    return [args.target, *seeds]


def untar_summary(result: UntarResult) -> str:
    """The line that ends an untar: what the archive holds, what became of each entry
    and the bytes written and kept, e.g. ``untar: 8 files (260.0 MiB), 3 directories,
    1 symlink in model: 1 updated, 11 unchanged; 6.4 MiB written, 253.6 MiB kept``."""
    stats = result.stats
    held = [counted(stats.files, "file") + f" ({human_bytes(stats.bytes)})"]
    held.append(counted(stats.dirs, "directory", "directories"))
    for n, word in ((stats.symlinks, "symlink"), (stats.devices, "device")):
        if n:
            held.append(counted(n, word))
    if stats.others:
        held.append(counted(stats.others, "other node"))
    fates = stats.fates()
    line = f"untar: {', '.join(held)} in {result.target}"
    if fates:
        line += ": " + ", ".join(fates)
    parts = [line, f"{human_bytes(stats.bytes_written)} written"]
    if stats.bytes_kept:
        parts[-1] += f", {human_bytes(stats.bytes_kept)} kept"
    removed = result.cleared.deleted + result.cleared.replaced
    if removed:
        parts.append(counted(removed, "entry", "entries") + " deleted first")
    if result.chunks_from_seeds:
        parts.append(
            f"{counted(result.chunks_from_seeds, 'chunk')}"
            f" ({human_bytes(result.bytes_from_seeds)}) from seeds"
        )
    return "; ".join(parts)


def _local_stores(args: argparse.Namespace) -> list[str]:
    """The directories of the local stores (failover members too) and cache given."""
    given = [*common.store_locations(args.store), *([args.cache] if args.cache else [])]
    members = [m for location in given for m in location.split("|") if m]
    return [m for m in members if url_scheme(m) is None]


@contextlib.contextmanager
def _archive(args: argparse.Namespace) -> Iterator[tuple[BinaryIO | Index, Store | None]]:
    """The catar file (or stdin), or with -i the index (under the trust untar's flags
    ask for) and its stores."""
    if args.index:
        if not args.store:
            raise UsageError("-i requires at least one store (-s)")
        index, _ = common.read_checked_index(args, args.archive)
        yield index, common.open_stores(args, index.digest)
        return
    if common.trust_of(args) is not None:
        raise UsageError(
            "--allowed-signers checks an index's signature: a plain catar has none (-i for a caidx)"
        )
    if args.archive == "-":
        _refuse_index(sys.stdin.buffer, "stdin")
        yield sys.stdin.buffer, None
        return
    if url_scheme(args.archive) is not None:  # only an index store holds files behind a URL
        raise UsageError(
            f"{args.archive} names an index in an index store, not a catar archive: add -i,"
            " and the store holding its chunks with -s"
        )
    try:
        f = open(args.archive, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise file_error(args.archive, e) from None
    with f:
        _refuse_index(f, args.archive)
        yield f, None


_INDEX_HEADER = struct.pack("<QQ", 48, CA_FORMAT_INDEX)  # size and type of its first record


def _refuse_index(archive: BinaryIO, shown: str) -> None:
    """A caidx given without -i: say so (the decoder would say only "not a catar
    archive"). Looked at without consuming (``peek``), so a stream stays whole."""
    peek = getattr(archive, "peek", None)
    try:
        head = peek(len(_INDEX_HEADER)) if peek is not None else b""
    except (OSError, ValueError):
        return
    if head[: len(_INDEX_HEADER)] == _INDEX_HEADER:
        raise UsageError(
            f"{shown} is a caidx index, not a catar archive: add -i, and the store"
            " holding its chunks with -s"
        )


def mtree_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", metavar="catar|index|dir", help="what to list")
    _index_args(p, "the input is a caidx (needs -s)", reading=True)
    _feature_args(p)  # a directory is listed as `tar` with these features would store it
    p.set_defaults(func=run_mtree, no_time=False, one_file_system=False)


def run_mtree(args: argparse.Namespace, console: Console) -> int:
    from desync_decl.ops.mtree import mtree, mtree_dir

    digest = common.digest_arg(args)
    if os.path.isdir(args.archive):
        if args.index:
            raise UsageError("-i can't be used with a directory")
        for line in mtree_dir(args.archive, flags=archive_flags(args), digest=digest):
            console.print(line)
        return 0
    if args.with_ or args.without:
        raise UsageError("--with/--without apply to a directory (an archive has its own flags)")
    with _archive(args) as (archive, store):
        for line in mtree(
            archive, store=store, digest=digest, concurrency=args.concurrency, source=args.archive
        ):
            console.print(line)
    return 0
