"""``file_batch``: plain files made in C a batch at a time, as ``disk_writer`` makes
them, and everything it cannot make handed back untouched."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_decl.file_batch import CHMOD, CHOWN, TIMES, FileBatch

MTIME = 1_234_567_890_123_456_789


@pytest.fixture
def dir_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_files_get_their_contents_owner_mode_and_times(tmp_path, dir_fd):
    source = tmp_path / "source"
    source.write_bytes(b"0123456789" * 1000)
    batch = FileBatch()
    batch.add(dir_fd, b"from-offset", 0o640, TIMES, mtime_ns=MTIME, offset=5, size=9000)
    batch.add(dir_fd, b"inline", 0o4755, CHMOD | CHOWN, uid=65534, gid=65533, data=b"abc")
    batch.add(dir_fd, b"empty", 0o600, 0, data=b"")
    src = os.open(source, os.O_RDONLY)
    try:
        assert list(batch.write(src)) == []
    finally:
        os.close(src)
    st = os.stat(tmp_path / "from-offset")  # before reading it sets its atime
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_atime_ns) == (0o640, MTIME, MTIME)
    assert (tmp_path / "from-offset").read_bytes() == (b"0123456789" * 1000)[5:9005]
    st = os.stat(tmp_path / "inline")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 65534, 65533)
    assert (tmp_path / "inline").read_bytes() == b"abc"
    assert (tmp_path / "empty").read_bytes() == b""
    assert sorted(os.listdir(tmp_path)) == ["empty", "from-offset", "inline", "source"]


def test_what_cannot_be_made_is_handed_back_and_left_as_it_was(tmp_path, dir_fd):
    (tmp_path / "taken").write_bytes(b"someone else's")
    os.symlink(tmp_path / "elsewhere", tmp_path / "planted")
    source = tmp_path / "short"
    source.write_bytes(b"12345")
    batch = FileBatch()
    batch.add(dir_fd, b"taken", 0o644, 0, data=b"ours")
    batch.add(dir_fd, b"made", 0o644, 0, data=b"ours")
    batch.add(dir_fd, b"planted", 0o644, 0, data=b"ours")
    batch.add(dir_fd, b"cut-short", 0o644, 0, offset=2, size=10)
    batch.add(dir_fd, b"last", 0o644, 0, offset=0, size=5)
    src = os.open(source, os.O_RDONLY)
    try:
        assert list(batch.write(src)) == [(0, errno.EEXIST), (2, errno.EEXIST), (3, 0)]
    finally:
        os.close(src)
    assert (tmp_path / "taken").read_bytes() == b"someone else's"
    assert os.readlink(tmp_path / "planted") == str(tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "cut-short").exists()
    assert (tmp_path / "made").read_bytes() == b"ours"
    assert (tmp_path / "last").read_bytes() == b"12345"
    names = ["last", "made", "planted", "short", "taken"]
    assert sorted(os.listdir(tmp_path)) == names  # no temporary file left


def test_a_name_that_is_not_one_component_is_handed_back(tmp_path, dir_fd):
    (tmp_path / "sub").mkdir()
    batch = FileBatch()
    batch.add(dir_fd, b"sub/escaped", 0o644, 0, data=b"x")
    batch.add(dir_fd, b"fine", 0o644, 0, data=b"y")
    assert list(batch.write()) == [(0, errno.EINVAL)]
    assert os.listdir(tmp_path / "sub") == []
    assert (tmp_path / "fine").read_bytes() == b"y"
