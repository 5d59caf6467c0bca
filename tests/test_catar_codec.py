"""The catar encoder and decoder on their own: round trips of random trees,
GOODBYE layout, metadata records, and every malformed stream the decoder refuses."""

from __future__ import annotations

import io
import re
import stat
import struct
from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl import goodbye_table
from desync_decl.errors import FormatError
from desync_decl.formats.catar import (
    Acl,
    AclEntry,
    Decoder,
    DefaultAcl,
    DirEnd,
    EncodeError,
    goodbye,
)
from desync_decl.formats.catar import records as r
from desync_decl.formats.catar.entry import encode as encode_entry
from desync_decl.formats.catar.features import (
    CASYNC_DEFAULT,
    DESYNC_TAR,
    archive_flags,
    entry_mode,
    entry_mtime,
    parse_features,
)
from desync_decl.formats.flags import WITH_MASK
from tests.eytzinger import layout
from tests.hostile_archives import MemNode, archive, tree_of


def decode_all(data: bytes) -> list:
    return list(Decoder(io.BytesIO(data)))


def test_goodbye_layout_is_the_specs_binary_search_tree():
    assert layout(5) == (3, 1, 4, 0, 2)
    assert layout(0) == ()
    assert layout(1) == (0,)
    for n in range(1, 200):
        slots = layout(n)
        assert sorted(slots) == list(range(n))
        for k, v in enumerate(slots):  # a search tree: left smaller, right larger
            if 2 * k + 1 < n:
                assert slots[2 * k + 1] < v
            if 2 * k + 2 < n:
                assert slots[2 * k + 2] > v


@settings(max_examples=200, deadline=None)
@given(
    hashes=st.lists(
        st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 7, 2**64 - 1])), max_size=300
    ),
    gap=st.integers(1, 1 << 40),
)
def test_the_c_goodbye_items_are_the_reference_layout(hashes, gap):
    """Items sorted by (hash, position) into the search-tree slots, equal hashes in
    archive order, whatever the count: ``ext/goodbye.c`` against the Python layout."""
    n = len(hashes)
    starts = [i * gap for i in range(n)]
    ends = [s + gap - 1 for s in starts]
    at = n * gap
    order = sorted(range(n), key=lambda i: (hashes[i], i))
    expected = [
        (at - starts[i], ends[i] - starts[i], hashes[i]) for i in (order[k] for k in layout(n))
    ]
    got = goodbye_table.items(array("Q", hashes), array("Q", starts), array("Q", ends), at)
    assert [tuple(got[3 * k : 3 * k + 3]) for k in range(n)] == expected
    assert goodbye_table.sorted_items(memoryview(got).cast("B")).tolist() == [
        v for item in sorted(expected) for v in item
    ]


def test_a_directory_of_many_children_round_trips_in_casyncs_order():
    """Past the sizes the property above draws: 5000 children (two hash batches)."""
    root = MemNode.dir(children={b"f%05d" % i: MemNode.file(b"") for i in range(5000)})
    data = archive(root)
    table = data[-goodbye.size_for(5000) + r.HEADER_SIZE : -goodbye.ITEM_SIZE]
    hashes = [h for _, _, h in struct.iter_unpack("<3Q", table)]
    ranks = {h: i for i, h in enumerate(sorted(hashes))}
    assert [ranks[h] for h in hashes] == list(layout(5000))
    assert len(decode_all(data)) == 5000 + 2  # the root, its children, its end


def test_a_table_larger_than_a_compared_piece_is_read_in_any_order_and_checked_to_its_end():
    """60,000 children: a 1.4 MB table, compared piece by piece. In casync's order it
    is read; reversed (an older desync's order) too; one item changed past the first
    piece is refused."""
    n = 60_000
    data = archive(MemNode.dir(children={b"%06d" % i: MemNode.file(b"") for i in range(n)}))
    assert len(decode_all(data)) == n + 2
    table_at = len(data) - goodbye.size_for(n) + r.HEADER_SIZE
    items = list(struct.iter_unpack("<3Q", data[table_at:]))
    reversed_order = data[:table_at] + b"".join(struct.pack("<3Q", *i) for i in items[-2::-1])
    assert len(decode_all(reversed_order + data[-goodbye.ITEM_SIZE :])) == n + 2
    off, size, h = items[n - 10]
    changed = bytearray(data)
    struct.pack_into("<3Q", changed, table_at + (n - 10) * goodbye.ITEM_SIZE, off, size, h ^ 1)
    with pytest.raises(FormatError, match="GOODBYE table does not match"):
        decode_all(bytes(changed))


def test_empty_directory_has_a_40_byte_goodbye():
    data = archive(MemNode.dir())
    assert len(data) == 64 + 40
    size, typ, off, gsize, marker = struct.unpack_from("<5Q", data, 64)
    assert (size, typ, off, gsize, marker) == (40, r.GOODBYE, 64, 40, r.GOODBYE_TAIL_MARKER)


names = st.binary(min_size=1, max_size=20).filter(lambda n: r.read_name_problem(n) is None)


