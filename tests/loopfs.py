"""Real, loop-mounted XFS and Btrfs filesystems for reflink tests (no mocks).

Registered as a pytest plugin by ``tests/conftest.py``. Fixtures:

* ``xfs_mount`` / ``btrfs_mount`` (session): the mount point of a fresh 512 MiB
  filesystem, made once per test session (``truncate``, ``mkfs``, ``mount -o
  loop``) and unmounted and deleted at the end of the session, even on failure.
  One mount per filesystem type keeps the suite fast: making and mounting one
  costs tens of milliseconds, but doing it per test adds up.
* ``xfs_dir`` / ``btrfs_dir`` (function): a fresh, empty directory inside that
  mount, removed after the test, so tests don't see each other's files and the
  512 MiB don't fill up.
* ``reflink_dir`` (function): ``xfs_dir`` or ``btrfs_dir``, parametrized over
  both (test ids ``xfs`` / ``btrfs``).

They need root, ``mkfs.xfs`` / ``mkfs.btrfs`` (Debian ``xfsprogs`` /
``btrfs-progs``, installed by ``.ci/run``), loop devices and kernel support for
the filesystem; without any of these the test is skipped, with the reason (and
under ``CI`` a skip is a failure, see ``tests/conftest.py``).

Helpers: ``shared_bytes`` (how much of a file's data is reflinked),
``fs_used_bytes`` (space used on a filesystem), ``ficlone`` (clone a file) and
``fs_type`` (which filesystem a path is on).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

IMAGE_SIZE = 512 * 1024 * 1024  # sparse: costs only what the filesystem writes

# ioctl(dest_fd, FICLONE, src_fd): make dest share all of src's extents
# (linux/fs.h: _IOW(0x94, 9, int)); fcntl.FICLONE only exists from Python 3.12.
FICLONE = getattr(fcntl, "FICLONE", 0x40049409)

_MKFS = {
    # -m reflink=1 is the default since xfsprogs 5.1; said explicitly so an
    # older mkfs can't silently make a filesystem that can't clone.
    "xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q"],
}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _mounted_fs(fstype: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Make, loop-mount, yield, and finally unmount and delete a ``fstype`` image."""
    if os.geteuid() != 0:
        pytest.skip(reason=f"loop-mounting {fstype} needs root (running as uid {os.geteuid()})")
    mkfs = _MKFS[fstype]
    for tool in (mkfs[0], "mount", "umount"):
        if shutil.which(tool) is None:
            pkg = {"mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs"}.get(tool, "util-linux")
            pytest.skip(reason=f"{tool} is not installed (apt-get install {pkg})")

    base = tmp_path_factory.mktemp(f"loopfs-{fstype}")
    image, mnt = base / f"{fstype}.img", base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:  # truncate -s 512M
        f.truncate(IMAGE_SIZE)
    made = _run([*mkfs, str(image)])
    if made.returncode != 0:
        image.unlink()
        pytest.skip(reason=f"{' '.join(mkfs)} failed: {made.stderr.strip()}")
    mounted = _run(["mount", "-t", fstype, "-o", "loop", str(image), str(mnt)])
    if mounted.returncode != 0:
        image.unlink()
        pytest.skip(
            reason=f"cannot loop-mount {fstype} (no loop devices or kernel support?): "
            f"{mounted.stderr.strip()}"
        )
    try:
        yield mnt
    finally:
        # `mount -o loop` sets up the loop device with autoclear, so unmounting
        # also frees the loop device. A lazy unmount is the fallback if a
        # leaked open file keeps the filesystem busy.
        if _run(["umount", str(mnt)]).returncode != 0:
            _run(["umount", "-l", str(mnt)])
        image.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def xfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Mount point of a session-wide, freshly made XFS (reflink=1) on a loop device."""
    yield from _mounted_fs("xfs", tmp_path_factory)


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Mount point of a session-wide, freshly made Btrfs on a loop device."""
    yield from _mounted_fs("btrfs", tmp_path_factory)


