"""Adjacent writes gathered into one pwritev land where each was asked to, also when
the kernel writes less than asked."""

from __future__ import annotations

import errno
import os
import random

import pytest

from desync_decl.assemble import gather
from desync_decl.assemble.gather import Direct, Gather


@pytest.fixture
def target(tmp_path):
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 64)
    yield fd
    os.close(fd)


def test_adjacent_pieces_go_out_in_one_call_and_others_apart(target, monkeypatch):
    calls: list[tuple[int, int]] = []
    real = os.pwritev

    def counted(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append((offset, len(buffers)))
        return real(fd, buffers, offset)

    monkeypatch.setattr(gather.os, "pwritev", counted)
    g = Gather(target)
    g.write(b"aaaa", 0)
    g.write(b"bb", 4)
    g.write(b"cc", 20)  # not adjacent: what is held goes first
    g.flush()
    g.flush()  # nothing held: no call
    assert calls == [(0, 2), (20, 1)]
    assert os.pread(target, 22, 0) == b"aaaabb" + bytes(14) + b"cc"


def test_a_short_pwritev_is_completed(target, monkeypatch):
    real = os.pwritev

    def short(fd: int, buffers: list[bytes], offset: int) -> int:
        return real(fd, [buffers[0][:3]], offset)  # stops inside the first piece

    monkeypatch.setattr(gather.os, "pwritev", short)
    g = Gather(target)
    g.write(b"12345", 10)
    g.write(b"678", 15)
    g.write(b"9", 18)
    g.flush()
    assert os.pread(target, 11, 9) == b"\x00123456789\x00"


def _pieces(seed: int, sizes: list[int]) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in sizes]


@pytest.fixture
def direct_target(tmp_path):
    fd = os.open(tmp_path / "direct", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 4 << 20)
    direct = Direct(fd)
    yield fd, direct
    direct.close()
    os.close(fd)


def test_whole_blocks_go_out_with_o_direct_and_the_edges_buffered(direct_target, monkeypatch):
    fd, direct = direct_target
    if direct.fd is None:
        pytest.skip("this filesystem refuses O_DIRECT")
    direct_calls: list[tuple[int, int]] = []
    real = os.pwrite

    def counted(f: int, data: memoryview, offset: int) -> int:
        if f == direct.fd:
            direct_calls.append((offset, len(data)))
        return real(f, data, offset)

    monkeypatch.setattr(gather.os, "pwrite", counted)
    pieces = _pieces(1, [1000, 70_000, 3, 1_500_000, 20_001])  # more than one staging buffer
    g = Gather(fd, direct)
    start = offset = 777
    for p in pieces:
        g.write(p, offset)
        offset += len(p)
    g.flush()
    direct.drain()  # the O_DIRECT writes run in the background
    data = b"".join(pieces)
    assert os.pread(fd, len(data) + 2, start - 1) == b"\x00" + data + b"\x00"
    low, high = gather.ALIGN, (start + len(data)) // gather.ALIGN * gather.ALIGN
    assert direct_calls == [(low, gather.STAGE), (low + gather.STAGE, high - low - gather.STAGE)]


def test_a_refused_o_direct_write_is_done_buffered_and_o_direct_given_up(
    direct_target, monkeypatch
):
    fd, direct = direct_target
    if direct.fd is None:
        pytest.skip("this filesystem refuses O_DIRECT")
    real = os.pwrite
    refused = direct.fd

    def refuse(f: int, data: memoryview, offset: int) -> int:
        if f == refused:
            raise OSError(errno.EINVAL, "refused")
        return real(f, data, offset)

    monkeypatch.setattr(gather.os, "pwrite", refuse)
    (data,) = _pieces(2, [300_000])
    g = Gather(fd, direct)
    g.write(data, 5)
    g.flush()
    direct.drain()
    assert direct.fd is None
    assert os.pread(fd, len(data), 5) == data


def test_a_file_that_cannot_take_o_direct_is_written_buffered():
    read_end, write_end = os.pipe()
    try:
        direct = Direct(write_end)
        assert direct.fd is None
        g = Gather(write_end, direct)
        g.write(b"x" * 100_000, 0)
        with pytest.raises(OSError):  # a pipe has no offsets: the buffered pwritev says so
            g.flush()
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_failed_o_direct_write_is_raised_by_the_worker(direct_target, monkeypatch):
    fd, direct = direct_target
    if direct.fd is None:
        pytest.skip("this filesystem refuses O_DIRECT")
    real = os.pwrite
    failing = direct.fd

    def fail(f: int, data: memoryview, offset: int) -> int:
        if f == failing:
            raise OSError(errno.EIO, "the disk failed")
        return real(f, data, offset)

    monkeypatch.setattr(gather.os, "pwrite", fail)
    g = Gather(fd, direct)
    g.write(bytes(300_000), 0)
    g.flush()
    with pytest.raises(OSError, match="the disk failed"):
        direct.drain()
    direct.drain()  # raised once: the caller has it
