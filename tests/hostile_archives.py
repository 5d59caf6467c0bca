"""Builders of catar archives for tests, benign and hostile.

``MemNode`` trees go through our real encoder (which refuses bad names), so
hostile archives are assembled here from the same record encoders with the
checks left out: names with '/', '..', duplicates, wrong GOODBYE tables...
Each builder returns the archive's bytes.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from desync_decl.formats.catar import Decoder, DirEnd, Entry, encode, goodbye
from desync_decl.formats.catar import records as r
from desync_decl.formats.catar.entry import encode as encode_entry
from desync_decl.formats.catar.features import DESYNC_TAR

MTIME = 1_600_000_000_123_456_789


@dataclass
class MemNode:
    """An in-memory source node for the encoder (and for the raw builders below)."""

    entry: Entry
    data: bytes = b""
    target: bytes = b""
    rdev: int = 0
    kids: dict[bytes, MemNode] = field(default_factory=dict)
    order: list[tuple[bytes, bytes]] | None = None  # raw builders: (name, key in kids)

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> Iterator[bytes]:
        yield self.data

    def children(self) -> Iterator[tuple[bytes, MemNode]]:
        for name in sorted(self.kids):
            yield name, self.kids[name]

    @classmethod
    def dir(cls, mode: int = 0o755, children: dict[bytes, MemNode] | None = None) -> MemNode:
        return cls(_entry(stat.S_IFDIR | mode), kids=dict(children or {}))

    @classmethod
    def file(cls, data: bytes, mode: int = 0o644, **entry: object) -> MemNode:
        return cls(_entry(stat.S_IFREG | mode, **entry), data=data)

    @classmethod
    def symlink(cls, target: bytes) -> MemNode:
        return cls(_entry(stat.S_IFLNK | 0o777), target=target)

    @classmethod
    def device(cls, rdev: int, char: bool = True) -> MemNode:
        return cls(_entry((stat.S_IFCHR if char else stat.S_IFBLK) | 0o600), rdev=rdev)


def _entry(mode: int, **fields: object) -> Entry:
    return Entry(feature_flags=DESYNC_TAR, mode=mode, mtime=MTIME, **fields)  # type: ignore[arg-type]


def tree_of(stream: BinaryIO) -> MemNode:
    """Decode a catar into MemNodes (payloads in memory: for small test archives)."""
    decoder = Decoder(stream)
    stack: list[MemNode] = []
    root = None
    for ev in decoder:
        if isinstance(ev, DirEnd):
            stack.pop()
            continue
        node = MemNode(ev.entry, target=ev.target, rdev=ev.rdev)
        if ev.size:
            node.data = b"".join(decoder.payload())
        if stack:
            stack[-1].kids[ev.path[-1]] = node
        else:
            root = node
        if stat.S_ISDIR(ev.entry.mode):
            stack.append(node)
    assert root is not None
    return root


def archive(root: MemNode) -> bytes:
    """A well-formed archive through the real encoder."""
    return b"".join(encode(root))


# -- raw builders: the encoder's job without its checks ------------------------------


def raw_archive(root: MemNode) -> bytes:
    """Serialize ``root`` as given: children in ``order`` (or as inserted), any names,
    with correct GOODBYE tables, so only the names or order are hostile."""
    out = bytearray(encode_entry(root.entry))
    _raw_content(root, out, 0)
    return bytes(out)


def _raw_content(node: MemNode, out: bytearray, entry_at: int) -> None:
    fmt = stat.S_IFMT(node.entry.mode)
    if fmt == stat.S_IFREG:
        out += r.payload_header(len(node.data)) + node.data
    elif fmt == stat.S_IFLNK:
        out += r.symlink(node.target)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        out += r.device(os.major(node.rdev), os.minor(node.rdev))
    elif fmt == stat.S_IFDIR:
        children = goodbye.Children()
        pairs = (
            [(n, node.kids[k]) for n, k in node.order] if node.order else list(node.kids.items())
        )
        for name, child in pairs:
            children.add(name, len(out))
            out += r.filename(name)
            child_entry_at = len(out)
            out += encode_entry(child.entry)
            _raw_content(child, out, child_entry_at)
            children.end(len(out))
        out += goodbye.encode(children, len(out), entry_at)


def dir_with(*pairs: tuple[bytes, MemNode]) -> MemNode:
    """A directory whose children keep this order (duplicates allowed)."""
    d = MemNode.dir()
    d.order = []
    for name, child in pairs:
        key = b"%d" % len(d.order)
        d.kids[key] = child
        d.order.append((name, key))
    return d


def evil_names(name: bytes, child: MemNode | None = None) -> bytes:
    """An archive whose root holds one child called ``name`` (e.g. b'..', b'a/b')."""
    root = MemNode.dir()
    root.kids[name] = child or MemNode.file(b"pwned\n")
    return raw_archive(root)


def symlink_then_dir(link: bytes, target: bytes, inner: bytes = b"passwd") -> bytes:
    """A symlink ``link -> target`` and then a directory of the same name holding a
    file: the pattern that writes through a planted symlink."""
    d = MemNode.dir(children={inner: MemNode.file(b"pwned\n")})
    return raw_archive(dir_with((link, MemNode.symlink(target)), (link, d)))


def symlink_only(link: bytes, target: bytes) -> bytes:
    """First archive of GNU tar CVE-2025-45582's pattern: plant ``link -> target``."""
    return archive(MemNode.dir(children={link: MemNode.symlink(target)}))


def dir_with_file(dirname: bytes, name: bytes = b"passwd", data: bytes = b"pwned\n") -> bytes:
    """Second archive of that pattern: a directory of the symlink's name with a file."""
    inner = MemNode.dir(children={name: MemNode.file(data)})
    return archive(MemNode.dir(children={dirname: inner}))


def device_archive(rdev: int = 0x0103) -> bytes:
    return archive(MemNode.dir(children={b"null": MemNode.device(rdev)}))


def truncated(data: bytes, keep: int) -> bytes:
    return data[:keep]


def with_bad_goodbye(data: bytes) -> bytes:
    """Flip one byte in the root's GOODBYE table (its last item's hash)."""
    out = bytearray(data)
    out[-40] ^= 0xFF  # the root GOODBYE's last item before the tail
    return bytes(out)


def huge_record(typ: int = r.XATTR) -> bytes:
    """An ENTRY followed by a record claiming 2^62 bytes."""
    head = encode_entry(_entry(stat.S_IFDIR | 0o755))
    return head + r.HEADER.pack(1 << 62, typ) + b"x" * 64


def stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
