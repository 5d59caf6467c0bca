"""New regular files made a batch at a time in C (``ext/filebatch.c``), without the GIL.

``untar``'s worker threads made each file in Python, five system calls each releasing
the GIL and waiting to take it back from the decoding thread: on 2 cores two workers
wrote no faster than one. A batch is packed here (on the worker, one GIL hold for up to
64 files) and made in one call. Only the plain case is done in C: a file made unnamed
(O_TMPFILE) in a directory fd, filled from the archive file by offset or from bytes
in the batch, given owner, mode and times on its fd, and linked in under a name that
must not exist. Whatever fails is handed back by index, with nothing of it left
behind, for the caller to make the careful way (``archive.disk_writer``).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from desync_decl._filebatch_cffi import ffi, lib

CHOWN = 1  # fchown to uid, gid
CHMOD = 2  # made 0600, then fchmod to mode (else made with mode)
TIMES = 4  # atime and mtime set to mtime_ns
_INLINE = 8  # the contents are in the batch
_JOB = struct.Struct("=iIIIqqQII")  # struct ca_file_job
MAX_ID = 0xFFFFFFFE  # (uid_t)-1 means "unchanged" to fchown
MAX_TIME_NS = (1 << 63) - 1


class FileBatch:
    """Files to make in one call: ``add`` them, then ``write``."""

    __slots__ = ("_buf", "count")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.count = 0

    def add(
        self,
        dir_fd: int,
        name: bytes,
        mode: int,
        what: int,
        *,
        uid: int = 0,
        gid: int = 0,
        mtime_ns: int = 0,
        offset: int = 0,
        size: int = 0,
        data: bytes | None = None,
    ) -> None:
        """A file ``name`` in ``dir_fd``: ``size`` bytes of the source file from
        ``offset``, or ``data``; ``what`` says which of CHOWN, CHMOD, TIMES apply."""
        if data is not None:
            what, size = what | _INLINE, len(data)
        buf = self._buf
        buf += _JOB.pack(dir_fd, mode, uid, gid, mtime_ns, offset, size, what, len(name))
        buf += name
        buf += b"\0"
        if data is not None:
            buf += data
        buf += bytes(-len(buf) % 8)
        self.count += 1

    def write(self, src_fd: int = -1) -> Iterator[tuple[int, int]]:
        """Make the files, in order; yields (index, errno) of each that failed (errno
        0: ``src_fd`` ended inside its contents) and goes on after it when resumed."""
        error = ffi.new("int *")
        buf = ffi.from_buffer("uint8_t[]", self._buf)
        start = 0
        while start < self.count:
            failed = lib.ca_write_files(buf, len(self._buf), self.count, src_fd, start, error)
            if failed >= self.count:
                if error[0]:
                    raise ValueError("a file batch not made by FileBatch.add")
                return
            yield failed, error[0]
            start = failed + 1


@dataclass(frozen=True, slots=True)
class LeafPolicy:
    """How the plain files of decoded leaves (``catar_leaves``) are made in one new
    directory ``dir_fd``: what ``disk_writer.Writer._plain`` decides per file, from
    values fixed for the directory (``struct ca_leaf_policy``)."""

    dir_fd: int
    umask: int
    archive_modes: bool  # the archive's modes, else 0666 & ~umask
    read_only: bool  # without archive_modes: no write bits where the archive has none
    always_chmod: bool  # the directory has a default ACL
    chown: bool  # owners restored
    new_uid: int  # what a new file gets without a chown
    new_gid: int
    times: bool  # mtimes restored
    python_flags: int  # ENTRY flags only the Python writer sets (chattr)


class LeafFiles:
    """The leaves ``lo..hi`` of a run (packed ``struct ca_leaf``s whose offsets count
    from ``window[start]``) made in C: files and symlinks; ``entries`` and ``bytes``
    count those made and the file bytes written."""

    __slots__ = ("_made", "_policy", "_prefix", "bytes", "entries")

    def __init__(self, policy: LeafPolicy, temp_prefix: bytes) -> None:
        self._policy = ffi.new("struct ca_leaf_policy *")
        for name in LeafPolicy.__slots__:
            setattr(self._policy, name, int(getattr(policy, name)))
        self._prefix = temp_prefix
        self._made = ffi.new("uint64_t[2]")
        self.entries = self.bytes = 0

    def write(
        self, leaves: bytes, starts: array[int], window: bytes, start: int, lo: int, hi: int
    ) -> Iterator[tuple[int, int]]:
        """Yields (index, errno) of each leaf not made (errno -1: one for the Python
        writer) and goes on after it when resumed. A symlink is made under a temporary
        name, ``temp_prefix`` and its FILENAME's offset (``starts``), then renamed."""
        error = ffi.new("int *")
        packed = ffi.from_buffer(leaves)
        base = ffi.from_buffer(window) + start
        offsets = ffi.from_buffer("uint64_t[]", starts)
        while lo < hi:
            failed = lib.ca_write_leaves(
                packed, hi, base, self._policy, self._prefix, offsets, lo, error, self._made
            )
            self.entries, self.bytes = int(self._made[0]), int(self._made[1])
            if failed >= hi:
                return
            yield failed, error[0]
            lo = failed + 1
