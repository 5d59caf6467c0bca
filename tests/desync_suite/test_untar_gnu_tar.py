"""Ports of desync's tarfs_test.go: ``untar --output-format gnu-tar`` against desync's
own ``complex.gnu-tar``, and extended attributes as ``SCHILY.xattr.*`` PAX records,
written and read back.

desync's TestGnuTarWrite compares bytes. Ours are desync's but for the mode field of
the headers of directories and symlinks (and the checksum that covers it): desync
writes Go's ``os.FileMode`` there, Go's own type bits included, in base-256
(``0x800001fd`` for a 0775 directory); GNU tar masks it, other readers take it as the
mode. We write the permission bits in octal, as GNU tar does, and GNU tar lists both
archives alike. desync's TestTarXattrHelpers and TestTarXattrsRoundTrip check Go
helpers (xattrs to PAX records and back); the same properties are checked here on
what ``untar`` writes and what ``tar --input-format tar`` reads.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from desync_decl.formats.catar import Decoder, DirEnd
from desync_decl.formats.catar.features import WITH_USER_NAMES
from tests.hostile_archives import MTIME, MemNode, archive

BLOCK = 512
MODE, CHECKSUM = slice(100, 108), slice(148, 156)


def headers(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, block) of every header of a tar stream, up to its end blocks."""
    out, pos = [], 0
    while pos < len(data) and data[pos : pos + BLOCK] != bytes(BLOCK):
        block = data[pos : pos + BLOCK]
        out.append((pos, block))
        size_field = block[124:136]
        size = int(size_field.rstrip(b"\0 ") or b"0", 8) if size_field[0] < 0x80 else 0
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return out


def gnu_tar_of(cli, catar: Path, out: Path) -> bytes:
    r = cli("untar", "--output-format", "gnu-tar", catar, out)
    assert (r.code, r.err) == (0, ""), r
    return out.read_bytes()


def listing(tar: Path, *extra: str) -> list[str]:
    """GNU tar's verbose listing of ``tar`` (numeric owners: names differ by machine)."""
    r = subprocess.run(
        ["tar", "--numeric-owner", *extra, "-tvf", str(tar)],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    )
    assert (r.returncode, r.stderr) == (0, ""), r
    return r.stdout.splitlines()


def test_gnu_tar_write(cli, lib_data, tmp_path):
    """TestGnuTarWrite: complex.catar as GNU tar is desync's complex.gnu-tar, byte for
    byte, but for the mode fields desync fills with Go's type bits (see above)."""
    ours = gnu_tar_of(cli, lib_data / "complex.catar", tmp_path / "x.tar")
    theirs = (lib_data / "complex.gnu-tar").read_bytes()
    assert len(ours) == len(theirs) == 11264
    blank = bytearray(ours), bytearray(theirs)
    for data, out in zip((ours, theirs), blank, strict=True):
        for at, _ in headers(data):
            out[at + MODE.start : at + MODE.stop] = bytes(8)
            out[at + CHECKSUM.start : at + CHECKSUM.stop] = bytes(8)
    assert blank[0] == blank[1]
    modes = [(block[MODE], theirs[at + MODE.start : at + MODE.stop]) for at, block in headers(ours)]
    for mine, go in modes:
        go_mode = int.from_bytes(go[1:], "big") if go[0] & 0x80 else int(go.rstrip(b"\0"), 8)
        assert mine == b"%07o\0" % (go_mode & 0o7777)


def test_gnu_tar_write_lists_as_desyncs_does(cli, lib_data, tmp_path):
    """GNU tar lists our complex.gnu-tar exactly as it lists desync's."""
    gnu_tar_of(cli, lib_data / "complex.catar", tmp_path / "x.tar")
    assert listing(tmp_path / "x.tar") == listing(lib_data / "complex.gnu-tar")


