"""Ports of desync's archive_test.go and archive_escape_test.go: the node types and
names its decoder gives for flat.catar and nested.catar, and the names it refuses.

desync checks names in two helpers, ``safeComponent`` (one FILENAME) and ``confined``
(the path built from them); ours are the catar decoder's name checks, exercised here
through the decoder and through ``untar``, ``untar --output-format gnu-tar`` and
``mtree``, which all read archives through it (as desync's do through its
ArchiveDecoder). Our decoder builds a node's path as a tuple of checked components, so
no path is ever joined and cleaned: desync's ``confined`` cases are archives whose
names would build those paths, and each is refused at its first bad component.
"""

from __future__ import annotations

import io
import os
import stat

import pytest

from desync_decl.errors import FormatError
from desync_decl.formats.catar import Decoder, DirEnd, Entry
from desync_decl.formats.catar import records as r
from desync_decl.formats.catar.entry import encode as encode_entry
from desync_decl.formats.catar.features import DESYNC_TAR
from tests.cli_checks import refused
from tests.hostile_archives import MemNode, archive, evil_names, raw_archive


def nodes(data: bytes) -> list:
    """The archive's nodes (not the directory ends), payloads skipped."""
    return [ev for ev in Decoder(io.BytesIO(data)) if not isinstance(ev, DirEnd)]


def test_archive_decoder_types(lib_data):
    """TestArchiveDecoderTypes: flat.catar is a directory, a device, two files and a
    symlink, then the end."""
    events = list(Decoder(io.BytesIO((lib_data / "flat.catar").read_bytes())))
    kinds = [stat.S_IFMT(ev.entry.mode) for ev in events if not isinstance(ev, DirEnd)]
    assert kinds == [stat.S_IFDIR, stat.S_IFCHR, stat.S_IFREG, stat.S_IFREG, stat.S_IFLNK]
    assert isinstance(events[-1], DirEnd) and len(events) == 6


def test_archive_decoder_types_through_mtree(cli, lib_data):
    """The same through the command line: ``mtree flat.catar`` lists those types."""
    r = cli("mtree", lib_data / "flat.catar")
    assert r.code == 0, r.err
    lines = r.out.splitlines()[1:]  # after "#mtree v1.0"
    assert [line.split()[1] for line in lines] == [
        "type=dir", "type=char", "type=file", "type=file", "type=link",
    ]  # fmt: skip


def test_archive_decoder_nesting(lib_data):
    """TestArchiveDecoderNesting: nested.catar's directories and files in stream order,
    each owned by 500:500."""
    got = [
        (stat.S_IFMT(n.entry.mode), n.name, n.entry.uid, n.entry.gid)
        for n in nodes((lib_data / "nested.catar").read_bytes())
    ]
    d, f = stat.S_IFDIR, stat.S_IFREG
    assert got == [
        (d, ".", 500, 500),
        (d, "dir1", 500, 500),
        (d, "dir1/sub11", 500, 500),
        (f, "dir1/sub11/f11", 500, 500),
        (f, "dir1/sub11/f12", 500, 500),
        (d, "dir1/sub12", 500, 500),
        (d, "dir2", 500, 500),
        (d, "dir2/sub21", 500, 500),
        (d, "dir2/sub22", 500, 500),
    ]


# -- names ---------------------------------------------------------------------------------

VALID = [b"file", b"dir1", b"a.b", b"..foo", b"foo..", b"name with space"]
INVALID = [b"", b".", b"..", b"evil/passwd", b"a/b", b"/abs", b"a\\b", b"\\abs"]


def test_safe_component_valid_names_are_extracted(cli, tmp_path):
    """TestSafeComponent, the valid names: each extracts to a file of that name."""
    data = archive(MemNode.dir(children={n: MemNode.file(n) for n in VALID}))
    (tmp_path / "a.catar").write_bytes(data)
    assert cli("untar", tmp_path / "a.catar", tmp_path / "out").code == 0
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == sorted(VALID)
    assert all((tmp_path / "out" / os.fsdecode(n)).read_bytes() == n for n in VALID)


@pytest.mark.parametrize("name", INVALID, ids=repr)
def test_safe_component_invalid_names_are_refused(name):
    """TestSafeComponent, the invalid names: the decoder refuses each one (an
    ``InvalidFormat`` in desync, a FormatError here) after the root."""
    decoder = iter(Decoder(io.BytesIO(evil_names(name))))
    assert next(decoder).path == ()
    with pytest.raises(FormatError, match="invalid archive at byte 64: refusing"):
        next(decoder)


