"""The C leaf decoder (``events(leaves=True)``) decodes exactly what the Python decoder
does, and where the Python decoder refuses an archive it is refused with the same
message at the same place: on well-formed trees read through buffers of every size
(runs cut at window ends) and through a file, and on mutated archives."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.archive.disk_writer import WriteOptions
from desync_decl.archive.extract import write_tree
from desync_decl.archive.patterns import Patterns
from desync_decl.errors import FormatError
from desync_decl.formats.catar import Decoder, DirEnd, Node
from desync_decl.formats.catar.decoder import Leaves
from reliability.fuzz import mutate, seeds
from tests.hostile_archives import MemNode, archive, dir_with, evil_names, raw_archive


def _tree() -> MemNode:
    files = {
        b"f%03d" % i: MemNode.file(bytes([i]) * (i * 37 % 900), mode=0o600 | i % 2 * 0o44)
        for i in range(120)
    }
    links = {b"l%02d" % i: MemNode.symlink(b"target/" * (i % 9 + 1)) for i in range(30)}
    inner = MemNode.dir(
        children={**files, b"big": MemNode.file(b"B" * 70_000), b"dev": MemNode.device(0x0103)}
    )
    return MemNode.dir(
        children={
            **links,
            b"a": MemNode.file(b"hello"),
            b"d": inner,
            b"e": MemNode.dir(),
            b"n\xff\xfe": MemNode.file(b""),
            b"z" * 255: MemNode.symlink(b"x" * 4095),
        }
    )


TREE = archive(_tree())


def decoded(stream: io.BufferedReader, leaves: bool) -> tuple[list[object], int, int]:
    """Every node (with its payload) and directory end, the error if any, and how many
    ``Leaves`` runs came."""
    decoder = Decoder(stream, "t")
    out: list[object] = []
    runs = 0
    try:
        for ev in decoder.events(leaves=leaves):
            if isinstance(ev, Leaves):
                runs += 1
                out.extend(ev.nodes())
            elif isinstance(ev, Node):
                data = b"".join(decoder.payload(1 << 16)) if stat.S_ISREG(ev.entry.mode) else b""
                out.append((ev, data))
            else:
                assert isinstance(ev, DirEnd)
                out.append(ev)
    except FormatError as e:
        out.append(str(e))
    out.append(decoder.pos)
    return out, decoder.flags or 0, runs


def both(data: bytes, buffer: int) -> tuple[list[object], list[object], int]:
    plain = decoded(io.BufferedReader(io.BytesIO(data), buffer), leaves=False)
    fast = decoded(io.BufferedReader(io.BytesIO(data), buffer), leaves=True)
    return plain[0], fast[0], fast[2]


@pytest.mark.parametrize("buffer", [64, 333, 4096, 1 << 16, 1 << 20])
def test_runs_decode_as_the_python_decoder_does(buffer):
    plain, fast, runs = both(TREE, buffer)
    assert fast == plain
    assert not isinstance(plain[-2], str)  # no error
    if buffer >= 4096:
        assert runs > 0


def test_runs_from_a_file_read_in_windows(tmp_path):
    path = tmp_path / "t.catar"
    path.write_bytes(b"x" * 100 + TREE)
    with open(path, "rb") as f:  # an 8 KiB buffer: windows come from pread
        f.seek(100)
        fast, _, runs = decoded(f, leaves=True)
    assert fast == both(TREE, 1 << 20)[1] and runs > 0


@pytest.mark.parametrize("name", [b"a\\b", b"..", b".", b"a/b", b"", b"x" * 256, b"nul\0name"])
def test_hostile_names_are_refused_with_the_python_message(name):
    data = evil_names(name)
    plain, fast, _ = both(data, 1 << 20)
    assert fast == plain and isinstance(plain[-2], str)


def test_children_out_of_order_are_refused_with_the_python_message():
    root = dir_with((b"b", MemNode.file(b"1")), (b"a", MemNode.file(b"2")))
    plain, fast, _ = both(raw_archive(root), 1 << 20)
    assert fast == plain and "out of order" in str(plain[-2])


SEEDS = [*seeds.catar_seeds(), TREE]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(st.sampled_from(SEEDS), mutate.strategy(4), st.sampled_from([97, 4096, 1 << 20]))
def test_mutated_archives_decode_and_fail_as_the_python_decoder_does(seed, mutation, buffer):
    plain, fast, _ = both(mutate.apply(seed, mutation), buffer)
    assert fast == plain


def _listing(root: Path) -> list[tuple[object, ...]]:
    out = []
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        data = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out.append(
            (path.relative_to(root), st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, link, data)
        )
    return out


def test_leaves_written_in_c_as_the_python_writer_writes_them(tmp_path):
    """The C writer (files and symlinks of a run) against the Python writer, which a
    pattern leaving nothing out still forces (each entry then checked against it)."""
    tree = MemNode.dir(
        children={k: v for k, v in _tree().kids.items() if not stat.S_ISCHR(v.entry.mode)}
    )
    tree.kids[b"d"].kids.pop(b"dev")
    data = archive(tree)
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    for target, patterns in ((fast, None), (slow, Patterns.parse([], ["no-such-name"], "t"))):
        stream = io.BufferedReader(io.BytesIO(data), 1 << 20)
        write_tree(Decoder(stream, "t"), target, WriteOptions(), patterns=patterns)
    assert _listing(fast) == _listing(slow) and len(_listing(fast)) > 150
