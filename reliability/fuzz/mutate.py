"""Structure-aware mutations for u64-framed formats (index, catar, zstd headers) and YAML.

A mutation is a list of ``(kind, position, value, length)`` tuples applied in
order, so hypothesis can draw and shrink them and atheris can make them from a
seed. Besides byte flips, cuts and splices, a mutation can overwrite an
aligned little-endian u64 with a value from the edges (0, 1, sizes around
2^32 and 2^63, all ones), which is how a size or offset field turns hostile.
"""

from __future__ import annotations

import random

EDGES = (0, 1, 7, 8, 16, 40, 48, 64, 255, 4096, 1 << 20, 1 << 31, 1 << 32, 1 << 62, 1 << 63)
U64_MAX = (1 << 64) - 1
YAML_TOKENS = (
    b"&a ", b"*a", b"<<: *a\n", b"[", b"]", b"{", b"}", b"- ", b": ", b"\n  ", b"\t",
    b"${env:TOKEN}", b"${env:NOPE}", b"$${env:X}", b"${env:", b"!!python/object:os.system ",
    b"!!binary ", b"---\n", b"...\n", b"? ", b"'", b'"', b"|\n", b">-\n", b"#", b"%YAML 1.1\n",
    b"\xef\xbb\xbf", b"\xff", b"~", b"0x1F", b"1e400", b".nan", b"2001-12-14", b"yes",
)  # fmt: skip
KINDS = 8


def apply(data: bytes, ops: list[tuple[int, int, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, position, value, length in ops:
        at = position % (len(out) + 1)
        if kind == 0:  # flip bits of one byte
            if out:
                out[at % len(out)] ^= value & 0xFF or 1
        elif kind == 1:  # a u64 field at an aligned offset takes an edge value
            at -= at % 8
            edge = EDGES[value % len(EDGES)]
            edge = {0: edge, 1: edge - 1, 2: edge + 1, 3: U64_MAX - edge}[length % 4]
            out[at : at + 8] = (edge & U64_MAX).to_bytes(8, "little")
        elif kind == 2:  # cut the end off
            del out[at:]
        elif kind == 3:  # delete a range
            del out[at : at + length % 64 + 1]
        elif kind == 4:  # repeat a range (a record or item twice)
            piece = out[at : at + length % 256 + 1]
            out[at:at] = piece * (value % 3 + 1)
        elif kind == 5:  # insert bytes
            out[at:at] = value.to_bytes(8, "little")[: length % 8 + 1]
        elif kind == 6:  # insert a YAML token
            out[at:at] = YAML_TOKENS[value % len(YAML_TOKENS)]
        else:  # move a range elsewhere (reorders records)
            piece = out[at : at + length % 128 + 1]
            del out[at : at + len(piece)]
            to = value % (len(out) + 1)
            out[to:to] = piece
    return bytes(out)


def random_ops(rng: random.Random, count: int) -> list[tuple[int, int, int, int]]:
    return [
        (rng.randrange(KINDS), rng.getrandbits(32), rng.getrandbits(64), rng.getrandbits(16))
        for _ in range(count)
    ]


def strategy(max_size: int = 4):  # type: ignore[no-untyped-def]
    """Mutations as a hypothesis strategy (imported only where hypothesis is)."""
    from hypothesis import strategies as st

    op = st.tuples(
        st.integers(0, KINDS - 1),
        st.integers(0, 2**32),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**16),
    )
    return st.lists(op, min_size=1, max_size=max_size)
