"""``untar`` over an older version of the tree updates it entry by entry: an unchanged
file keeps its inode and is not written, a changed one is replaced by a new file
renamed over it, a metadata-only difference is fixed in place (issue 19, item 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from desync_decl.formats.index import decode
from desync_decl.ops.untar import untar
from desync_decl.stores.local import LocalStore

MIB = 1 << 20


def _model(root: Path) -> None:
    """A small model directory: shards, json files, nested folders, a symlink."""
    (root / "shards").mkdir(parents=True)
    (root / "tok" / "deep").mkdir(parents=True)
    for k in range(3):
        (root / "shards" / f"s{k}.bin").write_bytes(os.urandom(2 * MIB))
    (root / "config.json").write_text('{"layers": 4}\n')
    (root / "tok" / "vocab.json").write_text('{"a": 1}\n' * 50)
    (root / "tok" / "deep" / "merges.txt").write_text("a b\n" * 100)
    (root / "README").write_text("model v1\n")
    os.symlink("shards/s0.bin", root / "first")


def _v2(root: Path) -> None:
    """6 % of one shard rewritten in its middle, one json changed, one file's mode and
    another's mtime changed, a file added."""
    with open(root / "shards" / "s1.bin", "r+b") as f:
        f.seek(MIB)
        f.write(os.urandom(128 * 1024))
    (root / "config.json").write_text('{"layers": 5}\n')
    os.chmod(root / "README", 0o600)
    os.utime(root / "tok" / "deep" / "merges.txt", ns=(10**18, 10**18))
    (root / "added.txt").write_text("new\n")


def _identity(root: Path) -> dict[str, tuple[int, int]]:
    """Path -> (inode, ctime) of every entry below ``root``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_ino, st.st_ctime_ns)
    return out


@pytest.fixture
def versions(cli, tmp_path) -> tuple[Path, Path, Path, Path, Path]:
    return model_versions(cli, tmp_path)


def model_versions(cli, tmp_path: Path) -> tuple[Path, Path, Path, Path, Path]:
    """(store, v1 index, v2 index, v1 tree, v2 tree), published by ``tar -i``."""
    store, v1, v2 = tmp_path / "store", tmp_path / "v1", tmp_path / "v2"
    _model(v1)
    assert cli("tar", "-i", "-s", store, tmp_path / "v1.caidx", v1).code == 0
    os.system(f"cp -a {v1} {v2}")
    _v2(v2)
    assert cli("tar", "-i", "-s", store, tmp_path / "v2.caidx", v2).code == 0
    return store, tmp_path / "v1.caidx", tmp_path / "v2.caidx", v1, v2


def test_update_keeps_unchanged_files_and_replaces_changed_ones(cli, versions, tmp_path):
    store, i1, i2, _, v2 = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    before = _identity(out)
    assert cli("untar", "-i", "-s", store, i2, out).code == 0
    after = _identity(out)
    assert cli("mtree", out).out == cli("mtree", v2).out
    for same in ("shards/s0.bin", "shards/s2.bin", "tok/vocab.json"):
        assert after[same] == before[same], f"{same} was touched"
    for changed in ("shards/s1.bin", "config.json"):
        assert after[changed][0] != before[changed][0], f"{changed} was not replaced"
    for metadata in ("README", "tok/deep/merges.txt"):
        assert after[metadata][0] == before[metadata][0], f"{metadata} was rewritten"
    assert os.stat(out / "README").st_mode & 0o777 == 0o600
    assert os.stat(out / "tok/deep/merges.txt").st_mtime_ns == 10**18


def test_update_result_counts_entries_and_bytes(cli, versions, tmp_path):
    store, i1, i2, _, _ = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    with open(i2, "rb") as f:
        index = decode(f.read())
    result = untar(index, out, store=LocalStore(store))
    s = result.stats
    # metadata: README's mode, merges.txt's mtime, the root's mtime (a file was added)
    assert (s.created, s.updated, s.metadata) == (1, 2, 3)
    assert s.bytes_written == 2 * MIB + len('{"layers": 5}\n') + len("new\n")
    assert s.bytes_kept == 4 * MIB + os.path.getsize(out / "tok/vocab.json") + 4 * 100 + 9
    again = untar(index, out, store=LocalStore(store)).stats
    assert (again.created, again.updated, again.metadata, again.bytes_written) == (0, 0, 0, 0)


def test_same_contents_from_a_catar_file_keep_their_inode(cli, versions, tmp_path):
    _, _, _, v1, _ = versions
    catar = tmp_path / "v1.catar"
    assert cli("tar", catar, v1).code == 0
    out = tmp_path / "out"
    assert cli("untar", catar, out).code == 0
    before = _identity(out)
    with open(out / "config.json", "w") as f:
        f.write('{"layers": 9}\n')  # drift, same size
    drifted = os.stat(out / "config.json").st_ino
    assert cli("untar", catar, out).code == 0
    after = _identity(out)
    assert after["shards/s1.bin"] == before["shards/s1.bin"]
    assert os.stat(out / "config.json").st_ino != drifted
    assert (out / "config.json").read_text() == '{"layers": 4}\n'


def test_a_hard_link_from_outside_is_replaced_not_chmodded(cli, versions, tmp_path):
    """A file of the tree hard-linked to one outside it (same contents) must not get
    the archive's mode or owner through the link: it is replaced instead."""
    store, i1, _, _, _ = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    outside = tmp_path / "outside"
    outside.write_text("model v1\n")
    os.chmod(outside, 0o604)
    os.unlink(out / "README")
    os.link(outside, out / "README")
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    assert os.stat(outside).st_mode & 0o777 == 0o604
    assert os.stat(out / "README").st_ino != os.stat(outside).st_ino


