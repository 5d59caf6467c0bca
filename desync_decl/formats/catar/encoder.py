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

    def blocks(self) -> Iterator[Buffer]:
        """The payload read here after all, in blocks; the file is closed after."""
        ...

    def close(self) -> None: ...


Piece = Buffer | DeferredPayload


class Encoded:
    """A child its source encoded itself: FILENAME, ENTRY and what follows (PAYLOAD
    header, SYMLINK) in ``head``, and a regular file's payload. What the encoder
    checks of a child (its name, the order) it checks of this one too."""

    __slots__ = ("head", "payload")

    def __init__(self, head: bytes, payload: DeferredPayload | None) -> None:
        self.head, self.payload = head, payload


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

    def children(self) -> Iterator[tuple[bytes, SourceNode | Encoded]]:
        """Directories: (name, node) in ascending byte order of names; a child may come
        encoded already (not a directory)."""
        ...


class EncodeError(DesyncError):
    """A source that cannot be archived as given (bad name, order, changed file)."""


@dataclass
class _Dir:
    path: bytes
    entry_at: int
    children: Iterator[tuple[bytes, SourceNode | Encoded]]
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
        d.table.add(name, pos)
        if type(node) is Encoded:
            yield node.head
            pos += len(node.head)
            if node.payload is not None:
                if defer_payloads:
                    yield node.payload
                    pos += len(node.payload)
                else:
                    for block in node.payload.blocks():
                        yield block
                        pos += len(block)
            d.table.end(pos)
            continue
        assert not isinstance(node, Encoded)
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