def test_gnu_tar_output_is_gnu_format(cli, lib_data, tmp_path):
    """Fix: the output was PAX (a PAX header before every member, names ``./a``,
    padded to 10 KiB records: 30,720 bytes for complex.catar against desync's
    11,264). Now every header is GNU, no PAX header where no field needs one."""
    data = gnu_tar_of(cli, lib_data / "complex.catar", tmp_path / "x.tar")
    blocks = [block for _, block in headers(data)]
    assert len(blocks) == 14
    assert {block[257:265] for block in blocks} == {b"ustar  \0"}
    assert not {block[156:157] for block in blocks} & {b"x", b"g"}
    names = [block[:100].rstrip(b"\0") for block in blocks]
    assert names[:3] == [b".", b"char.blk", b"char.dev"]
    assert not any(n.startswith(b"./") or n.endswith(b"/") for n in names)
    assert data[-2 * BLOCK :] == bytes(2 * BLOCK) and len(data) == 11264


def long_tree() -> MemNode:
    """Names and a link target longer than a header's 100-byte fields."""
    deep = MemNode.dir(children={b"f" * 120: MemNode.file(b"long\n")})
    return MemNode.dir(
        children={
            b"d" * 60: MemNode.dir(children={b"e" * 60: deep}),
            b"link": MemNode.symlink(b"t/" * 80 + b"end"),
            b"short": MemNode.file(b"short\n"),
        }
    )


def test_long_names_go_in_gnu_long_link_entries(cli, tmp_path):
    """GNU tar's format for long names: a ``././@LongLink`` entry of type L (name) or
    K (link target) before the member's header, no PAX header; GNU tar and Python's
    tarfile read the whole names back."""
    (tmp_path / "a.catar").write_bytes(archive(long_tree()))
    data = gnu_tar_of(cli, tmp_path / "a.catar", tmp_path / "x.tar")
    types = [(block[156:157], block[:100].rstrip(b"\0")) for _, block in headers(data)]
    long_name = b"/".join([b"d" * 60, b"e" * 60, b"f" * 120])
    assert types == [
        (b"5", b"."),
        (b"5", b"d" * 60),
        (b"L", b"././@LongLink"),
        (b"5", (b"d" * 60 + b"/" + b"e" * 60)[:100]),
        (b"L", b"././@LongLink"),
        (b"0", long_name[:100].rstrip(b"/")),
        (b"K", b"././@LongLink"),
        (b"2", b"link"),
        (b"0", b"short"),
    ]
    with tarfile.open(tmp_path / "x.tar") as tf:
        members = {m.name: m for m in tf}
    assert members[long_name.decode()].size == 5
    assert members["link"].linkname == "t/" * 80 + "end"


def test_listing_is_gnu_tars_own(cli, tmp_path):
    """The same tree archived by GNU tar itself (``--format=gnu``) lists the same, but
    for GNU tar's ``./`` before each name and ``/`` after each directory's."""
    (tmp_path / "a.catar").write_bytes(archive(long_tree()))
    gnu_tar_of(cli, tmp_path / "a.catar", tmp_path / "x.tar")
    assert cli("untar", tmp_path / "a.catar", tmp_path / "tree").code == 0
    subprocess.run(
        ["tar", "--format=gnu", "-C", tmp_path / "tree", "-cf", tmp_path / "gnu.tar", "."],
        check=True,
    )
    mine = listing(tmp_path / "x.tar")
    theirs = [line.replace(" ./", " ", 1).rstrip("/") for line in listing(tmp_path / "gnu.tar")]
    theirs[0] = theirs[0].rstrip() + " ."  # GNU tar names the root "./"
    assert sorted(mine) == sorted(theirs)


def xattr_node(kind: str, xattrs: dict[bytes, bytes]) -> MemNode:
    node = {
        "dev": lambda: MemNode.device(os.makedev(1, 3)),
        "dir": MemNode.dir,
        "file": lambda: MemNode.file(b"x"),
        "symlink": lambda: MemNode.symlink(b"x"),
    }[kind]()
    node.entry.xattrs = tuple(sorted(xattrs.items()))
    return node


XATTRS = {b"user.comment": b"hello", b"user.tag": b"v1"}


