"""A directory's plain children read and encoded in C (``ext/entrybatch.c``), without
the GIL.

``tar`` spent about 9 µs of Python on each entry of a tree (/usr/share: 0.47 of its
0.65 CPU-s walking 53,690 entries): a stat result, an ``Entry``, records packed one by
one. Here a run of a directory's children (up to ``NAMES`` of them, ending at its first
subdirectory, so no file stays open while the walk descends) is opened, stat'ed and
encoded in one call: for a regular file or a symlink that needs no record beyond
ENTRY (no stored extended attribute, no chattr +d, ids that fit) its FILENAME, ENTRY
and PAYLOAD header or SYMLINK records, and for a file its open descriptor. Everything
else comes back unencoded for the caller to read the careful way, which also says
what is wrong with it. Only for flags whose ENTRY needs nothing else (``supports``).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from desync_decl._entrybatch_cffi import ffi, lib

NAMES = 64  # children per call: files opened at once
KIND_FILE, KIND_DIR, KIND_OTHER = lib.CA_KIND_FILE, lib.CA_KIND_DIR, lib.CA_KIND_OTHER
_OUT_BYTES = 64 << 10  # encoded bytes per call (an entry takes CA_ENTRY_HEAD_MAX at most)
_LISTING_BYTES = 256 << 10  # names of a directory listed, kept for the next one


@dataclass(frozen=True)
class Config:
    """What the archive stores: ``feature_flags`` go into each ENTRY; ``xattrs``: a
    user.* or trusted.* attribute is left to the caller; ``nodump``: so is a file
    marked chattr +d; ``symlinks``: symlinks are stored; ``exclude``: (st_dev, st_ino)
    of a file left to the caller (the archive being written)."""

    feature_flags: int
    xattrs: bool
    nodump: bool
    symlinks: bool
    exclude: tuple[int, int] | None = None


class EntryBatch:
    """Encodes runs of children for one archive; one per walking thread."""

    def __init__(self, config: Config) -> None:
        dev, ino = config.exclude or (0, 0)
        self._config = ffi.new(
            "struct ca_entry_config *",
            {
                "feature_flags": config.feature_flags,
                "xattrs": config.xattrs,
                "nodump": config.nodump,
                "symlinks": config.symlinks,
                "exclude": config.exclude is not None,
                "exclude_dev": dev,
                "exclude_ino": ino,
            },
        )
        self._out = bytearray(_OUT_BYTES)
        self._names = bytearray(_LISTING_BYTES)
        self._kinds = bytearray(_LISTING_BYTES // 16)
        self._results = array("q", bytes(8 * 4 * NAMES))

    def listing(self, dir_fd: int) -> tuple[list[bytes], bytes] | None:
        """The names in the directory ``dir_fd`` but . and .. in byte order, and each
        one's KIND_* as its listing says; None when it cannot be read (``os.scandir``
        then says why)."""
        need_bytes = ffi.new("size_t *")
        need_count = ffi.new("size_t *")
        names, kinds = self._names, self._kinds
        while True:
            n = lib.ca_list_dir(
                dir_fd,
                ffi.from_buffer(names, require_writable=True),
                len(names),
                ffi.from_buffer(kinds, require_writable=True),
                len(kinds),
                need_bytes,
                need_count,
            )
            if n == -2:
                return None
            if n >= 0:
                break
            names = bytearray(max(need_bytes[0], len(names)))  # a large directory: once
            kinds = bytearray(max(need_count[0], len(kinds)))
        if not n:
            return [], b""
        return bytes(names[: need_bytes[0] - 1]).split(b"\0"), bytes(kinds[:n])

    def run(
        self, dir_fd: int, names: list[bytes], kinds: bytes
    ) -> list[tuple[bytes | None, int, int]]:
        """For each of the first names done (at least one), in order: its encoded head
        or None when left to the caller, its payload's fd or -1, the payload's size.
        The caller owns every fd returned."""
        ends = array("I")
        total = 0
        for name in names:
            total += len(name)
            ends.append(total)
        results = self._results
        done = lib.ca_entry_batch(
            dir_fd,
            ffi.from_buffer(b"".join(names)),
            ffi.from_buffer("uint32_t[]", ends),
            kinds,
            len(names),
            self._config,
            ffi.from_buffer(self._out, require_writable=True),
            len(self._out),
            ffi.from_buffer("int64_t[]", results, require_writable=True),
        )
        out = memoryview(self._out)
        start = 0
        done_list: list[tuple[bytes | None, int, int]] = []
        for i in range(done):
            status, fd, size, end = results[4 * i : 4 * i + 4]
            if status == lib.CA_ENTRY_ENCODED:
                done_list.append((bytes(out[start:end]), fd, size))
            else:
                done_list.append((None, -1, 0))
            start = end
        return done_list