def test_a_symlink_where_a_file_was_is_replaced_not_followed(cli, versions, tmp_path):
    store, i1, _, _, _ = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    victim = tmp_path / "victim"
    victim.write_text('{"layers": 4}\n')
    os.chmod(victim, 0o600)
    os.unlink(out / "config.json")
    os.symlink(victim, out / "config.json")
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    assert not os.path.islink(out / "config.json")
    assert os.stat(victim).st_mode & 0o777 == 0o600
    assert victim.read_text() == '{"layers": 4}\n'


@pytest.mark.parametrize("atomic", [[], ["--atomic"]])
def test_excluded_entries_are_neither_written_nor_deleted(cli, versions, tmp_path, atomic):
    store, i1, i2, _, v2 = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    (out / "config.json").write_text("local edit\n")  # excluded: stays as it is
    (out / "notes.tmp").write_text("mine\n")  # an extra, excluded: not deleted
    (out / "stray").write_text("extra\n")  # an extra, not excluded: deleted
    args = ["--exclude", "config.json", "--exclude", "*.tmp", "--exclude", "tok/"]
    r = cli("untar", *atomic, "--delete-extra", *args, "-i", "-s", store, i2, out)
    assert r.code == 0, r.err
    assert (out / "config.json").read_text() == "local edit\n"
    assert (out / "notes.tmp").read_text() == "mine\n"
    assert not (out / "stray").exists()
    assert (out / "added.txt").read_text() == "new\n"  # the rest is v2
    assert (out / "shards/s1.bin").read_bytes() == (v2 / "shards/s1.bin").read_bytes()
    assert (out / "tok/vocab.json").exists()  # excluded directory: kept, not emptied


def test_an_excluded_directory_is_not_made(cli, versions, tmp_path):
    store, _, i2, _, _ = versions
    out = tmp_path / "out"
    r = cli("untar", "--exclude", "tok/", "--exclude", "/README", "-i", "-s", store, i2, out)
    assert r.code == 0, r.err
    assert not (out / "tok").exists() and not (out / "README").exists()
    assert (out / "shards/s0.bin").exists()


def test_the_verb_reads_what_the_target_holds_instead_of_fetching_it(cli, versions, tmp_path):
    """The store keeps only the chunks v2 adds: the rest must come from the target."""
    store, i1, i2, _, v2 = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    with open(i1, "rb") as f:
        old = {c.id.hex() for c in decode(f.read())}
    for chunk in store.rglob("*.cacnk"):
        if chunk.name.split(".")[0] in old:
            chunk.unlink()
    r = cli("untar", "-i", "-s", store, i2, out)
    assert r.code == 0, r.err
    assert cli("mtree", out).out == cli("mtree", v2).out


@pytest.mark.skipif(os.geteuid() != 0, reason="the other user's file needs root (CI runs as root)")
def test_a_file_of_another_user_is_replaced_never_chowned_in_place(cli, versions, tmp_path):
    """A file with the archive's bytes but owned by someone else (who may hold it open for
    writing) must not become root's in place: it is replaced from the archive."""
    store, i1, _, _, _ = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    os.chown(out / "shards/s0.bin", 65534, 65534)
    planted = os.stat(out / "shards/s0.bin").st_ino
    keep = os.open(out / "shards/s0.bin", os.O_RDONLY)  # the old inode stays observable
    try:
        assert cli("untar", "-i", "-s", store, i1, out).code == 0
        assert os.fstat(keep).st_uid == 65534  # never chowned to root
    finally:
        os.close(keep)
    st = os.stat(out / "shards/s0.bin")
    assert (st.st_ino != planted, st.st_uid) == (True, 0)
