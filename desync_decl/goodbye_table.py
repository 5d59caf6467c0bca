"""The items of a catar GOODBYE table, laid out and compared in C (``ext/goodbye.c``).

A directory of a million entries has a million items. Sorted and laid out as Python
tuples and ints they took about 300 MB; in C they are the 24 bytes an item occupies
(plus 16 bytes of scratch each while sorting), in ``array``s handed over whole.
"""

from __future__ import annotations

import sys
from array import array

from desync_decl._goodbye_cffi import ffi, lib

ITEM_VALUES = 3  # offset back to the FILENAME, size, name hash: uint64 each


def items(hashes: array[int], starts: array[int], ends: array[int], at: int) -> array[int]:
    """The items of the GOODBYE record at offset ``at`` closing children whose names
    hash to ``hashes`` and whose FILENAME..end spans are ``starts[i]..ends[i]``
    (``starts`` increasing): sorted by (hash, position), in the Eytzinger order of an
    implicit search tree, as casync writes them; little-endian values."""
    n = len(starts)
    if not len(hashes) == len(ends) == n:
        raise ValueError("one hash, start and end per child")
    out = array("Q", [0]) * (ITEM_VALUES * n)
    if n:
        status = lib.ca_goodbye_items(
            ffi.from_buffer("uint64_t[]", hashes),
            ffi.from_buffer("uint64_t[]", starts),
            ffi.from_buffer("uint64_t[]", ends),
            n,
            at,
            ffi.from_buffer("uint64_t[]", out, require_writable=True),
        )
        if status != 0:
            raise MemoryError(f"no memory to sort a GOODBYE table of {n} items")
    if sys.byteorder == "big":
        out.byteswap()
    return out


def sorted_items(table: bytes | memoryview) -> array[int]:
    """The little-endian items in ``table`` (whole items only), sorted by their
    values: two tables hold the same items exactly when these are equal."""
    values = array("Q")
    values.frombytes(table)
    if sys.byteorder == "big":
        values.byteswap()
    lib.ca_goodbye_sort_items(
        ffi.from_buffer("uint64_t[]", values, require_writable=True), len(values) // ITEM_VALUES
    )
    return values
