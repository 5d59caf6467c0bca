"""Hostile archives cannot write outside the untar target.

Each case is a real archive built by tests/hostile_archives.py and extracted
with the real CLI; each must fail with one clear line, leave the outside
untouched and leave no file under a final name it did not finish.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest

from desync_decl.formats.catar import records as r
from tests import hostile_archives as h
from tests.cli_checks import refused


@pytest.fixture
def place(tmp_path):
    """tmp/outside (with a file that must survive) and tmp/target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    target = tmp_path / "target"
    return outside, target


def untouched(outside: Path) -> bool:
    return [p.name for p in outside.iterdir()] == ["passwd"] and (
        outside / "passwd"
    ).read_text() == "root:x:0:0\n"


def run_untar(cli, tmp_path: Path, data: bytes, target: Path, *extra: str):
    archive = tmp_path / f"a{len(list(tmp_path.glob('a*.catar')))}.catar"
    archive.write_bytes(data)
    return cli("untar", *extra, archive, target)


def leftovers(target: Path) -> list[str]:
    """Temporary files a failed run left behind (there must be none)."""
    return [p.name for p in target.rglob(".#untar.*")] if target.exists() else []


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (b"..", "name '..'"),
        (b".", "name '.'"),
        (b"", "empty name"),
        (b"/etc/passwd", "contains '/'"),
        (b"../outside/passwd", "contains '/'"),
        (b"a/b", "contains '/'"),
        (b"x\0y", "NUL"),
        (b"n" * 256, "too large"),
    ],
)
def test_names_that_are_not_one_component_are_refused(cli, tmp_path, place, name, why):
    outside, target = place
    refused(run_untar(cli, tmp_path, h.evil_names(name), target), why)
    assert untouched(outside)
    assert not target.exists() or list(target.iterdir()) == []


def test_dotdot_directory_with_a_file_is_refused(cli, tmp_path, place):
    outside, target = place
    evil = h.MemNode.dir(children={b"passwd": h.MemNode.file(b"pwned\n")})
    refused(run_untar(cli, tmp_path, h.evil_names(b"..", evil), target), "'..'")
    assert untouched(outside)


def test_symlink_planted_then_written_through_is_refused(cli, tmp_path, place):
    outside, target = place
    data = h.symlink_then_dir(b"evil", str(outside).encode())
    refused(run_untar(cli, tmp_path, data, target), "repeated or out of order")
    assert untouched(outside)


def test_symlink_then_name_through_it_is_refused(cli, tmp_path, place):
    outside, target = place
    root = h.dir_with(
        (b"evil", h.MemNode.symlink(str(outside).encode())),
        (b"evil/passwd", h.MemNode.file(b"pwned\n")),
    )
    refused(run_untar(cli, tmp_path, h.raw_archive(root), target), "contains '/'")
    assert untouched(outside)


def test_symlink_already_in_the_target_is_never_entered(cli, tmp_path, place):
    outside, target = place
    target.mkdir()
    (target / "evil").symlink_to(outside)
    refused(run_untar(cli, tmp_path, h.dir_with_file(b"evil"), target), "evil", "symlink")
    assert untouched(outside)


def test_a_file_replaces_a_symlink_in_the_target_instead_of_writing_through_it(
    cli, tmp_path, place
):
    outside, target = place
    target.mkdir()
    (target / "passwd").symlink_to(outside / "passwd")
    data = h.archive(h.MemNode.dir(children={b"passwd": h.MemNode.file(b"pwned\n")}))
    assert run_untar(cli, tmp_path, data, target).code == 0
    assert untouched(outside)
    assert not (target / "passwd").is_symlink()
    assert (target / "passwd").read_bytes() == b"pwned\n"


def test_cve_2025_45582_symlink_from_an_earlier_archive_is_not_followed(cli, tmp_path, place):
    """GNU tar's pattern: archive 1 plants x -> outside, archive 2 writes x/passwd."""
    outside, target = place
    first = h.symlink_only(b"x", str(outside).encode())
    assert run_untar(cli, tmp_path, first, target).code == 0
    assert os.readlink(target / "x") == str(outside)
    refused(run_untar(cli, tmp_path, h.dir_with_file(b"x"), target), "x", "symlink")
    assert untouched(outside)


def test_relative_symlink_escape_from_an_earlier_archive_is_not_followed(cli, tmp_path, place):
    outside, target = place
    assert run_untar(cli, tmp_path, h.symlink_only(b"up", b"../outside"), target).code == 0
    refused(run_untar(cli, tmp_path, h.dir_with_file(b"up"), target), "symlink")
    assert untouched(outside)


def test_hardlink_in_the_target_is_replaced_not_written_through(cli, tmp_path, place):
    outside, target = place
    target.mkdir()
    os.link(outside / "passwd", target / "passwd")
    data = h.archive(h.MemNode.dir(children={b"passwd": h.MemNode.file(b"pwned\n")}))
    assert run_untar(cli, tmp_path, data, target).code == 0
    assert untouched(outside)
    assert (target / "passwd").read_bytes() == b"pwned\n"
    assert os.stat(target / "passwd").st_nlink == 1


