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

``events(leaves=True)`` (untar's writer) gets runs of a directory's plain files and
symlinks decoded in C as ``Leaves`` (``catar_leaves.py``): C accepts only what this
decoder accepts and hands the first child it does not take back here, so every
refusal above keeps its message; ``tests/test_catar_leaves.py`` holds the two to the
same events and errors.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from desync_decl.catar_leaves import LEAF, LeafDecoder, Rules, Run
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
_MIN_WINDOW = 4096  # a buffered window shorter than this is peeked again
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


@dataclass(slots=True)
class Leaves:
    """Leaf children of the directory ``path`` decoded at once, in C (``events`` with
    ``leaves``): regular files and symlinks without optional records, their names,
    payloads and targets in ``window`` (the stream's bytes the run was decoded from)."""

    path: tuple[bytes, ...]
    feature_flags: int
    window: bytes
    start: int  # the leaves' offsets count from window[start]
    run: Run

    def nodes(self) -> Iterator[tuple[Node, bytes]]:
        """Each leaf as a ``Node`` and, for a file, its payload."""
        return map(self.node, range(self.run.count))

    def node(self, i: int) -> tuple[Node, bytes]:
        """Leaf ``i`` as a ``Node`` and, for a file, its payload."""
        mode, eflags, uid, gid, mtime, size, name_at, name_len, data_at = LEAF.unpack_from(
            self.run.leaves, i * LEAF.size
        )
        window, s = self.window, self.start
        entry = Entry(self.feature_flags, mode, eflags, uid, gid, mtime)
        child = (*self.path, window[s + name_at : s + name_at + name_len])
        data = window[s + data_at : s + data_at + size]
        if stat.S_ISREG(mode):
            return Node(child, entry, size=size), data
        return Node(child, entry, target=data), b""


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
        self._leaf_decoder: LeafDecoder | None = None  # made with the rules
        # the stream's buffer as last peeked (``_leaves``) and where it starts in the stream
        self._window, self._window_at = b"", 0
        self._file: tuple[int, int] | None = None  # a regular file's fd, where we started

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
        return self.events()  # type: ignore[return-value]  # without leaves: no Leaves

    def events(self, leaves: bool = False) -> Iterator[Node | DirEnd | Leaves]:
        """The nodes in stream order; with ``leaves``, runs of a directory's plain leaf
        children come as ``Leaves`` decoded in C (from a buffered stream: ``peek``), each
        checked as the nodes are. Their payloads are in the event, and there is
        nothing left to read of them (``payload``)."""
        fast = leaves and isinstance(self._stream, io.BufferedReader)
        self._file = _regular_file(self._stream) if fast else None
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
            while True:
                while typ == r.GOODBYE:
                    d = stack.pop()
                    self._goodbye(d, size, at)
                    yield DirEnd(d.path, d.entry)
                    if not stack:
                        self._at_end()
                        return
                    stack[-1].table.end(self.pos)
                    typ, size, at = self._header()
                if (
                    not fast
                    or typ != r.FILENAME
                    or (run := self._leaves(stack[-1], size, at)) is None
                ):
                    break
                yield run
                typ, size, at = run.run.next
            if typ != r.FILENAME:
                raise self.fail(
                    f"{r.NAMES.get(typ, hex(typ))} record where a file name or GOODBYE belongs", at
                )
            path = self._filename(stack[-1], size, at)
            typ, size, at = self._header()
            if typ != r.ENTRY:
                raise self.fail("FILENAME not followed by an ENTRY", at)

    def _leaves(self, d: _Dir, size: int, at: int) -> Leaves | None:
        """The leaf children from the FILENAME whose header was read (body ``size``,
        at ``at``) on, as far as the stream's buffer holds whole ones; None if the
        first is not one (or not whole there): the Python decoder takes it."""
        assert self.flags is not None  # set at the root's ENTRY
        if self._leaf_decoder is None:
            self._leaf_decoder = LeafDecoder(_leaf_rules(self.flags, self._rules))
        stream = self._stream
        start = self.pos - self._window_at
        window = self._window
        if not 0 <= start < len(window) - _MIN_WINDOW:
            # a new window once the last is used up, not per run (peek copies the buffer)
            if self._file is not None:
                fd, base = self._file
                window = os.pread(fd, BLOCK_SIZE, base + self.pos)
            else:
                assert isinstance(stream, io.BufferedReader)  # events() checked
                window = stream.peek(_MIN_WINDOW)
            self._window = window
            start, self._window_at = 0, self.pos
        run = self._leaf_decoder.decode(window, start, size, at, d.table.last_name)
        if run is None:
            return None
        name_at, name_len = LEAF.unpack_from(run.leaves, (run.count - 1) * LEAF.size)[6:8]
        name_at += start
        last_name = window[name_at : name_at + name_len]
        d.table.add_hashed_run(run.hashes, run.starts, run.ends, last_name)
        self.pos += run.consumed
        if stream.seekable():
            stream.seek(run.consumed, io.SEEK_CUR)
        else:
            stream.read(run.consumed)
        return Leaves(d.path, self.flags, window, start, run)

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


def _regular_file(stream: BinaryIO) -> tuple[int, int] | None:
    """The stream's fd and position if it reads a regular file: windows of leaves are
    then read from it with ``pread`` in blocks of ``BLOCK_SIZE`` (its buffer, an
    ``open``'s 8 KiB, would hold few whole leaves)."""
    try:
        fd = stream.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode) and stream.seekable():
            return fd, stream.tell()
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
    return None


def _leaf_rules(flags: int, rules: feature_gates.EntryRules) -> Rules:
    """``rules`` of an archive with ``flags`` as the C leaf decoder takes them."""
    return Rules(
        flags,
        rules.entry_flags,
        rules.max_id,
        rules.time_unit,
        files=stat.S_IFREG in rules.types,
        symlinks=stat.S_IFLNK in rules.types,
        any_mode=rules.any_mode,
        read_only=0o444 in rules.file_modes,
    )


def _known_type(mode: int) -> bool:
    return mode >> 16 == 0 and stat.S_IFMT(mode) in NODE_TYPES  # S_IFMT overflows past 32 bits
