"""``tar``: directories and tar streams into catar archives and caidx indexes.

A tar stream made by GNU tar from a vector tree gives casync's own archive of
that tree, byte for byte; our gnu-tar output reads back to the same archive.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from desync_decl.formats.catar import Decoder, DirEnd
from desync_decl.formats.catar.features import DESYNC_TAR
from tests.vectors import VECTORS
from tests.vectors.gen_input import VECTOR_MTIME_NS, build_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("tar") / "tree")


def gnu_tar(tree: Path, out: Path, *extra: str) -> Path:
    subprocess.run(
        [
            "tar",
            "-C",
            str(tree),
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            *extra,
            "-cf",
            str(out),
            ".",
        ],
        check=True,
    )
    return out


def nodes(data: bytes) -> list[tuple[str, int, int]]:
    """(path, mode, mtime) of every node of an archive."""
    return [
        (e.name, e.entry.mode, e.entry.mtime)
        for e in Decoder(io.BytesIO(data))
        if not isinstance(e, DirEnd)
    ]


def test_tar_stream_from_gnu_tar_gives_casyncs_archive(cli, tree, tmp_path):
    src = gnu_tar(tree, tmp_path / "in.tar")
    result = cli("tar", "--with=best", "--input-format", "tar", tmp_path / "x.catar", src)
    assert result.code == 0, result.err
    expected = (VECTORS / "tree/default/archive.catar").read_bytes()
    assert (tmp_path / "x.catar").read_bytes() == expected


def test_tar_stream_on_stdin_and_compressed(cli, tree, tmp_path):
    raw = gnu_tar(tree, tmp_path / "in.tar").read_bytes()
    expected = (VECTORS / "tree/default/archive.catar").read_bytes()
    for data in (raw, gzip.compress(raw)):
        result = cli("tar", "--with=best", "--input-format", "tar", "-", "-", stdin=data)
        assert result.code == 0, result.err
        assert result.data == expected
    (tmp_path / "in.tar.gz").write_bytes(gzip.compress(raw))
    result = cli("tar", "--with=best", "--input-format=tar", tmp_path / "o", tmp_path / "in.tar.gz")
    assert result.code == 0 and (tmp_path / "o").read_bytes() == expected


def test_tar_stream_with_hard_links_matches_casync(cli, casync, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"shared")
    os.link(tree / "a", tree / "b")
    subprocess.run(
        [casync, "make", "--with=unix", tmp_path / "c.catar", tree], check=True, capture_output=True
    )
    src = gnu_tar(tree, tmp_path / "in.tar")
    assert b"a\0" in src.read_bytes()  # GNU tar stored b as a hard link to a
    result = cli("tar", "--with=unix", "--input-format", "tar", tmp_path / "o.catar", src)
    assert result.code == 0, result.err
    assert (tmp_path / "o.catar").read_bytes() == (tmp_path / "c.catar").read_bytes()


def whole_seconds(tree: Path) -> Path:
    """``tree`` with every time cut to the second: GNU's tar format holds no finer."""
    seconds = VECTOR_MTIME_NS // 10**9 * 10**9
    for top, dirs, files in os.walk(tree, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(top, name), ns=(seconds,) * 2, follow_symlinks=False)
    os.utime(tree, ns=(seconds,) * 2)
    return tree


def test_gnu_tar_output_reads_back_to_the_same_archive(cli, tmp_path):
    tree = whole_seconds(build_tree(tmp_path / "tree"))
    assert cli("tar", tmp_path / "x.catar", tree).code == 0
    result = cli("untar", "--output-format", "gnu-tar", tmp_path / "x.catar", tmp_path / "x.tar")
    assert result.code == 0, result.err
    listing = subprocess.run(["tar", "-tvf", tmp_path / "x.tar"], capture_output=True, text=True)
    assert "sub/deeper/deep file.txt" in listing.stdout
    result = cli("tar", "--input-format", "tar", tmp_path / "y.catar", tmp_path / "x.tar")
    assert result.code == 0, result.err
    assert (tmp_path / "y.catar").read_bytes() == (tmp_path / "x.catar").read_bytes()
    extracted = tmp_path / "gnu"
    extracted.mkdir()
    subprocess.run(
        ["tar", "-C", extracted, "--xattrs", "--xattrs-include=*", "-xf", tmp_path / "x.tar"],
        check=True,
    )
    assert cli("mtree", extracted).out == cli("mtree", tree).out


