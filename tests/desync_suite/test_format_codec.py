"""Ports of desync's format_test.go: decoding flat.catar and index.caibx, decoding and
encoding again byte for byte, and the GOODBYE table's search-tree layout.

desync's FormatDecoder yields one value per record; our catar decoder yields nodes
whose entries hold the optional records (USER, GROUP, SELINUX...) and whose kind says
which content record followed, so the record sequence desync checks is asserted node
by node. Our side of the fix for desync's tree.catar (a GOODBYE table in name order)
is here too: items in any order are read, every check casync makes of a table is kept.
"""

from __future__ import annotations

import io
import stat
import struct
import subprocess

import pytest

from desync_decl.errors import FormatError
from desync_decl.formats import flags as ff
from desync_decl.formats import index as idx
from desync_decl.formats.catar import Decoder, DirEnd, goodbye
from desync_decl.formats.catar import records as r
from tests.eytzinger import layout
from tests.hostile_archives import MemNode, archive, tree_of

_ITEM = struct.Struct("<3Q")


def decode_all(data: bytes) -> list:
    """Every event of the archive, payloads read."""
    decoder = Decoder(io.BytesIO(data))
    events = []
    for ev in decoder:
        events.append(ev)
        if not isinstance(ev, DirEnd) and stat.S_ISREG(ev.entry.mode):
            b"".join(decoder.payload())
    return events


def test_format_decoder(lib_data):
    """TestFormatDecoder: flat.catar is ENTRY USER GROUP SELINUX, then device (ENTRY
    SELINUX DEVICE), file1.txt (ENTRY USER GROUP SELINUX PAYLOAD), file2.txt (ENTRY
    GROUP SELINUX PAYLOAD), symlink (ENTRY USER GROUP SELINUX SYMLINK), GOODBYE, end."""
    events = decode_all((lib_data / "flat.catar").read_bytes())
    seen = [
        (
            ev.name,
            "USER" if ev.entry.user is not None else "",
            "GROUP" if ev.entry.group is not None else "",
            "SELINUX" if ev.entry.selinux is not None else "",
            stat.S_IFMT(ev.entry.mode),
        )
        for ev in events
        if not isinstance(ev, DirEnd)
    ]
    assert seen == [
        (".", "USER", "GROUP", "SELINUX", stat.S_IFDIR),
        ("device", "", "", "SELINUX", stat.S_IFCHR),
        ("file1.txt", "USER", "GROUP", "SELINUX", stat.S_IFREG),
        ("file2.txt", "", "GROUP", "SELINUX", stat.S_IFREG),
        ("symlink", "USER", "GROUP", "SELINUX", stat.S_IFLNK),
    ]
    assert isinstance(events[-1], DirEnd) and events[-1].path == ()  # the GOODBYE, then the end
    assert len(events) == len(seen) + 1


def test_index_decoder(lib_data):
    """TestIndexDecoder: index.caibx has flags SHA512-256 | exclude-nodump and these
    three chunks, in this order."""
    index = idx.decode((lib_data / "index.caibx").read_bytes())
    assert index.flags == ff.SHA512_256 | ff.EXCLUDE_NODUMP
    assert [c.id.hex() for c in index] == [
        "437884da2d1e61cf50b43b263ff15f25a870b0eae84bc22e4b5c307a0428764d",
        "985462e6b3293bbe61e43882686b481751ecf4b285bae4dffc2dfa8829f971ac",
        "fadff4b303624f2be3d0e04c2f105306118a9f608ef1e4f83c1babbd23a2315f",
    ]


@pytest.mark.parametrize("name", ["index.caibx", "nested.catar"])
def test_encoder(lib_data, name):
    """TestEncoder: decoded and encoded again, each file is what it was, byte for byte."""
    data = (lib_data / name).read_bytes()
    if name.endswith(".caibx"):
        assert idx.decode(data).encode() == data
    else:
        assert archive(tree_of(io.BytesIO(data))) == data


def test_goodbye_bst():
    """TestGoodbyeBST: 16 items sorted by hash laid out as a complete binary search tree
    in array form; slot k holds the sorted item desync's test expects there."""
    assert layout(16) == (8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0)


def test_goodbye_items_follow_that_layout_by_name_hash():
    """The same layout through the encoder: items sorted by their names' hashes."""
    names = [b"n%02d" % i for i in range(16)]
    root = MemNode.dir(children={n: MemNode.file(n) for n in names})
    table = archive(root)[-goodbye.size_for(16) + r.HEADER_SIZE :]
    hashes = [h for _, _, h in _ITEM.iter_unpack(table)][:-1]
    assert [sorted(hashes).index(h) for h in hashes] == list(layout(16))


# -- GOODBYE tables written in another order (desync's tree.catar) ------------------------


