"""``tar``'s plain children encoded in C (``entry_batch``, ``ext/entrybatch.c``).

The archive is the one the Python encoder writes, byte for byte, for every kind of
child the C side encodes (files, symlinks) and every one it leaves to Python (a
directory, a fifo, a device, a file with a stored extended attribute, chattr +d, an
id outside the archive's width, the archive itself), in directories longer than one
run and with subdirectories between the runs; a refusal reads as the Python one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from desync_decl.archive.disk_source import DiskOptions, disk_tree
from desync_decl.errors import DesyncError
from desync_decl.formats.catar import encode
from desync_decl.formats.catar import features as ft
from desync_decl.formats.flags import EXCLUDE_NODUMP


def archive(tree: Path, flags: int, *, encoded: bool, **options) -> bytes:
    root = disk_tree(tree, DiskOptions(flags, encoded=encoded, **options))
    assert (root._walk.batch is not None) == encoded  # the C path is the one measured
    return b"".join(bytes(p) for p in encode(root))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch") / "tree"
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "small").write_bytes(b"small file")
    (root / "exec").write_bytes(b"#!/bin/sh\n")
    (root / "odd \xff\n name".encode("latin-1").decode("utf-8", "surrogateescape")).write_bytes(
        b"x"
    )
    os.symlink("small", root / "link")
    os.symlink("t" * 4095, root / "long-link")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o20666, os.makedev(1, 3))
    with contextlib.suppress(OSError):  # where the filesystem has user xattrs
        os.setxattr(root / "small", "user.note", b"kept")
    os.chown(root / "exec", 70000, 70001, follow_symlinks=False)
    (root / "exec").chmod(0o4755)  # after chown, which clears set-user-id
    os.chown(root / "link", 1234, 5678, follow_symlinks=False)
    os.utime(root / "empty", ns=(0, 1_234_567_891))
    many = root / "many"  # more children than one run, subdirectories between runs
    many.mkdir()
    for i in range(300):
        if i % 37 == 0:
            (many / f"{i:03d}").mkdir()
            (many / f"{i:03d}" / "inner").write_bytes(b"%d" % i)
        elif i % 5 == 0:
            os.symlink(f"target-{i}", many / f"{i:03d}")
        else:
            (many / f"{i:03d}").write_bytes(os.urandom(i * 7))
    (root / "dir-only").mkdir()
    with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
        (root / "nodump").write_bytes(b"left out")
        subprocess.run(["chattr", "+d", str(root / "nodump")], check=True, capture_output=True)
    return root


@pytest.mark.parametrize(
    "flags",
    [
        ft.DESYNC_TAR,
        ft.DESYNC_TAR & ~ft.WITH_XATTRS,
        ft.DESYNC_TAR & ~(ft.WITH_SYMLINKS | ft.WITH_FIFOS | ft.WITH_DEVICE_NODES),
        ft.DESYNC_TAR & ~EXCLUDE_NODUMP,
    ],
)
def test_the_c_encoded_archive_equals_the_python_one(tree, flags):
    assert archive(tree, flags, encoded=True) == archive(tree, flags, encoded=False)


def test_the_file_left_out_is_left_out_by_both(tree):
    st = os.stat(tree / "many" / "011")
    exclude = frozenset({(st.st_dev, st.st_ino)})
    ours = archive(tree, ft.DESYNC_TAR, encoded=True, exclude=exclude)
    assert ours == archive(tree, ft.DESYNC_TAR, encoded=False, exclude=exclude)
    assert ours != archive(tree, ft.DESYNC_TAR, encoded=True)


def test_flags_the_c_side_does_not_encode_leave_it_out(tree):
    root = disk_tree(tree, DiskOptions(ft.DESYNC_TAR | ft.WITH_USER_NAMES, encoded=True))
    assert root._walk.batch is None


def test_an_id_the_archive_cannot_hold_is_refused_as_python_refuses_it(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    os.chown(tmp_path / "f", 0xFFFF, 0)
    messages = []
    for encoded in (True, False):
        with pytest.raises(DesyncError) as e:
            archive(tmp_path, ft.DESYNC_TAR, encoded=encoded)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    assert "65535" in messages[0]


def test_a_directory_listing_larger_than_the_listing_buffer(tmp_path):
    """3,000 names of 120 bytes: more than the 256 KiB the listing keeps between calls."""
    for i in range(3000):
        (tmp_path / (f"{i:05d}-" + "n" * 114)).write_bytes(b"%d" % i)
    ours = archive(tmp_path, ft.DESYNC_TAR, encoded=True)
    assert ours == archive(tmp_path, ft.DESYNC_TAR, encoded=False)