def test_device_nodes_are_refused_when_not_root(cli):
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        target = Path(top) / "target"
        target.mkdir()
        os.chown(target, 65534, 65534)
        os.seteuid(65534)  # the archive comes on stdin: nobody cannot read pytest's tmp dirs
        try:
            result = cli("untar", "-", target, stdin=h.device_archive())
        finally:
            os.seteuid(0)
        refused(result, "device node", "null", "needs root")
        assert list(target.iterdir()) == []


def test_device_nodes_are_made_as_root(cli, tmp_path):
    target = tmp_path / "target"
    assert run_untar(cli, tmp_path, h.device_archive(0x0103), target).code == 0
    st = os.stat(target / "null", follow_symlinks=False)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


def test_truncated_archive_leaves_no_half_written_file(cli, tmp_path):
    target = tmp_path / "target"
    big = h.archive(h.MemNode.dir(children={b"big": h.MemNode.file(os.urandom(300_000))}))
    refused(run_untar(cli, tmp_path, h.truncated(big, 200_000), target), "truncated")
    assert not (target / "big").exists()
    assert leftovers(target) == []


def test_a_failure_in_a_later_file_keeps_earlier_files_complete(cli, tmp_path):
    target = tmp_path / "target"
    files = {b"a": h.MemNode.file(b"a" * 1000), b"b": h.MemNode.file(os.urandom(100_000))}
    data = h.archive(h.MemNode.dir(children=files))
    refused(run_untar(cli, tmp_path, h.truncated(data, len(data) - 60_000), target))
    assert (target / "a").read_bytes() == b"a" * 1000
    assert not (target / "b").exists()
    assert leftovers(target) == []


def test_bad_goodbye_table_is_refused(cli, tmp_path):
    target = tmp_path / "target"
    data = h.archive(h.MemNode.dir(children={b"f": h.MemNode.file(b"x")}))
    refused(run_untar(cli, tmp_path, h.with_bad_goodbye(data), target), "GOODBYE")


@pytest.mark.parametrize("typ", [r.XATTR, r.FILENAME, r.SYMLINK, r.USER])
def test_huge_record_sizes_are_refused_before_reading(cli, tmp_path, typ):
    target = tmp_path / "target"
    refused(run_untar(cli, tmp_path, h.huge_record(typ), target), "invalid archive")


def test_trailing_data_is_refused(cli, tmp_path):
    target = tmp_path / "target"
    data = h.archive(h.MemNode.dir())
    refused(run_untar(cli, tmp_path, data + b"\0" * 16, target), "after the end")


def test_a_directory_in_the_way_of_a_file_is_an_error(cli, tmp_path):
    target = tmp_path / "target"
    (target / "f").mkdir(parents=True)
    (target / "f" / "keep").write_text("keep")
    data = h.archive(h.MemNode.dir(children={b"f": h.MemNode.file(b"x")}))
    refused(run_untar(cli, tmp_path, data, target), "directory is in the way")
    assert (target / "f" / "keep").read_text() == "keep"
    assert leftovers(target) == []


# -- tar streams as input: the same rules -------------------------------------------


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        root = tarfile.TarInfo("./")
        root.type = tarfile.DIRTYPE
        tf.addfile(root)
        for info, data in members:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([(member("../evil"), b"x")], "'..'"),
        ([(member("/etc/evil"), b"x")], "absolute"),
        ([(member("a/../../evil"), b"x")], "'..'"),
        ([(member("hl", tarfile.LNKTYPE, "/etc/passwd"), b"")], "absolute"),
        ([(member("hl", tarfile.LNKTYPE, "../outside/passwd"), b"")], "'..'"),
        ([(member("hl", tarfile.LNKTYPE, "missing"), b"")], "not an earlier regular file"),
        (
            [(member("s", tarfile.SYMTYPE, "/tmp"), b""), (member("h", tarfile.LNKTYPE, "s"), b"")],
            "not an earlier regular file",
        ),
        (
            [(member("x", tarfile.SYMTYPE, "/tmp"), b""), (member("x/passwd"), b"pwned")],
            "not a directory",
        ),
    ],
    ids=[
        "dotdot",
        "absolute",
        "dotdot-inside",
        "hardlink-abs",
        "hardlink-up",
        "hardlink-missing",
        "hardlink-to-symlink",
        "cve-2025-45582",
    ],
)
def test_hostile_tar_input_is_refused(cli, tmp_path, members, why):
    src = tmp_path / "in.tar"
    src.write_bytes(tar_bytes(*members))
    result = cli("tar", "--input-format", "tar", tmp_path / "out.catar", src)
    refused(result, why)
    assert not (tmp_path / "out.catar").exists()
