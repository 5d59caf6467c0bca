"""Ports of desync's mtreefs_test.go: how ``mtree`` writes names, and that a name
cannot add keywords to its line.

desync's TestMtreeFilename checks its escaping helper; ours (``archive.mtree.escape``)
is checked with the same cases, and the listing of a directory holding such names
with the command. A backslash is one of desync's cases: its helper escapes it, but
its ``mtree`` command (like ours, test_archive_decoder.py) refuses a name holding one
before any line is written.
"""

from __future__ import annotations

import os

import pytest

from desync_decl.archive.mtree import escape

CASES = [
    (b"abc", "abc"),
    (b"name with space", r"name\040with\040space"),
    (b"a\\b", r"a\134b"),
    (b"a#b", r"a\043b"),
    (b"a\tb", r"a\011b"),
    (b"a\nb", r"a\012b"),
    (b"a\x7fb", r"a\177b"),
    ("é".encode(), r"\303\251"),  # UTF-8 bytes, each above 126
]


@pytest.mark.parametrize(("name", "shown"), CASES, ids=[c[1] for c in CASES])
def test_mtree_filename(name, shown):
    """TestMtreeFilename: each byte outside printable ASCII, and ``\\``, ``#`` and the
    space, as a backslash and three octal digits."""
    assert escape(name) == shown


def test_mtree_filenames_in_a_listing(cli, tmp_path):
    """The same names (but the backslash) listed from a directory by ``mtree``."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, _ in CASES:
        if b"\\" not in name:
            (tree / os.fsdecode(name)).write_bytes(b"")
    result = cli("mtree", tree)
    assert result.code == 0, result.err
    listed = [line.split(" ")[0] for line in result.out.splitlines()[2:]]  # after "." too
    assert sorted(listed) == sorted(shown for name, shown in CASES if b"\\" not in name)


def test_mtree_fs_no_keyword_injection(cli, tmp_path):
    """TestMtreeFSNoKeywordInjection: a directory ``usr ignore`` is one field,
    ``usr\\040ignore``; ``ignore`` (a keyword that would stop mtree(8) checking the
    subtree) is not a field of its line."""
    (tmp_path / "tree" / "usr ignore").mkdir(parents=True)
    result = cli("mtree", tmp_path / "tree")
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if line and not line.startswith("#")]
    fields = next(line for line in lines if line.startswith("usr")).split(" ")
    assert fields[0] == r"usr\040ignore"
    assert "ignore" not in fields[1:]
    assert all("=" in f for f in fields[1:])


def test_mtree_of_a_directory_with_a_backslash_name_is_refused(cli, tmp_path):
    """desync's ``mtree DIR`` encodes the directory and decodes it again, so its reader
    refuses ``a\\b`` there too; ours does the same, in one line (after the lines of
    the nodes before it, as desync's listing streams too)."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a\\b").write_bytes(b"")
    result = cli("mtree", tmp_path / "tree")
    assert result.code == 1 and "a\\134b" not in result.out
    assert len(result.err.splitlines()) == 1 and "backslash" in result.err
