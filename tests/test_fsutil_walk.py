"""``fsutil.open_directory``: a path walked without following a symlink that someone
else could have planted (issue 12: a directory of the target swapped for a symlink
to a root-only directory made apply write there)."""

from __future__ import annotations

import errno
import os

import pytest

from desync_decl.fsutil import open_directory, write_atomic
from tests.test_root_safety import NOBODY


def same_directory(fd: int, path) -> bool:
    st, want = os.fstat(fd), os.stat(path)
    os.close(fd)
    return (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)


def test_a_plain_path_and_a_missing_one_made_on_the_way(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert same_directory(open_directory(tmp_path / "a" / "b"), tmp_path / "a" / "b")
    with pytest.raises(FileNotFoundError):
        open_directory(tmp_path / "a" / "new" / "deeper")
    fd = open_directory(tmp_path / "a" / "new" / "deeper", create=True, mode=0o750)
    assert same_directory(fd, tmp_path / "a" / "new" / "deeper")
    assert (tmp_path / "a" / "new").stat().st_mode & 0o777 == 0o750


def test_symlinks_in_directories_only_we_write_are_followed(tmp_path):
    """``/lib -> usr/lib`` and ``/dev/disk/by-id/...`` must keep working."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "real" / "inner").mkdir(parents=True)
    os.symlink("real", tmp_path / "rel")
    os.symlink(tmp_path / "real" / "inner", tmp_path / "abs")
    os.symlink("../real/./inner", tmp_path / "real" / "up")
    assert same_directory(open_directory(tmp_path / "rel" / "inner"), tmp_path / "real" / "inner")
    assert same_directory(open_directory(tmp_path / "abs"), tmp_path / "real" / "inner")
    assert same_directory(open_directory(tmp_path / "real" / "up"), tmp_path / "real" / "inner")


def test_a_loop_of_symlinks_ends(tmp_path):
    os.chmod(tmp_path, 0o755)
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(OSError) as e:
        open_directory(tmp_path / "a")
    assert e.value.errno == errno.ELOOP


@pytest.mark.skipif(os.geteuid() != 0, reason="the attacker is another user (CI runs as root)")
@pytest.mark.parametrize("shared_mode", [0o777, 0o1777, "owned by nobody"])
def test_a_symlink_planted_where_others_write_is_refused(tmp_path, shared_mode):
    os.chmod(tmp_path, 0o755)
    victim = tmp_path / "rootonly"
    victim.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    if shared_mode == "owned by nobody":
        os.chown(shared, NOBODY, NOBODY)
        os.chmod(shared, 0o755)
    else:
        os.chmod(shared, shared_mode)
    os.symlink(victim, shared / "sub")
    for create in (False, True):
        with pytest.raises(OSError) as e:
            open_directory(shared / "sub" / "deeper", create=create)
        assert e.value.errno == errno.ELOOP
        assert "others can write" in str(e.value)
    assert list(victim.iterdir()) == []  # nothing was made through the link


@pytest.mark.skipif(os.geteuid() != 0, reason="the attacker is another user (CI runs as root)")
def test_an_atomic_write_by_path_is_refused_below_a_planted_symlink(tmp_path):
    """Every ``AtomicFile``/``write_atomic`` given a path (``cat -o``, ``config -w``,
    index files, the index-server's uploads) opens its directory this way."""
    os.chmod(tmp_path, 0o755)
    victim = tmp_path / "rootonly"
    victim.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    os.symlink(victim, shared / "sub")
    with pytest.raises(OSError) as e:
        write_atomic(shared / "sub" / "out.caibx", b"attacker-chosen place")
    assert e.value.errno == errno.ELOOP and e.value.filename == str(shared / "sub")
    assert list(victim.iterdir()) == []