@st.composite
def trees(draw, depth: int = 0) -> MemNode:
    kids = {}
    for name in draw(st.lists(names, max_size=6 if depth < 3 else 0, unique=True)):
        kind = draw(st.sampled_from(["file", "dir", "link", "dev", "fifo"]))
        if kind == "dir":
            kids[name] = draw(trees(depth + 1))
        elif kind == "file":
            kids[name] = MemNode.file(
                draw(st.binary(max_size=300)), mode=draw(st.integers(0, 0o7777))
            )
        elif kind == "link":
            kids[name] = MemNode.symlink(
                draw(st.binary(min_size=1, max_size=30).filter(lambda t: b"\0" not in t))
            )
        elif kind == "dev":
            kids[name] = MemNode.device(draw(st.integers(0, 2**20)))
        else:
            node = MemNode.file(b"")
            node.entry.mode = stat.S_IFIFO | 0o600
            kids[name] = node
    return MemNode.dir(children=kids)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_random_trees_round_trip_byte_for_byte(tree):
    data = archive(tree)
    assert archive(tree_of(io.BytesIO(data))) == data
    events = decode_all(data)
    assert sum(isinstance(e, DirEnd) for e in events) == sum(
        stat.S_ISDIR(e.entry.mode) for e in events if not isinstance(e, DirEnd)
    )


def test_metadata_records_round_trip():
    entry = MemNode.file(b"x", uid=1000, gid=1000).entry
    entry.feature_flags = CASYNC_DEFAULT
    entry.user, entry.group = b"user", b"group"
    entry.xattrs = ((b"trusted.a", b"1"), (b"user.b", b""))
    entry.acl = Acl(
        users=(AclEntry(7, 4, b"seven"), AclEntry(9, 6)),
        groups=(AclEntry(8, 2),),
        group_obj=5,
        default=DefaultAcl(7, 5, 1),
        default_users=(AclEntry(1, 1),),
        default_groups=(AclEntry(2, 2, b"two"),),
    )
    entry.selinux, entry.fcaps, entry.quota_projid = b"label", b"\x01\x02", 42
    root = MemNode.dir()
    root.entry.feature_flags = CASYNC_DEFAULT
    root.kids[b"f"] = MemNode(entry, data=b"x")
    data = archive(root)
    decoded = tree_of(io.BytesIO(data)).kids[b"f"].entry
    assert decoded == entry


def test_encoder_refuses_bad_names_and_order():
    class Unsorted(MemNode):
        def children(self):
            yield b"b", MemNode.file(b"")
            yield b"a", MemNode.file(b"")

    with pytest.raises(EncodeError, match="ascending order"):
        archive(Unsorted(MemNode.dir().entry))
    with pytest.raises(EncodeError, match="contains '/'"):
        archive(MemNode.dir(children={b"a/b": MemNode.file(b"")}))
    with pytest.raises(EncodeError, match=re.escape("name '..'")):
        archive(MemNode.dir(children={b"..": MemNode.file(b"")}))


def test_encoder_refuses_a_payload_of_the_wrong_length():
    class Liar(MemNode):
        @property
        def size(self) -> int:
            return 5

    with pytest.raises(EncodeError, match="changed size"):
        archive(MemNode.dir(children={b"f": Liar(MemNode.file(b"").entry, data=b"123456")}))
    with pytest.raises(EncodeError, match="changed size"):
        archive(MemNode.dir(children={b"f": Liar(MemNode.file(b"").entry, data=b"1")}))


def _entry_bytes(mode: int, flags: int = DESYNC_TAR) -> bytes:
    e = MemNode.file(b"").entry
    e.mode, e.feature_flags = mode, flags
    return encode_entry(e)


def _with_root(*records: bytes) -> bytes:
    return _entry_bytes(stat.S_IFDIR | 0o755) + b"".join(records)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (r.record(r.FILENAME, b"x\0"), "no ENTRY"),
        (r.HEADER.pack(8, r.ENTRY), "smaller than its header"),
        (r.record(r.ENTRY, bytes(40)), "must be 64"),
        (_entry_bytes(stat.S_IFDIR, flags=WITH_MASK), "not normalized"),
        (_entry_bytes(stat.S_IFDIR, flags=1 << 40), "unsupported feature flags"),
        (_entry_bytes(0o170000), "node type"),
        (_entry_bytes(stat.S_IFCHR, flags=0xB000000000000320), "node type"),
        (_with_root(r.record(r.PAYLOAD, b"")), "where a file name or GOODBYE belongs"),
        (_with_root(r.record(r.GROUP, b"g\0"), r.record(r.USER, b"u\0")), "out of order"),
        (_with_root(r.record(r.USER, b"u")), "NUL-terminated"),
        (_with_root(r.record(r.XATTR, b"user.b\0"), r.record(r.XATTR, b"user.a\0")), "ascending"),
        (_with_root(r.record(r.XATTR, b"\0value")), "without a name"),
        (_with_root(r.record(r.ACL_GROUP_OBJ, b"1234")), "wrong size"),
        (_with_root(r.record(0x1234, b"")), "0x1234"),
        (_with_root(r.record(r.GOODBYE, bytes(100))), "GOODBYE of 116 bytes for 0 children"),
        (_with_root(r.filename(b"f"), r.filename(b"g")), "not followed by an ENTRY"),
        (_with_root(r.record(r.FILENAME, b"f")), "not NUL-terminated"),
    ],
)
def test_decoder_refuses_malformed_streams(data, message):
    with pytest.raises(FormatError, match=message):
        decode_all(data)


