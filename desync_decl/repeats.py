"""Which chunks of an index repeat an earlier one, over the C pass in ``ext/repeats.c``.

The extraction planner asks this of every target chunk; held as two compact arrays
(5 bytes per chunk) instead of a dict of every id, a large image's plan stays small.
"""

from __future__ import annotations

import os
from array import array
from typing import NamedTuple

from desync_decl._repeats_cffi import ffi, lib

_MAX_CHUNKS = 0xFFFFFFFF  # positions are u32: 4 billion chunks, 256 TiB at 64 KiB each


class Repeats(NamedTuple):
    first: array  # first[j]: position of the first chunk with chunk j's id (j when new)
    repeated: bytes  # repeated[j]: 1 when chunk j's id occurs more than once


def find_repeats(ids: bytes, id_size: int) -> Repeats:
    """``ids``: chunk ids of ``id_size`` bytes end to end (``Index.ids``)."""
    n = len(ids) // id_size
    if n > _MAX_CHUNKS:
        raise ValueError(f"an index of {n} chunks is more than this planner handles")
    first = array("I", [0]) * n
    repeated = bytearray(n)
    if n:
        failed = lib.ca_first_positions(
            os.urandom(16),  # a new key each time: crafted ids cannot collide on purpose
            ffi.from_buffer(ids),
            id_size,
            n,
            ffi.from_buffer("uint32_t[]", first, require_writable=True),
            ffi.from_buffer(repeated, require_writable=True),
        )
        if failed:
            raise MemoryError(f"no memory to find the repeats among {n} chunks")
    return Repeats(first, bytes(repeated))
