"""The loop-mounted filesystem fixtures and helpers of tests/loopfs.py, on the real things."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.loopfs import ficlone, fs_type, fs_used_bytes, shared_bytes

MiB = 1024 * 1024
SIZE = 4 * MiB


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` with plain writes: a copy that can't be a reflink."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


def test_fixture_is_a_fresh_dir_on_the_right_filesystem(request, reflink_dir: Path):
    assert reflink_dir.is_dir()
    assert list(reflink_dir.iterdir()) == []
    assert os.path.ismount(reflink_dir.parent)
    assert fs_type(reflink_dir) == request.node.callspec.params["reflink_dir"]
    assert fs_type(reflink_dir.parent) == fs_type(reflink_dir)
    assert fs_type(reflink_dir.parent.parent) not in ("xfs", "btrfs")


def test_clone_is_all_shared_copy_is_not(reflink_dir: Path, data: bytes):
    a, clone, copy = reflink_dir / "a", reflink_dir / "clone", reflink_dir / "copy"
    _write(a, data)
    assert shared_bytes(a) == 0

    ficlone(a, clone)
    _write(copy, a.read_bytes())

    assert clone.read_bytes() == copy.read_bytes() == data
    assert shared_bytes(a) == SIZE
    assert shared_bytes(clone) == SIZE
    assert shared_bytes(copy) == 0


def test_shared_bytes_right_before_any_sync(reflink_dir: Path, data: bytes):
    """Unsynced data is in delalloc extents; shared_bytes must sync it, not say 0."""
    a, clone = reflink_dir / "a", reflink_dir / "clone"
    a.write_bytes(data)  # no fsync: FICLONE flushes the source, shared_bytes the rest
    ficlone(a, clone)
    assert shared_bytes(clone) == SIZE
    assert shared_bytes(a) == SIZE


def test_shared_bytes_cuts_off_at_eof(reflink_dir: Path):
    """A partial last block counts as its bytes, not as a whole block."""
    a, clone = reflink_dir / "a", reflink_dir / "clone"
    _write(a, os.urandom(MiB + 100))
    ficlone(a, clone)
    assert shared_bytes(clone) == shared_bytes(a) == MiB + 100


def _overwrite_first_mib_of_clone(d: Path, data: bytes) -> tuple[Path, Path]:
    a, clone = d / "a", d / "clone"
    _write(a, data)
    ficlone(a, clone)
    with open(clone, "r+b") as f:
        f.write(os.urandom(MiB))
        os.fsync(f.fileno())
    return a, clone


def test_partly_overwritten_clone_xfs(xfs_dir: Path, data: bytes):
    """XFS counts references per block: only the 3 MiB still common are shared, in both."""
    a, clone = _overwrite_first_mib_of_clone(xfs_dir, data)
    assert shared_bytes(clone) == 3 * MiB
    assert shared_bytes(a) == 3 * MiB


def test_partly_overwritten_clone_btrfs(btrfs_dir: Path, data: bytes):
    """Btrfs flags whole extents: a's one 4 MiB extent is still referenced by both files."""
    a, clone = _overwrite_first_mib_of_clone(btrfs_dir, data)
    assert shared_bytes(clone) == 3 * MiB
    assert shared_bytes(a) == SIZE


def test_fs_used_grows_by_a_copy_not_by_a_clone(reflink_dir: Path, data: bytes):
    before = fs_used_bytes(reflink_dir)
    _write(reflink_dir / "a", data)
    written = fs_used_bytes(reflink_dir)
    ficlone(reflink_dir / "a", reflink_dir / "clone")
    cloned = fs_used_bytes(reflink_dir)
    _write(reflink_dir / "copy", data)
    copied = fs_used_bytes(reflink_dir)

    # Data plus a little metadata (Btrfs keeps two copies of it).
    assert SIZE <= written - before < SIZE + 512 * 1024
    assert cloned - written < 256 * 1024
    assert SIZE <= copied - cloned < SIZE + 512 * 1024


def test_fs_used_drops_right_after_a_delete(reflink_dir: Path, data: bytes):
    """XFS frees a deleted file's blocks in the background; fs_used_bytes must wait for that."""
    _write(reflink_dir / "a", data)
    before = fs_used_bytes(reflink_dir)
    (reflink_dir / "a").unlink()
    assert before - fs_used_bytes(reflink_dir) >= SIZE


def test_fs_used_of_the_mountpoint_and_a_subdir_agree(reflink_dir: Path):
    assert fs_used_bytes(reflink_dir) == fs_used_bytes(reflink_dir.parent)
