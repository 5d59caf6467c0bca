"""Adjacent writes gathered into one pwritev land where each was asked to, also when
the kernel writes less than asked."""

from __future__ import annotations

import os

import pytest

from desync_decl.assemble import gather
from desync_decl.assemble.gather import Gather


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