def _fresh_dir(mount: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    name = re.sub(r"[^\w.-]+", "_", request.node.name)[:60]
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=mount))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def xfs_dir(xfs_mount: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh, empty directory on the session's loop-mounted XFS; removed after the test."""
    yield from _fresh_dir(xfs_mount, request)


@pytest.fixture
def btrfs_dir(btrfs_mount: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh, empty directory on the session's loop-mounted Btrfs; removed after the test."""
    yield from _fresh_dir(btrfs_mount, request)


@pytest.fixture(params=["xfs", "btrfs"])
def reflink_dir(request: pytest.FixtureRequest) -> Path:
    """``xfs_dir`` or ``btrfs_dir``: the test runs once on each reflink-capable filesystem."""
    return request.getfixturevalue(f"{request.param}_dir")


def ficlone(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Make ``dst`` (created or truncated) a reflink clone of all of ``src``.

    The FICLONE ioctl directly, not ``cp --reflink``: it fails loudly
    (EOPNOTSUPP, EXDEV) instead of falling back to copying.
    """
    with open(src, "rb") as s, open(dst, "wb") as d:
        fcntl.ioctl(d.fileno(), FICLONE, s.fileno())


# One extent line of `filefrag -v`, e.g.
#    "   0:        0..    1023:         24..      1047:   1024:             last,shared,eof"
#    "   1:     1024..    2047:       5000..      6023:   1024:       1048: last,eof"
# (the 5th column, "expected", is blank when the extent follows the previous one).
_EXTENT = re.compile(
    r"^\s*\d+:\s*(?P<logical>\d+)\.\.\s*\d+:\s*\d+\.\.\s*\d+:\s*(?P<length>\d+):"
    r"(?:\s*\d+:)?\s*(?P<flags>\S*)\s*$"
)
_HEADER = re.compile(r"^File size of .* is (?P<size>\d+) \(\d+ blocks? of (?P<bs>\d+) bytes\)")


def shared_bytes(path: str | os.PathLike[str]) -> int:
    """How many bytes of ``path``'s data lie in extents the kernel flags ``shared``.

    Why: it is the direct evidence that a file was reflinked (cloned) rather
    than copied, read from the filesystem itself (FIEMAP, via ``filefrag -v``)
    instead of trusting the code under test.

    The file is fsynced first: until written back, new data sits in delayed
    allocation extents, which FIEMAP reports as ``unknown_loc,delalloc`` and
    never as ``shared``, so an unsynced file would read as "0 shared".

    Extent lengths are counted in the block size filefrag reports in its header
    (the filesystem's), and cut off at the file size, so blocks past EOF (a
    partial last block, preallocation) don't count.

    Granularity differs: XFS keeps a reference count per block, so after one of
    two clones is partly overwritten, only the still-common blocks are shared.
    Btrfs flags whole extents: the other clone's extent, still referenced in
    part by both files, stays all ``shared``.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    out = subprocess.run(
        ["filefrag", "-v", path], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    header = next((m for m in map(_HEADER.match, out) if m), None)
    if header is None or not any(line.lstrip().startswith("ext:") for line in out):
        shown = "\n".join(out)
        raise RuntimeError(f"unexpected `filefrag -v {path}` output (no FIEMAP?):\n{shown}")
    size, block = int(header["size"]), int(header["bs"])
    shared = 0
    for m in map(_EXTENT.match, out):
        if m and "shared" in m["flags"].split(","):
            start = int(m["logical"]) * block
            end = min(start + int(m["length"]) * block, size)
            shared += max(0, end - start)
    return shared


# ioctl(fd, XFS_IOC_FREE_EOFBLOCKS, struct xfs_fs_eofblocks *): _IOR('X', 58, 128 bytes).
# The kernel runs it as xfs_blockgc_free_space(), which trims post-EOF
# preallocations and then waits for the deferred inode inactivation (inodegc).
XFS_IOC_FREE_EOFBLOCKS = (2 << 30) | (128 << 16) | (ord("X") << 8) | 58
_XFS_EOFBLOCKS_VERSION = 1
_XFS_EOF_FLAGS_SYNC = 1  # wait for the scan


def fs_type(path: str | os.PathLike[str]) -> str:
    """The type (``xfs``, ``btrfs``, ...) of the filesystem ``path`` is on (/proc/self/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mnt, fstype, *_ = line.split()
        mnt = mnt.replace("\\040", " ")
        inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, kind = mnt, fstype
    return kind


def fs_used_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes in use on the filesystem holding ``path`` (its mount point or anything on it).

    Why: free-space accounting is what reflinks are for; a clone should leave
    this (nearly) unchanged where a copy grows it by the file's size. Take it
    before and after and compare with a tolerance: metadata counts too.

    Both filesystems account lazily, so it settles them first:

    * ``os.sync()``: delayed allocation means written data is not allocated
      yet, and Btrfs only updates what statfs reports when a transaction
      commits (which sync does).
    * On XFS, ``XFS_IOC_FREE_EOFBLOCKS`` (synchronous): since Linux 5.15 XFS
      frees a deleted file's blocks in the background (deferred inode
      inactivation), and neither sync nor statfs waits for that, so the
      blocks of files deleted just before (say by the previous test's
      cleanup) would be freed in the middle of a measurement. Measured
      here: 8 MiB disappearing between two calls. The ioctl waits for it,
      and also drops speculative preallocation past EOF.

    Computed as ``(f_blocks - f_bfree) * f_frsize`` of ``os.statvfs``.
    """
    os.sync()
    if fs_type(path) == "xfs":
        eofb = struct.pack("=6IQ96x", _XFS_EOFBLOCKS_VERSION, _XFS_EOF_FLAGS_SYNC, 0, 0, 0, 0, 0)
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, XFS_IOC_FREE_EOFBLOCKS, eofb)
        finally:
            os.close(fd)
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
