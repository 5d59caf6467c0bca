"""The real casync and we read each other's archives and write the same bytes.

- ``casync make x.caidx DIR`` -> our ``untar -i`` gives back DIR
- our ``tar -i`` -> ``casync extract`` gives back DIR
- ``casync make x.catar DIR`` and our ``tar --with ...`` are byte-identical,
  on a tree with ACLs, file capabilities, SELinux labels, chattr flags,
  xattrs, owners with names, special files, hard links and odd names
Trees are compared with our ``mtree``, ``diff -r`` and lstat/xattr checks.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from tests.test_casync_interop import run_casync, run_ours
from tests.vectors.gen_input import build_tree

MTIME = 1_650_000_000_987_654_321


def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


NONE = 0xFFFFFFFF


def build_rich_tree(root: Path) -> Path:
    """Everything casync's default flags store, on ext4 as root."""
    root.mkdir()
    (root / "plain").write_bytes(b"plain\n")
    (root / "big").write_bytes(os.urandom(300_000))
    (root / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "setuid", 0o4755)
    (root / "owned").write_bytes(b"owned\n")
    os.chown(root / "owned", 65534, 65534)
    (root / "unnamed-owner").write_bytes(b"x")
    os.chown(root / "unnamed-owner", 4242, 4343)
    (root / "acl").write_bytes(b"acl\n")
    os.chmod(root / "acl", 0o640)
    access = _acl((1, 6, NONE), (2, 7, 4242), (2, 4, 65534), (4, 4, NONE), (8, 2, 65534))
    os.setxattr(
        root / "acl", "system.posix_acl_access", access + _acl((16, 7, NONE), (32, 0, NONE))[4:]
    )
    (root / "dacl").mkdir()
    os.setxattr(
        root / "dacl",
        "system.posix_acl_default",
        _acl((1, 7, NONE), (2, 5, 65534), (4, 5, NONE), (8, 1, 4343), (16, 7, NONE), (32, 1, NONE)),
    )
    (root / "dacl" / "inherits").write_bytes(b"i")
    (root / "xattrs").write_bytes(b"x")
    os.setxattr(root / "xattrs", "user.b", b"\x00binary\xff")
    os.setxattr(root / "xattrs", "user.a", b"")
    os.setxattr(root / "xattrs", "trusted.t", b"trusted")
    os.setxattr(root / "xattrs", "security.selinux", b"system_u:object_r:etc_t:s0\x00")
    (root / "cap").write_bytes(b"cap")
    os.setxattr(root / "cap", "security.capability", bytes.fromhex("0100000201000000" + "00" * 12))
    (root / "noatime").write_bytes(b"n")
    subprocess.run(["chattr", "+A", str(root / "noatime")], check=True)
    (root / "hard1").write_bytes(b"hard")
    os.link(root / "hard1", root / "hard2")
    (root / "ro-dir").mkdir()
    (root / "ro-dir" / "inside").write_bytes(b"in")
    os.mkfifo(root / "fifo", 0o600)
    os.mknod(root / "tty", stat.S_IFCHR | 0o620, os.makedev(5, 0))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
    (root / "abs-link").symlink_to("/etc/hostname")
    (
        root
        / "bad-\xff-\x01-name".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    ).write_bytes(b"odd")
    (root / ("l" * 200)).write_bytes(b"long name")  # casync's temp names fail at 255
    deep = root
    for i in range(30):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    (deep / "bottom").write_bytes(b"bottom")
    os.chmod(root / "ro-dir", 0o555)
    for top, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(top, name), ns=(MTIME, MTIME), follow_symlinks=False)
    os.utime(root, ns=(MTIME, MTIME))
    return root


def compare_trees(a: Path, b: Path) -> None:
    """Same names, types, modes, owners, mtimes, contents, targets, devices, xattrs."""
    done = subprocess.run(
        ["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True, text=True
    )
    for line in done.stdout.splitlines():  # diff only names special files it cannot compare
        match = re.fullmatch(r"File .* is an? (.*) while file .* is an? (.*)", line)
        assert match and match[1] == match[2], done.stdout[:2000]
    names_a = sorted(_walk(a))
    assert names_a == sorted(_walk(b))
    for rel in names_a:
        sa, sb = os.lstat(a / rel), os.lstat(b / rel)
        for field in ("st_mode", "st_uid", "st_gid", "st_mtime_ns", "st_rdev"):
            assert getattr(sa, field) == getattr(sb, field), (rel, field)
        if stat.S_ISREG(sa.st_mode):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        if stat.S_ISLNK(sa.st_mode):
            assert os.readlink(a / rel) == os.readlink(b / rel), rel
        else:
            assert _xattrs(a / rel) == _xattrs(b / rel), rel


def _walk(root: Path) -> list[str]:
    out = ["."]
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(top, name), root))
    return out


