"""``mount-index`` of a ``.caidx``: the archived directory tree, read-only, on a
real FUSE mount. Names, types, modes, owners, times, sizes, symlink targets,
device numbers, xattrs and file contents must equal the source tree's; a chunk
missing from the store fails only the reads of the file it belongs to."""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from desync_decl.cli.console import Console
from desync_decl.cli.main import main
from desync_decl.formats import index as index_format
from desync_decl.formats.catar import features
from desync_decl.formats.catar.entry import Entry
from desync_decl.mount.tree import TreeFilesystem, load_tree
from desync_decl.ops.blobreader import BlobReader
from desync_decl.stores.local import LocalStore
from tests.hostile_archives import MTIME, MemNode, raw_archive
from tests.test_mount import mounts, needs_fuse, start_mount

__all__ = ["mounts"]  # the fixture

BIG = 2_500_000


def make_tree(root: Path) -> None:
    rng = random.Random(4)
    (root / "a" / "deep" / "er").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a" / "deep" / "er" / "leaf.txt").write_text("leaf\n")
    (root / "big.img").write_bytes(
        rng.randbytes(BIG // 2) + bytes(BIG // 4) + rng.randbytes(BIG // 4)
    )
    (root / "empty.txt").write_bytes(b"")
    (root / "secret").write_bytes(b"hidden")
    os.chmod(root / "secret", 0o600)
    (root / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "tool.sh", 0o755)
    for i in range(30):
        (root / "a" / f"f{i:02}").write_bytes(rng.randbytes(rng.randrange(1, 20_000)))
    os.symlink("a/deep/er/leaf.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.setxattr(root / "tool.sh", "user.origin", b"test suite")
    if os.geteuid() == 0:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chown(root / "secret", 1234, 5678)
    os.utime(root / "secret", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tree")
    make_tree(tmp / "src")
    argv = ["tar", "-i", "-s", tmp / "store", "-m", "4:16:64", tmp / "tree.caidx", tmp / "src"]
    err = io.StringIO()
    assert main([str(a) for a in argv], Console(out=io.StringIO(), err=err)) == 0, err.getvalue()
    return tmp


@pytest.fixture(scope="module")
def mounted_tree(archive, tmp_path_factory):
    mount = start_mount(
        tmp_path_factory.mktemp("m"), "-s", archive / "store", archive / "tree.caidx"
    )
    yield mount
    assert mount.unmount() == 0


def listing(root: Path) -> dict[str, tuple]:
    """Everything about every node below ``root`` that the archive keeps."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        rel = str(path.relative_to(root))
        item = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        item += (st.st_mtime_ns,) if not path.is_symlink() else ()
        if path.is_symlink():
            item += (os.readlink(path),)
        elif stat.S_ISREG(st.st_mode):
            item += (st.st_size, path.read_bytes(), dict(_xattrs(path)))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            item += (st.st_rdev,)
        out[rel] = item
    return out


def _xattrs(path: Path):
    for name in os.listxattr(path, follow_symlinks=False):
        yield name, os.getxattr(path, name, follow_symlinks=False)


@needs_fuse
def test_the_mounted_tree_equals_the_archived_directory(archive, mounted_tree):
    assert listing(mounted_tree.path) == listing(archive / "src")
    assert os.listdir(mounted_tree.path / "empty") == []
    assert (mounted_tree.path / "link").read_text() == "leaf\n"  # resolved inside the mount
    assert os.getxattr(mounted_tree.path / "tool.sh", "user.origin") == b"test suite"
    with pytest.raises(OSError) as e:
        os.getxattr(mounted_tree.path / "tool.sh", "user.other")
    assert e.value.errno == errno.ENODATA


@needs_fuse
def test_random_ranges_of_a_big_file_read_its_bytes(archive, mounted_tree):
    data = (archive / "src" / "big.img").read_bytes()
    rng = random.Random(9)
    fd = os.open(mounted_tree.path / "big.img", os.O_RDONLY)
    try:
        for k in range(300):
            if k % 30 == 0:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            offset = rng.choice([rng.randrange(BIG), BIG - rng.randrange(1, 5000)])
            size = rng.choice([1, 100, 4096, 70_000])
            assert os.pread(fd, size, offset) == data[offset : offset + size]
        assert os.pread(fd, 100, BIG) == b""
    finally:
        os.close(fd)


@needs_fuse
def test_the_tree_is_read_only(mounted_tree):
    with pytest.raises(OSError) as e:
        os.open(mounted_tree.path / "a" / "f00", os.O_WRONLY)
    assert e.value.errno in (errno.EROFS, errno.EACCES)
    with pytest.raises(OSError):
        (mounted_tree.path / "new").write_text("x")
    with pytest.raises(OSError):
        os.mkdir(mounted_tree.path / "newdir")


@needs_fuse
def test_a_missing_chunk_fails_only_reads_of_its_file(archive, tmp_path, mounts):
    index = index_format.decode((archive / "tree.caidx").read_bytes())
    reader = BlobReader(index, LocalStore(archive / "store"))
    big = load_tree(reader, reader).children["big.img"]
    victim = next(c for c in index if c.start > big.offset + 100_000)
    assert victim.end < big.offset + BIG // 2  # inside the random part of the payload
    copy = tmp_path / "store"
    shutil.copytree(archive / "store", copy)
    LocalStore(copy).remove_chunk(victim.id)
    mount = start_mount(tmp_path, "-s", copy, archive / "tree.caidx")
    mounts.append(mount)
    with pytest.raises(OSError) as e:
        (mount.path / "big.img").read_bytes()
    assert e.value.errno == errno.EIO
    with open(mount.path / "big.img", "rb") as f:
        assert f.read(50_000) == (archive / "src" / "big.img").read_bytes()[:50_000]
    assert (mount.path / "a" / "deep" / "er" / "leaf.txt").read_text() == "leaf\n"
    assert mount.unmount() == 0
    assert "cannot read big.img at " in mount.stderr()
    assert victim.id.hex() in mount.stderr()


def test_a_tree_whose_metadata_chunk_is_missing_is_not_mounted(cli, archive, tmp_path):
    index = index_format.decode((archive / "tree.caidx").read_bytes())
    copy = tmp_path / "store"
    shutil.copytree(archive / "store", copy)
    LocalStore(copy).remove_chunk(index.chunk(0).id)
    (tmp_path / "mnt").mkdir()
    r = cli("mount-index", "-s", copy, archive / "tree.caidx", tmp_path / "mnt")
    assert r.code == 1
    assert f"chunk {index.chunk(0).id.hex()} missing" in r.err


def test_a_mounted_tree_serves_only_the_xattrs_untar_would_set(tmp_path):
    """An XATTR record of ``security.capability`` (desync writes capabilities that
    way) in an archive without fcaps is not served, as untar does not set it; the
    ``user.*`` attribute beside it is."""
    cap = b"\x01\x00\x00\x02" + bytes(16)
    f = MemNode(
        Entry(
            feature_flags=features.DESYNC_TAR,
            mode=stat.S_IFREG | 0o755,
            mtime=MTIME,
            xattrs=((b"security.capability", cap), (b"user.a", b"v")),
        ),
        data=b"#!/bin/sh\n",
    )
    (tmp_path / "tree.catar").write_bytes(raw_archive(MemNode.dir(children={b"f": f})))
    argv = ["make", "-s", tmp_path / "store", tmp_path / "tree.caibx", tmp_path / "tree.catar"]
    assert main([str(a) for a in argv], Console(out=io.StringIO(), err=io.StringIO())) == 0
    index = index_format.decode((tmp_path / "tree.caibx").read_bytes())
    reader = BlobReader(index, LocalStore(tmp_path / "store"))
    fs = TreeFilesystem(reader, load_tree(reader, reader))
    assert fs.listxattr("/f") == ["user.a"]
    assert fs.getxattr("/f", "user.a") == b"v"
    with pytest.raises(OSError) as e:
        fs.getxattr("/f", "security.capability")
    assert e.value.errno == errno.ENODATA
