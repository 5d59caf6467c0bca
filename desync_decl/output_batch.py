"""A run of an output stream written in C (``ext/outputbatch.c``), without the GIL:
byte runs and whole files' contents, in order.

``tar``'s writer thread copied each file in Python, a few system calls each taking
the GIL back from the walking thread; most files of a tree are small, so the walk
read them itself and the second core idled. A batch is packed here (byte runs into
one buffer, files as open descriptors) and written in one call: files read with
``pread`` and gathered with the byte runs into one ``writev``. Every descriptor
handed in is closed, written or not. ``gather`` reads such a run into memory instead,
for ``tar -i``'s chunker.
"""

from __future__ import annotations

import errno
import os
from array import array

from desync_decl._outputbatch_cffi import ffi, lib
from desync_decl.errors import DesyncError

MAX_IOV = lib.CA_OUT_MAX_IOV  # pieces one writev takes


class OutputBatch:
    """Byte runs and files to write in one call: ``add_bytes``/``add_file``, then
    ``write`` (or ``close`` to drop it)."""

    __slots__ = ("_heads", "_names", "_segments", "files", "size")

    def __init__(self) -> None:
        self._heads = bytearray()
        self._segments = array("q")  # (fd, length) pairs; fd -1: the next bytes of _heads
        self._names: dict[int, str | bytes] = {}  # segment -> its file's name, for messages
        self.files = 0
        self.size = 0  # bytes the batch writes

    def __len__(self) -> int:
        return len(self._segments) // 2

    def add_bytes(self, data: bytes | bytearray | memoryview) -> None:
        segments = self._segments
        self._heads += data
        self.size += len(data)
        if segments and segments[-2] < 0:
            segments[-1] += len(data)  # one run with the run before it
        else:
            segments.extend((-1, len(data)))

    def add_file(self, fd: int, size: int, name: str | bytes) -> None:
        """The first ``size`` bytes of the open file ``fd`` (exactly: a file of another
        size is an error), shown as ``name`` in errors. The batch owns ``fd`` now."""
        self._names[len(self)] = name
        self._segments.extend((fd, size))
        self.files += 1
        self.size += size

    def add_run(self, heads: bytes, segments: array[int], names: dict[int, bytes]) -> None:
        """Segments as ``add_bytes`` and ``add_file`` would make them: (-1, length) for
        the next bytes of ``heads``, (fd, size) for a file, named by its index in
        ``names``. The batch owns the files now."""
        base = len(self)
        for at, name in names.items():
            self._names[base + at] = name
        self._heads += heads
        self._segments.extend(segments)
        self.files += len(names)
        self.size += len(heads) + sum(segments[2 * at + 1] for at in names)

    def write(self, fd: int, buffer: bytearray) -> int:
        """Everything to ``fd`` at its position, files read through ``buffer``; then every
        file is closed. Returns the bytes written. A write error is the OSError; a file
        that cannot be read or changed size is a DesyncError naming it, nothing after it
        written."""
        failed = ffi.new("size_t *")
        error = ffi.new("int *")
        segments = self._segments
        self._segments = array("q")
        rc = lib.ca_output_batch(
            fd,
            ffi.from_buffer(self._heads),
            ffi.from_buffer("int64_t[]", segments),
            len(segments) // 2,
            ffi.from_buffer(buffer, require_writable=True),
            len(buffer),
            failed,
            error,
        )
        if rc == lib.CA_OUT_WRITE_FAILED:
            code = error[0] or errno.EIO
            raise OSError(code, os.strerror(code))
        if rc != lib.CA_OUT_OK:
            raise _file_error(rc, self._names[failed[0]], error[0])
        return self.size

    def close(self) -> None:
        """Drop the batch unwritten: its files closed."""
        segments, self._segments = self._segments, array("q")
        for fd in segments[::2]:
            if fd >= 0:
                os.close(fd)


def gather(
    heads: memoryview, segments: array[int], names: dict[int, bytes], first: int = 0
) -> memoryview:
    """The bytes of ``segments`` (as ``OutputBatch.add_run`` takes them) in memory, read
    in one call without the GIL: for ``tar -i``, whose chunker wants the stream in
    memory. Read one by one (``os.read``, ``os.close``), each file's two system calls
    gave the GIL to the chunk workers and waited to get it back: 30k files of a tree
    cost the walking thread ~0.9 s of waits and the process its context switches.
    Every file of ``segments`` is closed; one that cannot be read or changed size is a
    DesyncError naming it (``names[first + segment]``: its path)."""
    total = sum(segments[1::2])
    into = bytearray(total + 1)  # the byte more shows a file that grew
    failed = ffi.new("size_t *")
    error = ffi.new("int *")
    rc = lib.ca_gather_batch(
        ffi.from_buffer(into, require_writable=True),
        len(into),
        ffi.from_buffer(heads),
        ffi.from_buffer("int64_t[]", segments),
        len(segments) // 2,
        failed,
        error,
    )
    if rc != lib.CA_OUT_OK:
        raise _file_error(rc, names[first + failed[0]], error[0])
    return memoryview(into)[:total]


def _file_error(rc: int, name: str | bytes, error: int) -> DesyncError:
    """The error of a file a batch could not read (CA_OUT_READ_FAILED, errno ``error``)
    or found changed (CA_OUT_CHANGED)."""
    if rc == lib.CA_OUT_CHANGED:
        return DesyncError(f"{os.fsdecode(name)}: file changed while archiving")
    return DesyncError(f"cannot read {os.fsdecode(name)}: {os.strerror(error or errno.EIO)}")