def _xattrs(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in os.listxattr(path)}


def same_bytes_as_casync(
    casync: str, tree: Path, tmp_path: Path, theirs: list[str], ours: list[str]
) -> Path:
    """``casync make *theirs x.catar TREE`` and our ``*ours y.catar TREE`` (``ours``
    holds the verb: ``["tar", "--with=best"]``) write the same bytes; returns ours."""
    a, b = tmp_path / "casync.catar", tmp_path / "ours.catar"
    run_casync(casync, "make", *theirs, a, tree)
    run_ours(*ours, b, tree)
    assert b.read_bytes() == a.read_bytes()
    return b


@pytest.fixture(scope="module")
def rich_tree(tmp_path_factory) -> Path:
    return build_rich_tree(tmp_path_factory.mktemp("rich") / "tree")


@pytest.fixture(scope="module")
def vector_tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("vec") / "tree", special=True)


WITH_SETS = [
    (),
    ("--with=best",),
    ("--with=unix",),
    ("--with=permissions", "--with=symlinks", "--with=sec-time"),
    ("--with=fat",),
    ("--with=fuse",),
    ("--with=acl", "--with=32bit-uids", "--with=symlinks"),
    ("--with=best", "--without=acl", "--without=user-names"),
    ("--with=best", "--without=selinux", "--without=fcaps", "--without=xattrs"),
    ("--with=chattr", "--with=usec-time", "--with=read-only"),
]


# our default (desync's TarFeatureFlags) as casync's options
DESYNC_DEFAULT_AS_CASYNC = [
    f"--with={f}"
    for f in (
        "32bit-uids",
        "nsec-time",
        "permissions",
        "symlinks",
        "device-nodes",
        "fifos",
        "sockets",
        "xattrs",
    )
]


def _as_casync(options: tuple[str, ...]) -> list[str]:
    return list(options) if options else DESYNC_DEFAULT_AS_CASYNC


@pytest.mark.parametrize("options", WITH_SETS, ids=lambda o: ",".join(o) or "desync-default")
def test_tar_writes_casyncs_bytes_on_a_rich_tree(casync, rich_tree, tmp_path, options):
    same_bytes_as_casync(casync, rich_tree, tmp_path, _as_casync(options), ["tar", *options])


def test_tar_with_sha256_digest_and_no_exclude_nodump_equivalent(casync, rich_tree, tmp_path):
    theirs = ["--digest=sha256", "--with=unix"]
    same_bytes_as_casync(
        casync, rich_tree, tmp_path, theirs, ["--digest", "sha256", "tar", "--with=unix"]
    )