def test_gnu_tar_output_keeps_whole_seconds(cli, tree, tmp_path):
    """Times finer than a second are cut, as GNU tar's gnu format and desync cut them."""
    assert cli("tar", tmp_path / "x.catar", tree).code == 0
    assert (
        cli("untar", "--output-format", "gnu-tar", tmp_path / "x.catar", tmp_path / "x.tar").code
        == 0
    )
    with tarfile.open(tmp_path / "x.tar") as tf:
        assert {m.mtime for m in tf} == {VECTOR_MTIME_NS // 10**9}


def test_gnu_tar_output_to_stdout(cli, tree, tmp_path):
    assert cli("tar", tmp_path / "x.catar", tree).code == 0
    result = cli("untar", "--output-format=gnu-tar", tmp_path / "x.catar", "-")
    assert result.code == 0, result.err
    with tarfile.open(fileobj=io.BytesIO(result.data)) as tf:
        names = tf.getnames()
    assert names[0] == "." and "sub/a" in names
    assert len(result.data) % tarfile.BLOCKSIZE == 0 and result.data.endswith(bytes(1024))


def test_tar_without_a_root_entry_needs_tar_add_root(cli, tmp_path):
    src = tmp_path / "in.tar"
    with tarfile.open(src, "w") as tf:
        info = tarfile.TarInfo("deep/dir/file")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    result = cli("tar", "--input-format", "tar", tmp_path / "x.catar", src)
    assert result.code == 1 and "--tar-add-root" in result.err
    result = cli("tar", "--input-format", "tar", "--tar-add-root", tmp_path / "x.catar", src)
    assert result.code == 0, result.err
    names = [n for n, _, _ in nodes((tmp_path / "x.catar").read_bytes())]
    assert names == [".", "deep", "deep/dir", "deep/dir/file"]


def test_a_later_tar_member_replaces_an_earlier_one(cli, tmp_path):
    src = tmp_path / "in.tar"
    with tarfile.open(src, "w") as tf:
        tf.addfile(_dir("."))
        for data in (b"old", b"newer"):
            info = tarfile.TarInfo("./f")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert cli("tar", "--input-format", "tar", tmp_path / "x.catar", src).code == 0
    assert cli("untar", tmp_path / "x.catar", tmp_path / "out").code == 0
    assert (tmp_path / "out" / "f").read_bytes() == b"newer"


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def test_no_time_stores_no_timestamps(cli, tree, tmp_path):
    assert cli("tar", "--no-time", tmp_path / "x.catar", tree).code == 0
    data = (tmp_path / "x.catar").read_bytes()
    flags = int.from_bytes(data[16:24], "little")
    assert flags == DESYNC_TAR & ~0x20
    assert {mtime for _, _, mtime in nodes(data)} == {0}


def test_sha256_digest_clears_the_sha512_256_flag(cli, tree, tmp_path):
    store = tmp_path / "store"
    assert cli("--digest", "sha256", "tar", "-i", "-s", store, tmp_path / "x.caidx", tree).code == 0
    header = (tmp_path / "x.caidx").read_bytes()[:24]
    assert int.from_bytes(header[16:], "little") == DESYNC_TAR & ~0x2000000000000000
    assert cli("untar", "-i", "-s", store, tmp_path / "x.caidx", tmp_path / "out").code == 0
    assert cli("mtree", tmp_path / "out").out == cli("mtree", tree).out


def test_tar_to_stdout_and_untar_from_stdin(cli, tree, tmp_path):
    result = cli("tar", "-", tree)
    assert result.code == 0
    assert cli("tar", tmp_path / "x.catar", tree).code == 0
    assert result.data == (tmp_path / "x.catar").read_bytes()
    out = cli("untar", "-", tmp_path / "out", stdin=result.data)
    assert out.code == 0, out.err
    assert cli("mtree", tmp_path / "out").out == cli("mtree", tree).out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tar", "-i", "x.caidx", "."], "-i requires a store"),
        (["tar", "--tar-add-root", "x.catar", "."], "only with --input-format tar"),
        (["tar", "x.catar", "-"], "needs --input-format tar"),
        (["tar", "--with=nonsense", "x.catar", "."], "unknown feature 'nonsense'"),
        (["untar", "-i", "x.caidx", "out"], "-i requires at least one store"),
        (["untar", "x.catar", "-"], "needs --output-format gnu-tar"),
        (["untar", "missing.catar", "out"], "missing.catar: no such file"),
        (["mtree", "-i", "-s", "store", "."], "-i can't be used with a directory"),
    ],
)
def test_usage_errors_are_one_line(cli, tmp_path, argv, message):
    result = cli(*argv, cwd=tmp_path)
    assert result.code == 1
    assert result.err.count("\n") == 1 and message in result.err, result.err


