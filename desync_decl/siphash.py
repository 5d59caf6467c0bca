"""SipHash-2-4 (64-bit result) over the C implementation in ``ext/siphash.c``.

casync hashes every file name of a directory with a fixed key to build that
directory's GOODBYE table; ``hash_names`` does a whole directory in one call.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from desync_decl._siphash_cffi import ffi, lib

# The key casync uses for GOODBYE tables (k0 = 0x8574442b0f1d84b3, k1 = 0x2736ed30d1c22ec1).
CATAR_KEY = bytes.fromhex("b3841d0f2b447485c12ec2d130ed3627")


def siphash24(data: bytes | bytearray | memoryview, key: bytes = CATAR_KEY) -> int:
    """SipHash-2-4 of ``data`` under a 16-byte ``key``, as an unsigned 64-bit int."""
    if len(key) != 16:
        raise ValueError("a SipHash key is 16 bytes")
    return int(lib.ca_siphash24(key, ffi.from_buffer(data), len(data)))


def hash_names(names: Sequence[bytes], key: bytes = CATAR_KEY) -> list[int]:
    """SipHash-2-4 of each name, in one call into C."""
    if len(key) != 16:
        raise ValueError("a SipHash key is 16 bytes")
    if not names:
        return []
    ends = array("Q")
    total = 0
    for name in names:
        total += len(name)
        ends.append(total)
    out = array("Q", bytes(8 * len(names)))
    data = b"".join(names)
    lib.ca_siphash24_many(
        key,
        ffi.from_buffer(data),
        ffi.from_buffer("uint64_t[]", ends),
        len(names),
        ffi.from_buffer("uint64_t[]", out, require_writable=True),
    )
    return out.tolist()
