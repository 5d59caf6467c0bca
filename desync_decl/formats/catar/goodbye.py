"""GOODBYE: the record that closes a directory, a hash table of its children.

One item per child, ``(offset, size, hash)``: ``offset`` counts back from the
GOODBYE record to the child's FILENAME record, ``size`` spans that FILENAME and
the child's whole serialization, ``hash`` is SipHash-2-4 of the name. Items are
sorted by (hash, position) and laid out as an implicit binary search tree
(children of slot k at 2k+1 and 2k+2, filled in order: the Eytzinger layout).
A tail item follows: offset back to the directory's ENTRY, the GOODBYE's own
size, and a marker.

Readers check a table against the children they read (``matches``): every item
and the tail as ``encode`` would write them, in any order before the tail. The order
only serves a reader that seeks by name; casync and desync do not check it when
reading a stream, and an older desync wrote tables in name order (desync's
cmd/desync/testdata/tree.catar).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable

from desync_decl import goodbye_table
from desync_decl.formats.catar import records as r
from desync_decl.siphash import hash_names

_ITEM = struct.Struct("<3Q")
ITEM_SIZE = _ITEM.size
_HASH_BATCH = 4096  # names hashed per call into C; the rest of a name is not kept
_COMPARE_PIECE = 1 << 20  # bytes of a GOODBYE body read and compared at a time


def size_for(children: int) -> int:
    return r.HEADER_SIZE + ITEM_SIZE * (children + 1)


class Children:
    """A directory's children as its GOODBYE table needs them, added in archive order:
    each name's hash and the offsets where its FILENAME starts and its serialization
    ends, 24 bytes a child in ``array``s (a million children: 24 MB, where lists of
    names and ints took 150). Only the last name is kept, to check the order."""

    __slots__ = ("_unhashed", "ends", "hashes", "last_name", "starts")

    def __init__(self) -> None:
        self.hashes: array[int] = array("Q")
        self.starts: array[int] = array("Q")
        self.ends: array[int] = array("Q")
        self.last_name: bytes | None = None
        self._unhashed: list[bytes] = []

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, name: bytes, start: int) -> None:
        """A child whose FILENAME record starts at ``start``."""
        self._unhashed.append(name)
        self.starts.append(start)
        self.last_name = name
        if len(self._unhashed) >= _HASH_BATCH:
            self._hash()

    def add_named_run(
        self, names: list[bytes], at: int, starts: array[int], ends: array[int]
    ) -> None:
        """Children whose FILENAME records start at ``at`` + ``starts[i]`` and whose
        serializations end at ``at`` + ``ends[i]`` (``add`` and ``end`` for each)."""
        self._unhashed.extend(names)
        self.starts.extend(at + s for s in starts)
        self.ends.extend(at + e for e in ends)
        self.last_name = names[-1]
        if len(self._unhashed) >= _HASH_BATCH:
            self._hash()

    def add_hashed_run(
        self, hashes: array[int], starts: array[int], ends: array[int], last_name: bytes
    ) -> None:
        """Whole children at once (``catar_leaves``): their names' hashes, where their
        FILENAME records start and their serializations end, and the last name."""
        self._hash()
        self.hashes.extend(hashes)
        self.starts.extend(starts)
        self.ends.extend(ends)
        self.last_name = last_name

    def end(self, at: int) -> None:
        """The last child's serialization ends at ``at``."""
        self.ends.append(at)

    def items(self, at: int) -> array[int]:
        """The table's items for a GOODBYE record at ``at`` (``goodbye_table.items``).
        The children are forgotten: a directory's table is made once, and its 24 bytes
        a child are not held beside the items while those are written or compared."""
        self._hash()
        hashes, starts, ends = self.hashes, self.starts, self.ends
        self.hashes, self.starts, self.ends = array("Q"), array("Q"), array("Q")
        return goodbye_table.items(hashes, starts, ends, at)

    def _hash(self) -> None:
        if self._unhashed:
            self.hashes.extend(hash_names(self._unhashed))
            self._unhashed.clear()


def encode(children: Children, at: int, entry_at: int) -> bytearray:
    """The GOODBYE record, at offset ``at``, of the directory whose ENTRY is at
    ``entry_at``."""
    n = len(children)
    size = size_for(n)
    out = bytearray(r.HEADER_SIZE)
    r.HEADER.pack_into(out, 0, size, r.GOODBYE)
    out += memoryview(children.items(at)).cast("B")
    out += _ITEM.pack(at - entry_at, size, r.GOODBYE_TAIL_MARKER)
    return out


def matches(
    read: Callable[[int], bytes], size: int, children: Children, at: int, entry_at: int
) -> bool:
    """Whether the GOODBYE body of ``size`` bytes that ``read`` returns (the record
    header read, its size checked: ``size_for``) holds ``children``'s items and the
    tail ``encode`` would write: the items in casync's order, or in any order before the
    tail. The body is compared piece by piece as it is read, so a directory of a
    million children does not hold its 24 MB table twice; only a table in another
    order is gathered whole, to be compared sorted."""
    expected = memoryview(children.items(at)).cast("B")
    table_size = size - ITEM_SIZE
    gathered: bytearray | None = None  # the body so far, once it differs from expected
    done = 0
    while done < table_size:
        piece = read(min(_COMPARE_PIECE, table_size - done))
        if gathered is not None:
            gathered += piece
        elif piece != expected[done : done + len(piece)]:
            gathered = bytearray(expected[:done]) + piece  # equal up to here
        done += len(piece)
    tail = _ITEM.pack(at - entry_at, size + r.HEADER_SIZE, r.GOODBYE_TAIL_MARKER)
    if read(ITEM_SIZE) != tail:
        return False
    if gathered is None:
        return True
    return goodbye_table.sorted_items(gathered) == goodbye_table.sorted_items(expected)
