"""Runs of a catar directory's leaf children decoded in C (``ext/catar_leaves.c``).

The Python decoder (``formats/catar/decoder.py``) spent most of ``untar``'s user time
on a tree's regular files and symlinks: a dozen method calls and objects for each.
Here a window of the stream is decoded in one call for as long as the children are
plain leaves (no optional record), checked as the Python decoder checks them; at the
first child that is anything else the run ends before it and the Python decoder
takes that child, with its own message where it refuses it.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass

from desync_decl._catar_cffi import ffi, lib

LEAF = struct.Struct(
    "<6QIIQ"
)  # struct ca_leaf: mode, flags, uid, gid, mtime, size, name_at, name_len, data_at
MAX_LEAVES = 4096  # children of one call


@dataclass(frozen=True, slots=True)
class Rules:
    """What a leaf's ENTRY may hold (``feature_gates.EntryRules``, for the C side)."""

    feature_flags: int
    entry_flags: int
    max_id: int
    time_unit: int
    files: bool
    symlinks: bool
    any_mode: bool
    read_only: bool


@dataclass(frozen=True, slots=True)
class Run:
    """Leaves decoded from one window: ``leaves`` holds ``count`` packed ``LEAF``s,
    ``hashes``/``starts``/``ends`` their GOODBYE columns; ``consumed`` bytes of the
    window were read, the last of them the header ``next`` (type, body size, offset)."""

    count: int
    leaves: bytes
    hashes: array[int]
    starts: array[int]
    ends: array[int]
    consumed: int
    next: tuple[int, int, int]
    files: int  # regular files among the leaves (the others are symlinks)
    file_bytes: int  # their payloads' bytes


class LeafDecoder:
    """Decodes runs under one archive's rules, reusing its output buffers."""

    def __init__(self, rules: Rules, max_leaves: int = MAX_LEAVES) -> None:
        self._rules = ffi.new("struct ca_leaf_rules *")
        for name in Rules.__slots__:
            setattr(self._rules, name, int(getattr(rules, name)))
        self._max = max_leaves
        self._out = ffi.new("struct ca_leaf[]", max_leaves)
        self._cols = array("Q", bytes(8 * 3 * max_leaves))
        self._next = ffi.new("uint64_t[6]")

    def decode(
        self, window: bytes, start: int, name_size: int, name_at: int, last: bytes | None
    ) -> Run | None:
        """Leaves from ``window[start:]``, which starts after the FILENAME header (body
        size ``name_size``) at ``name_at``; ``last``: the directory's last name so far.
        None when the first child is not one (the Python decoder takes it). The
        offsets in the leaves count from ``start``."""
        m = self._max
        cols = ffi.from_buffer("uint64_t[]", self._cols, require_writable=True)
        n = lib.ca_decode_leaves(
            self._rules,
            ffi.from_buffer(window) + start,
            len(window) - start,
            name_size,
            name_at,
            ffi.NULL if last is None else last,
            0 if last is None else len(last),
            m,
            self._out,
            cols,
            cols + m,
            cols + 2 * m,
            self._next,
        )
        if not n:
            return None
        nxt = self._next
        return Run(
            n,
            bytes(ffi.buffer(self._out, n * LEAF.size)),
            self._column(0, n),
            self._column(m, n),
            self._column(2 * m, n),
            int(nxt[3]),
            (int(nxt[0]), int(nxt[1]), int(nxt[2])),
            int(nxt[4]),
            int(nxt[5]),
        )

    def _column(self, at: int, n: int) -> array[int]:
        out = array("Q")
        out.frombytes(memoryview(self._cols)[at : at + n].cast("B"))
        return out