def test_the_archive_being_written_is_left_out_of_its_own_tree(cli, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_bytes(b"a" * 100_000)
    result = cli("tar", "x.catar", ".", cwd=tree)
    assert result.code == 0, result.err
    names = [n for n, _, _ in nodes((tree / "x.catar").read_bytes())]
    assert names == [".", "a"]


SIZE_CHANGES = [
    *[(0, b"x"), (5, b"more"), (3 << 20, b"m"), (5, b""), (3 << 20, b"")],  # grows, shrinks
    *[(0, None), (5, None), (3 << 20, None)],  # unchanged
]


@pytest.mark.parametrize(("size", "change"), SIZE_CHANGES)
def test_a_file_that_changes_size_while_being_read_is_an_error(tmp_path, size, change):
    """The payload reader asks one byte past the size: growth shows without a read of its
    own, and a short read ends the file."""
    from desync_decl.archive.disk_source import DiskOptions, disk_tree
    from desync_decl.errors import DesyncError
    from desync_decl.formats.catar.features import DESYNC_TAR

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"a" * size)
    ((_, node),) = disk_tree(tree, DiskOptions(DESYNC_TAR)).children()
    if change is None:
        assert b"".join(node.payload()) == b"a" * size
        return
    with open(tree / "f", "ab") as f:
        if change:
            f.write(change)
        else:
            f.truncate(size // 2)
    with pytest.raises(DesyncError, match="changed while archiving"):
        b"".join(node.payload())


RUN_SIZES = {"a": 5, "b": 100, "c": 3 << 20, "d": 0, "e": 2048}  # c: read in blocks


def _run_of(tree: Path):
    """The one encoded run of ``tree``'s plain files (the walk tar and tar -i use)."""
    from desync_decl.archive.disk_source import DiskOptions, disk_tree
    from desync_decl.formats.catar.encoder import EncodedRun

    ((_, run),) = disk_tree(tree, DiskOptions(DESYNC_TAR, encoded=True)).children()
    assert isinstance(run, EncodedRun)
    return run


def test_a_run_of_files_reads_as_its_heads_and_contents_in_order(tmp_path):
    """Small files gathered in one C call, a large one in blocks: the same bytes as the
    heads and the files one after another (what ``take`` hands tar's writer)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, size in RUN_SIZES.items():
        (tree / name).write_bytes(name.encode() * size)
    before = set(os.listdir("/proc/self/fd"))
    got = b"".join(_run_of(tree).pieces())
    heads, segments, _ = _run_of(tree).take()
    want, at = [], 0
    for fd, size in zip(segments[::2], segments[1::2], strict=True):
        if fd < 0:
            want.append(heads[at : at + size])
            at += size
        else:
            want.append(os.read(fd, size + 1))
            os.close(fd)
    assert got == b"".join(want)
    assert got.count(b"c" * (3 << 20)) == 1
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("victim", ["a", "b", "c", "e"])
@pytest.mark.parametrize("change", [b"more", b""])
def test_a_file_of_a_run_that_changes_size_is_an_error_naming_it(tmp_path, victim, change):
    """Gathered or in blocks, a file that grew or shrank since its size was taken is an
    error naming it, and every file of the run is closed."""
    from desync_decl.errors import DesyncError

    tree = tmp_path / "tree"
    tree.mkdir()
    for name, size in RUN_SIZES.items():
        (tree / name).write_bytes(name.encode() * size)
    before = set(os.listdir("/proc/self/fd"))
    run = _run_of(tree)
    with open(tree / victim, "ab") as f:
        if change:
            f.write(change)
        else:
            f.truncate(RUN_SIZES[victim] // 2)
    with pytest.raises(DesyncError, match=f"/{victim}: file changed while archiving"):
        b"".join(run.pieces())
    assert set(os.listdir("/proc/self/fd")) == before
