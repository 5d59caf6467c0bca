"""Encode a tree of source nodes into a catar byte stream, piece by piece.

Streaming: pieces are yielded as they are made (payloads in the blocks their
source reads, or, with ``defer_payloads``, as one object the consumer copies
itself, e.g. in the kernel), so neither a file nor the archive is ever held in
memory. The only state kept is, per open directory, its children's name hashes
and offsets for the GOODBYE table (``goodbye.Children``). Children must come in
strictly ascending byte order of names, each a valid single path component;
anything else is refused.
"""

from __future__ import annotations

import os
import stat
from array import array
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from desync_decl.errors import DesyncError
from desync_decl.formats.catar import goodbye
from desync_decl.formats.catar import records as r
from desync_decl.formats.catar.entry import Entry
from desync_decl.formats.catar.entry import encode as encode_entry

Buffer = bytes | bytearray | memoryview


class DeferredPayload(Protocol):
    """A regular file's payload handed to the consumer instead of its bytes, for it to
    read on a thread of its own: an open file whose first ``len()`` bytes are the
    payload, exactly (the consumer refuses a file of another size, naming ``where``).
    ``take`` hands the file's descriptor over, once; ``close`` frees it untaken (after
    ``take``, it does nothing).
    """

    where: bytes  # the file's path, for messages

    def __len__(self) -> int: ...

    def take(self) -> int:
        """The file's descriptor, now the caller's to read from offset 0 and close."""
        ...

    def close(self) -> None: ...


class EncodedRun:
    """Consecutive children (none a directory) a source encoded itself, their names
    valid and in strictly ascending order (the source checked them): each one's
    FILENAME, ENTRY and PAYLOAD header or SYMLINK, a regular file's payload after its
    header. ``starts[i]``/``ends[i]``: where child i begins and ends in the run's bytes.
    With ``defer_payloads`` the encoder yields the run whole (``Piece``) for the
    consumer to ``take``; else its ``pieces``. A run's files are closed when the run is
    dropped unread (``close``). A base class, not a Protocol: checked per child."""

    __slots__ = ("ends", "names", "starts")

    def __init__(self) -> None:
        self.names: list[bytes] = []
        self.starts: array[int] = array("Q")
        self.ends: array[int] = array("Q")

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def pieces(self) -> Iterator[Buffer]:
        """The run's bytes, payloads read here."""
        raise NotImplementedError

    def take(self) -> tuple[bytes, array[int], dict[int, bytes]]:
        """For a consumer that reads the files itself: the heads, one after another; the
        segments, (fd, length) pairs in stream order, fd -1 for the next ``length``
        bytes of the heads, else an open file whose first ``length`` bytes (exactly)
        are the payload, now the consumer's to close; each file's path by its
        segment's index, for messages."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


Piece = Buffer | DeferredPayload | EncodedRun


class SourceNode(Protocol):
    """One node to archive. Which attributes matter depends on ``entry.mode``."""

    entry: Entry
    size: int  # regular files: payload length
    target: bytes  # symlinks
    rdev: int  # devices (os.makedev form)

    def payload(self) -> Iterator[Buffer]:
        """Regular files: exactly ``size`` bytes, in blocks."""
        ...

    def deferred_payload(self) -> DeferredPayload | None:
        """Regular files: the payload as one object to copy, or None (then ``payload``)."""
        ...

    def children(self) -> Iterator[tuple[bytes, SourceNode | EncodedRun]]:
        """Directories: (name, node) in ascending byte order of names; children may
        come encoded already, a run of them under the first one's name."""
        ...


class EncodeError(DesyncError):
    """A source that cannot be archived as given (bad name, order, changed file)."""


@dataclass
class _Dir:
    path: bytes
    entry_at: int
    children: Iterator[tuple[bytes, SourceNode | EncodedRun]]
    table: goodbye.Children = field(default_factory=goodbye.Children)  # for its GOODBYE


def encode(root: SourceNode, *, defer_payloads: bool = False) -> Generator[Piece, None, None]:
    """The catar stream of ``root`` (normally a directory); with ``defer_payloads`` a
    regular file's payload may come as a ``DeferredPayload`` (see ``SourceNode``)."""
    if not stat.S_ISDIR(root.entry.mode):
        yield encode_entry(root.entry) + _record(root, b".")
        yield from _payload(root, b".", defer_payloads)
        return
    head = encode_entry(root.entry)
    yield head
    pos = len(head)
    stack = [_Dir(b".", 0, root.children())]
    while stack:
        d = stack[-1]
        nxt = next(d.children, None)
        if nxt is None:
            piece = goodbye.encode(d.table, pos, d.entry_at)
            yield piece
            pos += len(piece)
            stack.pop()
            if stack:
                stack[-1].table.end(pos)
            continue
        name, node = nxt
        _check_name(d, name)
        if isinstance(node, EncodedRun):
            d.table.add_named_run(node.names, pos, node.starts, node.ends)
            if defer_payloads:
                yield node
                pos += len(node)
            else:
                for block in node.pieces():
                    yield block
                    pos += len(block)
            continue
        d.table.add(name, pos)
        path = d.path + b"/" + name
        head = r.filename(name)
        entry_at = pos + len(head)
        head += encode_entry(node.entry)
        if stat.S_ISDIR(node.entry.mode):
            yield head
            pos += len(head)
            stack.append(_Dir(path, entry_at, node.children()))
            continue
        head += _record(node, path)
        yield head  # one piece: file name, entry and what follows it (fewer, larger pieces)
        pos += len(head)
        if stat.S_ISREG(node.entry.mode):
            for part in _payload(node, path, defer_payloads):
                yield part
                pos += len(part)
        d.table.end(pos)


def _check_name(d: _Dir, name: bytes) -> None:
    problem = r.name_problem(name)
    if problem is not None:
        raise EncodeError(f"cannot archive {os.fsdecode(d.path + b'/' + name)}: {problem}")
    last = d.table.last_name
    if last is not None and name <= last:
        raise EncodeError(
            f"cannot archive {os.fsdecode(d.path + b'/' + name)}: names not in ascending order"
            f" (after {os.fsdecode(last)})"
        )


def _record(node: SourceNode, path: bytes) -> bytes:
    """What follows a non-directory's entry: the PAYLOAD header, SYMLINK or DEVICE
    (nothing for fifos and sockets)."""
    fmt = stat.S_IFMT(node.entry.mode)
    if fmt == stat.S_IFREG:
        return r.payload_header(node.size)
    if fmt == stat.S_IFLNK:
        if not node.target or b"\0" in node.target or len(node.target) > r.PATH_MAX:
            raise EncodeError(f"cannot archive {os.fsdecode(path)}: invalid symlink target")
        return r.symlink(node.target)
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        return r.device(os.major(node.rdev), os.minor(node.rdev))
    if fmt not in (stat.S_IFIFO, stat.S_IFSOCK):
        raise EncodeError(f"cannot archive {os.fsdecode(path)}: unknown file type {fmt:o}")
    return b""


def _payload(node: SourceNode, path: bytes, defer_payloads: bool) -> Iterator[Piece]:
    """A regular file's payload bytes (after its header)."""
    if not stat.S_ISREG(node.entry.mode):
        return
    deferred = node.deferred_payload() if defer_payloads else None
    if deferred is not None:
        yield deferred
        return
    left = node.size
    for block in node.payload():
        left -= len(block)
        if left < 0:
            break
        yield block
    if left:
        raise EncodeError(f"{os.fsdecode(path)}: file changed size while being archived")
