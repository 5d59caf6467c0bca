"""Ports of desync's tar_test.go and cmd/desync/tar_test.go: the records ``tar`` writes
for a small tree, and ``tar`` of desync's ``cmd/desync/testdata/tree`` into a catar
and into a caidx with its chunks in a store.

desync's command tests only ask that ``tar`` succeeds; ours also read what it wrote
back (the archive lists the tree, the index's chunks are all in the store and
``untar -i`` gives the tree again).
"""

from __future__ import annotations

import struct
from pathlib import Path

from desync_decl.formats import index as idx
from desync_decl.formats.catar import records
from tests.desync_suite.test_untar_command import snapshot


def record_types(data: bytes) -> list[str]:
    """The archive's records by type name, in stream order (payloads skipped)."""
    out, pos = [], 0
    while pos < len(data):
        size, typ = struct.unpack_from("<2Q", data, pos)
        out.append(records.NAMES[typ])
        pos += size
    return out


def test_tar(cli, tmp_path):
    """TestTar: dir1/{sub11/{f11,f12},sub12}, dir2/{sub21,sub22} and symlink -> dir1
    give exactly these records (desync's tar flags store no owner names, so each node
    is an ENTRY and its content record)."""
    base = tmp_path / "base"
    for d in ("dir1/sub11", "dir1/sub12", "dir2/sub21", "dir2/sub22"):
        (base / d).mkdir(parents=True)
    for i, name in enumerate(("dir1/sub11/f11", "dir1/sub11/f12")):
        (base / name).write_bytes(b"filecontent%d" % i)
    (base / "symlink").symlink_to("dir1")
    assert cli("tar", tmp_path / "a.catar", base).code == 0
    E, F, P, G = "ENTRY", "FILENAME", "PAYLOAD", "GOODBYE"
    assert record_types((tmp_path / "a.catar").read_bytes()) == [
        E,
        F, E,  # dir1
        F, E,  # sub11
        F, E, P,  # f11
        F, E, P,  # f12
        G,
        F, E,  # sub12
        G,
        G,
        F, E,  # dir2
        F, E,  # sub21
        G,
        F, E,  # sub22
        G,
        G,
        F, E, "SYMLINK",  # symlink
        G,
    ]  # fmt: skip


def test_tar_command_archive(cli, cmd_data, tmp_path):
    """TestTarCommandArchive: ``tar tree.catar testdata/tree``."""
    result = cli("tar", tmp_path / "tree.catar", cmd_data / "tree")
    assert (result.code, result.err) == (0, "")
    assert cli("untar", tmp_path / "tree.catar", tmp_path / "out").code == 0
    assert snapshot(tmp_path / "out") == snapshot(cmd_data / "tree")


def test_tar_command_index(cli, cmd_data, tmp_path):
    """TestTarCommandIndex: ``tar -s OUT -i OUT/tree.caidx testdata/tree`` (the store is
    the directory the index goes to, as in desync's test)."""
    out = tmp_path / "out"
    out.mkdir()
    result = cli("tar", "-s", out, "-i", out / "tree.caidx", cmd_data / "tree")
    assert result.code == 0, result.err
    index = idx.decode((out / "tree.caidx").read_bytes())
    assert len(index) > 0
    stored = {p.stem for p in out.rglob("*.cacnk")}
    assert {c.id.hex() for c in index} <= stored
    back = cli("untar", "-s", out, "-i", out / "tree.caidx", tmp_path / "tree")
    assert back.code == 0, back.err
    assert snapshot(tmp_path / "tree") == snapshot(cmd_data / "tree")


def test_tar_of_the_tree_lists_what_desyncs_tree_catar_lists(cli, cmd_data, tmp_path):
    """The archive we make of testdata/tree holds the nodes of desync's tree.catar
    (made from that tree), in the same order."""
    assert cli("tar", tmp_path / "tree.catar", cmd_data / "tree").code == 0

    def names(path: Path) -> list[str]:
        result = cli("mtree", path)
        assert result.code == 0, result.err
        return [line.split()[0] for line in result.out.splitlines()[1:]]

    assert names(tmp_path / "tree.catar") == names(cmd_data / "tree.catar")