def test_decoder_refuses_wrong_content_records():
    for mode, content, message in [
        (stat.S_IFREG | 0o644, r.symlink(b"x"), "where PAYLOAD belongs"),
        (stat.S_IFLNK | 0o777, r.payload_header(0), "where SYMLINK belongs"),
        (stat.S_IFLNK | 0o777, r.record(r.SYMLINK, b"\0"), "non-empty"),
        (stat.S_IFCHR | 0o600, r.record(r.DEVICE, bytes(8)), "must be 32"),
    ]:
        data = _with_root(r.filename(b"f"), _entry_bytes(mode), content)
        with pytest.raises(FormatError, match=message):
            decode_all(data)


def test_decoder_refuses_entry_flags_the_feature_flags_do_not_store():
    e = MemNode.file(b"").entry
    e.mode, e.flags = stat.S_IFDIR | 0o755, 0x400000  # immutable, but DESYNC_TAR has no chattr
    with pytest.raises(FormatError, match="ENTRY flags 0x400000 not allowed"):
        decode_all(encode_entry(e) + goodbye.encode(goodbye.Children(), 64, 0))


def test_decoder_refuses_changing_feature_flags():
    data = _with_root(r.filename(b"f"), _entry_bytes(stat.S_IFREG, CASYNC_DEFAULT))
    with pytest.raises(FormatError, match="differ from the archive's first ENTRY"):
        decode_all(data)


def test_decoder_skips_unread_payloads_and_reports_offsets():
    data = archive(
        MemNode.dir(children={b"a": MemNode.file(b"1" * 5000), b"b": MemNode.file(b"2")})
    )
    paths = [e.path for e in Decoder(io.BytesIO(data))]
    assert paths == [(), (b"a",), (b"b",), ()]
    with pytest.raises(FormatError, match=r"at byte \d+: archive truncated inside a payload"):
        d = Decoder(io.BytesIO(data[:3000]), "x.catar")
        for _ in d:
            b"".join(d.payload())


def test_deep_nesting_is_limited():
    level = _entry_bytes(stat.S_IFDIR | 0o755)
    data = level + (r.filename(b"d") + level) * 1100  # the decoder stops before any GOODBYE
    with pytest.raises(FormatError, match="nested deeper than 1024"):
        decode_all(data)


@pytest.mark.parametrize(
    ("withs", "withouts", "flags"),
    [
        ([], [], CASYNC_DEFAULT),
        (["best"], [], 0xB0000001FFEFFE26),
        (["unix"], [], 0xB000000000001F09),
        (["fuse"], [], 0xB000000013EFFF22),
        (["privileged"], [], 0xB0000001EC414406),
        (["fat"], [], 0xB00000000000E0C0),
        (["chattr"], [], 0xB000000003EF0000),
        (["acl"], [], 0xB000000020000006),
        (["unix", "nsec-time"], [], 0xB000000000001F21),
        (["best"], ["acl"], 0xB0000001DFEFFE26),
        (["all"], ["acl"], 0xB0000001DFEFFF26),
        ([], ["best"], 0xB000000000000111),
    ],
)
def test_feature_names_give_casyncs_flags(withs, withouts, flags):
    assert archive_flags(parse_features(withs, withouts, WITH_MASK)) == flags


def test_modes_and_times_follow_the_flags():
    assert entry_mode(0, stat.S_IFREG | 0o755) == stat.S_IFREG | 0o666
    assert entry_mode(0, stat.S_IFDIR | 0o700) == stat.S_IFDIR | 0o777
    assert entry_mode(0x80, stat.S_IFREG | 0o444) == stat.S_IFREG | 0o444
    assert entry_mode(0x80, stat.S_IFREG | 0o464) == stat.S_IFREG | 0o666
    assert entry_mode(0x80, stat.S_IFDIR | 0o555) == stat.S_IFDIR | 0o555
    assert entry_mode(0x100, stat.S_IFLNK | 0o755) == stat.S_IFLNK | 0o777
    assert entry_mode(0x100, stat.S_IFREG | 0o4755) == stat.S_IFREG | 0o4755
    t = 1_577_934_245_123_456_789
    assert [entry_mtime(f, t) for f in (0x20, 0x10, 0x8, 0x40, 0)] == [
        t,
        1_577_934_245_123_456_000,
        1_577_934_245_000_000_000,
        1_577_934_244_000_000_000,
        0,
    ]
