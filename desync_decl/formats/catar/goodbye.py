"""GOODBYE: the record that closes a directory, a hash table of its children.

One item per child, ``(offset, size, hash)``: ``offset`` counts back from the
GOODBYE record to the child's FILENAME record, ``size`` spans that FILENAME and
the child's whole serialization, ``hash`` is SipHash-2-4 of the name. Items are
sorted by (hash, position) and laid out as an implicit binary search tree
(children of slot k at 2k+1 and 2k+2, filled in order: the Eytzinger layout).
A tail item follows: offset back to the directory's ENTRY, the GOODBYE's own
size, and a marker.

Readers check a table against the children they read (``same_items``): every item
and the tail as ``encode`` would write them, in any order before the tail. The order
only serves a reader that seeks by name; casync and desync do not check it when
reading a stream, and an older desync wrote tables in name order (desync's
cmd/desync/testdata/tree.catar).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

from desync_decl.formats.catar import records as r
from desync_decl.siphash import hash_names

_ITEM = struct.Struct("<3Q")
ITEM_SIZE = _ITEM.size


def size_for(children: int) -> int:
    return r.HEADER_SIZE + ITEM_SIZE * (children + 1)


@lru_cache(maxsize=256)
def _layout(n: int) -> tuple[int, ...]:
    """For each slot of an n-item table, the index of the sorted item it holds."""
    slots = [0] * n
    sorted_index = 0
    stack: list[int] = []
    k = 0
    while stack or k < n:  # in-order walk of the implicit tree
        while k < n:
            stack.append(k)
            k = 2 * k + 1
        k = stack.pop()
        slots[k] = sorted_index
        sorted_index += 1
        k = 2 * k + 2
    return tuple(slots)


def layout(n: int) -> tuple[int, ...]:
    return _layout(n) if n <= 4096 else _layout.__wrapped__(n)


def encode(
    names: Sequence[bytes], starts: Sequence[int], ends: Sequence[int], at: int, entry_at: int
) -> bytes:
    """The GOODBYE record of a directory whose ENTRY is at ``entry_at`` and whose
    GOODBYE starts at ``at``; child i's FILENAME spans ``starts[i]..ends[i]``
    (its serialization included)."""
    n = len(names)
    hashes = hash_names(names)
    order = sorted(range(n), key=lambda i: (hashes[i], starts[i]))
    size = size_for(n)
    out = bytearray(size)
    r.HEADER.pack_into(out, 0, size, r.GOODBYE)
    pos = r.HEADER_SIZE
    for slot in layout(n):
        i = order[slot]
        _ITEM.pack_into(out, pos, at - starts[i], ends[i] - starts[i], hashes[i])
        pos += ITEM_SIZE
    _ITEM.pack_into(out, pos, at - entry_at, size, r.GOODBYE_TAIL_MARKER)
    return bytes(out)


def same_items(body: bytes, expected: bytes) -> bool:
    """Whether a GOODBYE body holds ``expected``'s items (both without the record
    header, same length), the tail last, the others in any order."""
    tail = len(expected) - ITEM_SIZE
    if len(body) != len(expected) or body[tail:] != expected[tail:]:
        return False
    return sorted(_ITEM.iter_unpack(body[:tail])) == sorted(_ITEM.iter_unpack(expected[:tail]))