@pytest.mark.parametrize("kind", ["dev", "dir", "file"])
def test_tar_xattrs_round_trip(cli, tmp_path, kind):
    """TestTarXattrsRoundTrip (desync's is on devices: its other headers cannot carry
    xattrs): a node with xattrs gets a PAX header of ``SCHILY.xattr.NAME`` records, a
    node without gets none, and ``tar --input-format tar`` reads the same xattrs back
    (and none for the other)."""
    root = MemNode.dir(children={b"n0": xattr_node(kind, XATTRS), b"n1": xattr_node(kind, {})})
    (tmp_path / "a.catar").write_bytes(archive(root))
    data = gnu_tar_of(cli, tmp_path / "a.catar", tmp_path / "x.tar")
    typ = {"dev": b"3", "dir": b"5", "file": b"0", "symlink": b"2"}[kind]
    assert [block[156:157] for _, block in headers(data)] == [b"5", b"x", typ, typ]
    with tarfile.open(tmp_path / "x.tar") as tf:
        pax = {m.name: m.pax_headers for m in tf}
    assert pax["n0"] == {"SCHILY.xattr." + k.decode(): v.decode() for k, v in XATTRS.items()}
    assert pax["n1"] == {}
    assert cli("tar", "--input-format", "tar", tmp_path / "b.catar", tmp_path / "x.tar").code == 0
    back = {
        ev.name: dict(ev.entry.xattrs)
        for ev in Decoder(open(tmp_path / "b.catar", "rb"))  # noqa: SIM115 - read whole
        if not isinstance(ev, DirEnd)
    }
    assert back["n0"] == XATTRS and back["n1"] == {}


def test_tar_xattr_records_other_pax_records_ignored(cli, tmp_path):
    """TestTarXattrHelpers, reading: only ``SCHILY.xattr.*`` records become xattrs
    (``mtime`` and ``path`` records are a member's time and name, no xattr); a member
    without such records has none."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, pax in (
            ("some", {}),
            (
                "some/file",
                {"SCHILY.xattr.user.comment": "hello", "mtime": "12345", "path": "some/file"},
            ),
            ("some/plain", {}),
        ):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if name == "some" else tarfile.REGTYPE
            info.mode = 0o755 if name == "some" else 0o644
            info.pax_headers = pax
            tf.addfile(info, io.BytesIO(b""))
    (tmp_path / "in.tar").write_bytes(buf.getvalue())
    r = cli(
        "tar", "--input-format", "tar", "--tar-add-root", tmp_path / "a.catar", tmp_path / "in.tar"
    )
    assert r.code == 0, r.err
    nodes = {
        ev.name: ev.entry
        for ev in Decoder(open(tmp_path / "a.catar", "rb"))  # noqa: SIM115 - read whole
        if not isinstance(ev, DirEnd)
    }
    assert dict(nodes["some/file"].xattrs) == {b"user.comment": b"hello"}
    assert nodes["some/file"].mtime == 12345 * 10**9
    assert nodes["some/plain"].xattrs == () and nodes["some"].xattrs == ()


def test_owner_names_too_long_for_gnu_go_in_pax(cli, tmp_path):
    """A user name longer than GNU's 32-byte field is a PAX ``uname`` record (GNU
    cannot carry it); a short one stays in the GNU header."""
    long_user = b"u" * 40
    root = MemNode.dir(
        children={
            b"a": MemNode.file(b"", uid=1000, gid=1000, user=long_user, group=b"g"),
            b"b": MemNode.file(b"", uid=1000, gid=1000, user=b"short", group=b"g"),
        }
    )
    for node in (root, *root.kids.values()):
        node.entry.feature_flags |= WITH_USER_NAMES
    (tmp_path / "a.catar").write_bytes(archive(root))
    data = gnu_tar_of(cli, tmp_path / "a.catar", tmp_path / "x.tar")
    types = [block[156:157] for _, block in headers(data)]
    assert types == [b"5", b"x", b"0", b"0"]
    with tarfile.open(tmp_path / "x.tar") as tf:
        users = {m.name: m.uname for m in tf}
    assert users == {".": "", "a": long_user.decode(), "b": "short"}


def test_sub_second_times_are_whole_seconds(cli, tmp_path):
    """GNU's header holds whole seconds: a node's time is cut to the second (desync
    and GNU tar in its gnu format do the same), without a PAX header for the rest."""
    (tmp_path / "a.catar").write_bytes(archive(MemNode.dir(children={b"f": MemNode.file(b"")})))
    data = gnu_tar_of(cli, tmp_path / "a.catar", tmp_path / "x.tar")
    blocks = [block for _, block in headers(data)]
    assert MTIME % 10**9
    assert [int(b[136:148].rstrip(b"\0"), 8) for b in blocks] == [MTIME // 10**9] * 2
