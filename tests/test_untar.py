"""``untar`` into directories: owners, modes, times, xattrs and chattr flags as the
archive says (or not, with the --no-same-* flags), from a catar or a caidx's chunks."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from desync_decl.archive import fsattrs
from desync_decl.archive.streams import fetch_workers, index_blocks
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import decode
from desync_decl.ops.tar import TarInput, tar
from desync_decl.stores.local import LocalStore
from tests import hostile_archives as h
from tests.vectors.gen_input import VECTOR_MTIME_NS, build_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("untar") / "tree", special=True)


@pytest.fixture(scope="module")
def catar(tree, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catar") / "x.catar"
    with open(path, "wb") as out:
        tar(TarInput(tree), out)
    return path


def test_untar_restores_owners_modes_times_and_xattrs(cli, catar, tree, tmp_path):
    out = tmp_path / "out"
    assert cli("untar", catar, out).code == 0
    assert os.stat(out / "sub/a").st_uid == 65534
    assert os.stat(out / "sub/deeper").st_mode & 0o7777 == 0o750
    assert os.lstat(out / "link").st_mtime_ns == VECTOR_MTIME_NS
    assert os.stat(out).st_mtime_ns == VECTOR_MTIME_NS
    assert os.getxattr(out / "hello.txt", "user.comment") == b"casync vector"
    assert stat.S_ISSOCK(os.lstat(out / "socket").st_mode)
    assert cli("mtree", out).out == cli("mtree", tree).out


def test_no_same_owner_skips_owners_and_xattrs(cli, catar, tmp_path):
    out = tmp_path / "out"
    assert cli("untar", "--no-same-owner", catar, out).code == 0
    assert os.stat(out / "sub/a").st_uid == 0
    assert os.listxattr(out / "hello.txt") == []
    assert os.stat(out / "readonly.txt").st_mode & 0o777 == 0o444


def test_no_same_permissions_uses_the_umask(cli, catar, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        assert cli("untar", "--no-same-permissions", catar, out).code == 0
    finally:
        os.umask(old)
    assert os.stat(out / "readonly.txt").st_mode & 0o7777 == 0o640
    assert os.stat(out / "exec.sh").st_mode & 0o7777 == 0o640
    assert os.stat(out / "sub/deeper").st_mode & 0o7777 == 0o750
    assert os.stat(out / "sub/a").st_uid == 65534


def test_read_only_directories_are_filled_as_a_normal_user(cli):
    inner = h.MemNode.dir(0o555, {b"f": h.MemNode.file(b"data", 0o444)})
    data = h.archive(h.MemNode.dir(children={b"ro": inner}))
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        target = Path(top) / "target"
        target.mkdir()
        os.chown(target, 65534, 65534)
        os.seteuid(65534)
        try:
            result = cli("untar", "-", target, stdin=data)  # owners: root only
        finally:
            os.seteuid(0)
        assert result.code == 0, result.err
        assert os.stat(target / "ro").st_mode & 0o7777 == 0o555
        assert (target / "ro" / "f").read_bytes() == b"data"


def test_extracting_over_an_existing_tree_replaces_files_and_keeps_others(cli, catar, tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "hello.txt").write_text("old")
    (out / "sub" / "extra").write_text("mine")
    os.chmod(out / "sub", 0o700)
    assert cli("untar", catar, out).code == 0
    assert (out / "hello.txt").read_text() == "hello world\n"
    assert (out / "sub" / "extra").read_text() == "mine"
    assert os.stat(out / "sub").st_mode & 0o7777 == 0o755
    assert not list(out.rglob(".#untar.*"))


def test_chattr_flags_are_restored(cli, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"x")
    subprocess.run(["chattr", "+A", str(tree / "f")], check=True)
    assert cli("tar", "--with=best", tmp_path / "x.catar", tree).code == 0
    assert cli("untar", tmp_path / "x.catar", tmp_path / "out").code == 0
    fd = os.open(tmp_path / "out" / "f", os.O_RDONLY)
    try:
        assert fsattrs.chattr_flags(fd) & 0x80  # FS_NOATIME_FL
    finally:
        os.close(fd)


def test_untar_index_streams_chunks_from_the_store(cli, tree, tmp_path):
    store = tmp_path / "store"
    assert cli("tar", "-i", "-s", store, "-m", "1:4:16", tmp_path / "x.caidx", tree).code == 0
    chunks = list(store.rglob("*.cacnk"))
    assert len(chunks) > 20
    out = tmp_path / "out"
    result = cli("untar", "-i", "-s", store, "-c", tmp_path / "cache", tmp_path / "x.caidx", out)
    assert result.code == 0, result.err
    assert cli("mtree", out).out == cli("mtree", tree).out
    assert cli("mtree", "-i", "-s", store, tmp_path / "x.caidx").out == cli("mtree", tree).out
    assert len(list((tmp_path / "cache").rglob("*.cacnk"))) == len(chunks)


def test_a_missing_chunk_fails_cleanly(cli, tree, tmp_path):
    store = tmp_path / "store"
    assert cli("tar", "-i", "-s", store, "-m", "1:4:16", tmp_path / "x.caidx", tree).code == 0
    victim = sorted(store.rglob("*.cacnk"), key=os.path.getsize)[-1]
    victim.unlink()
    out = tmp_path / "out"
    result = cli("untar", "-i", "-s", store, tmp_path / "x.caidx", out)
    assert result.code == 1
    assert result.err.count("\n") == 1 and "missing" in result.err
    assert not list(out.rglob(".#untar.*"))
    for f in out.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert f.read_bytes() == (tree / f.relative_to(out)).read_bytes()


def test_a_seed_tree_supplies_the_chunks_it_shares(cli, tree, tmp_path):
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    subprocess.run(["cp", "-a", tree, v1], check=True)
    subprocess.run(["cp", "-a", tree, v2], check=True)
    (v2 / "sub" / "nested.bin").write_bytes(os.urandom(50_000))
    (v2 / "new.txt").write_text("new\n")
    old, new = tmp_path / "old", tmp_path / "new"
    assert cli("tar", "-i", "-s", old, "-m", "1:4:16", tmp_path / "v1.caidx", v1).code == 0
    assert cli("tar", "-i", "-s", new, "-m", "1:4:16", tmp_path / "v2.caidx", v2).code == 0
    shared = {p.name for p in old.rglob("*.cacnk")} & {p.name for p in new.rglob("*.cacnk")}
    assert len(shared) > len(list(new.rglob("*.cacnk"))) / 2
    for p in new.rglob("*.cacnk"):
        if p.name in shared:
            p.unlink()  # only the seed can supply these now
    args = ["untar", "-i", "-s", new, tmp_path / "v2.caidx"]
    assert cli(*args, tmp_path / "no-seed").code == 1
    result = cli(*args, "--seed", v1, tmp_path / "out")
    assert result.code == 0, result.err
    assert cli("mtree", tmp_path / "out").out == cli("mtree", v2).out


def test_seeds_need_an_index(cli, catar, tree, tmp_path):
    result = cli("untar", "--seed", tree, catar, tmp_path / "out")
    assert result.code == 1 and "seeds need an index" in result.err


# -- owners and modes as the kernel gives them to new entries --------------------------


@pytest.fixture
def owned_tree(tmp_path) -> Path:
    """Files of root, of nobody (set-uid), a symlink of nobody, and a plain 0644 file."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "root-file").write_bytes(b"r")
    (tree / "nobody-suid").write_bytes(b"n")
    os.chown(tree / "nobody-suid", 65534, 65534)
    os.chmod(tree / "nobody-suid", 0o4755)
    (tree / "nobody-link").symlink_to("root-file")
    os.chown(tree / "nobody-link", 65534, 65534, follow_symlinks=False)
    os.chmod(tree / "root-file", 0o644)
    return tree


