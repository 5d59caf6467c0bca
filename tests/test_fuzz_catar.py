"""Hostile catar streams: mutations of casync's archives and ours fail only with
``FormatError``, and a record claiming a huge size allocates nothing for it."""

from __future__ import annotations

import io
import stat
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.errors import FormatError
from desync_decl.formats.catar import Decoder, Node
from desync_decl.formats.catar import records as r
from desync_decl.formats.catar.entry import encode as encode_entry
from reliability.fuzz import mutate, seeds, targets
from tests.hostile_archives import MemNode


class Endless(io.RawIOBase):
    """``head``, then zero bytes for ever: a reader that believed a size would never end."""

    def __init__(self, head: bytes) -> None:
        self.head, self.served = head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = len(buffer)
        part = self.head[self.served : self.served + n]
        buffer[: len(part)] = part
        buffer[len(part) : n] = bytes(n - len(part))
        self.served += n
        return n


def entry(mode: int) -> bytes:
    e = MemNode.file(b"").entry
    e.mode = mode
    return encode_entry(e)


DIR, FILE, LINK = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFLNK | 0o777
HUGE = 1 << 62


@pytest.mark.parametrize(
    ("mode", "typ"),
    [
        (DIR, r.USER),
        (DIR, r.XATTR),
        (DIR, r.SELINUX),
        (DIR, r.FCAPS),
        (DIR, r.ACL_USER),
        (DIR, r.FILENAME),
        (DIR, r.GOODBYE),
        (DIR, 0x1234),
        (LINK, r.SYMLINK),
        (stat.S_IFCHR | 0o600, r.DEVICE),
    ],
    ids=lambda v: r.NAMES.get(v, hex(v)) if v > 0o177777 else oct(v),
)
def test_a_record_claiming_a_huge_size_is_refused_without_reading_it(mode, typ):
    data = entry(mode) + r.HEADER.pack(HUGE, typ)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="invalid archive"):
            list(Decoder(Endless(data)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_a_huge_payload_is_streamed_in_blocks():
    decoder = Decoder(Endless(entry(FILE) + r.payload_header(HUGE)))
    node = next(iter(decoder))
    assert isinstance(node, Node) and node.size == HUGE
    tracemalloc.start()
    try:
        blocks = decoder.payload(1 << 16)
        for _ in range(64):  # 4 MiB read, one block at a time
            assert len(next(blocks)) <= 1 << 16
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (entry(1 << 40 | DIR), "node type"),  # stat.S_IFMT overflowed on modes past 32 bits
        (entry(stat.S_IFCHR | 0o600) + r.device(1 << 31, 0), "device number"),  # os.makedev
    ],
)
def test_out_of_range_fields_are_format_errors(data, message):
    with pytest.raises(FormatError, match=message):
        list(Decoder(io.BytesIO(data)))


SEEDS = seeds.catar_seeds()
ops = mutate.strategy(4)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(st.sampled_from(SEEDS), ops)
def test_mutated_archives_decode_or_fail_with_format_error(seed, mutation):
    targets.catar(mutate.apply(seed, mutation))
