"""Encode a tree of source nodes into a catar byte stream, piece by piece.

Streaming: pieces are yielded as they are made (payloads in the blocks their
source reads), so neither a file nor the archive is ever held in memory. The
only state kept is, per open directory, its children's names and offsets for
the GOODBYE table. Children must come in strictly ascending byte order of
names, each a valid single path component; anything else is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from desync_decl.errors import DesyncError
from desync_decl.formats.catar import goodbye
from desync_decl.formats.catar import records as r
from desync_decl.formats.catar.entry import Entry
from desync_decl.formats.catar.entry import encode as encode_entry

Buffer = bytes | bytearray | memoryview


class SourceNode(Protocol):
    """One node to archive. Which attributes matter depends on ``entry.mode``."""

    entry: Entry
    size: int  # regular files: payload length
    target: bytes  # symlinks
    rdev: int  # devices (os.makedev form)

    def payload(self) -> Iterator[Buffer]:
        """Regular files: exactly ``size`` bytes, in blocks."""
        ...

    def children(self) -> Iterator[tuple[bytes, SourceNode]]:
        """Directories: (name, node) in ascending byte order of names."""
        ...


class EncodeError(DesyncError):
    """A source that cannot be archived as given (bad name, order, changed file)."""


@dataclass
class _Dir:
    path: bytes
    entry_at: int
    children: Iterator[tuple[bytes, SourceNode]]
    names: list[bytes] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)


def encode(root: SourceNode) -> Iterator[Buffer]:
    """The catar stream of ``root`` (normally a directory)."""
    pos = 0
    head = encode_entry(root.entry)
    yield head
    pos += len(head)
    if not stat.S_ISDIR(root.entry.mode):
        for piece in _content(root, b"."):
            yield piece
            pos += len(piece)
        return
    stack = [_Dir(b".", 0, root.children())]
    while stack:
        d = stack[-1]
        nxt = next(d.children, None)
        if nxt is None:
            piece = goodbye.encode(d.names, d.starts, d.ends, pos, d.entry_at)
            yield piece
            pos += len(piece)
            stack.pop()
            if stack:
                stack[-1].ends.append(pos)
            continue
        name, node = nxt
        path = d.path + b"/" + name
        _check_name(d, name, path)
        d.names.append(name)
        d.starts.append(pos)
        head = r.filename(name)
        entry_at = pos + len(head)
        head += encode_entry(node.entry)
        yield head
        pos += len(head)
        if stat.S_ISDIR(node.entry.mode):
            stack.append(_Dir(path, entry_at, node.children()))
            continue
        for piece in _content(node, path):
            yield piece
            pos += len(piece)
        d.ends.append(pos)


def _check_name(d: _Dir, name: bytes, path: bytes) -> None:
    problem = r.name_problem(name)
    if problem is not None:
        raise EncodeError(f"cannot archive {os.fsdecode(path)}: {problem}")
    if d.names and name <= d.names[-1]:
        raise EncodeError(
            f"cannot archive {os.fsdecode(path)}: names not in ascending order"
            f" (after {os.fsdecode(d.names[-1])})"
        )


def _content(node: SourceNode, path: bytes) -> Iterator[Buffer]:
    """PAYLOAD, SYMLINK or DEVICE of a non-directory (nothing for fifos and sockets)."""
    fmt = stat.S_IFMT(node.entry.mode)
    if fmt == stat.S_IFREG:
        yield r.payload_header(node.size)
        left = node.size
        for block in node.payload():
            left -= len(block)
            if left < 0:
                break
            yield block
        if left:
            raise EncodeError(f"{os.fsdecode(path)}: file changed size while being archived")
    elif fmt == stat.S_IFLNK:
        if not node.target or b"\0" in node.target or len(node.target) > r.PATH_MAX:
            raise EncodeError(f"cannot archive {os.fsdecode(path)}: invalid symlink target")
        yield r.symlink(node.target)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        yield r.device(os.major(node.rdev), os.minor(node.rdev))
    elif fmt not in (stat.S_IFIFO, stat.S_IFSOCK):
        raise EncodeError(f"cannot archive {os.fsdecode(path)}: unknown file type {fmt:o}")