def test_owners_are_set_where_a_set_gid_directory_would_give_another_group(
    cli, owned_tree, tmp_path
):
    assert cli("tar", tmp_path / "x.catar", owned_tree).code == 0
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 0, 65534)
    os.chmod(out, 0o2755)  # new entries get group 65534 unless chowned
    assert cli("untar", tmp_path / "x.catar", out).code == 0
    assert (os.stat(out / "root-file").st_uid, os.stat(out / "root-file").st_gid) == (0, 0)
    st = os.stat(out / "nobody-suid")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o4755)
    assert os.lstat(out / "nobody-link").st_uid == 65534
    assert cli("mtree", out).out == cli("mtree", owned_tree).out


def test_modes_are_exact_under_a_default_acl(cli, owned_tree, tmp_path):
    assert cli("tar", tmp_path / "x.catar", owned_tree).code == 0
    out = tmp_path / "out"
    out.mkdir()
    entry = struct.Struct("<HHI")
    only_owner = struct.pack("<I", 2) + b"".join(
        entry.pack(tag, perm, 0xFFFFFFFF) for tag, perm in ((0x01, 7), (0x04, 0), (0x20, 0))
    )  # default ACL u::rwx,g::---,o::---: new files would be 0600
    os.setxattr(out, "system.posix_acl_default", only_owner)
    assert cli("untar", tmp_path / "x.catar", out).code == 0
    assert os.stat(out / "root-file").st_mode & 0o7777 == 0o644
    assert os.stat(out / "nobody-suid").st_mode & 0o7777 == 0o4755


class _ThreadsSeen:
    """A store read through ``inner`` that notes which threads asked it for chunks."""

    def __init__(self, inner: LocalStore, fork_safe: bool) -> None:
        self.inner, self.fork_safe, self.threads = inner, fork_safe, set[str]()

    def get_chunk(self, id: ChunkID) -> Chunk:
        self.threads.add(threading.current_thread().name)
        return self.inner.get_chunk(id)


def test_a_local_stores_chunks_are_fetched_by_one_thread_per_core(cli, tree, tmp_path):
    # decompressing and hashing from the page cache is work for a core: more threads
    # than cores only take turns at the GIL; a remote store's waits are overlapped
    store = tmp_path / "store"
    assert cli("tar", "-i", "-s", store, "-m", "1:4:16", tmp_path / "x.caidx", tree).code == 0
    index = decode((tmp_path / "x.caidx").read_bytes())
    assert len(index) > 40
    cores = os.cpu_count() or 1
    for fork_safe, most in ((True, cores), (False, 10)):
        seen = _ThreadsSeen(LocalStore(store), fork_safe)
        assert fetch_workers(seen, 10) == min(most, 10)  # type: ignore[arg-type]  # a partial store
        blocks = index_blocks(index, seen, concurrency=10)  # type: ignore[arg-type]  # a partial store
        assert sum(len(b) for b in blocks) == sum(c.size for c in index)
        assert 1 <= len(seen.threads) <= min(most, 10)