def root_goodbye(data: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """Where the root's GOODBYE starts and its items (the tail last)."""
    size = struct.unpack_from("<Q", data, len(data) - 16)[0]  # the tail item's size field
    at = len(data) - size
    return at, list(_ITEM.iter_unpack(data[at + r.HEADER_SIZE :]))


def with_root_items(data: bytes, items: list[tuple[int, int, int]]) -> bytes:
    at, _ = root_goodbye(data)
    return data[: at + r.HEADER_SIZE] + b"".join(_ITEM.pack(*i) for i in items)


def test_tree_catar_goodbye_is_in_name_order(cmd_data):
    """The fixture is what the fix is about: its root table lists the children in
    stream (name) order, first child first, instead of laid out by hash."""
    _, items = root_goodbye((cmd_data / "tree.catar").read_bytes())
    offsets = [i[0] for i in items[:-1]]  # counted back from the table: first child farthest
    assert offsets == sorted(offsets, reverse=True)
    hashes = sorted(i[2] for i in items[:-1])
    assert [hashes.index(i[2]) for i in items[:-1]] != list(layout(len(hashes)))


def test_goodbye_table_in_name_order_is_read(cmd_data):
    """Fix: tree.catar decodes to its end (before: "GOODBYE table does not match the
    directory's children" at byte 1503), giving what casync lists."""
    data = (cmd_data / "tree.catar").read_bytes()
    events = decode_all(data)
    assert isinstance(events[-1], DirEnd) and events[-1].path == ()
    names = [e.name for e in events if not isinstance(e, DirEnd)]
    assert names == [
        ".", "nested1", "nested1/nested2", "nested1/nested2/f", "subdir1", "subdir1/f1",
        "subdir2", "subdir2/f2", "subdir3", "subdir3/f3", "symlink-dir", "symlink-file",
    ]  # fmt: skip


def test_casync_reads_the_name_ordered_table_too(casync, cmd_data):
    listed = subprocess.run(
        [casync, "list", str(cmd_data / "tree.catar")], capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert [line.split(None, 1)[1] for line in listed.stdout.splitlines()] == [
        e.name for e in decode_all((cmd_data / "tree.catar").read_bytes())
        if not isinstance(e, DirEnd)
    ]  # fmt: skip


def test_we_write_casyncs_order(cmd_data, tmp_path):
    """Re-encoding tree.catar writes the search-tree order (what casync writes), the
    only bytes that change being the root table's items."""
    data = (cmd_data / "tree.catar").read_bytes()
    ours = archive(tree_of(io.BytesIO(data)))
    at, items = root_goodbye(ours)
    assert len(ours) == len(data) and ours[:at] == data[:at]
    hashes = sorted(i[2] for i in items[:-1])
    assert [hashes.index(i[2]) for i in items[:-1]] == list(layout(len(hashes)))


def test_goodbye_items_in_any_order_are_read(lib_data):
    """Any permutation of the items before the tail is read (nested.catar's root
    table reversed and rotated)."""
    data = (lib_data / "nested.catar").read_bytes()
    expected = [e.name for e in decode_all(data) if not isinstance(e, DirEnd)]
    _, items = root_goodbye(data)
    body, tail = items[:-1], items[-1:]
    for order in (body[::-1], body[1:] + body[:1]):
        assert order != body
        got = decode_all(with_root_items(data, order + tail))
        assert [e.name for e in got if not isinstance(e, DirEnd)] == expected


def _replace(items: list[tuple[int, int, int]], k: int, **change: int):
    """``items`` with item ``k`` (negative counts from the end) changed."""
    k %= len(items)
    offset, size, hash = items[k]
    new = {"offset": offset, "size": size, "hash": hash} | change
    return [*items[:k], (new["offset"], new["size"], new["hash"]), *items[k + 1 :]]


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        # the tail: what casync's validate_format_goodbye and its decoder check
        ("tail marker", lambda it: _replace(it, -1, hash=it[-1][2] ^ 1)),
        ("tail size", lambda it: _replace(it, -1, size=it[-1][1] + 24)),
        ("tail entry offset", lambda it: _replace(it, -1, offset=it[-1][0] - 1)),
        # the items: each must be a child's, as the encoder writes it (ours)
        ("an item's hash", lambda it: _replace(it, 0, hash=it[0][2] ^ 1)),
        ("an item's offset", lambda it: _replace(it, 0, offset=it[0][0] + 1)),
        ("an item's size", lambda it: _replace(it, 0, size=it[0][1] - 1)),
        ("a duplicate for another item", lambda it: [it[0], it[0], *it[2:]]),
        ("the tail not last", lambda it: [it[-1], *it[1:-1], it[0]]),
    ],
)
def test_every_other_goodbye_check_is_kept(lib_data, what, edit):
    data = (lib_data / "nested.catar").read_bytes()
    at, items = root_goodbye(data)
    with pytest.raises(FormatError, match=f"byte {at}: GOODBYE table does not match"):
        decode_all(with_root_items(data, edit(items)))


def test_a_goodbye_of_the_wrong_size_is_refused(lib_data):
    """casync refuses a table whose size is no whole number of items; we refuse any
    size other than the directory's children's."""
    data = (lib_data / "nested.catar").read_bytes()
    at, items = root_goodbye(data)
    short = data[:at] + r.HEADER.pack(r.HEADER_SIZE + 24 * (len(items) - 1), r.GOODBYE)
    short += b"".join(_ITEM.pack(*i) for i in items[1:])
    with pytest.raises(FormatError, match=f"byte {at}: GOODBYE of"):
        decode_all(short)
