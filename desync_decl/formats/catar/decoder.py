"""Decode a catar stream incrementally into nodes, checking everything casync writes.

The decoder yields a ``Node`` per archive node in stream order (a directory
before its children) and a ``DirEnd`` when a directory's GOODBYE has been read
and verified. After a regular file's ``Node`` its payload can be read with
``payload()``; whatever is not read is skipped. Memory stays bounded: payloads
are read in blocks and every other record has a size limit.

Refused, each with the byte offset: names that are not one path component
(empty, ``.``, ``..``, containing ``/`` or NUL) or hold a backslash (as desync
refuses them: records.read_name_problem), children out of order or
repeated, records out of place or of the wrong size, feature flags that change
between entries, nodes with records or values the feature flags exclude (as
casync refuses them, feature_gates.py), GOODBYE tables that do not match the
children, truncation and trailing bytes.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from desync_decl.errors import FormatError
from desync_decl.formats import flags as ff
from desync_decl.formats.catar import feature_gates, goodbye
from desync_decl.formats.catar import records as r
from desync_decl.formats.catar.entry import (
    METADATA_TYPES,
    Entry,
    MetadataError,
    MetadataReader,
    decode_entry,
)
from desync_decl.formats.catar.features import NODE_TYPES

BLOCK_SIZE = 1 << 20
MAX_DEPTH = 1024
_CONTENT = {stat.S_IFREG: r.PAYLOAD, stat.S_IFLNK: r.SYMLINK}  # else DEVICE (fifos: none)


@dataclass(slots=True)
class Node:
    path: tuple[bytes, ...]  # components below the root; () is the root
    entry: Entry
    size: int = 0  # regular files
    target: bytes = b""  # symlinks
    rdev: int = 0  # devices (os.makedev form)

    @property
    def name(self) -> str:
        """The path for messages and listings: ``.`` or ``a/b``."""
        return os.fsdecode(b"/".join(self.path)) if self.path else "."


@dataclass(slots=True)
class DirEnd:
    path: tuple[bytes, ...]
    entry: Entry


@dataclass
class _Dir:
    path: tuple[bytes, ...]
    entry: Entry
    entry_at: int
    table: goodbye.Children = field(default_factory=goodbye.Children)  # for its GOODBYE


class Decoder:
    def __init__(self, stream: BinaryIO, source: str = "archive") -> None:
        if not isinstance(stream, io.BufferedIOBase):
            stream = io.BufferedReader(stream, BLOCK_SIZE)  # type: ignore[type-var]  # an unbuffered BinaryIO is a raw stream
        self._stream = stream
        self._source = source
        self.pos = 0
        self.flags: int | None = None
        self._rules: feature_gates.EntryRules  # set with the flags, at the first ENTRY
        self._left = 0  # unread payload bytes of the current file

    def fail(self, what: str, at: int | None = None) -> FormatError:
        return FormatError(
            f"{self._source}: invalid archive at byte {self.pos if at is None else at}: {what}"
        )

    # -- reading -------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        data = self._stream.read(n)
        while len(data) < n:
            more = self._stream.read(n - len(data))
            if not more:
                raise self.fail(f"archive truncated ({n - len(data)} more bytes expected)")
            data += more
        self.pos += n
        return data

    def _header(self) -> tuple[int, int, int]:
        """(type, body size, offset) of the next record."""
        at = self.pos
        size, typ = r.HEADER.unpack(self._read(r.HEADER_SIZE))
        if size < r.HEADER_SIZE:
            raise self.fail(f"record size {size} is smaller than its header", at)
        return typ, size - r.HEADER_SIZE, at

    def _body(self, typ: int, size: int, at: int) -> bytes:
        limit = r.MAX_BODY.get(typ)
        if limit is not None and size > limit:
            raise self.fail(f"{r.NAMES[typ]} record of {size} bytes is too large", at)
        return self._read(size)

    def payload(self, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
        """The rest of the current file's payload, in blocks of at most ``block_size``."""
        while self._left:
            n = min(self._left, block_size)
            data = self._stream.read(n)
            if not data:
                raise self.fail(f"archive truncated inside a payload ({self._left} bytes missing)")
            self._left -= len(data)
            self.pos += len(data)
            yield data

    def payload_bytes(self) -> bytes:
        """The rest of the current file's payload in one piece: for a small file, what
        ``payload`` gives without a generator and a list per file."""
        data = self._stream.read(self._left)
        self._left -= len(data)
        self.pos += len(data)
        if self._left:  # a short read: the end of the stream, which payload reports
            data += b"".join(self.payload())
        return data

    def _skip_payload(self) -> None:
        if self._left and self._stream.seekable():
            self._stream.seek(self._left, io.SEEK_CUR)
            self.pos += self._left
            self._left = 0
        for _ in self.payload():
            pass

    def _at_end(self) -> None:
        self._skip_payload()
        if self._stream.read(1):
            raise self.fail("data after the end of the archive")

    # -- structure -----------------------------------------------------------------

    def __iter__(self) -> Iterator[Node | DirEnd]:
        typ, size, at = self._header()
        if typ != r.ENTRY:
            raise self.fail("not a catar archive (no ENTRY record at the start)", at)
        stack: list[_Dir] = []
        path: tuple[bytes, ...] = ()
        while True:
            entry, (typ, size, at) = self._entry(size, at)
            if stat.S_ISDIR(entry.mode):
                if len(stack) >= MAX_DEPTH:
                    raise self.fail(f"directories nested deeper than {MAX_DEPTH} levels", at)
                stack.append(_Dir(path, entry, self._entry_at))
                yield Node(path, entry)
            else:
                node, nxt = self._leaf(path, entry, typ, size, at)
                yield node
                if not stack:
                    self._at_end() if nxt is None else self._trailing(nxt)
                    return
                self._skip_payload()
                typ, size, at = self._header() if nxt is None else nxt
                stack[-1].table.end(at)
            # inside stack[-1]: the next record is a child's FILENAME or the GOODBYE
            while typ == r.GOODBYE:
                d = stack.pop()
                self._goodbye(d, size, at)
                yield DirEnd(d.path, d.entry)
                if not stack:
                    self._at_end()
                    return
                stack[-1].table.end(self.pos)
                typ, size, at = self._header()
            if typ != r.FILENAME:
                raise self.fail(
                    f"{r.NAMES.get(typ, hex(typ))} record where a file name or GOODBYE belongs", at
                )
            path = self._filename(stack[-1], size, at)
            typ, size, at = self._header()
            if typ != r.ENTRY:
                raise self.fail("FILENAME not followed by an ENTRY", at)

    def _trailing(self, nxt: tuple[int, int, int]) -> None:
        raise self.fail("data after the end of the archive", nxt[2])

    def _entry(self, size: int, at: int) -> tuple[Entry, tuple[int, int, int]]:
        """The ENTRY (header read) and its optional records; returns the next header."""
        if size != r.ENTRY_SIZE - r.HEADER_SIZE:
            raise self.fail(f"ENTRY record of {size + r.HEADER_SIZE} bytes (must be 64)", at)
        self._entry_at = at
        entry = decode_entry(self._read(size))
        if self.flags is None:
            if (problem := ff.problem(entry.feature_flags)) is not None:
                raise self.fail(problem, at)
            self.flags = entry.feature_flags
            self._rules = feature_gates.EntryRules(self.flags)
        elif entry.feature_flags != self.flags:
            raise self.fail("feature flags differ from the archive's first ENTRY", at)
        if not _known_type(entry.mode):
            raise self.fail(f"node type {entry.mode & 0o170000:o} not allowed here", at)
        if (problem := self._rules.problem(entry)) is not None:
            raise self.fail(problem, at)
        typ, size, rec_at = self._header()
        if typ not in METADATA_TYPES:  # most nodes have no optional record
            return entry, (typ, size, rec_at)
        meta = MetadataReader(entry)
        while True:
            if typ not in METADATA_TYPES:
                meta.finish()
                if (problem := feature_gates.node_problem(entry)) is not None:
                    raise self.fail(problem, at)
                return entry, (typ, size, rec_at)
            body = self._body(typ, size, rec_at)
            try:
                meta.add(typ, body)
            except MetadataError as e:
                raise self.fail(str(e), rec_at) from None
            typ, size, rec_at = self._header()

    def _leaf(
        self, path: tuple[bytes, ...], entry: Entry, typ: int, size: int, at: int
    ) -> tuple[Node, tuple[int, int, int] | None]:
        """A non-directory's content record; returns the node and, for fifos and
        sockets, the header already read after it."""
        fmt = stat.S_IFMT(entry.mode)
        want = _CONTENT.get(fmt, r.DEVICE)
        if fmt in (stat.S_IFIFO, stat.S_IFSOCK):
            return Node(path, entry), (typ, size, at)
        if typ != want:
            raise self.fail(
                f"{r.NAMES.get(typ, hex(typ))} record where {r.NAMES[want]} belongs", at
            )
        if want == r.PAYLOAD:
            self._left = size
            return Node(path, entry, size=size), None
        body = self._body(typ, size, at)
        if want == r.SYMLINK:
            if len(body) < 2 or body[-1] != 0 or b"\0" in body[:-1]:
                raise self.fail("SYMLINK target is not one non-empty string", at)
            return Node(path, entry, target=body[:-1]), None
        if len(body) != r.DEVICE_SIZE - r.HEADER_SIZE:
            raise self.fail(f"DEVICE record of {size + r.HEADER_SIZE} bytes (must be 32)", at)
        major, minor = int.from_bytes(body[:8], "little"), int.from_bytes(body[8:], "little")
        if major >= 1 << 31 or minor >= 1 << 31:  # os.makedev takes C ints
            raise self.fail(f"device number {major}:{minor} out of range", at)
        return Node(path, entry, rdev=os.makedev(major, minor)), None

    def _filename(self, d: _Dir, size: int, at: int) -> tuple[bytes, ...]:
        body = self._body(r.FILENAME, size, at)
        if not body or body[-1] != 0:
            raise self.fail("FILENAME is not NUL-terminated", at)
        name = body[:-1]
        if (problem := r.read_name_problem(name)) is not None:
            raise self.fail(f"refusing {problem} ({name!r})", at)
        last = d.table.last_name
        if last is not None and name <= last:
            raise self.fail(
                f"name {os.fsdecode(name)!r} repeated or out of order in its directory", at
            )
        d.table.add(name, at)
        return (*d.path, name)

    def _goodbye(self, d: _Dir, size: int, at: int) -> None:
        expected_size = goodbye.size_for(len(d.table))
        if size + r.HEADER_SIZE != expected_size:
            raise self.fail(
                f"GOODBYE of {size + r.HEADER_SIZE} bytes for {len(d.table)} children", at
            )
        if not goodbye.matches(self._read, size, d.table, at, d.entry_at):
            raise self.fail("GOODBYE table does not match the directory's children", at)


def _known_type(mode: int) -> bool:
    return mode >> 16 == 0 and stat.S_IFMT(mode) in NODE_TYPES  # S_IFMT overflows past 32 bits