@pytest.mark.parametrize("name", INVALID, ids=repr)
@pytest.mark.parametrize("output", ["disk", "gnu-tar"])
def test_untar_refuses_invalid_names_and_writes_nothing(cli, tmp_path, name, output):
    """TestSafeComponent through ``untar``: one line, exit 1, nothing written (no
    file of the archive's on disk, no tar file)."""
    (tmp_path / "a.catar").write_bytes(evil_names(name))
    out = tmp_path / ("out" if output == "disk" else "out.tar")
    refused(cli("untar", "--output-format", output, tmp_path / "a.catar", out), "refusing")
    assert not out.exists() or (out.is_dir() and os.listdir(out) == [])
    assert sorted(os.listdir(tmp_path)) == ["a.catar", *(["out"] if out.exists() else [])]


@pytest.mark.parametrize("name", [b"a\\b", b"\\abs"], ids=repr)
def test_names_with_a_backslash_are_refused_like_desync(cli, tmp_path, name):
    """Fix: untar extracted ``a\\b``; desync refuses a name with a backslash (a path
    separator on Windows), and so do untar and mtree now, saying why."""
    (tmp_path / "a.catar").write_bytes(evil_names(name))
    for argv in (
        ["untar", tmp_path / "a.catar", tmp_path / "out"],
        ["mtree", tmp_path / "a.catar"],
    ):
        refused(cli(*argv), "refusing name", "backslash")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_backslash_names_are_still_archived(cli, tmp_path):
    """What desync's ``tar`` and casync archive, we archive too: only reading refuses."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a\\b").write_bytes(b"x")
    assert cli("tar", tmp_path / "a.catar", tmp_path / "src").code == 0
    assert b"a\\b\0" in (tmp_path / "a.catar").read_bytes()


def archive_reaching(path: str) -> bytes:
    """An archive whose names, joined, would give ``path``: a directory per component
    but the last, a file as the last (the names are not checked: raw_archive)."""
    parts = [p.encode() for p in path.split("/")]
    node = MemNode.file(b"pwned\n")
    for part in reversed(parts[1:]):
        node = MemNode.dir(children={part: node})
    return raw_archive(MemNode.dir(children={parts[0]: node}))


@pytest.mark.parametrize("path", ["..", "../x", "a/../..", "/abs", "/"])
def test_confined_paths_outside_are_refused(cli, tmp_path, path):
    """TestConfined, the paths outside the root: no archive reaches them."""
    (tmp_path / "a.catar").write_bytes(archive_reaching(path))
    refused(cli("untar", tmp_path / "a.catar", tmp_path / "out"), "refusing")
    assert sorted(os.listdir(tmp_path)) in (["a.catar"], ["a.catar", "out"])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("path", ["a", "a/b"])
def test_confined_paths_inside_are_extracted(cli, tmp_path, path):
    """TestConfined, the paths inside the root (``.`` is the root itself; desync's
    ``a/../b`` and ``./a`` have components its own safeComponent refuses first, as
    ours does)."""
    (tmp_path / "a.catar").write_bytes(archive_reaching(path))
    assert cli("untar", tmp_path / "a.catar", tmp_path / "out").code == 0
    assert (tmp_path / "out" / path).read_bytes() == b"pwned\n"


def test_archive_decoder_rejects_embedded_slash():
    """TestArchiveDecoderRejectsEmbeddedSlash: a root ENTRY (desync's tar flags, mode
    0755, time 0) then a FILENAME "evil/passwd": the root is read, then refused."""
    root = Entry(feature_flags=DESYNC_TAR, mode=stat.S_IFDIR | 0o755, mtime=0)
    data = encode_entry(root) + r.filename(b"evil/passwd")
    decoder = iter(Decoder(io.BytesIO(data)))
    first = next(decoder)
    assert first.path == () and stat.S_ISDIR(first.entry.mode)
    with pytest.raises(FormatError, match="contains '/'"):
        next(decoder)


def test_embedded_slash_through_a_planted_symlink_writes_nothing(cli, tmp_path):
    """The attack that test stops: a symlink ``evil`` to a directory outside, then
    ``evil/passwd``. Nothing outside is written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = MemNode.dir(children={b"evil": MemNode.symlink(os.fsencode(outside))})
    root.kids[b"evil/passwd"] = MemNode.file(b"pwned\n")
    (tmp_path / "a.catar").write_bytes(raw_archive(root))
    refused(cli("untar", tmp_path / "a.catar", tmp_path / "out"), "contains '/'")
    assert os.listdir(outside) == []