def test_casync_caidx_untars_to_the_same_tree(casync, rich_tree, tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    run_casync(casync, "make", f"--store={store}", tmp_path / "x.caidx", rich_tree)
    run_ours("untar", "-i", "-s", store, tmp_path / "x.caidx", out)
    compare_trees(rich_tree, out)
    assert run_ours("mtree", out) == run_ours("mtree", rich_tree)


def test_our_caidx_extracts_with_casync_to_the_same_tree(casync, rich_tree, tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    run_ours("tar", "--with=best", "-i", "-s", store, tmp_path / "x.caidx", rich_tree)
    run_casync(casync, "extract", f"--store={store}", tmp_path / "x.caidx", out)
    compare_trees(rich_tree, out)


def test_our_default_caidx_extracts_with_casync(casync, vector_tree, tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    digest = run_ours("tar", "-i", "-s", store, tmp_path / "x.caidx", vector_tree)
    assert digest.startswith("sha512-256:")
    run_casync(casync, "extract", f"--store={store}", tmp_path / "x.caidx", out)
    compare_trees(vector_tree, out)
    assert run_ours("mtree", out) == run_ours("mtree", vector_tree)


def test_our_catar_lists_and_extracts_with_casync(casync, vector_tree, tmp_path):
    run_ours("tar", tmp_path / "x.catar", vector_tree)
    listing = run_casync(casync, "list", tmp_path / "x.catar")
    assert "sub/deeper/deep\\040file.txt" in listing
    run_casync(casync, "extract", tmp_path / "x.catar", tmp_path / "out")
    compare_trees(vector_tree, tmp_path / "out")


def test_casync_catar_untars_and_retars_to_the_same_bytes(casync, rich_tree, tmp_path):
    run_casync(casync, "make", tmp_path / "x.catar", rich_tree)
    run_ours("untar", tmp_path / "x.catar", tmp_path / "out")
    run_ours("tar", "--with=best", tmp_path / "again.catar", tmp_path / "out")
    assert (tmp_path / "again.catar").read_bytes() == (tmp_path / "x.catar").read_bytes()


def test_casync_digest_of_our_catar_is_its_own(casync, vector_tree, tmp_path):
    run_ours("tar", "--with=best", tmp_path / "x.catar", vector_tree)
    digest = run_casync(casync, "digest", vector_tree).strip()
    assert run_casync(casync, "digest", tmp_path / "x.catar").strip() == digest


def test_project_ids_on_xfs(casync, xfs_dir, tmp_path):
    tree = xfs_dir / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"x")
    subprocess.run(["xfs_io", "-c", "chproj 42", str(tree / "d" / "f")], check=True)
    subprocess.run(["xfs_io", "-c", "chproj 7", str(tree / "d")], check=True)
    ours = same_bytes_as_casync(casync, tree, tmp_path, [], ["tar", "--with=best"])
    out = xfs_dir / "out"
    run_ours("untar", ours, out)
    got = subprocess.run(
        ["xfs_io", "-c", "lsproj", str(out / "d" / "f")], capture_output=True, text=True
    )
    assert "projid = 42" in got.stdout


def test_nodump_files_and_other_filesystems_are_left_out_like_casync(casync, tmp_path):
    tree = tmp_path / "tree"
    (tree / "mnt").mkdir(parents=True)
    (tree / "keep").write_bytes(b"k")
    (tree / "nodump").write_bytes(b"left out")
    subprocess.run(["chattr", "+d", str(tree / "nodump")], check=True)
    (tree / "nodump-dir").mkdir()
    subprocess.run(["chattr", "+d", str(tree / "nodump-dir")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tree / "mnt")], check=True)
    try:
        (tree / "mnt" / "inner").write_bytes(b"other filesystem")
        same_bytes_as_casync(casync, tree, tmp_path, [], ["tar", "--with=best"])
        theirs = ["--exclude-submounts=yes"]
        ours = same_bytes_as_casync(casync, tree, tmp_path, theirs, ["tar", "--with=best", "-x"])
        assert "mnt" not in run_ours("mtree", ours)
    finally:
        subprocess.run(["umount", str(tree / "mnt")], check=True)


def test_btrfs_subvolumes(casync, btrfs_dir, tmp_path):
    tree = btrfs_dir / "tree"
    tree.mkdir()
    btrfs = ["btrfs", "-q"]
    subprocess.run([*btrfs, "subvolume", "create", str(tree / "sv")], check=True)
    subprocess.run([*btrfs, "subvolume", "create", str(tree / "ro")], check=True)
    (tree / "sv" / "f").write_bytes(b"in a subvolume")
    subprocess.run(["btrfs", "property", "set", str(tree / "ro"), "ro", "true"], check=True)
    ours = same_bytes_as_casync(casync, tree, tmp_path, [], ["tar", "--with=best"])
    out = btrfs_dir / "out"
    run_ours("untar", ours, out)
    try:
        listing = subprocess.run(
            ["btrfs", "subvolume", "list", "-o", str(btrfs_dir)], capture_output=True, text=True
        ).stdout
        assert "out/sv" in listing and "out/ro" in listing
        ro = subprocess.run(
            ["btrfs", "property", "get", str(out / "ro"), "ro"], capture_output=True, text=True
        )
        assert ro.stdout.strip() == "ro=true"
        run_ours("tar", "--with=best", tmp_path / "again.catar", out)
        assert (tmp_path / "again.catar").read_bytes() == ours.read_bytes()
    finally:
        for root in (tree, out):
            subprocess.run(["btrfs", "property", "set", str(root / "ro"), "ro", "false"])
            for sv in ("sv", "ro"):
                subprocess.run([*btrfs, "subvolume", "delete", str(root / sv)], capture_output=True)
