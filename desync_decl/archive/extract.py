"""The extraction loop: decoded catar events into a directory (disk_writer.py does each
node), small writes on worker threads (write_queue.py).

Directories are made on the decoding thread as the decoder reaches them. Files,
symlinks and special nodes are written by the workers: from a regular archive file
a file's payload is copied there by offset (the decoder skips it), otherwise files up
to ``SMALL_FILE`` bytes are read into memory first and larger ones are written on
the decoding thread as they stream in.
"""

from __future__ import annotations

import contextlib
import os
import stat

from desync_decl.archive.disk_writer import (
    AnyJob,
    ArchiveFile,
    LeafRun,
    OpenDir,
    UntarError,
    UntarStats,
    WriteOptions,
    Writer,
)
from desync_decl.archive.patterns import Patterns
from desync_decl.archive.write_queue import BATCH_ITEMS, WriteQueue
from desync_decl.formats.catar import records
from desync_decl.formats.catar.decoder import Decoder, DirEnd, Leaves, Node
from desync_decl.fsutil import open_directory, walk_error

SMALL_FILE = 1 << 20


def write_tree(
    decoder: Decoder,
    target: str | os.PathLike,
    options: WriteOptions,
    *,
    workers: int = 2,
    archive: ArchiveFile | None = None,
    root_fd: int | None = None,
    reference: int | None = None,
    patterns: Patterns | None = None,
) -> UntarStats:
    """Extract everything ``decoder`` yields under ``target`` (made if missing), on
    ``workers`` threads; with ``archive`` (the file the decoder reads), payloads are
    copied from it by offset.

    What the target holds already is updated entry by entry (``Writer.file``): an
    unchanged file keeps its inode, a changed one is replaced by a new file renamed
    over it. ``root_fd`` (taken over): the target's directory, opened already (a new,
    empty one when building beside the old tree); ``reference`` (taken over): the old
    tree's root, whose unchanged files are then linked into the new one. An entry
    ``patterns`` leave out is not written (nor what is below it, for a directory): the
    target's own entry there, if any, stays as it is.

    The target is opened by ``fsutil.open_directory``: a symlink planted as it, or as a
    directory on the way to it, in a directory others can write is refused, and
    everything below is done relative to the fd (``disk_writer.py``)."""
    target = os.fsdecode(target)
    w = Writer(target, options, umask=current_umask(), archive=archive)
    before: os.stat_result | None = None
    if root_fd is not None:
        root = root_fd
    else:
        try:
            with contextlib.suppress(FileNotFoundError):
                reference = open_directory(target)
            root = (
                reference
                if reference is not None
                else open_directory(target, create=True, mode=0o777)
            )
        except OSError as e:
            raise walk_error(target, e, "extract to") from None
    if reference is not None:
        before = os.fstat(reference)
    # an empty target is filled as a new one: no entry to compare (the files go to C in
    # batches, as in a new directory)
    fresh = reference is not None and reference == root and not os.listdir(root)
    stack: list[OpenDir] = []
    queue: WriteQueue[AnyJob, OpenDir] = WriteQueue(
        w.write_job, w.close_directory, workers=workers, write_many=w.write_jobs
    )
    skipped = 0  # depth inside a directory the patterns leave out
    try:
        for ev in decoder.events(leaves=True):
            if skipped:
                if isinstance(ev, DirEnd):
                    skipped -= 1
                elif isinstance(ev, Node) and stat.S_ISDIR(ev.entry.mode):
                    skipped += 1
                continue
            if isinstance(ev, Leaves):
                _leaves(w, stack[-1], ev, queue, patterns)
                continue
            if (
                patterns is not None
                and isinstance(ev, Node)
                and ev.path
                and not _allowed(patterns, ev)
            ):
                if stat.S_ISDIR(ev.entry.mode):
                    skipped = 1
                continue
            if isinstance(ev, DirEnd):
                queue.dir_end(stack.pop())
            elif not ev.path:
                if not stat.S_ISDIR(ev.entry.mode):
                    raise UntarError("the archive's root is not a directory")
                ref = -1 if reference is None or fresh else reference
                stack.append(w.opened(root, ev.entry, target, ref=ref, before=before))
                root = reference = -1  # closed with the stack
            else:
                _node(w, stack, ev, decoder, queue)
        queue.close()
    except Exception:
        queue.close()  # what came before the error (or raises the error of an earlier entry)
        raise
    except BaseException:
        queue.stop()
        raise
    finally:
        for d in [*stack, *queue.pending_dirs()]:
            d.close()
        for fd in {root, -1 if reference is None else reference} - {-1}:
            os.close(fd)
    return w.stats


def _allowed(patterns: Patterns, node: Node) -> bool:
    return patterns.allows(os.fsdecode(b"/".join(node.path)), stat.S_ISDIR(node.entry.mode))


def _leaves(
    w: Writer,
    parent: OpenDir,
    leaves: Leaves,
    queue: WriteQueue[AnyJob, OpenDir],
    patterns: Patterns | None,
) -> None:
    """A run of files and symlinks decoded in C: in a directory this extraction made,
    queued in slices for the C writer (``Writer.write_leaf_run``); else each as
    ``_node`` queues it, with its payload in hand."""
    run = leaves.run
    if patterns is None and parent.ref < 0 and w.unnamed:
        stats = w.stats
        stats.files += run.files
        stats.bytes += run.file_bytes
        stats.symlinks += run.count - run.files
        weight = run.consumed // run.count + 256
        for lo in range(0, run.count, BATCH_ITEMS):
            hi = min(lo + BATCH_ITEMS, run.count)
            queue.add(LeafRun(parent, leaves, lo, hi), weight * (hi - lo), hi - lo)
        return
    for node, data in leaves.nodes():
        if patterns is not None and not _allowed(patterns, node):
            continue
        w.stats.count(stat.S_IFMT(node.entry.mode), node.size)
        if stat.S_ISREG(node.entry.mode):
            queue.add((parent, node.path[-1], node, [data]), node.size + 256)
        else:
            queue.add((parent, node.path[-1], node, None), 256)


def _node(
    w: Writer,
    stack: list[OpenDir],
    node: Node,
    decoder: Decoder,
    queue: WriteQueue[AnyJob, OpenDir],
) -> None:
    name = node.path[-1]
    if records.name_problem(name) is not None:  # the decoder already refused these
        raise UntarError(f"refusing file name {name!r}")
    parent = stack[-1]
    fmt = stat.S_IFMT(node.entry.mode)
    w.stats.count(fmt, node.size)
    if fmt == stat.S_IFDIR:
        with w.errors(node):
            stack.append(w.directory(parent, name, node))
    elif fmt != stat.S_IFREG:
        queue.add((parent, name, node, None), 256)
    elif w.archive is not None:  # the decoder skips the payload: a worker copies it
        queue.add((parent, name, node, w.archive.base + decoder.pos), node.size + 256)
    elif node.size <= SMALL_FILE:
        queue.add((parent, name, node, [decoder.payload_bytes()]), node.size + 256)
    else:
        with w.errors(node):
            w.file(parent, name, node, decoder.payload())


def current_umask() -> int:
    """The process umask, read without setting it (other threads may be creating files)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the only other way to read it is to set it
    os.umask(mask)
    return mask
